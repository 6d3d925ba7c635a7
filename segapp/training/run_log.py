"""The CSV log of a training run (`log.csv`), shared by `segapp train`, `train-video` and `pretrain`.

Rows are appended as the run goes. A run stopped between a log row and its checkpoint has rows
that the checkpoint does not cover; `trim_rows` drops them on `--resume`, so the log of a resumed
run reads as that of an uninterrupted one.
"""
from __future__ import annotations

import csv
from pathlib import Path
from typing import Mapping, Sequence


def append_row(path: Path, fields: Sequence[str], row: Mapping[str, object]) -> None:
    """Append `row` (keys outside `fields` ignored, missing or None values empty), with the
    header first when the file is new."""
    new = not path.is_file()
    with open(path, "a", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(fields), extrasaction="ignore")
        if new:
            writer.writeheader()
        writer.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in fields})


def trim_rows(path: Path, fields: Sequence[str], column: str, last: int) -> None:
    """Keep only the rows whose integer `column` (epoch or step) is at most `last`."""
    if not path.is_file():
        return
    with open(path, newline="", encoding="utf-8") as f:
        rows = [r for r in csv.DictReader(f) if int(r[column]) <= last]
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(fields))
        writer.writeheader()
        writer.writerows(rows)
