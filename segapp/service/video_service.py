"""The video tab's service: open a video, prompt objects on any frame (clicks and boxes),
track them through the video, edit (undo/redo, delete, rename, label, clear), download; no Gradio.

    video = VideoService(runtime)                 # or VideoService(image_service): its runtime
    sid = video.create_session()
    video.open_video(sid, "clip.mp4")
    video.click(sid, frame_idx=0, x=100, y=80)
    for step in video.propagate(sid, "both", preview_interval=0.5, live=LiveVideo(Path("out"))):
        ...                                       # step.done of step.total; step.preview: a frame,
                                                  # step.video: MP4 so far; video.stop(sid) ends it
    video.untracked_objects(sid)                  # prompted since the last propagation
    video.export(sid, "out/")                     # PNG zip, COCO RLE JSON, overlay MP4

Every edit is undoable: the session keeps snapshots of its objects, prompts and masks; after
an undo the tracking state is rebuilt from the prompts (segapp.video.VideoPredictor).
"""
from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Sequence

import numpy as np

from segapp.service import exports, video_exports
from segapp.service.image_service import ImageService
from segapp.service.limits import DemoError, Limits, check_point, check_point_count, check_text
from segapp.service.runtime import Runtime
from segapp.service.sessions import SessionGuard, SessionTable, delete_owned_files
from segapp.service.types import Response, Timing
from segapp.service.uploads import check_video
from segapp.service.video_session import FramePrompt, VideoObject, VideoUserSession
from segapp.service.video_progress import LiveVideo, with_progress

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
            session.stop_requested.set()  # a propagation still running ends at its next frame
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
        from segapp.video.frames import VideoReadError

        fps = check_video(path, self.limits)
        path = Path(path)
        try:
            state = self.predictor.init_state(str(path))
        except VideoReadError as err:
            raise DemoError(f"{path.name} could not be read as a video: {err}") from err
        with self._locked(sid) as session:
            session.close()
            session.path, session.state, session.fps = path, state, fps
            session.forget()
            return {"frames": state.num_frames, "width": state.video_width, "height": state.video_height,
                    "fps": session.fps}

    # ------------------------------------------------------------------ objects and prompts
    def new_object(self, sid: str, name: str | None = None) -> int:
        """Add an empty object and select it (undoable); returns its id."""
        with self._locked(sid) as session:
            self._require_video(session)
            session.push_undo(self.limits.max_history)
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
            if obj_id is not None:
                session.get_object(obj_id)
            session.selected = obj_id

    def click(self, sid: str, frame_idx: int, x: float, y: float, positive: bool = True) -> Timing:
        """Add a click for the selected object (a new one if none) on a frame; its mask on
        that frame is decoded at once. Correct any frame, then propagate again."""
        with self._locked(sid) as session:
            self._require_video(session)
            frame_idx = self._check_frame(session, frame_idx)
            x, y = self._check_xy(session, x, y)
            obj_id = session.selected if session.selected is not None else None
            prompt = session.prompts.get((obj_id, frame_idx), FramePrompt())
            name = session.get_object(obj_id).name if obj_id is not None else f"object {session.next_id}"
            check_point_count(f"{name} on frame {frame_idx}", len(prompt.points), self.limits.max_points_per_object)
            prompt = prompt._replace(points=prompt.points + ((x, y),), labels=prompt.labels + (1 if positive else 0,))
            return self._prompt(session, frame_idx, prompt, f"click on frame {frame_idx}")

    def set_box(self, sid: str, frame_idx: int, box: Sequence[float]) -> Timing:
        """Give the selected object (a new one if none) a box on a frame (xyxy pixels, corners
        in any order; replaces its box there, keeps its clicks); decoded at once."""
        with self._locked(sid) as session:
            self._require_video(session)
            frame_idx = self._check_frame(session, frame_idx)
            if len(box) != 4:
                raise DemoError(f"a box is [x0, y0, x1, y1], got {list(box)!r}")
            x0, y0 = self._check_xy(session, box[0], box[1])
            x1, y1 = self._check_xy(session, box[2], box[3])
            prompt = session.prompts.get((session.selected, frame_idx), FramePrompt())
            prompt = prompt._replace(box=(min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)))
            return self._prompt(session, frame_idx, prompt, f"box on frame {frame_idx}")

    def _prompt(self, session: VideoUserSession, frame_idx: int, prompt: FramePrompt, step: str) -> Timing:
        """Give the selected object (a new one if none) `prompt` on a frame, undoably, and
        decode its mask there."""
        before = session.snapshot()
        obj_id = session.selected if session.selected is not None else self._add_object(session).obj_id
        start = time.perf_counter()
        try:
            with self.runtime.model_lock:
                _, obj_ids, logits = self._add_prompt(session, obj_id, frame_idx, prompt)
                score = self.predictor.prompt_iou(session.state, frame_idx, obj_id)
        except ValueError as err:  # a prompt the predictor refuses: nothing changes
            session.restore(before)
            raise DemoError(f"this prompt cannot be used: {err}") from err
        session.push_undo(self.limits.max_history, before)
        session.prompts[(obj_id, frame_idx)] = prompt
        session.replace_object(dataclasses.replace(session.get_object(obj_id), score=score, score_frame=frame_idx))
        session.store(frame_idx, obj_ids, logits)
        timing = Timing(step, (time.perf_counter() - start) * 1e3, revision=session.revision)
        session.timings = [timing]
        return timing

    def _add_prompt(self, session: VideoUserSession, obj_id: int, frame_idx: int, prompt: FramePrompt):
        """The predictor's add_new_points_or_box for one FramePrompt (call under the model lock)."""
        points = np.asarray(prompt.points, np.float32) if prompt.points else None
        labels = np.asarray(prompt.labels, np.int32) if prompt.points else None
        box = np.asarray(prompt.box, np.float32) if prompt.box is not None else None
        return self.predictor.add_new_points_or_box(session.state, frame_idx, obj_id, points=points, labels=labels,
                                                    box=box, clear_old_points=True)

    def _rebuild(self, session: VideoUserSession) -> None:
        """Make the tracking state hold exactly the session's prompts (after undo, redo, delete
        or clear): reset, then each object's prompts again (the stored masks stay)."""
        with self.runtime.model_lock:
            self.predictor.reset_state(session.state)
            for (obj_id, frame_idx), prompt in sorted(session.prompts.items()):
                self._add_prompt(session, obj_id, frame_idx, prompt)

    @staticmethod
    def _check_frame(session: VideoUserSession, frame_idx) -> int:
        try:
            frame_idx = int(frame_idx)
        except (TypeError, ValueError) as err:
            raise DemoError(f"frame must be an integer, got {frame_idx!r}") from err
        if not 0 <= frame_idx < session.num_frames:
            raise DemoError(f"frame {frame_idx} is outside the video (0..{session.num_frames - 1})")
        return frame_idx

    @staticmethod
    def _check_xy(session: VideoUserSession, x, y) -> tuple[float, float]:
        return check_point(x, y, session.hw, "video")

    # ------------------------------------------------------------------ edits
    def delete_object(self, sid: str, obj_id: int | None = None) -> Response:
        """Delete an object (None: the selected one) with its prompts and masks (undoable).
        With nothing selected: a warning, nothing changes."""
        with self._locked(sid) as session:
            self._require_video(session)
            obj_id = session.selected if obj_id is None else obj_id
            if obj_id is None:
                return Response(False, session.revision, "select an object to delete")
            session.get_object(obj_id)
            session.push_undo(self.limits.max_history)
            session.objects = [o for o in session.objects if o.obj_id != obj_id]
            session.prompts = {k: p for k, p in session.prompts.items() if k[0] != obj_id}
            session.results = {f: {o: r for o, r in m.items() if o != obj_id} for f, m in session.results.items()}
            session.selected = None if session.selected == obj_id else session.selected
            with self.runtime.model_lock:
                self.predictor.remove_object(session.state, obj_id, need_output=False)
            return Response(True, session.revision)

    def rename_object(self, sid: str, obj_id: int, name: str) -> Response:
        """Rename an object (undoable); DemoError for an empty or too long name."""
        name = check_text(name, "name")
        return self._edit_object(sid, obj_id, name=name)

    def set_label(self, sid: str, obj_id: int, label: str) -> Response:
        """Give an object a class label (free text, "" to clear; undoable): the COCO export's
        category. `labels` lists those used so far."""
        label = check_text(label, "class label", allow_empty=True)
        return self._edit_object(sid, obj_id, label=label)

    def _edit_object(self, sid: str, obj_id: int, **changes) -> Response:
        with self._locked(sid) as session:
            obj = session.get_object(obj_id)
            if all(getattr(obj, k) == v for k, v in changes.items()):
                return Response(False, session.revision, f"{obj.name} is unchanged")
            session.push_undo(self.limits.max_history)
            session.replace_object(dataclasses.replace(obj, **changes))
            return Response(True, session.revision)

    def labels(self, sid: str) -> list[str]:
        """The class labels given in this session so far (those of objects and of earlier
        steps still in the history), first-seen order: for a label box's suggestions."""
        with self._locked(sid) as session:
            seen = [*session.undo_stack, session.snapshot(), *session.redo_stack]
            labels = [o.label for snap in seen for o in snap.objects if o.label]
            return list(dict.fromkeys(labels))

    def clear(self, sid: str) -> Response:
        """Remove every object, prompt and mask (undoable); a warning when there is none."""
        with self._locked(sid) as session:
            self._require_video(session)
            if not session.objects and not session.results:
                return Response(False, session.revision, "nothing to clear")
            session.push_undo(self.limits.max_history)
            session.objects, session.selected, session.prompts, session.results = [], None, {}, {}
            with self.runtime.model_lock:
                self.predictor.reset_state(session.state)
            return Response(True, session.revision)

    def undo(self, sid: str) -> Response:
        """Go back one step (a prompt, an edit or a propagation); a warning when there is none."""
        return self._history(sid, back=True)

    def redo(self, sid: str) -> Response:
        """Redo the last undone step; a warning when there is none."""
        return self._history(sid, back=False)

    def _history(self, sid: str, back: bool) -> Response:
        with self._locked(sid) as session:
            self._require_video(session)
            if not session.step_history(back):
                return Response(False, session.revision, f"nothing to {'undo' if back else 'redo'}")
            self._rebuild(session)
            return Response(True, session.revision)

    # ------------------------------------------------------------------ propagation
    def stop(self, sid: str) -> Response:
        """Ask a running propagation or track-everything of this session to stop after the
        frame it is on (the frames done keep their masks). Does not wait for the session's lock."""
        session = self._table.get(sid)
        session.stop_requested.set()
        return Response(True, session.revision)

    def untracked_objects(self, sid: str) -> list[VideoObject]:
        """Objects whose prompts were added or changed after the last complete propagation:
        their masks on the other frames are missing or stale until the next one."""
        with self._locked(sid) as session:
            return session.untracked()

    def untracked_warning(self, sid: str) -> str:
        """A warning naming the untracked objects ("" when every object was propagated)."""
        objs = self.untracked_objects(sid)
        if not objs:
            return ""
        names = ", ".join(o.name for o in objs)
        return f"not propagated since their last prompts: {names}. Propagate again to track them through the video"

    def propagate(self, sid: str, direction: str = "both", start_frame: int | None = None,
                  preview_interval: float | None = None, live: LiveVideo | None = None):
        """Track every object through the video (undoable); yields a RunStep (frame_idx, done,
        total, preview, video) after each frame, for a progress bar and a live preview.
        direction: "forward", "backward" or "both" (forward from start_frame, then backward
        from it: segapp.video.propagation). preview: the rendered frame when preview_interval
        seconds have passed since the last one (and on the last frame), else None; never with
        preview_interval None. video: with `live` (a LiveVideo: its folder), now and then a
        growing MP4 of the frames tracked so far (segapp.service.video_progress). The model
        lock is taken per frame, so other users' clicks interleave with a long propagation;
        `stop` ends it between frames."""
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
            session.push_undo(self.limits.max_history)
            session.stop_requested.clear()
            started = time.perf_counter()
            steps = propagate_both_ways(self.predictor, session.state, start_frame, directions=directions,
                                        lock=self.runtime.model_lock, should_stop=session.stop_requested.is_set)
            total = walk_length(session.num_frames, start_frame, directions)
            done = yield from with_progress(session, ((s.frame_idx, s.obj_ids, s.logits) for s in steps), total,
                                            preview_interval, live)
            stopped = session.stop_requested.is_set() and done < total
            if not stopped:
                session.mark_tracked()
            session.timings = [Timing(
                f"propagate {direction} ({done} of {total} frames)" if stopped else f"propagate {direction} ({done} frames)",
                (time.perf_counter() - started) * 1e3, revision=session.revision,
                warning="stopped: the other frames keep the masks they had" if stopped else "")]

    def track_everything(self, sid: str, every: int = 10, points_per_side: int = 16,
                         preview_interval: float | None = None, live: LiveVideo | None = None):
        """Segment everything on the first frame and every `every` frames and track every object
        (segapp.VideoAutoTracker: new objects where nothing tracked covers a mask, duplicates
        merged, vanished objects dropped). Replaces the objects, prompts and masks (undoable);
        yields RunSteps as `propagate` does; `stop` ends it between
        frames. Clicks afterwards start new objects."""
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
            session.push_undo(self.limits.max_history)
            self.predictor.reset_state(session.state)
            session.objects, session.selected, session.next_id = [], None, 1
            session.prompts, session.results = {}, {}
            session.stop_requested.clear()
            tracker = VideoAutoTracker(self.predictor, generator=generator, every=every)
            frames = tracker.track(session.state.frames)
            started = time.perf_counter()

            def steps():
                known = set()
                while not session.stop_requested.is_set():
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
                done = yield from with_progress(session, steps(), session.num_frames, preview_interval, live)
            finally:
                frames.close()
                tracker.close()
            stats = tracker.stats
            stopped = done < session.num_frames
            session.timings = [Timing(f"track everything ({done} frames, {len(stats.added)} objects found, "
                                      f"{len(stats.merged)} merged, {len(stats.vanished)} vanished)",
                                      (time.perf_counter() - started) * 1e3, revision=session.revision,
                                      warning=f"stopped after {done} of {session.num_frames} frames" if stopped else "")]

    # ------------------------------------------------------------------ views and exports
    def frame(self, sid: str, frame_idx: int, pending_corner: Sequence[float] | None = None) -> np.ndarray:
        """[H, W, 3] uint8 frame with the masks known on it and the selected object's prompts;
        pending_corner: the first corner (x, y) of a box being drawn, marked."""
        with self._locked(sid) as session:
            self._require_video(session)
            return session.render(self._check_frame(session, frame_idx), prompts=True, pending_corner=pending_corner)

    def preview(self, sid: str, out_dir: str | Path,
                max_side: int = video_exports.PREVIEW_MAX_SIDE) -> Path | None:
        """Write the playback of the masks found so far: an MP4 of every frame (those not
        tracked yet plain), at most max_side px on the long side, into out_dir (named with
        the session's revision). None while no frame has a mask."""
        with self._locked(sid) as session:
            self._require_video(session)
            if not session.results:
                return None
            stem = session.path.stem or "video"
            return video_exports.write_preview(session, Path(out_dir) / f"{stem}_preview_{session.revision}.mp4",
                                             max_side)

    def export(self, sid: str, out_dir: str | Path) -> dict[str, Path]:
        """Write {"png_zip": instance-id PNG per frame (zip), "coco_json": COCO RLE JSON,
        "overlay_mp4": H.264 overlay video} into out_dir."""
        with self._locked(sid) as session:
            self._require_video(session)
            if not session.results:
                raise DemoError("nothing to download yet: click on an object and propagate")
            return video_exports.write_all(session, out_dir)

