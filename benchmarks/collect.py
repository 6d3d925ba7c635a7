"""Collect the per-benchmark results (docs/benchmarks/*.md) into docs/benchmarks.md.

    python benchmarks/collect.py

Each benchmark script writes its own file with the command and machine it ran on; this
only puts them together, in a fixed order, under one heading.
"""
from __future__ import annotations

from pathlib import Path

DOCS = Path(__file__).resolve().parents[1] / "docs"
ORDER = ["image", "box", "amg", "video", "segment", "train", "bundled_model", "click_candidates"]
SCRIPTS = {"image": "bench_image.py", "box": "bench_box.py", "amg": "bench_amg.py", "video": "bench_video.py",
           "segment": "bench_segment.py", "train": "bench_train.py",
           "click_candidates": "bench_click_candidates.py"}


def main() -> None:
    parts = [
        "# Benchmarks",
        "",
        "segapp side by side with the reference implementation (sam2==1.1.0) in one process, on the",
        "same random official-format checkpoint. Medians and ratios (segapp / reference; below 1 is",
        "faster). These machines have 2 shared CPU cores and are noisy: each section says when and",
        "under what load it ran, and how to re-run it. No GPU numbers yet.",
        "",
    ]
    found = {p.stem: p for p in sorted((DOCS / "benchmarks").glob("*.md"))}
    for name in ORDER + sorted(set(found) - set(ORDER)):
        if name not in found:
            continue
        text = found[name].read_text().strip()
        # Demote the file's own headings by one level under this page's title.
        text = "\n".join("#" + line if line.startswith("#") else line for line in text.splitlines())
        parts += [f"<!-- from docs/benchmarks/{name}.md, written by benchmarks/{SCRIPTS.get(name, '?')} -->", text, ""]
    (DOCS / "benchmarks.md").write_text("\n".join(parts))
    print(f"wrote {DOCS / 'benchmarks.md'} from {len(found)} files")


if __name__ == "__main__":
    main()
