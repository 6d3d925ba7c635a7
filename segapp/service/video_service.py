"""The video tab's service: open a video, click objects on any frame, track them through the
video, download the result; no Gradio.

    video = VideoService(runtime)                 # or VideoService(image_service): its runtime
    sid = video.create_session()
    video.open_video(sid, "clip.mp4")
    video.click(sid, frame_idx=0, x=100, y=80)
    for frame_idx, done, total, preview in video.propagate(sid, "both", preview_interval=0.5):
        ...                                       # live progress
    video.export(sid, "out/")                     # PNG zip, COCO RLE JSON, overlay MP4
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from segapp.service import exports, video_exports
from segapp.service.image_service import ImageService
from segapp.service.limits import DemoError, Limits, check_point_count, check_upload_size
from segapp.service.runtime import Runtime
from segapp.service.sessions import SessionGuard, SessionTable, delete_owned_files
from segapp.service.types import Timing
from segapp.service.video_session import VideoObject, VideoUserSession

DIRECTIONS = ("forward", "backward", "both")


class VideoService:
    """Video sessions over a runtime's model and model lock (shared with the image service).

    runtime: a Runtime, or an ImageService (its runtime). Raises
    segapp.bundled.ImageOnlyModelError for a model whose video memory was never trained."""

    def __init__(self, runtime: Runtime | ImageService) -> None:
        if isinstance(runtime, ImageService):
            runtime = runtime.runtime
        self.runtime = runtime
        self.predictor = runtime.video_predictor
        self._table = SessionTable(self.limits.max_video_sessions, self.limits.idle_seconds, runtime.clock,
                                   on_close=lambda session: delete_owned_files(session, keep=self.held_files()))

    @property
    def limits(self) -> Limits:
        return self.runtime.limits

    # ------------------------------------------------------------------ sessions
    def create_session(self) -> str:
        return self._table.create(lambda sid, now: VideoUserSession(session_id=sid, last_used=now))

    def ensure_session(self, sid: str | None) -> str:
        return sid if self._table.has(sid) else self.create_session()

    def close_session(self, sid: str) -> None:
        session = self._table.close(sid)
        if session is not None:
            with session.lock:
                session.close()
            delete_owned_files(session, keep=self.held_files())

    def adopt_file(self, sid: str, path: str | Path) -> None:
        """As ImageService.adopt_file: `path` is deleted when the session closes (unless another
        live session still has it open)."""
        self._table.get(sid).files.add(Path(path))

    def held_files(self) -> set[Path]:
        """The video files live sessions have open (frames are read from them lazily)."""
        return {s.path for s in self._table.sessions() if s.path is not None and s.state is not None}

    def session_ids(self) -> list[str]:
        return self._table.ids()

    def get_session(self, sid: str) -> VideoUserSession:
        return self._table.get(sid)

    def _locked(self, sid: str) -> SessionGuard:
        return SessionGuard(self._table.get(sid))

    @staticmethod
    def _require_video(session: VideoUserSession) -> None:
        if session.state is None:
            raise DemoError("upload a video first")

    # ------------------------------------------------------------------ video
    def open_video(self, sid: str, path) -> dict:
        """Open an uploaded video file (checked against the limits). Returns
        {"frames", "width", "height", "fps"}; forgets any previous video and objects."""
        import cv2

        from segapp.formats.media import VIDEO_SUFFIXES
        from segapp.video.frames import VideoReadError

        if path is None:
            raise DemoError(f"no video given: upload a video file ({', '.join(VIDEO_SUFFIXES)})")
        path = Path(path)
        if not path.is_file():
            raise DemoError(f"video file not found: {path.name}")
        check_upload_size(path.stat().st_size, path.name, self.limits.max_video_bytes)
        if path.suffix.lower() not in VIDEO_SUFFIXES:
            raise DemoError(f"{path.name} is not a supported video ({', '.join(VIDEO_SUFFIXES)})")
        cap = cv2.VideoCapture(str(path))
        try:
            frames = int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) if cap.isOpened() else 0
            fps = float(cap.get(cv2.CAP_PROP_FPS)) if cap.isOpened() else 0.0
            w, h = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
        finally:
            cap.release()
        if frames <= 0:
            raise DemoError(f"{path.name} could not be read as a video (no frames)")
        if frames > self.limits.max_video_frames:
            raise DemoError(f"{path.name} has {frames} frames; the limit is {self.limits.max_video_frames}: "
                            "trim it first")
        if max(w, h) > self.limits.max_video_side:
            raise DemoError(f"{path.name} is {w}x{h}; the limit is {self.limits.max_video_side} pixels "
                            "on the longest side: downscale it first")
        try:
            state = self.predictor.init_state(str(path))
        except VideoReadError as err:
            raise DemoError(f"{path.name} could not be read as a video: {err}") from err
        with self._locked(sid) as session:
            session.close()
            session.path, session.state = path, state
            session.fps = fps if 0 < fps < 1000 else 25.0
            session.objects, session.selected, session.next_id = [], None, 1
            session.prompts, session.results, session.timings = {}, {}, []
            return {"frames": state.num_frames, "width": state.video_width, "height": state.video_height,
                    "fps": session.fps}

    # ------------------------------------------------------------------ objects and clicks
    def new_object(self, sid: str, name: str | None = None) -> int:
        with self._locked(sid) as session:
            self._require_video(session)
            return self._add_object(session, name).obj_id

    @staticmethod
    def _add_object(session: VideoUserSession, name: str | None = None) -> VideoObject:
        obj = VideoObject(session.next_id, name or f"object {session.next_id}",
                          exports.color_for(session.next_id - 1))
        session.objects.append(obj)
        session.next_id += 1
        session.selected = obj.obj_id
        return obj

    def select_object(self, sid: str, obj_id: int | None) -> None:
        with self._locked(sid) as session:
            if obj_id is not None and obj_id not in [o.obj_id for o in session.objects]:
                raise DemoError(f"no object with id {obj_id}")
            session.selected = obj_id

    def click(self, sid: str, frame_idx: int, x: float, y: float, positive: bool = True) -> Timing:
        """Add a click for the selected object (a new one if none) on a frame; its mask on
        that frame is decoded at once. Correct any frame, then propagate again."""
        with self._locked(sid) as session:
            self._require_video(session)
            frame_idx = self._check_frame(session, frame_idx)
            w, h = session.state.video_width, session.state.video_height
            if not (0 <= float(x) <= w and 0 <= float(y) <= h):
                raise DemoError(f"({x:g}, {y:g}) is outside the {w}x{h} video")
            obj_id = session.selected if session.selected is not None else self._add_object(session).obj_id
            points, labels = session.prompts.get((obj_id, frame_idx), ((), ()))
            name = next(o.name for o in session.objects if o.obj_id == obj_id)
            check_point_count(f"{name} on frame {frame_idx}", len(points), self.limits.max_points_per_object)
            points, labels = points + ((float(x), float(y)),), labels + (1 if positive else 0,)
            start = time.perf_counter()
            with self.runtime.model_lock:
                _, obj_ids, logits = self.predictor.add_new_points_or_box(
                    session.state, frame_idx, obj_id, points=np.asarray(points, np.float32),
                    labels=np.asarray(labels, np.int32), clear_old_points=True)
            session.prompts[(obj_id, frame_idx)] = (points, labels)
            session.store(frame_idx, obj_ids, logits)
            timing = Timing(f"click on frame {frame_idx}", (time.perf_counter() - start) * 1e3)
            session.timings = [timing]
            return timing

    @staticmethod
    def _check_frame(session: VideoUserSession, frame_idx) -> int:
        try:
            frame_idx = int(frame_idx)
        except (TypeError, ValueError) as err:
            raise DemoError(f"frame must be an integer, got {frame_idx!r}") from err
        if not 0 <= frame_idx < session.num_frames:
            raise DemoError(f"frame {frame_idx} is outside the video (0..{session.num_frames - 1})")
        return frame_idx

    # ------------------------------------------------------------------ propagation
    def propagate(self, sid: str, direction: str = "both", start_frame: int | None = None,
                  preview_interval: float | None = None):
        """Track every object through the video; yields (frame_idx, done, total, preview) after
        each frame, for a progress bar and a live preview. direction: "forward", "backward" or
        "both" (forward from start_frame, then backward from it: segapp.video.propagation).
        preview: the rendered frame when preview_interval seconds have passed since the last
        one (and on the last frame), else None; never with preview_interval None. The model
        lock is taken per frame, so other users' clicks interleave with a long propagation."""
        from segapp.video.propagation import propagate_both_ways, walk_length

        if direction not in DIRECTIONS:
            raise DemoError(f"direction must be forward, backward or both, got {direction!r}")
        directions = ("forward", "backward") if direction == "both" else (direction,)
        with self._locked(sid) as session:
            self._require_video(session)
            if not session.prompts:
                raise DemoError("click on an object in some frame before propagating")
            if start_frame is None:
                start_frame = min(f for _, f in session.prompts)
            start_frame = self._check_frame(session, start_frame)
            started = time.perf_counter()
            steps = propagate_both_ways(self.predictor, session.state, start_frame, directions=directions,
                                        lock=self.runtime.model_lock)
            total = walk_length(session.num_frames, start_frame, directions)
            done = yield from _with_progress(session, ((s.frame_idx, s.obj_ids, s.logits) for s in steps), total,
                                             preview_interval)
            session.timings = [Timing(f"propagate {direction} ({done} frames)",
                                      (time.perf_counter() - started) * 1e3)]

    def track_everything(self, sid: str, every: int = 10, points_per_side: int = 16,
                         preview_interval: float | None = None):
        """Segment everything on the first frame and every `every` frames and track every object
        (segapp.VideoAutoTracker: new objects where nothing tracked covers a mask, duplicates
        merged, vanished objects dropped). Replaces the objects, clicks and masks; yields
        (frame_idx, done, total, preview) as `propagate` does. Clicks afterwards start new objects."""
        from segapp.video.auto_tracker import VideoAutoTracker

        try:
            every = int(every)
        except (TypeError, ValueError) as err:
            raise DemoError(f"every must be an integer, got {every!r}") from err
        if every < 1:
            raise DemoError(f"segment everything every K frames needs K of at least 1, got {every}")
        generator = self.runtime.mask_generator(points_per_side)
        with self._locked(sid) as session:
            self._require_video(session)
            self.predictor.reset_state(session.state)
            session.objects, session.selected, session.next_id = [], None, 1
            session.prompts, session.results = {}, {}
            tracker = VideoAutoTracker(self.predictor, generator=generator, every=every)
            frames = tracker.track(session.state.frames)
            started = time.perf_counter()

            def steps():
                known = set()
                while True:
                    with self.runtime.model_lock:
                        item = next(frames, None)
                    if item is None:
                        return
                    for obj_id in item[1]:
                        if obj_id not in known:
                            known.add(obj_id)
                            session.objects.append(VideoObject(obj_id, f"auto {obj_id}", exports.color_for(obj_id - 1)))
                            session.next_id = max(session.next_id, obj_id + 1)
                    yield item

            try:
                done = yield from _with_progress(session, steps(), session.num_frames, preview_interval)
            finally:
                frames.close()
                tracker.close()
            stats = tracker.stats
            session.timings = [Timing(f"track everything ({done} frames, {len(stats.added)} objects found, "
                                      f"{len(stats.merged)} merged, {len(stats.vanished)} vanished)",
                                      (time.perf_counter() - started) * 1e3)]

    # ------------------------------------------------------------------ views and exports
    def frame(self, sid: str, frame_idx: int) -> np.ndarray:
        """[H, W, 3] uint8 frame with the masks known on it and the selected object's clicks."""
        with self._locked(sid) as session:
            self._require_video(session)
            return session.render(self._check_frame(session, frame_idx), prompts=True)

    def export(self, sid: str, out_dir: str | Path) -> dict[str, Path]:
        """Write {"png_zip": instance-id PNG per frame (zip), "coco_json": COCO RLE JSON,
        "overlay_mp4": H.264 overlay video} into out_dir."""
        with self._locked(sid) as session:
            self._require_video(session)
            if not session.results:
                raise DemoError("nothing to download yet: click on an object and propagate")
            return video_exports.write_all(session, out_dir)


def _with_progress(session: VideoUserSession, steps, total: int, preview_interval: float | None):
    """Store each (frame_idx, obj_ids, logits) of `steps` in the session and yield
    (frame_idx, done, total, preview): preview is the rendered frame when preview_interval
    seconds have passed since the last one, and on the last frame (never with None). Returns
    the number of frames stored."""
    done = 0
    last_preview = time.perf_counter()
    for frame_idx, obj_ids, logits in steps:
        session.store(frame_idx, obj_ids, logits)
        done += 1
        preview = None
        now = time.perf_counter()
        if preview_interval is not None and (now - last_preview >= preview_interval or done == total):
            preview, last_preview = session.render(frame_idx, prompts=False), now
        yield frame_idx, done, total, preview
    return done
