"""The service's limits and the errors a user can fix (the message says how).

Work per request and memory per session are bounded: see `Limits`. The checks shared by the
image and video services live here too.
"""
from __future__ import annotations

from dataclasses import dataclass

from segapp.service.cache import DEFAULT_CACHE_MAX_BYTES

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
    """Resource limits of the services (the UI shows them).

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
      downloads); the oldest go first beyond it (segapp.service.cache).
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

    def points_per_side(self, value) -> int:
        """`value` as a "segment everything" grid size, or DemoError naming the allowed range."""
        try:
            pps = int(value)
        except (TypeError, ValueError) as err:
            raise DemoError(f"points per side must be an integer, got {value!r}") from err
        if not 1 <= pps <= self.max_points_per_side:
            raise DemoError(f"points per side must be between 1 and {self.max_points_per_side}, got {pps}")
        return pps


def check_upload_size(size: int, name: str, limit: int) -> None:
    """DemoError when an uploaded file of `size` bytes is empty or over `limit` bytes."""
    if size == 0:
        raise DemoError(f"{name} is empty")
    if size > limit:
        raise DemoError(f"{name} is {size / 2**20:.1f} MB; the limit is {limit / 2**20:.0f} MB")


def check_point_count(name: str, count: int, limit: int) -> None:
    """DemoError when an object that has `count` clicks cannot take one more."""
    if count >= limit:
        raise DemoError(f"{name} already has {count} clicks, the most one object may have "
                        f"({limit}): undo some, or start a new object")


def check_text(value, what: str, *, allow_empty: bool = False, limit: int = 100) -> str:
    """`value` stripped, as an object's name or class label (`what`); DemoError when it is
    empty (unless allow_empty) or longer than `limit` characters."""
    text = (value or "").strip() if isinstance(value, str) or value is None else None
    if text is None:
        raise DemoError(f"a {what} must be text, got {value!r}")
    if not text and not allow_empty:
        raise DemoError(f"a {what} cannot be empty")
    if len(text) > limit:
        raise DemoError(f"a {what} is limited to {limit} characters")
    return text


def check_point(x, y, hw: tuple[int, int], where: str) -> tuple[float, float]:
    """(x, y) as floats inside an [H, W] picture (`where`: "image" or "video", for the
    message); DemoError for non-numbers and points outside."""
    h, w = hw
    try:
        x, y = float(x), float(y)
    except (TypeError, ValueError) as err:
        raise DemoError(f"coordinates must be numbers, got {x!r}, {y!r}") from err
    if not (0 <= x <= w and 0 <= y <= h):
        raise DemoError(f"({x:g}, {y:g}) is outside the {w}x{h} {where}")
    return x, y
