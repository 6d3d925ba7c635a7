"""Sessions keyed by unguessable ids (`SessionTable`), their per-user locks, and the files a
closed session leaves behind.

A user only ever reaches the session whose id their browser holds. The table evicts sessions
idle for `Limits.idle_seconds` and, beyond `max_sessions`, the least recently used; an
evicted session's adopted files (its uploads and downloads) are deleted.
"""
from __future__ import annotations

import collections
import logging
import secrets
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterable

from segapp.service.cache import delete_files
from segapp.service.limits import SessionNotFound

logger = logging.getLogger(__name__)


class SessionTable:
    """Sessions keyed by unguessable ids, least recently used last-evicted; thread-safe.

    Sessions are any objects with a `last_used` attribute (seconds of `clock`). An evicted
    session gets its `close()` called, if it has one, then `on_close(session)`, outside the
    table's lock; `close(sid)` only removes it (the caller closes it)."""

    def __init__(self, max_sessions: int, idle_seconds: float, clock: Callable[[], float] = time.monotonic,
                 on_close: Callable[[Any], None] | None = None) -> None:
        self.max_sessions = max_sessions
        self.idle_seconds = idle_seconds
        self._clock = clock
        self._on_close = on_close
        self._lock = threading.Lock()
        self._sessions: collections.OrderedDict[str, Any] = collections.OrderedDict()

    def create(self, factory: Callable[[str, float], Any]) -> str:
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

    def get(self, sid: str | None) -> Any:
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
            close = getattr(session, "close", None)  # sessions of any type: a close() is optional
            if close is not None:
                close()
            if self._on_close is not None:
                self._on_close(session)


class SessionGuard:
    """Context manager: the session, locked against concurrent requests of the same user.
    Sessions carry a `lock` (threading.Lock)."""

    def __init__(self, session: Any) -> None:
        self.session = session

    def __enter__(self) -> Any:
        self.session.lock.acquire()
        return self.session

    def __exit__(self, *exc) -> None:
        self.session.lock.release()


def delete_owned_files(session: Any, keep: Iterable[Path] = ()) -> None:
    """Delete the files a closed session adopted (its `files` set), except those in `keep`."""
    if session.files:
        count = delete_files(sorted(session.files), keep=keep)
        session.files.clear()
        if count:
            logger.info("deleted %d file(s) of a closed session", count)
