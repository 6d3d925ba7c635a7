"""The writing stage of `segapp segment`: one input's outputs, written as its results arrive.

Every file is written atomically (`outputs.atomic_write`); the input's record, written last by
`finish`, is what marks it done for a resumed run. A full or read-only disk stops the run
(`outputs.stops_run`); any other failure fails this input only.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from segapp.batch.decoding import Decoded
from segapp.batch.inputs import image_id
from segapp.batch.outputs import (VIDEO_FORMATS, RunState, Segmentation, atomic_write, coco_annotations,
                                  encode_id_png, encode_jpeg, object_masks, overlay, stops_run)
from segapp.batch.prompts import Prompts
from segapp.formats.mp4 import Mp4Writer


class InputWriter:
    """Writes one input's outputs as its results arrive, then its record (which marks it done)."""

    def __init__(self, d: Decoded, state: RunState, formats: tuple[str, ...], prompts: Prompts | None) -> None:
        self.d = d
        self.item = d.item
        self.state = state
        self.formats = formats
        self.prompts = prompts
        self.outputs: list[str] = []
        self.coco: list[dict[str, Any]] = []
        self.coco_images: list[dict[str, Any]] = []
        self.error: str | None = None
        self.status = "ok"
        self.masks = 0  # non-empty object masks written (for a video, summed over its frames)
        self.seconds = d.seconds
        self._video: Mp4Writer | None = None
        self.tracks = None  # a video's MOT / MOTS / YouTube-VIS outputs, written by finish
        if self.item.kind == "video" and any(f in formats for f in VIDEO_FORMATS):
            from segapp.batch.tracks import TrackOutputs

            self.tracks = TrackOutputs(formats)

    @property
    def wants_frames(self) -> bool:
        """Whether `add` needs a video frame's pixels (for the overlay video)."""
        return "overlay" in self.formats

    def _put(self, rel: str, data: bytes) -> None:
        atomic_write(self.state.out / rel, data)
        self.outputs.append(rel)

    def _image_id(self, frame: int | None) -> int:
        if frame is None and self.prompts is not None and self.prompts.source == "coco":
            known = self.prompts.image_id(self.item.rel)
            if known is not None:
                return int(known)
        return image_id(self.item.rel, frame)

    def add(self, seg: Segmentation, frame: int | None = None, rgb: np.ndarray | None = None) -> None:
        """Write the result of the image (frame None) or of video frame `frame`; rgb: that
        frame's [H, W, 3] uint8 pixels for the overlay video (None: it cannot be decoded, the
        overlay is drawn on black)."""
        if self.error is not None:
            return
        try:
            self._add(seg, frame, rgb)
        except Exception as err:  # noqa: BLE001 - reported in this input's record
            if stops_run(err):  # disk full or read-only: every input would fail; the run stops
                self.discard()
                raise
            self.fail(f"writing outputs failed: {type(err).__name__}: {err}")

    def _add(self, seg: Segmentation, frame: int | None, rgb: np.ndarray | None) -> None:
        h, w = seg.id_map.shape
        self.masks += int(np.count_nonzero(np.unique(seg.id_map)))  # the ids present, less 0
        stem = self.item.stem if frame is None else f"{self.item.stem}/{frame:06d}"
        if "png" in self.formats:
            self._put(f"{stem}.png", encode_id_png(seg.id_map, seg.sixteen_bit))
        objects = object_masks(seg) if ("coco" in self.formats or self.tracks is not None) else None
        if self.tracks is not None and frame is not None:
            self.tracks.add(frame, (h, w), objects)
        if "coco" in self.formats:
            iid = self._image_id(frame)
            entry = {"id": iid, "file_name": self.item.rel, "height": h, "width": w}
            extra = None
            if frame is not None:
                entry["frame_index"] = frame
                extra = {"frame_index": frame}
            self.coco_images.append(entry)
            self.coco += coco_annotations(seg, iid, extra, objects)
        if "overlay" in self.formats:
            if frame is None:
                self._put(f"{stem}.overlay.jpg", encode_jpeg(overlay(self.d.image, seg.id_map)))
            else:
                self._video_frame(seg, frame, rgb)

    def _video_frame(self, seg: Segmentation, frame: int, rgb: np.ndarray | None) -> None:
        if self._video is None:
            self._video = Mp4Writer(self.state.out / f"{self.item.stem}.overlay.mp4", self.d.fps)
        if rgb is None:
            rgb = np.zeros((*seg.id_map.shape, 3), np.uint8)
        if rgb.shape[:2] != seg.id_map.shape:
            raise ValueError(f"frame {frame} is {rgb.shape[1]}x{rgb.shape[0]}, masks are "
                             f"{seg.id_map.shape[1]}x{seg.id_map.shape[0]}")
        self._video.write(overlay(np.ascontiguousarray(rgb), seg.id_map))

    def discard(self) -> None:
        """Delete the outputs written so far (the input is unfinished: a rerun redoes it);
        on a full disk this makes room for the manifest."""
        self._close_video(abort=True)
        for rel in self.outputs:
            (self.state.out / rel).unlink(missing_ok=True)
        self.outputs = []

    def fail(self, error: str) -> None:
        self.status, self.error = "failed", error
        self._close_video(abort=True)

    def skip(self, reason: str) -> None:
        self.status, self.error = "skipped", reason

    def _close_video(self, abort: bool = False) -> None:
        if self._video is not None:
            try:
                if abort:
                    self._video.abort()
                else:
                    self._video.close()
                    self.outputs.append(f"{self.item.stem}.overlay.mp4")
            finally:
                self._video = None

    def finish(self, extra_seconds: float = 0.0) -> dict[str, Any]:
        """Close the input: write a video's tracking outputs, save its COCO (and YouTube-VIS)
        fragment and its record; returns the record."""
        if self.status == "ok":
            try:
                self._close_video()
            except Exception as err:  # noqa: BLE001
                self.fail(f"writing the overlay video failed: {type(err).__name__}: {err}")
        ytvis = None
        if self.status == "ok" and self.tracks is not None:
            try:
                ytvis = self._write_tracks()
            except Exception as err:  # noqa: BLE001 - reported in this input's record
                if stops_run(err):
                    self.discard()
                    raise
                self.fail(f"writing the tracking outputs failed: {type(err).__name__}: {err}")
        self.seconds += extra_seconds
        record = {
            "input": self.item.rel, "kind": self.item.kind,
            "outputs": self.outputs if self.status == "ok" else [],
            "status": self.status, "seconds": round(self.seconds, 3), "error": self.error,
            "masks": self.masks if self.status == "ok" else None,
            "formats": list(self.formats),
            "coco_images": self.coco_images if self.status == "ok" else [],
        }
        coco = self.coco if (self.status == "ok" and "coco" in self.formats) else None
        self.state.save(self.item, record, coco, ytvis)
        return record

    def _write_tracks(self) -> dict[str, Any] | None:
        """Write the video's MOT and MOTS files; returns its YouTube-VIS fragment (or None)."""
        from segapp.batch.tracks import MOT_SUFFIX, MOTS_SUFFIX

        if "mot" in self.formats:
            self._put(f"{self.item.stem}{MOT_SUFFIX}", self.tracks.mot_text())
        if "mots" in self.formats:
            self._put(f"{self.item.stem}{MOTS_SUFFIX}", self.tracks.mots_text())
        if "ytvis" in self.formats:
            return self.tracks.ytvis(image_id(self.item.rel), self.item.rel)
        return None


__all__ = ["InputWriter"]
