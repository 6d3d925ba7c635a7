"""The first ten minutes (issue 19): README command 1 ends in a running demo even when the
checkpoint cannot be downloaded; a run that finds nothing says so; the `model:` line comes once
and first; messages about missing checkpoints name the bundled fallback.

Every network test talks to a server on 127.0.0.1 started here; nothing else is contacted.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from segapp import registry
from segapp.cli import main

BUNDLED_HINT = "segapp runs its bundled small model segapp_small (e.g. `segapp demo` alone)"


@pytest.fixture
def no_downloads(tmp_path, monkeypatch):
    """A working directory without ./checkpoints and no SEGAPP_CHECKPOINTS."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(registry.CHECKPOINTS_ENV, raising=False)
    return tmp_path


def manifest(out: Path) -> dict[str, dict]:
    return {r["input"]: r for r in map(json.loads, (out / "manifest.jsonl").read_text().splitlines())}


# ------------------------------------------------------------------ a run that finds nothing

def _rectangle_and_blank(folder: Path) -> None:
    folder.mkdir()
    image = np.full((96, 128, 3), 40, np.uint8)
    image[24:72, 32:96] = (230, 120, 40)
    Image.fromarray(image).save(folder / "rect.png")
    Image.fromarray(np.full((96, 128, 3), 128, np.uint8)).save(folder / "blank.png")


def test_segment_that_finds_nothing_says_so_in_summary_and_manifest(no_downloads, capsys):
    src = no_downloads / "in"
    _rectangle_and_blank(src)
    (src / "rect.png").unlink()
    out = no_downloads / "out"
    code = main(["segment", str(src), "--out", str(out), "--points-per-side", "4", "--no-progress"])
    stdout = capsys.readouterr().out
    assert code == 0
    assert "1 ok, 0 skipped, 0 failed" in stdout and "; 0 masks found;" in stdout
    assert "no masks found in any input:" in stdout and "  no masks  blank.png" in stdout
    hint = next(line for line in stdout.splitlines() if line.startswith("hint:"))
    assert "segapp_small (bundled" in hint  # the model in use
    assert "--pred-iou-thresh 0.8" in hint and "--stability-score-thresh 0.95" in hint
    assert manifest(out)["blank.png"]["masks"] == 0
    assert json.loads((out / "coco_results.json").read_text()) == []


def test_segment_counts_masks_per_input_and_names_the_empty_one(no_downloads, capsys):
    src = no_downloads / "in"
    _rectangle_and_blank(src)
    prompts = no_downloads / "prompts.json"
    prompts.write_text(json.dumps({"default": "everything",
                                   "images": {"rect.png": [{"box": [32, 24, 96, 72]}]}}))
    out = no_downloads / "out"
    code = main(["segment", str(src), "--out", str(out), "--prompts", str(prompts),
                 "--points-per-side", "4", "--no-progress"])
    stdout = capsys.readouterr().out
    assert code == 0
    records = manifest(out)
    assert records["rect.png"]["masks"] == 1 and records["blank.png"]["masks"] == 0
    assert "; 1 mask found;" in stdout
    assert "no masks found in 1 of 2 inputs:" in stdout
    assert "  no masks  blank.png" in stdout and "  no masks  rect.png" not in stdout
