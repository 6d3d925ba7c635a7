"""Tracking outputs of a video (`segapp segment --format mot,mots,ytvis`), from the same
per-frame results as its instance-id PNGs: every mask and box is exactly its object's pixels
in that frame's PNG, and the ids are the PNG ids. See docs/segment.md, "Tracking outputs".

    <stem>.mot.txt       MOT Challenge: frame,id,bb_left,bb_top,bb_width,bb_height,conf,-1,-1,-1
    <stem>.mots.txt      MOTS Challenge: frame id class_id img_height img_width rle
    ytvis_results.json   YouTube-VIS results of the run, one entry per object and video:
                         {video_id, category_id, segmentations: [RLE or null per frame], score,
                         instance_id}; ytvis_videos.json holds the videos and categories
                         (merged by RunState.finalise from a fragment per video).

Frame numbers in the text files start at 1, as in MOT and MOTS Challenge: line frame N is the
PNG <stem>/{N-1:06d}.png. A YouTube-VIS segmentation list has one entry per frame, from frame 0.
An object with no pixel in a frame (hidden, or covered by others) has no line for that frame
and null in its list.
"""
from __future__ import annotations

from typing import Any

from segapp.batch.outputs import VIDEO_FORMATS, ObjectMask

MOT_SUFFIX = ".mot.txt"
MOTS_SUFFIX = ".mots.txt"
FIRST_FRAME = 1  # MOT and MOTS Challenge number frames from 1
SCORE_DIGITS = 6


class TrackOutputs:
    """Collects a video's objects frame by frame; renders the MOT and MOTS text and the
    video's YouTube-VIS entries at the end (the files are written whole, atomically)."""

    def __init__(self, formats: tuple[str, ...]) -> None:
        self.formats = tuple(f for f in formats if f in VIDEO_FORMATS)
        self._mot: list[str] = []
        self._mots: list[str] = []
        # instance id -> {"category_id", "frames": {frame: rle}, "scores": [per present frame]}
        self._tracks: dict[int, dict[str, Any]] = {}
        self.length = 0  # frames seen (the last frame index + 1)
        self.hw: tuple[int, int] | None = None

    def add(self, frame: int, hw: tuple[int, int], objects: list[ObjectMask]) -> None:
        """Frame `frame` (0-based, in order) of size hw = (H, W) and its objects."""
        if frame < self.length:
            raise ValueError(f"frame {frame} came after frame {self.length - 1}: frames must come in order")
        self.length = frame + 1
        self.hw = hw
        h, w = hw
        number = frame + FIRST_FRAME
        for obj in sorted(objects, key=lambda o: o.instance_id):
            if obj.area == 0:
                continue
            if "mot" in self.formats:
                x, y, bw, bh = (int(v) for v in obj.bbox)
                self._mot.append(f"{number},{obj.instance_id},{x},{y},{bw},{bh},"
                                 f"{round(obj.score, SCORE_DIGITS):g},-1,-1,-1")
            if "mots" in self.formats:
                self._mots.append(f"{number} {obj.instance_id} {obj.category_id} {h} {w} {obj.rle['counts']}")
            if "ytvis" in self.formats:
                track = self._tracks.setdefault(obj.instance_id, {"category_id": obj.category_id,
                                                                  "frames": {}, "scores": []})
                track["frames"][frame] = obj.rle
                track["scores"].append(obj.score)

    def mot_text(self) -> bytes:
        return "".join(line + "\n" for line in self._mot).encode("ascii")

    def mots_text(self) -> bytes:
        return "".join(line + "\n" for line in self._mots).encode("ascii")

    def ytvis(self, video_id: int, file_name: str) -> dict[str, Any]:
        """The video's YouTube-VIS fragment: {"video": {id, file_name, height, width, length},
        "results": one entry per object, by id}. Score: the object's mean score over the frames
        where it has pixels."""
        h, w = self.hw or (0, 0)
        results = []
        for obj_id in sorted(self._tracks):
            track = self._tracks[obj_id]
            results.append({
                "video_id": int(video_id),
                "category_id": track["category_id"],
                "segmentations": [track["frames"].get(t) for t in range(self.length)],
                "score": round(sum(track["scores"]) / len(track["scores"]), SCORE_DIGITS),
                "instance_id": obj_id,
            })
        video = {"id": int(video_id), "file_name": file_name, "height": h, "width": w, "length": self.length}
        return {"video": video, "results": results}


__all__ = ["TrackOutputs", "MOT_SUFFIX", "MOTS_SUFFIX", "FIRST_FRAME"]
