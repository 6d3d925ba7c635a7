"""A video run's progress (VideoService.propagate and track_everything): each tracked frame is
stored in the session as it comes, and the run reports it with, now and then, the frame to show
and a playable MP4 of the frames tracked so far, which grows while the run goes on.

The growing MP4 is written again from its first frame each time (an MP4 cannot be played before
it is closed), so its cost grows with the frames done; it is written at most every `interval`
seconds and never sooner than `1 / max_share` times the last write took, so writing it takes
at most about max_share of a run, however long the video.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np

from segapp.service import video_exports
from segapp.service.video_session import VideoUserSession

# The growing MP4 of a run: at most one per this many seconds, and at most this share of the
# run's time spent writing it.
LIVE_VIDEO_INTERVAL_S = 2.0
LIVE_VIDEO_MAX_SHARE = 0.2


class RunStep(NamedTuple):
    """One tracked frame of a run: frame_idx, done of total frames; preview: that frame rendered
    with its masks (when due, else None); video: the MP4 of every frame tracked so far in this
    run, in frame order (when due, else None; each one replaces the last, which is deleted)."""

    frame_idx: int
    done: int
    total: int
    preview: np.ndarray | None = None
    video: Path | None = None


@dataclass
class LiveVideo:
    """Where a run writes its growing MP4 (see the module docstring for how often)."""

    folder: Path
    interval: float = LIVE_VIDEO_INTERVAL_S
    max_share: float = LIVE_VIDEO_MAX_SHARE
    last: Path | None = None  # the latest one written
    written_at: float = 0.0  # when it was written (perf_counter)
    took: float = 0.0  # seconds its writing took

    def due(self, now: float) -> bool:
        return now - self.written_at >= max(self.interval, self.took / self.max_share)

    def write(self, session: VideoUserSession, frames: list[int]) -> Path:
        started = time.perf_counter()
        stem = session.path.stem or "video"
        path = video_exports.write_preview(session, self.folder / f"{stem}_live_{session.revision}.mp4",
                                           frames=sorted(frames))
        if self.last is not None and self.last != path:
            self.last.unlink(missing_ok=True)
        self.last, self.written_at = path, time.perf_counter()
        self.took = self.written_at - started
        return path


def with_progress(session: VideoUserSession, steps, total: int, preview_interval: float | None,
                  live: LiveVideo | None = None):
    """Store each (frame_idx, obj_ids, logits) of `steps` in the session and yield a RunStep:
    its preview is the rendered frame when preview_interval seconds have passed since the last
    one, and on the last frame (never with None); its video the growing MP4 when `live` says it
    is due (never on the last frame: the whole video's comes after the run). Returns the number
    of frames stored."""
    done, tracked = 0, []
    last_preview = time.perf_counter()
    if live is not None:
        live.written_at = last_preview
    for frame_idx, obj_ids, logits in steps:
        session.store(frame_idx, obj_ids, logits)
        tracked.append(frame_idx)
        done += 1
        preview = video = None
        now = time.perf_counter()
        if preview_interval is not None and (now - last_preview >= preview_interval or done == total):
            preview, last_preview = session.render(frame_idx, prompts=False), now
        if live is not None and done < total and live.due(now):
            video = live.write(session, tracked)
        yield RunStep(frame_idx, done, total, preview, video)
    return done
