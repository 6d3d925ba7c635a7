"""The web demo's service layer: sessions, objects, undo/redo and exports, with no Gradio.

One `DemoService` owns the model (shared by every user, behind one lock, so concurrent
requests cannot interleave inside it) and a table of `ImageSession`s keyed by an opaque id:
a user only ever reaches the session whose id their browser holds. Each session keeps its
own image embedding (computed once per image), so a click costs only the mask decoder.

Memory is bounded: a session's undo history is capped by count and bytes, at most
`Limits.max_sessions` sessions live at once (the least recently used go first), and
sessions idle for `Limits.idle_seconds` are evicted, with the files they adopted (their
uploads and downloads, `adopt_file`). Work per request is bounded: at most
`Limits.max_points_per_object` clicks per object and points per API request.

    service = DemoService(segapp.build_model("test_tiny"))
    sid = service.create_session()
    service.set_image(sid, image)                 # the encoder runs once here
    service.click(sid, 40, 30, "positive")        # decoder only
    service.export(sid, "out/")                   # instance PNG, COCO RLE JSON, overlay
"""
from __future__ import annotations

import collections
import dataclasses
import hashlib
import io
import json
import logging
import secrets
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from segapp.build_info import model_info
from segapp.demo import exports
from segapp.demo.cache import DEFAULT_CACHE_MAX_BYTES, delete_files
from segapp.formats import coco

logger = logging.getLogger(__name__)

CLICK_MODES = ("positive", "negative", "box")
# Embeddings kept for the stateless API endpoints (keyed by image content).
API_EMBEDDING_CACHE = 4
# Clicks one object may carry (per frame, in the video tab), and points one API request may
# carry. The decoder's cost grows with the points, and requests share one model lock: 200,000
# points in one request took 219 s and held every other user up. SAM's interactive protocol
# uses a handful of clicks; 64 leaves ample room.
MAX_POINTS_PER_OBJECT = 64
# The API's prompts JSON is refused beyond this many characters before it is parsed
# (64 points with a box take well under 4 KB).
MAX_PROMPTS_JSON_CHARS = 64 * 1024


class DemoError(ValueError):
    """A problem the user can fix (bad file, bad prompt, no image yet); the message says how."""


class SessionNotFound(DemoError):
    """The session id is unknown or was evicted."""


@dataclass(frozen=True)
class Limits:
    """Resource limits of the demo (the UI shows them).

    max_upload_bytes: largest accepted image or video file.
    max_image_side: longest accepted image side, in pixels.
    max_sessions: live sessions at once; the least recently used is evicted beyond this.
    idle_seconds: a session unused this long is evicted.
    max_history: undo steps kept per session.
    max_session_bytes: a session's masks and embedding; the oldest undo steps are dropped
      to stay under it.
    max_points_per_side: the densest "segment everything" grid.
    max_points_per_object: clicks one object may carry (per frame in the video tab), and
      points one API request may carry.
    max_video_bytes, max_video_frames, max_video_side: the largest accepted video.
    max_video_sessions: live video sessions at once (their tracking state is larger).
    max_cache_bytes: the demo's files on disk (Gradio's copies of uploads and rendered views,
      downloads); the oldest go first beyond it (segapp.demo.cache).
    """

    max_upload_bytes: int = 20 * 1024 * 1024
    max_image_side: int = 4096
    max_sessions: int = 32
    idle_seconds: float = 30 * 60
    max_history: int = 30
    max_session_bytes: int = 256 * 1024 * 1024
    max_points_per_side: int = 64
    max_points_per_object: int = MAX_POINTS_PER_OBJECT
    max_video_bytes: int = 100 * 1024 * 1024
    max_video_frames: int = 600
    max_video_side: int = 1920
    max_video_sessions: int = 4
    max_cache_bytes: int = DEFAULT_CACHE_MAX_BYTES


@dataclass(frozen=True)
class ObjectState:
    """One segmented object: its prompts and the mask candidates they gave (immutable, so
    undo snapshots share arrays instead of copying them).

    candidates: [C, H, W] bool, or None before the first prompt. scores: C predicted IoUs.
    """

    obj_id: int
    name: str
    color: tuple[int, int, int]
    points: tuple[tuple[float, float], ...] = ()
    labels: tuple[int, ...] = ()
    box: tuple[float, float, float, float] | None = None
    candidates: np.ndarray | None = field(default=None, repr=False, compare=False)
    scores: tuple[float, ...] = ()
    chosen: int = 0

    @property
    def mask(self) -> np.ndarray | None:
        """[H, W] bool of the chosen candidate, or None."""
        return None if self.candidates is None else self.candidates[self.chosen]

    @property
    def has_prompts(self) -> bool:
        return bool(self.points) or self.box is not None


@dataclass(frozen=True)
class Snapshot:
    """Everything undo restores."""

    objects: tuple[ObjectState, ...]
    selected: int | None
    next_id: int


@dataclass
class Timing:
    """Latency of the last step, in milliseconds; `cached` when the embedding was reused."""

    step: str
    ms: float
    cached: bool = False
    note: str = ""  # what the user should know about the result (e.g. that nothing was found)

    def __str__(self) -> str:
        text = f"{self.step}: {self.ms:.0f} ms" + (" (embedding cached)" if self.cached else "")
        return f"{text}. {self.note}" if self.note else text


@dataclass
class ImageSession:
    """One user's image tab state. Reached only through DemoService (which holds the locks)."""

    session_id: str
    last_used: float
    image: np.ndarray | None = None
    image_name: str = "image.png"
    image_key: str | None = None
    predictor: Any = None
    state: Snapshot = Snapshot((), None, 1)
    undo_stack: collections.deque = field(default_factory=collections.deque)
    redo_stack: list = field(default_factory=list)
    pending_corner: tuple[float, float] | None = None
    timings: list[Timing] = field(default_factory=list)
    files: set[Path] = field(default_factory=set)  # deleted when the session closes (adopt_file)
    lock: threading.Lock = field(default_factory=threading.Lock)

    # ------------------------------------------------------------------ views
    @property
    def objects(self) -> tuple[ObjectState, ...]:
        return self.state.objects

    @property
    def selected(self) -> ObjectState | None:
        return next((o for o in self.state.objects if o.obj_id == self.state.selected), None)

    def get_object(self, obj_id: int) -> ObjectState:
        for obj in self.state.objects:
            if obj.obj_id == obj_id:
                return obj
        raise DemoError(f"no object with id {obj_id} (objects: {[o.obj_id for o in self.state.objects]})")

    def nbytes(self) -> int:
        """Bytes held by the image, its embedding and every mask reachable from the history."""
        return self.fixed_nbytes() + masks_nbytes((self.state, *self.undo_stack, *self.redo_stack))

    def fixed_nbytes(self) -> int:
        """Bytes of the image and its embedding."""
        total = 0 if self.image is None else self.image.nbytes
        if self.predictor is not None and self.predictor.is_image_set:
            emb = self.predictor._embedding
            total += emb.image_embed.nbytes + sum(f.nbytes for f in emb.high_res_feats)
        return total


def masks_nbytes(snapshots) -> int:
    """Bytes of the distinct mask arrays in some snapshots (undo steps share unchanged arrays)."""
    seen: dict[int, int] = {}
    for snap in snapshots:
        for obj in snap.objects:
            if obj.candidates is not None:
                seen[id(obj.candidates)] = obj.candidates.nbytes
    return sum(seen.values())


class SessionTable:
    """Sessions keyed by unguessable ids, least recently used last-evicted; thread-safe.

    Sessions are any objects with a `last_used` attribute (seconds of `clock`). An evicted
    session gets its `close()` called, if it has one, then `on_close(session)`, outside the
    table's lock; `close(sid)` only removes it (the caller closes it)."""

    def __init__(self, max_sessions: int, idle_seconds: float, clock=time.monotonic, on_close=None) -> None:
        self.max_sessions = max_sessions
        self.idle_seconds = idle_seconds
        self._clock = clock
        self._on_close = on_close
        self._lock = threading.Lock()
        self._sessions: collections.OrderedDict[str, Any] = collections.OrderedDict()

    def create(self, factory) -> str:
        """Add factory(sid, now) under a new id; returns the id."""
        sid = secrets.token_urlsafe(16)
        with self._lock:
            self._sessions[sid] = factory(sid, self._clock())
            gone = self._evict_locked()
        self._closed(gone)
        return sid

    def has(self, sid: str | None) -> bool:
        with self._lock:
            return sid is not None and sid in self._sessions

    def ids(self) -> list[str]:
        with self._lock:
            return list(self._sessions)

    def sessions(self) -> list[Any]:
        """The live sessions (a snapshot)."""
        with self._lock:
            return list(self._sessions.values())

    def close(self, sid: str) -> Any:
        """Remove a session; returns it (for the caller to close), or None if unknown."""
        with self._lock:
            return self._sessions.pop(sid, None)

    def evict(self) -> list[str]:
        """Remove idle and surplus sessions now; returns their ids."""
        with self._lock:
            gone = self._evict_locked()
        self._closed(gone)
        return [sid for sid, _ in gone]

    def get(self, sid: str):
        """The live session (marked used), or SessionNotFound."""
        with self._lock:
            gone = self._evict_locked()
            session = self._sessions.get(sid) if sid is not None else None
            if session is not None:
                session.last_used = self._clock()
                self._sessions.move_to_end(sid)
        self._closed(gone)
        if session is None:
            raise SessionNotFound("this session has expired (idle too long or too many users): "
                                  "upload the file again")
        return session

    def _evict_locked(self) -> list[tuple[str, Any]]:
        """Remove idle and surplus sessions; returns (id, session) pairs, to be closed outside
        the lock."""
        now = self._clock()
        gone = [sid for sid, s in self._sessions.items() if now - s.last_used > self.idle_seconds]
        alive = [sid for sid in self._sessions if sid not in gone]
        gone += alive[: max(0, len(alive) - self.max_sessions)]
        if gone:
            logger.info("evicted %d session(s)", len(gone))
        return [(sid, self._sessions.pop(sid)) for sid in gone]

    def _closed(self, sessions: list[tuple[str, Any]]) -> None:
        for _, session in sessions:
            close = getattr(session, "close", None)
            if close is not None:
                close()
            if self._on_close is not None:
                self._on_close(session)


class DemoService:
    """Sessions over one shared model.

    model: a SAM2Model (`segapp.build_model`). limits: see Limits.
    amg_options: extra AutomaticMaskGenerator arguments for "segment everything" (e.g.
      {"pred_iou_thresh": 0.0} for random-weight test models, whose scores are low).
    clock: seconds, for tests of eviction (default time.monotonic).
    """

    def __init__(self, model, limits: Limits | None = None, amg_options: dict | None = None,
                 clock=time.monotonic) -> None:
        self.model = model
        self.limits = limits or Limits()
        self.amg_options = dict(amg_options or {})
        self._clock = clock
        self._model_lock = threading.Lock()
        self._table_lock = threading.Lock()  # guards the API embedding cache
        self._table = SessionTable(self.limits.max_sessions, self.limits.idle_seconds, clock,
                                   on_close=_delete_owned_files)
        self._api_predictors: collections.OrderedDict[str, Any] = collections.OrderedDict()

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
            _delete_owned_files(session)

    def adopt_file(self, sid: str, path: str | Path) -> None:
        """Make `path` (a file or folder made for this session, e.g. Gradio's copy of its
        upload or its downloads) the session's: deleted when the session closes or is evicted.
        Never adopt a user's own file."""
        self._session(sid).files.add(Path(path))

    def evict_idle(self) -> list[str]:
        """Drop sessions idle longer than the limit; returns their ids."""
        return self._table.evict()

    def _session(self, sid: str) -> ImageSession:
        return self._table.get(sid)

    def _locked(self, sid: str):
        """Context manager: the session, locked against concurrent requests of the same user."""
        return _SessionGuard(self._session(sid))

    def get_session(self, sid: str) -> ImageSession:
        """The session (for reading; mutate only through the service's methods)."""
        return self._session(sid)

    # ------------------------------------------------------------------ images
    def load_image(self, source) -> np.ndarray:
        """Validate and decode an upload: a path, bytes, a PIL image or an array -> [H, W, 3] uint8.

        Raises DemoError for files that are too large, not images, or too big in pixels."""
        from PIL import Image

        from segapp.formats.images import read_image
        from segapp.transforms import to_rgb_uint8

        if source is None:
            raise DemoError("no image given: upload an image (PNG, JPEG, WebP, ...) first")
        if isinstance(source, (str, Path)):
            path = Path(source)
            if not path.is_file():
                raise DemoError(f"image file not found: {path.name}")
            size = path.stat().st_size
            self._check_upload_size(size, path.name)
            try:
                return read_image(path, check_size=self._check_pixels)
            except (ValueError, OSError) as err:
                if isinstance(err, DemoError):
                    raise
                raise DemoError(f"{path.name} is not an image we can read (PNG, JPEG, WebP, BMP, TIFF): {err}") from err
        if isinstance(source, (bytes, bytearray)):
            self._check_upload_size(len(source), "upload")
            try:
                return read_image(bytes(source), check_size=self._check_pixels)
            except (ValueError, OSError) as err:
                if isinstance(err, DemoError):
                    raise
                raise DemoError(f"the upload is not an image we can read: {err}") from err
        if isinstance(source, Image.Image):
            self._check_pixels(source.size)
            return np.array(to_rgb_uint8(source))
        if isinstance(source, np.ndarray):
            if source.ndim not in (2, 3):
                raise DemoError(f"an image array must be [H, W] or [H, W, C], got shape {source.shape}")
            self._check_pixels((source.shape[1], source.shape[0]))
            try:
                return to_rgb_uint8(source)
            except (TypeError, ValueError) as err:
                raise DemoError(f"cannot use this array as an image: {err}") from err
        raise DemoError(f"unsupported image input of type {type(source).__name__}")

    def _check_upload_size(self, size: int, name: str) -> None:
        check_upload_size(size, name, self.limits.max_upload_bytes)

    def _check_pixels(self, wh: tuple[int, int]) -> None:
        w, h = wh
        if max(w, h) > self.limits.max_image_side:
            raise DemoError(f"the image is {w}x{h} pixels; the limit is {self.limits.max_image_side} "
                            "pixels on the longest side: downscale it first")
        if min(w, h) < 1:
            raise DemoError(f"the image is empty ({w}x{h})")

    def _new_predictor(self):
        from segapp.image_predictor import ImagePredictor

        return ImagePredictor(self.model)

    def set_image(self, sid: str, image, name: str | None = None) -> Timing:
        """Give the session a new image (any form `load_image` takes); computes its embedding
        unless the session already holds the same image. Clears objects and history."""
        array = self.load_image(image)
        key = _image_key(array)
        if name is None and isinstance(image, (str, Path)):
            name = Path(image).name
        with self._locked(sid) as session:
            cached = session.image_key == key and session.predictor is not None and session.predictor.is_image_set
            start = time.perf_counter()
            if not cached:
                predictor = session.predictor or self._new_predictor()
                with self._model_lock:
                    predictor.set_image(array)
                session.predictor = predictor
            timing = Timing("image embedding", (time.perf_counter() - start) * 1e3, cached)
            session.image, session.image_key = array, key
            session.image_name = Path(str(name)).name if name else "image.png"
            session.state = Snapshot((), None, 1)
            session.undo_stack.clear()
            session.redo_stack.clear()
            session.pending_corner = None
            session.timings = [timing]
            return timing

    # ------------------------------------------------------------------ prompts
    def _decode(self, predictor, obj: ObjectState) -> ObjectState:
        """Run the decoder for the object's prompts; choose the best-scoring candidate."""
        if not obj.has_prompts:
            return dataclasses.replace(obj, candidates=None, scores=(), chosen=0)
        masks, scores = _predict(predictor, self._model_lock, obj.points, obj.labels, obj.box)
        return dataclasses.replace(obj, candidates=masks, scores=tuple(float(s) for s in scores),
                                   chosen=int(np.argmax(scores)))

    def _require_image(self, session: ImageSession) -> None:
        if session.image is None or session.predictor is None:
            raise DemoError("upload an image (or pick an example) first")

    def _commit(self, session: ImageSession, new: Snapshot) -> None:
        """Make `new` the current state, pushing the old one for undo. The oldest undo steps
        go when the session would exceed its memory limit; a state too big on its own is refused."""
        budget = self.limits.max_session_bytes
        if session.fixed_nbytes() + masks_nbytes([new]) > budget:
            raise DemoError(f"this session's masks would exceed its memory limit ({budget / 2**20:.0f} MB): "
                            "delete some objects or clear")
        session.undo_stack.append(session.state)
        while len(session.undo_stack) > self.limits.max_history:
            session.undo_stack.popleft()
        session.redo_stack.clear()
        session.state = new
        while session.undo_stack and session.nbytes() > budget:
            session.undo_stack.popleft()

    def _new_object_state(self, session: ImageSession, name: str | None = None) -> ObjectState:
        obj_id = session.state.next_id
        return ObjectState(obj_id=obj_id, name=name or f"object {obj_id}", color=exports.color_for(obj_id - 1))

    def _replace_object(self, session: ImageSession, obj: ObjectState, *, is_new: bool) -> Snapshot:
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
            _check_point_count(obj.name, len(obj.points), self.limits.max_points_per_object)
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
        session.timings = [timing]
        return timing

    def _check_xy(self, session: ImageSession, x, y) -> tuple[float, float]:
        h, w = session.image.shape[:2]
        try:
            x, y = float(x), float(y)
        except (TypeError, ValueError) as err:
            raise DemoError(f"coordinates must be numbers, got {x!r}, {y!r}") from err
        if not (0 <= x <= w and 0 <= y <= h):
            raise DemoError(f"({x:g}, {y:g}) is outside the {w}x{h} image")
        return x, y

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

    def rename_object(self, sid: str, obj_id: int, name: str) -> None:
        name = (name or "").strip()
        if not name:
            raise DemoError("a name cannot be empty")
        if len(name) > 100:
            raise DemoError("names are limited to 100 characters")
        with self._locked(sid) as session:
            obj = dataclasses.replace(session.get_object(obj_id), name=name)
            snap = self._replace_object(session, obj, is_new=False)
            self._commit(session, dataclasses.replace(snap, selected=session.state.selected))

    def delete_object(self, sid: str, obj_id: int) -> None:
        with self._locked(sid) as session:
            session.get_object(obj_id)
            objects = tuple(o for o in session.objects if o.obj_id != obj_id)
            selected = session.state.selected if session.state.selected != obj_id else None
            self._commit(session, Snapshot(objects, selected, session.state.next_id))

    def choose_candidate(self, sid: str, index: int, obj_id: int | None = None) -> None:
        """Use the index-th multimask candidate as the object's mask (default: selected object)."""
        with self._locked(sid) as session:
            obj = session.get_object(obj_id) if obj_id is not None else session.selected
            if obj is None or obj.candidates is None:
                raise DemoError("select an object with a mask first")
            if not 0 <= index < len(obj.candidates):
                raise DemoError(f"candidate {index} does not exist (there are {len(obj.candidates)})")
            obj = dataclasses.replace(obj, chosen=int(index))
            self._commit(session, self._replace_object(session, obj, is_new=False))

    # ------------------------------------------------------------------ history
    def undo(self, sid: str) -> bool:
        """Go back one step; False when there is nothing to undo."""
        with self._locked(sid) as session:
            session.pending_corner = None
            if not session.undo_stack:
                return False
            session.redo_stack.append(session.state)
            session.state = session.undo_stack.pop()
            return True

    def redo(self, sid: str) -> bool:
        """Redo the last undone step; False when there is nothing to redo."""
        with self._locked(sid) as session:
            if not session.redo_stack:
                return False
            session.undo_stack.append(session.state)
            session.state = session.redo_stack.pop()
            return True

    def clear(self, sid: str) -> None:
        """Remove every object (undoable)."""
        with self._locked(sid) as session:
            session.pending_corner = None
            if session.objects:
                self._commit(session, Snapshot((), None, session.state.next_id))

    # ------------------------------------------------------------------ segment everything
    def segment_everything(self, sid: str, points_per_side: int = 16) -> Timing:
        """Replace the objects with the automatic mask generator's masks (undoable)."""
        with self._locked(sid) as session:
            self._require_image(session)
            start = time.perf_counter()
            records, generator = self._generate(session.image, points_per_side)
            found = len(records)
            # Keep the largest masks that fit the session's memory (one bool plane each).
            room = self.limits.max_session_bytes - session.fixed_nbytes()
            records = records[: max(0, room // session.image[..., 0].size)]
            objects = []
            for k, rec in enumerate(records):
                obj_id = session.state.next_id + k
                objects.append(ObjectState(obj_id=obj_id, name=f"auto {k + 1}", color=exports.color_for(obj_id - 1),
                                           candidates=rec["segmentation"][None], scores=(rec["predicted_iou"],)))
            next_id = session.state.next_id + len(objects)
            self._commit(session, Snapshot(tuple(objects), None, next_id))
            kept = f"{len(objects)} masks" if len(objects) == found else f"kept the {len(objects)} largest of {found} masks"
            note = "" if found else _nothing_found_note(generator)
            timing = Timing(f"segment everything ({kept})", (time.perf_counter() - start) * 1e3, note=note)
            session.timings = [timing]
            return timing

    def _generate(self, image: np.ndarray, points_per_side: int):
        """(AMG records sorted by area, largest first (so small masks are drawn on top), the
        generator)."""
        from segapp.automatic_mask_generator import AutomaticMaskGenerator

        try:
            pps = int(points_per_side)
        except (TypeError, ValueError) as err:
            raise DemoError(f"points per side must be an integer, got {points_per_side!r}") from err
        if not 1 <= pps <= self.limits.max_points_per_side:
            raise DemoError(f"points per side must be between 1 and {self.limits.max_points_per_side}, got {pps}")
        generator = AutomaticMaskGenerator(self.model, points_per_side=pps, output_mode="binary_mask",
                                           **self.amg_options)
        with self._model_lock:
            records = generator.generate(image)
        return sorted(records, key=lambda r: -r["area"]), generator

    # ------------------------------------------------------------------ views and exports
    def render(self, sid: str) -> np.ndarray | None:
        """The session's image with every object's mask in its colour and the selected
        object's prompts marked; None before an image is set."""
        with self._locked(sid) as session:
            if session.image is None:
                return None
            objs = [o for o in session.objects if o.mask is not None]
            sel = session.selected
            highlight = next((k for k, o in enumerate(objs) if sel is not None and o.obj_id == sel.obj_id), None)
            return exports.overlay(
                session.image, [o.mask for o in objs], [o.color for o in objs], highlight=highlight,
                points=sel.points if sel else (), labels=sel.labels if sel else (),
                box=sel.box if sel else None, pending_corner=session.pending_corner)

    def _masked_objects(self, session: ImageSession) -> list[ObjectState]:
        self._require_image(session)
        return [o for o in session.objects if o.mask is not None]

    def instance_png(self, sid: str) -> bytes:
        """PNG of the instance-id map: pixel value = object id, 0 = background."""
        with self._locked(sid) as session:
            objs = self._masked_objects(session)
            id_map = exports.instance_id_map([o.mask for o in objs], session.image.shape[:2], [o.obj_id for o in objs])
            return exports.id_map_to_png(id_map)

    def coco_json(self, sid: str) -> str:
        """COCO RLE JSON of the session's objects (one annotation per object with a mask)."""
        with self._locked(sid) as session:
            objs = self._masked_objects(session)
            return exports.coco_json_for_image(
                [o.mask for o in objs], session.image.shape[:2], file_name=session.image_name,
                names=[o.name for o in objs], scores=[o.scores[o.chosen] for o in objs],
                ids=[o.obj_id for o in objs])

    def overlay_png(self, sid: str) -> bytes:
        with self._locked(sid) as session:
            objs = self._masked_objects(session)
            image = exports.overlay(session.image, [o.mask for o in objs], [o.color for o in objs])
        buf = io.BytesIO()
        from PIL import Image

        Image.fromarray(image).save(buf, format="PNG")
        return buf.getvalue()

    def export(self, sid: str, out_dir: str | Path) -> dict[str, Path]:
        """Write the three downloads into out_dir: {"instance_png", "coco_json", "overlay_png"}."""
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        stem = Path(self.get_session(sid).image_name).stem or "image"
        files = {
            "instance_png": (out_dir / f"{stem}_instances.png", self.instance_png(sid)),
            "coco_json": (out_dir / f"{stem}_coco_rle.json", self.coco_json(sid).encode()),
            "overlay_png": (out_dir / f"{stem}_overlay.png", self.overlay_png(sid)),
        }
        for path, data in files.values():
            path.write_bytes(data)
        return {key: path for key, (path, _) in files.items()}

    # ------------------------------------------------------------------ stateless API
    def _api_predictor(self, image: np.ndarray):
        """A predictor holding this image's embedding (cached by content, a few at most)."""
        key = _image_key(image)
        with self._table_lock:
            predictor = self._api_predictors.get(key)
            if predictor is not None:
                self._api_predictors.move_to_end(key)
                return predictor, True
        predictor = self._new_predictor()
        with self._model_lock:
            predictor.set_image(image)
        with self._table_lock:
            self._api_predictors[key] = predictor
            while len(self._api_predictors) > API_EMBEDDING_CACHE:
                self._api_predictors.popitem(last=False)
        return predictor, False

    def segment_image(self, image, prompts: str | dict) -> tuple[np.ndarray, dict]:
        """One-shot segmentation for the API: returns ([H, W] bool best mask, info) where info
        holds every candidate's score, the chosen index, the area and the timings."""
        array = self.load_image(image)
        points, labels, box = parse_prompts(prompts, array.shape[:2], self.limits.max_points_per_object)
        start = time.perf_counter()
        predictor, cached = self._api_predictor(array)
        embed_ms = (time.perf_counter() - start) * 1e3
        start = time.perf_counter()
        masks, scores = _predict(predictor, self._model_lock, points, labels, box)
        decode_ms = (time.perf_counter() - start) * 1e3
        best = int(np.argmax(scores))
        info = {
            "scores": [float(s) for s in scores],
            "best": best,
            "area": int(masks[best].sum()),
            "image_size": [int(array.shape[0]), int(array.shape[1])],
            "timings_ms": {"embedding": round(embed_ms, 2), "embedding_cached": cached, "decoder": round(decode_ms, 2)},
        }
        return masks[best], info

    def segment_everything_image(self, image, points_per_side: int = 16) -> tuple[np.ndarray, list[dict]]:
        """"Segment everything" for the API: ([H, W] uint16 instance-id map, records) where
        record k (id k + 1) has the COCO RLE segmentation, area, bbox and scores."""
        array = self.load_image(image)
        records, _ = self._generate(array, points_per_side)
        id_map = exports.instance_id_map([r["segmentation"] for r in records], array.shape[:2])
        out = []
        for k, rec in enumerate(records):
            out.append({
                "id": k + 1,
                "segmentation": exports.encode_rle(rec["segmentation"]),
                "area": int(rec["area"]),
                "bbox": [float(v) for v in rec["bbox"]],
                "predicted_iou": float(rec["predicted_iou"]),
                "stability_score": float(rec["stability_score"]),
                "point_coords": [[float(v) for v in p] for p in rec["point_coords"]],
            })
        return id_map, out


class _SessionGuard:
    def __init__(self, session: ImageSession) -> None:
        self.session = session

    def __enter__(self) -> ImageSession:
        self.session.lock.acquire()
        return self.session

    def __exit__(self, *exc) -> None:
        self.session.lock.release()


def _delete_owned_files(session, keep=()) -> None:
    """Delete the files a closed session adopted (except those in `keep`)."""
    if session.files:
        count = delete_files(sorted(session.files), keep=keep)
        session.files.clear()
        if count:
            logger.info("deleted %d file(s) of a closed session", count)


def _image_key(image: np.ndarray) -> str:
    digest = hashlib.sha1(np.ascontiguousarray(image).tobytes())
    digest.update(repr(image.shape).encode())
    return digest.hexdigest()


def check_upload_size(size: int, name: str, limit: int) -> None:
    """DemoError when an uploaded file of `size` bytes is empty or over `limit` bytes."""
    if size == 0:
        raise DemoError(f"{name} is empty")
    if size > limit:
        raise DemoError(f"{name} is {size / 2**20:.1f} MB; the limit is {limit / 2**20:.0f} MB")


def _predict(predictor, model_lock: threading.Lock, points, labels, box) -> tuple[np.ndarray, np.ndarray]:
    """([C, H, W] bool multimask candidates, [C] scores) for one object's prompts."""
    coords = np.asarray(points, dtype=np.float32).reshape(-1, 2) if len(points) else None
    lab = np.asarray(labels, dtype=np.int32) if len(points) else None
    box_arr = np.asarray(box, dtype=np.float32) if box is not None else None
    with model_lock:
        masks, scores, _ = predictor.predict(point_coords=coords, point_labels=lab, box=box_arr,
                                             multimask_output=True)
    return masks > 0.5, np.asarray(scores, dtype=np.float32)


def _check_point_count(name: str, count: int, limit: int) -> None:
    """DemoError when an object that has `count` clicks cannot take one more."""
    if count >= limit:
        raise DemoError(f"{name} already has {count} clicks, the most one object may have "
                        f"({limit}): undo some, or start a new object")


def _nothing_found_note(generator) -> str:
    """The status line's note when "segment everything" kept no mask: the model, the filters
    the masks failed (set on the server: DemoService's amg_options) and what to do instead."""
    from segapp import bundled

    label = model_info(generator.predictor.model).label
    text = (f"No masks found by {label}: none passed the quality filters (predicted IoU > "
            f"{generator.pred_iou_thresh:g}, stability >= {generator.stability_score_thresh:g}). "
            "Click the object instead, or try a denser grid")
    if label.startswith(bundled.NAME):
        text += f"; for full quality start the demo with: segapp demo --download {bundled.FULL_QUALITY}"
    return text + "."


def parse_prompts(prompts: str | dict, hw: tuple[int, int], max_points: int = MAX_POINTS_PER_OBJECT):
    """Validate the API's prompt JSON: {"points": [[x, y], ...], "labels": [1, 0, ...],
    "box": [x0, y0, x1, y1]} with any of the keys (labels default to 1, positive), at most
    `max_points` points. Returns (points tuple, labels tuple, box tuple or None); raises
    DemoError with the reason."""
    if isinstance(prompts, (str, bytes)) and len(prompts) > MAX_PROMPTS_JSON_CHARS:
        raise DemoError(f"prompts JSON is {len(prompts)} characters; the limit is {MAX_PROMPTS_JSON_CHARS} "
                        f"(at most {max_points} points per request)")
    if isinstance(prompts, (str, bytes)):
        try:
            prompts = json.loads(prompts or "{}")
        except json.JSONDecodeError as err:
            raise DemoError(f"prompts are not valid JSON: {err}") from err
    if not isinstance(prompts, dict):
        raise DemoError('prompts must be a JSON object like {"points": [[x, y]], "labels": [1], "box": [x0, y0, x1, y1]}')
    unknown = set(prompts) - {"points", "labels", "box"}
    if unknown:
        raise DemoError(f"unknown prompt keys {sorted(unknown)}; use points, labels and box")
    h, w = hw
    points = prompts.get("points") or []
    if isinstance(points, list) and len(points) > max_points:
        raise DemoError(f"{len(points)} points in one request; the limit is {max_points} points per "
                        "request (one object)")
    try:
        points = tuple((float(p[0]), float(p[1])) for p in points if len(p) == 2) if points else ()
    except (TypeError, ValueError, IndexError) as err:
        raise DemoError(f"points must be a list of [x, y] pairs: {err}") from err
    if len(points) != len(prompts.get("points") or []):
        raise DemoError("points must be a list of [x, y] pairs")
    labels = prompts.get("labels")
    if labels is None:
        labels = [1] * len(points)
    if not isinstance(labels, list) or len(labels) != len(points) or any(l not in (0, 1) for l in labels):
        raise DemoError(f"labels must be a list of {len(points)} values, each 1 (positive) or 0 (negative)")
    box = prompts.get("box")
    if box is not None:
        try:
            box = tuple(float(v) for v in box)
        except (TypeError, ValueError) as err:
            raise DemoError(f"box must be [x0, y0, x1, y1] numbers: {err}") from err
        if len(box) != 4:
            raise DemoError("box must be [x0, y0, x1, y1]")
        box = (min(box[0], box[2]), min(box[1], box[3]), max(box[0], box[2]), max(box[1], box[3]))
    if not points and box is None:
        raise DemoError("give at least one point or a box")
    for x, y in points + ((box[:2], box[2:]) if box else ()):
        if not (np.isfinite(x) and np.isfinite(y) and 0 <= x <= w and 0 <= y <= h):
            raise DemoError(f"prompt ({x:g}, {y:g}) is outside the {w}x{h} image")
    return points, tuple(int(l) for l in labels), box



# ====================================================================== video
@dataclass(frozen=True)
class VideoObject:
    obj_id: int
    name: str
    color: tuple[int, int, int]


@dataclass
class VideoDemoSession:
    """One user's video tab state: the open video, its tracking state, the clicks given on
    each frame and the masks found so far (as COCO RLE, so a long video stays small)."""

    session_id: str
    last_used: float
    path: Path | None = None
    state: Any = None  # segapp.video.session.VideoSession
    fps: float = 25.0
    objects: list[VideoObject] = field(default_factory=list)
    selected: int | None = None
    next_id: int = 1
    prompts: dict = field(default_factory=dict)  # (obj_id, frame) -> (points, labels)
    results: dict = field(default_factory=dict)  # frame -> {obj_id: RLE}
    timings: list[Timing] = field(default_factory=list)
    files: set[Path] = field(default_factory=set)  # deleted when the session closes (adopt_file)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def num_frames(self) -> int:
        return 0 if self.state is None else self.state.num_frames

    def close(self) -> None:
        if self.state is not None:
            self.state.frames.close()
            self.state = None

    def mask(self, frame_idx: int, obj_id: int) -> np.ndarray | None:
        rle = self.results.get(frame_idx, {}).get(obj_id)
        return None if rle is None else exports.decode_rle(rle)


class VideoService:
    """The video tab's sessions over the same model (and model lock) as a DemoService.

        video = VideoService(service)
        sid = video.create_session()
        video.open_video(sid, "clip.mp4")
        video.click(sid, frame_idx=0, x=100, y=80)
        for frame_idx, done, total, preview in video.propagate(sid, "both", preview_interval=0.5):
            ...                                   # live progress
        video.export(sid, "out/")                 # PNG zip, COCO RLE JSON, overlay MP4
    """

    def __init__(self, service: DemoService) -> None:
        from segapp.video.predictor import VideoPredictor

        self.service = service
        self.limits = service.limits
        self.predictor = VideoPredictor(service.model)
        self._table = SessionTable(self.limits.max_video_sessions, self.limits.idle_seconds, service._clock,
                                   on_close=lambda session: _delete_owned_files(session, keep=self.held_files()))

    # ------------------------------------------------------------------ sessions
    def create_session(self) -> str:
        return self._table.create(lambda sid, now: VideoDemoSession(session_id=sid, last_used=now))

    def ensure_session(self, sid: str | None) -> str:
        return sid if self._table.has(sid) else self.create_session()

    def close_session(self, sid: str) -> None:
        session = self._table.close(sid)
        if session is not None:
            with session.lock:
                session.close()
            _delete_owned_files(session, keep=self.held_files())

    def adopt_file(self, sid: str, path: str | Path) -> None:
        """As DemoService.adopt_file: `path` is deleted when the session closes (unless another
        live session still has it open)."""
        self._table.get(sid).files.add(Path(path))

    def held_files(self) -> set[Path]:
        """The video files live sessions have open (frames are read from them lazily)."""
        return {s.path for s in self._table.sessions() if s.path is not None and s.state is not None}

    def session_ids(self) -> list[str]:
        return self._table.ids()

    def get_session(self, sid: str) -> VideoDemoSession:
        return self._table.get(sid)

    def _locked(self, sid: str):
        return _SessionGuard(self._table.get(sid))

    def _require_video(self, session: VideoDemoSession) -> None:
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

    def _add_object(self, session: VideoDemoSession, name: str | None = None) -> VideoObject:
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
            _check_point_count(f"{name} on frame {frame_idx}", len(points), self.limits.max_points_per_object)
            points, labels = points + ((float(x), float(y)),), labels + (1 if positive else 0,)
            start = time.perf_counter()
            with self.service._model_lock:
                _, obj_ids, logits = self.predictor.add_new_points_or_box(
                    session.state, frame_idx, obj_id, points=np.asarray(points, np.float32),
                    labels=np.asarray(labels, np.int32), clear_old_points=True)
            session.prompts[(obj_id, frame_idx)] = (points, labels)
            self._store(session, frame_idx, obj_ids, logits)
            timing = Timing(f"click on frame {frame_idx}", (time.perf_counter() - start) * 1e3)
            session.timings = [timing]
            return timing

    def _check_frame(self, session: VideoDemoSession, frame_idx) -> int:
        try:
            frame_idx = int(frame_idx)
        except (TypeError, ValueError) as err:
            raise DemoError(f"frame must be an integer, got {frame_idx!r}") from err
        if not 0 <= frame_idx < session.num_frames:
            raise DemoError(f"frame {frame_idx} is outside the video (0..{session.num_frames - 1})")
        return frame_idx

    @staticmethod
    def _store(session: VideoDemoSession, frame_idx: int, obj_ids, logits) -> None:
        masks = (logits[:, 0] > 0).cpu().numpy()
        session.results[frame_idx] = {int(o): exports.encode_rle(m) for o, m in zip(obj_ids, masks)}

    # ------------------------------------------------------------------ propagation
    def propagate(self, sid: str, direction: str = "both", start_frame: int | None = None,
                  preview_interval: float | None = None):
        """Track every object through the video; yields (frame_idx, done, total, preview) after
        each frame, for a progress bar and a live preview. direction: "forward", "backward" or
        "both" (forward from start_frame, then backward from it). preview: the rendered frame
        when preview_interval seconds have passed since the last one (and on the last frame),
        else None; never with preview_interval None. The model lock is taken per frame, so
        other users' clicks interleave with a long propagation."""
        if direction not in ("forward", "backward", "both"):
            raise DemoError(f"direction must be forward, backward or both, got {direction!r}")
        with self._locked(sid) as session:
            self._require_video(session)
            if not session.prompts:
                raise DemoError("click on an object in some frame before propagating")
            n = session.num_frames
            if start_frame is None:
                start_frame = min(f for _, f in session.prompts)
            start_frame = self._check_frame(session, start_frame)
            passes = []
            if direction in ("forward", "both"):
                passes.append((False, n - start_frame))
            if direction in ("backward", "both"):
                passes.append((True, start_frame + 1))
            total, done = sum(count for _, count in passes), 0
            started = last_preview = time.perf_counter()
            for reverse, _ in passes:
                frames = self.predictor.propagate_in_video(session.state, start_frame_idx=start_frame,
                                                           reverse=reverse)
                while True:
                    with self.service._model_lock:
                        item = next(frames, None)
                    if item is None:
                        break
                    frame_idx, obj_ids, logits = item
                    self._store(session, frame_idx, obj_ids, logits)
                    done += 1
                    preview = None
                    now = time.perf_counter()
                    if preview_interval is not None and (now - last_preview >= preview_interval or done == total):
                        preview, last_preview = self._render(session, frame_idx, prompts=False), now
                    yield frame_idx, done, total, preview
            session.timings = [Timing(f"propagate {direction} ({done} frames)",
                                      (time.perf_counter() - started) * 1e3)]

    def track_everything(self, sid: str, every: int = 10, points_per_side: int = 16,
                         preview_interval: float | None = None):
        """Segment everything on the first frame and every `every` frames and track every object
        (segapp.VideoAutoTracker: new objects where nothing tracked covers a mask, duplicates
        merged, vanished objects dropped). Replaces the objects, clicks and masks; yields
        (frame_idx, done, total, preview) as `propagate` does. Clicks afterwards start new objects."""
        from segapp.automatic_mask_generator import AutomaticMaskGenerator
        from segapp.video.auto_tracker import VideoAutoTracker

        try:
            every, pps = int(every), int(points_per_side)
        except (TypeError, ValueError) as err:
            raise DemoError(f"every and points per side must be integers, got {every!r}, {points_per_side!r}") from err
        if every < 1:
            raise DemoError(f"segment everything every K frames needs K of at least 1, got {every}")
        if not 1 <= pps <= self.limits.max_points_per_side:
            raise DemoError(f"points per side must be between 1 and {self.limits.max_points_per_side}, got {pps}")
        with self._locked(sid) as session:
            self._require_video(session)
            self.predictor.reset_state(session.state)
            session.objects, session.selected, session.next_id = [], None, 1
            session.prompts, session.results = {}, {}
            generator = AutomaticMaskGenerator(self.service.model, points_per_side=pps, output_mode="binary_mask",
                                               **self.service.amg_options)
            tracker = VideoAutoTracker(self.predictor, generator=generator, every=every)
            frames = tracker.track(session.state.frames)
            total, done = session.num_frames, 0
            started = last_preview = time.perf_counter()
            known = set()
            try:
                while True:
                    with self.service._model_lock:
                        item = next(frames, None)
                    if item is None:
                        break
                    frame_idx, obj_ids, logits = item
                    for obj_id in obj_ids:
                        if obj_id not in known:
                            known.add(obj_id)
                            session.objects.append(VideoObject(obj_id, f"auto {obj_id}", exports.color_for(obj_id - 1)))
                            session.next_id = max(session.next_id, obj_id + 1)
                    self._store(session, frame_idx, obj_ids, logits)
                    done += 1
                    preview = None
                    now = time.perf_counter()
                    if preview_interval is not None and (now - last_preview >= preview_interval or done == total):
                        preview, last_preview = self._render(session, frame_idx, prompts=False), now
                    yield frame_idx, done, total, preview
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
            return self._render(session, self._check_frame(session, frame_idx), prompts=True)

    def _render(self, session: VideoDemoSession, frame_idx: int, prompts: bool) -> np.ndarray:
        image = session.state.frames.get(frame_idx)
        if image is None:
            raise DemoError(f"frame {frame_idx} cannot be decoded")
        masks, colors = [], []
        for obj in session.objects:
            mask = session.mask(frame_idx, obj.obj_id)
            if mask is not None:
                masks.append(mask)
                colors.append(obj.color)
        points, labels = ((), ())
        if prompts and session.selected is not None:
            points, labels = session.prompts.get((session.selected, frame_idx), ((), ()))
        return exports.overlay(image, masks, colors, points=points, labels=labels)

    def export(self, sid: str, out_dir: str | Path) -> dict[str, Path]:
        """Write {"png_zip": instance-id PNG per frame (zip), "coco_json": COCO RLE JSON,
        "overlay_mp4": H.264 overlay video} into out_dir."""
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        with self._locked(sid) as session:
            self._require_video(session)
            if not session.results:
                raise DemoError("nothing to download yet: click on an object and propagate")
            stem = session.path.stem or "video"
            hw = (session.state.video_height, session.state.video_width)
            order = [o.obj_id for o in session.objects]

            def id_maps():
                for frame_idx in sorted(session.results):
                    ids = [o for o in order if o in session.results[frame_idx]]
                    yield frame_idx, exports.instance_id_map([session.mask(frame_idx, o) for o in ids], hw, ids)

            png_zip = exports.write_png_zip(id_maps(), out_dir / f"{stem}_masks.zip")
            names = {o.obj_id: o.name for o in session.objects}
            images, anns = [], []
            for frame_idx in sorted(session.results):
                images.append({"id": frame_idx + 1, "width": hw[1], "height": hw[0], "frame_index": frame_idx,
                               "file_name": f"{frame_idx:05d}.png"})
                ids = [o for o in order if o in session.results[frame_idx]]
                anns += coco.annotations([session.mask(frame_idx, o) for o in ids], image_id=frame_idx + 1,
                                         ids=ids, names=[names[o] for o in ids], start_id=len(anns) + 1)
            coco_path = out_dir / f"{stem}_coco_rle.json"
            coco_path.write_text(json.dumps(coco.document(images, anns, exports.DESCRIPTION)))
            mp4 = exports.write_mp4((self._render(session, f, prompts=False) for f in range(session.num_frames)
                                     if session.state.frames.get(f) is not None),
                                    out_dir / f"{stem}_overlay.mp4", session.fps)
            return {"png_zip": png_zip, "coco_json": coco_path, "overlay_mp4": mp4}
