"""Output pieces every `segapp eval` protocol shares: software versions, report.json, the console
table and charts drawn with OpenCV (no plotting library needed)."""
from __future__ import annotations

import json
import platform
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

REPORT_NAME = "report.json"

# Chart layout (pixels), colours (BGR) and text style, shared by every chart.
FONT = cv2.FONT_HERSHEY_SIMPLEX
TEXT, GRID, AXIS = (0, 0, 0), (225, 225, 225), (0, 0, 0)
BAR_COLOUR = (200, 110, 30)
BAR_ROW_H, BAR_W, BAR_LABEL_W, BAR_MARGIN = 22, 480, 200, 40


def versions() -> dict:
    """Versions of what the numbers depend on (None for a package that is not installed)."""
    from importlib import metadata

    out = {"python": platform.python_version()}
    for dist in ("segapp", "torch", "numpy", "opencv-python-headless", "opencv-python",
                 "pycocotools", "pillow"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = None
    out["cv2"] = cv2.__version__
    return out


def write_json(path: Path, data: dict) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=2)
        f.write("\n")


def text_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A console table: first column left-aligned, the others right-aligned, a rule under the
    header."""
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths)))
             for r in [header, *rows]]
    return "\n".join([lines[0], "-" * len(lines[0]), *lines[1:]])


def bar_chart(path: Path, labels: Sequence[str], values: Sequence[float], title: str,
              axis_label: str) -> None:
    """Horizontal bars of values in [0, 1], one row per label (top to bottom), written as PNG."""
    n = max(len(labels), 1)
    width = BAR_LABEL_W + BAR_W + BAR_MARGIN
    height = 2 * BAR_MARGIN + n * BAR_ROW_H + 20
    img = np.full((height, width, 3), 255, np.uint8)
    x0, x1 = BAR_LABEL_W, BAR_LABEL_W + BAR_W
    y0, y1 = BAR_MARGIN, BAR_MARGIN + n * BAR_ROW_H
    for i in range(11):  # x grid and labels, 0..1
        x = int(round(x0 + i / 10 * (x1 - x0)))
        cv2.line(img, (x, y0), (x, y1), GRID, 1)
        cv2.putText(img, f"{i / 10:.1f}", (x - 10, y1 + 16), FONT, 0.4, TEXT, 1, cv2.LINE_AA)
    for row, (label, value) in enumerate(zip(labels, values)):
        top = y0 + row * BAR_ROW_H + 3
        right = int(round(x0 + float(np.clip(value, 0, 1)) * (x1 - x0)))
        cv2.rectangle(img, (x0, top), (right, top + BAR_ROW_H - 6), BAR_COLOUR, -1)
        cv2.putText(img, label[:28], (8, top + BAR_ROW_H - 9), FONT, 0.42, TEXT, 1, cv2.LINE_AA)
        cv2.putText(img, f"{value:.3f}", (min(right + 4, x1 - 40), top + BAR_ROW_H - 9), FONT, 0.38,
                    TEXT, 1, cv2.LINE_AA)
    cv2.rectangle(img, (x0, y0), (x1, y1), AXIS, 1)
    cv2.putText(img, title, (8, BAR_MARGIN - 15), FONT, 0.5, TEXT, 1, cv2.LINE_AA)
    cv2.putText(img, axis_label, ((x0 + x1) // 2 - 20, height - 8), FONT, 0.45, TEXT, 1, cv2.LINE_AA)
    if not cv2.imwrite(str(path), img):
        raise OSError(f"cannot write {path}")
