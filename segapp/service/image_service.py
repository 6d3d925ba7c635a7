"""The image tab's service: sessions, clicks and boxes, objects, undo/redo, segment everything
and downloads, with no Gradio.

One `ImageService` runs over a `Runtime` (the model shared by every user behind one lock, so
concurrent requests cannot interleave inside it) and keeps a table of `ImageSession`s keyed by
an opaque id: a user only ever reaches the session whose id their browser holds. Each session
keeps its own image embedding (computed once per image), so a click costs only the decoder.

Memory is bounded: a session's undo history is capped by count and bytes, at most
`Limits.max_sessions` sessions live at once (the least recently used go first), and
sessions idle for `Limits.idle_seconds` are evicted, with the files they adopted (their
uploads and downloads, `adopt_file`). Work per request is bounded: at most
`Limits.max_points_per_object` clicks per object and points per API request.

    service = ImageService(segapp.build_model("test_tiny"))   # or ImageService(runtime)
    sid = service.create_session()
    service.set_image(sid, image)                 # the encoder runs once here
    service.click(sid, 40, 30, "positive")        # decoder only
    service.export(sid, "out/")                   # instance PNG, COCO RLE JSON, overlay
"""
from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Callable, Collection, Sequence

import numpy as np

from segapp.service import exports, image_exports
from segapp.service.api import ApiEndpoints
from segapp.service.image_session import ImageSession, masks_nbytes
from segapp.service.memory import release_free_memory
from segapp.service.limits import CLICK_MODES, DemoError, Limits, check_point, check_point_count, check_text
from segapp.service.runtime import Runtime, nothing_found_note
from segapp.service.sessions import SessionGuard, SessionTable, delete_owned_files
from segapp.service.types import Downloads, ObjectState, Response, Snapshot, Timing
from segapp.service.uploads import image_key, load_image


class ImageService:
    """Image sessions over one runtime.

    runtime: a Runtime, or a model (then limits, amg_options and clock make its Runtime;
      see Runtime for each).
    """

    def __init__(self, runtime, limits: Limits | None = None, amg_options: dict | None = None,
                 clock: Callable[[], float] | None = None) -> None:
        if not isinstance(runtime, Runtime):
            runtime = Runtime(runtime, limits or Limits(), dict(amg_options or {}), clock or time.monotonic)
        elif limits is not None or amg_options is not None or clock is not None:
            raise TypeError("give limits, amg_options and clock to the Runtime, not beside it")
        self.runtime = runtime
        self.api = ApiEndpoints(runtime)
        self._table = SessionTable(self.limits.max_sessions, self.limits.idle_seconds, runtime.clock,
                                   on_close=delete_owned_files)

    @property
    def model(self):
        return self.runtime.model

    @property
    def limits(self) -> Limits:
        return self.runtime.limits

    @property
    def amg_options(self) -> dict:
        return self.runtime.amg_options

    # ------------------------------------------------------------------ sessions
    def create_session(self) -> str:
        """A new empty session; returns its id (unguessable)."""
        return self._table.create(lambda sid, now: ImageSession(session_id=sid, last_used=now))

    def ensure_session(self, sid: str | None) -> str:
        """`sid` if it is live, else a new session's id (an evicted session starts afresh)."""
        return sid if self._table.has(sid) else self.create_session()

    def has_session(self, sid: str | None) -> bool:
        return self._table.has(sid)

    def session_ids(self) -> list[str]:
        return self._table.ids()

    def close_session(self, sid: str) -> None:
        session = self._table.close(sid)
        if session is not None:
            delete_owned_files(session)

    def adopt_file(self, sid: str, path: str | Path) -> None:
        """Make `path` (a file or folder made for this session, e.g. Gradio's copy of its
        upload or its downloads) the session's: deleted when the session closes or is evicted.
        Never adopt a user's own file."""
        self._table.get(sid).files.add(Path(path))

    def evict_idle(self) -> list[str]:
        """Drop sessions idle longer than the limit; returns their ids."""
        return self._table.evict()

    def get_session(self, sid: str) -> ImageSession:
        """The session (for reading; mutate only through the service's methods)."""
        return self._table.get(sid)

    def _locked(self, sid: str) -> SessionGuard:
        """Context manager: the session, locked against concurrent requests of the same user."""
        return SessionGuard(self._table.get(sid))

    # ------------------------------------------------------------------ images
    def load_image(self, source) -> np.ndarray:
        """Validate and decode an upload (segapp.service.uploads.load_image) -> [H, W, 3] uint8."""
        return load_image(source, self.limits)

    def set_image(self, sid: str, image, name: str | None = None) -> Timing:
        """Give the session a new image (any form `load_image` takes); computes its embedding
        unless the session already holds the same image. Clears objects and history."""
        array = self.load_image(image)
        key = image_key(array)
        if name is None and isinstance(image, (str, Path)):
            name = Path(image).name
        with self._locked(sid) as session:
            cached = session.image_key == key and session.predictor is not None and session.predictor.is_image_set
            start = time.perf_counter()
            if not cached:
                predictor = session.predictor or self.runtime.image_predictor()
                self.runtime.embed(predictor, array)
                session.predictor = predictor
                release_free_memory()  # the encoder's freed temporaries (segapp.service.memory)
            timing = Timing("image embedding", (time.perf_counter() - start) * 1e3, cached)
            session.image, session.image_key = array, key
            session.image_name = Path(str(name)).name if name else "image.png"
            session.state = Snapshot((), None, 1)
            session.undo_stack.clear()
            session.redo_stack.clear()
            session.pending_corner = None
            session.revision += 1
            timing.revision = session.revision
            session.timings = [timing]
            return timing

    # ------------------------------------------------------------------ prompts
    def _decode(self, predictor, obj: ObjectState) -> ObjectState:
        """Run the decoder for the object's prompts; choose the best-scoring candidate."""
        if not obj.has_prompts:
            return dataclasses.replace(obj, candidates=None, scores=(), chosen=0)
        masks, scores = self.runtime.predict(predictor, obj.points, obj.labels, obj.box)
        return dataclasses.replace(obj, candidates=masks, scores=tuple(float(s) for s in scores),
                                   chosen=int(np.argmax(scores)))

    @staticmethod
    def _require_image(session: ImageSession) -> None:
        if session.image is None or session.predictor is None:
            raise DemoError("upload an image (or pick an example) first")

    def _commit(self, session: ImageSession, new: Snapshot) -> None:
        """Make `new` the current state, undoably, within the session's memory limit."""
        session.commit(new, self.limits)

    @staticmethod
    def _new_object_state(session: ImageSession, name: str | None = None) -> ObjectState:
        obj_id = session.state.next_id
        return ObjectState(obj_id=obj_id, name=name or f"object {obj_id}", color=exports.color_for(obj_id - 1))

    @staticmethod
    def _replace_object(session: ImageSession, obj: ObjectState, *, is_new: bool) -> Snapshot:
        objects = list(session.objects)
        if is_new:
            objects.append(obj)
        else:
            objects = [obj if o.obj_id == obj.obj_id else o for o in objects]
        next_id = max(session.state.next_id, obj.obj_id + 1)
        return Snapshot(tuple(objects), obj.obj_id, next_id)

    def add_point(self, sid: str, x: float, y: float, positive: bool = True) -> Timing:
        """Add a click to the selected object (a new object if none is selected)."""
        with self._locked(sid) as session:
            self._require_image(session)
            x, y = self._check_xy(session, x, y)
            obj, is_new = self._target(session)
            check_point_count(obj.name, len(obj.points), self.limits.max_points_per_object)
            obj = dataclasses.replace(obj, points=obj.points + ((x, y),), labels=obj.labels + (1 if positive else 0,))
            return self._apply(session, obj, is_new, "decoder (click)")

    def set_box(self, sid: str, box: Sequence[float]) -> Timing:
        """Set the selected object's box (xyxy, pixels; corners in any order)."""
        with self._locked(sid) as session:
            self._require_image(session)
            x0, y0 = self._check_xy(session, box[0], box[1])
            x1, y1 = self._check_xy(session, box[2], box[3])
            obj, is_new = self._target(session)
            obj = dataclasses.replace(obj, box=(min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)))
            session.pending_corner = None
            return self._apply(session, obj, is_new, "decoder (box)")

    def click(self, sid: str, x: float, y: float, mode: str) -> Timing | None:
        """A click on the image in a UI mode: "positive", "negative", or "box" (the first
        click of a box marks a corner and returns None; the second completes the box)."""
        if mode not in CLICK_MODES:
            raise DemoError(f"unknown click mode {mode!r}; use one of {', '.join(CLICK_MODES)}")
        if mode != "box":
            with self._locked(sid) as session:
                session.pending_corner = None
            return self.add_point(sid, x, y, positive=(mode == "positive"))
        with self._locked(sid) as session:
            self._require_image(session)
            corner = self._check_xy(session, x, y)
            if session.pending_corner is None:
                session.pending_corner = corner
                return None
            first = session.pending_corner
        return self.set_box(sid, (*first, *corner))

    def _target(self, session: ImageSession) -> tuple[ObjectState, bool]:
        selected = session.selected
        if selected is not None:
            return selected, False
        return self._new_object_state(session), True

    def _apply(self, session: ImageSession, obj: ObjectState, is_new: bool, step: str) -> Timing:
        start = time.perf_counter()
        obj = self._decode(session.predictor, obj)
        timing = Timing(step, (time.perf_counter() - start) * 1e3, cached=True)
        self._commit(session, self._replace_object(session, obj, is_new=is_new))
        timing.revision = session.revision
        session.timings = [timing]
        return timing

    @staticmethod
    def _check_xy(session: ImageSession, x, y) -> tuple[float, float]:
        return check_point(x, y, session.image.shape[:2], "image")

    # ------------------------------------------------------------------ objects
    def new_object(self, sid: str, name: str | None = None) -> int:
        """Add an empty object and select it: the next clicks go to it. Returns its id."""
        with self._locked(sid) as session:
            self._require_image(session)
            obj = self._new_object_state(session, name)
            self._commit(session, self._replace_object(session, obj, is_new=True))
            return obj.obj_id

    def select_object(self, sid: str, obj_id: int | None) -> None:
        """Select the object that the next clicks refine (None: the next click starts a new one)."""
        with self._locked(sid) as session:
            if obj_id is not None:
                session.get_object(obj_id)
            session.state = dataclasses.replace(session.state, selected=obj_id)
            session.pending_corner = None

    def rename_object(self, sid: str, obj_id: int, name: str) -> Response:
        """Rename an object (undoable); DemoError for an empty or too long name."""
        return self._edit_object(sid, obj_id, name=check_text(name, "name"))

    def set_label(self, sid: str, obj_id: int, label: str) -> Response:
        """Give an object a class label (free text, "" to clear; undoable): its category in
        the COCO download. `labels` lists the labels used so far."""
        return self._edit_object(sid, obj_id, label=check_text(label, "class label", allow_empty=True))

    def _edit_object(self, sid: str, obj_id: int, **changes) -> Response:
        with self._locked(sid) as session:
            obj = session.get_object(obj_id)
            if all(getattr(obj, k) == v for k, v in changes.items()):
                return Response(False, session.revision, f"{obj.name} is unchanged")
            snap = self._replace_object(session, dataclasses.replace(obj, **changes), is_new=False)
            self._commit(session, dataclasses.replace(snap, selected=session.state.selected))
            session.remember_label(changes.get("label", ""))
            return Response(True, session.revision)

    def labels(self, sid: str) -> list[str]:
        """The class labels given in this session so far (across its images), first-seen
        order: the suggestions of a label box."""
        with self._locked(sid) as session:
            return list(session.labels_used)

    def delete_object(self, sid: str, obj_id: int | None = None) -> Response:
        """Delete an object (None: the selected one; undoable). With nothing selected: a
        warning, nothing changes; DemoError for an unknown id."""
        with self._locked(sid) as session:
            obj_id = session.state.selected if obj_id is None else obj_id
            if obj_id is None:
                return Response(False, session.revision, "select an object to delete")
            session.get_object(obj_id)
            objects = tuple(o for o in session.objects if o.obj_id != obj_id)
            selected = session.state.selected if session.state.selected != obj_id else None
            self._commit(session, Snapshot(objects, selected, session.state.next_id))
            return Response(True, session.revision)

    def choose_candidate(self, sid: str, index: int, obj_id: int | None = None) -> Response:
        """Use the index-th multimask candidate as the object's mask (default: the selected
        object; a warning when none with a mask is selected). DemoError for a bad index."""
        with self._locked(sid) as session:
            obj = session.get_object(obj_id) if obj_id is not None else session.selected
            if obj is None or obj.candidates is None:
                return Response(False, session.revision, "select an object with a mask first")
            if not 0 <= index < len(obj.candidates):
                raise DemoError(f"candidate {index} does not exist (there are {len(obj.candidates)})")
            obj = dataclasses.replace(obj, chosen=int(index))
            self._commit(session, self._replace_object(session, obj, is_new=False))
            return Response(True, session.revision)

    # ------------------------------------------------------------------ history
    def undo(self, sid: str) -> Response:
        """Go back one step; falsy, with a warning, when there is nothing to undo."""
        with self._locked(sid) as session:
            done = session.undo()
            return Response(done, session.revision, "" if done else "nothing to undo")

    def redo(self, sid: str) -> Response:
        """Redo the last undone step; falsy, with a warning, when there is nothing to redo."""
        with self._locked(sid) as session:
            done = session.redo()
            return Response(done, session.revision, "" if done else "nothing to redo")

    def clear(self, sid: str) -> Response:
        """Remove every object (undoable); a warning when there is none."""
        with self._locked(sid) as session:
            session.pending_corner = None
            if not session.objects:
                return Response(False, session.revision, "nothing to clear")
            self._commit(session, Snapshot((), None, session.state.next_id))
            return Response(True, session.revision)

    # ------------------------------------------------------------------ segment everything
    def segment_everything(self, sid: str, points_per_side: int = 16) -> Timing:
        """Add the automatic mask generator's masks as new objects, largest first, after the
        existing ones (which stay; undoable). On no mask, the timing's warning says why (the
        model and the quality filters); masks beyond the session's memory are left out, said
        in the step."""
        with self._locked(sid) as session:
            self._require_image(session)
            start = time.perf_counter()
            records, generator = self.runtime.generate(session.image, points_per_side)
            found = len(records)
            # Keep the largest masks that fit the session's memory (one bool plane each).
            room = self.limits.max_session_bytes - session.fixed_nbytes() - masks_nbytes([session.state])
            records = records[: max(0, room // session.image[..., 0].size)]
            first = session.state.next_id
            added = tuple(ObjectState(obj_id=first + k, name=f"auto {first + k}", color=exports.color_for(first + k - 1),
                                      candidates=rec["segmentation"][None], scores=(rec["predicted_iou"],))
                          for k, rec in enumerate(records))
            if added:
                self._commit(session, Snapshot(session.objects + added, None, first + len(added)))
            kept = f"{len(added)} masks" if len(added) == found else f"kept the {len(added)} largest of {found} masks"
            warning = nothing_found_note(generator) if not found else ""
            if found and not added:
                warning = "no room for more masks in this session's memory: delete some objects or clear"
            timing = Timing(f"segment everything ({kept})", (time.perf_counter() - start) * 1e3, warning=warning,
                            revision=session.revision)
            session.timings = [timing]
            return timing

    # ------------------------------------------------------------------ views and exports
    def render(self, sid: str, *, alpha: float = exports.OVERLAY_ALPHA,
               hidden: Collection[int] = ()) -> np.ndarray | None:
        """The session's image with every object's mask in its colour and the selected
        object's prompts marked; None before an image is set.

        alpha: the masks' opacity, 0 (invisible) to 1 (opaque); hidden: ids of objects whose
        masks are not drawn (the view only: exports keep every object)."""
        if not 0.0 <= alpha <= 1.0:
            raise DemoError(f"mask opacity must be between 0 and 1, got {alpha}")
        with self._locked(sid) as session:
            if session.image is None:
                return None
            objs = [o for o in session.masked_objects if o.obj_id not in set(hidden)]
            sel = session.selected
            highlight = next((k for k, o in enumerate(objs) if sel is not None and o.obj_id == sel.obj_id), None)
            return exports.overlay(
                session.image, [o.mask for o in objs], [o.color for o in objs], alpha=alpha, highlight=highlight,
                points=sel.points if sel else (), labels=sel.labels if sel else (),
                box=sel.box if sel else None, pending_corner=session.pending_corner)

    def instance_png(self, sid: str) -> bytes:
        """PNG of the instance-id map: pixel value = object id, 0 = background."""
        with self._locked(sid) as session:
            self._require_image(session)
            return image_exports.instance_png(session)

    def coco_json(self, sid: str) -> str:
        """COCO RLE JSON of the session's objects (one annotation per object with a mask)."""
        with self._locked(sid) as session:
            self._require_image(session)
            return image_exports.coco_json(session)

    def overlay_png(self, sid: str) -> bytes:
        with self._locked(sid) as session:
            self._require_image(session)
            return image_exports.overlay_png(session)

    def export(self, sid: str, out_dir: str | Path,
               kinds: Sequence[str] = image_exports.DEFAULT_KINDS) -> dict[str, Path]:
        """Write downloads into out_dir (image_exports.KINDS; by default "instance_png",
        "coco_json", "overlay_png"); returns {kind: path}."""
        with self._locked(sid) as session:
            self._require_image(session)
            return image_exports.write_all(session, out_dir, kinds)

    def downloads(self, sid: str, out_dir: str | Path, kinds: Sequence[str] = image_exports.KINDS) -> Downloads:
        """The session's downloads (every kind of image_exports.KINDS unless told) as of its
        current revision, written into out_dir again only when the objects changed since the
        last call (or the folder or kinds differ); no files while no object has a mask. Call
        it after every action to keep the downloads fresh."""
        out_dir, kinds = Path(out_dir), tuple(kinds)
        with self._locked(sid) as session:
            last = session.downloads
            if (last is not None and (last.revision, last.folder, last.kinds) == (session.revision, out_dir, kinds)
                    and all(p.is_file() for p in last.files.values())):
                return last
            files = image_exports.write_all(session, out_dir, kinds) if session.masked_objects else {}
            session.downloads = Downloads(session.revision, files, out_dir, kinds)
            return session.downloads

    # ------------------------------------------------------------------ stateless API
    def segment_image(self, image, prompts: str | dict) -> tuple[np.ndarray, dict]:
        """One-shot segmentation for the API (ApiEndpoints.segment_image)."""
        return self.api.segment_image(image, prompts)

    def segment_everything_image(self, image, points_per_side: int = 16) -> tuple[np.ndarray, list[dict]]:
        """"Segment everything" for the API (ApiEndpoints.segment_everything_image)."""
        return self.api.segment_everything_image(image, points_per_side)
