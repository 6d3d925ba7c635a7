"""Batch segmentation (`segapp segment`): inputs, prompts files, atomic writers, and the
local and Ray engines. See docs/segment.md."""
