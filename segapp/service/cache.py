"""The demo's on-disk cache, kept bounded: uploads, rendered views and downloads.

Gradio copies every upload and every file or image a handler returns into its cache folder and
never deletes them while the server runs (176 MB after 110 uploads, growing). The demo gives
Gradio a private cache folder (`segapp.demo.app.launch`) and prunes it, with its own download
folder, here:
  - files owned by a session (its uploads and downloads) go when the session closes
    (`segapp.service`: evicted when idle or least recently used, or closed by Gradio);
  - every other file goes once older than `max_age_s` (a session's idle lifetime);
  - beyond `max_bytes` in all, the oldest files go first until the cache fits.
Files a live session still reads (an open video: frames are decoded lazily) are never deleted.
"""
from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Callable, Iterable

logger = logging.getLogger(__name__)

# Default cap on the cache's size: the largest video upload (100 MB) several times over.
DEFAULT_CACHE_MAX_BYTES = 512 * 1024 * 1024


class CacheJanitor:
    """Prunes the files under `roots` by age and total size, sparing those in `held()`.

    roots: folders owned by this demo (nothing outside them is touched).
    max_bytes: the most all files under the roots may take after a prune.
    max_age_s: files not modified for longer are deleted.
    held: paths that must stay (files live sessions read).
    clock: seconds, comparable with file modification times (time.time).
    """

    def __init__(self, roots: Iterable[str | Path], max_bytes: int = DEFAULT_CACHE_MAX_BYTES,
                 max_age_s: float = 30 * 60, held: Callable[[], Iterable[Path]] = tuple,
                 clock: Callable[[], float] = time.time) -> None:
        if max_bytes < 0 or max_age_s < 0:
            raise ValueError(f"max_bytes and max_age_s must be >= 0, got {max_bytes}, {max_age_s}")
        self.roots = [Path(r) for r in roots]
        self.max_bytes = max_bytes
        self.max_age_s = max_age_s
        self._held = held
        self._clock = clock
        self._lock = threading.Lock()

    def contains(self, path: str | Path) -> bool:
        """Whether `path` lies under one of the roots (only such files are ever deleted)."""
        resolved = Path(path).resolve()
        return any(resolved.is_relative_to(root.resolve()) for root in self.roots)

    def total_bytes(self) -> int:
        return sum(size for _, size, _ in self._files())

    def prune(self) -> int:
        """Delete expired files, then the oldest until the cache fits; returns bytes freed."""
        with self._lock:
            held = {Path(p).resolve() for p in self._held()}
            files = sorted(self._files(), key=lambda f: f[2])  # oldest first
            total = sum(size for _, size, _ in files)
            now, freed, removed = self._clock(), 0, 0
            for path, size, mtime in files:
                if path.resolve() in held:
                    continue
                if now - mtime <= self.max_age_s and total - freed <= self.max_bytes:
                    continue
                if _unlink(path):
                    freed += size
                    removed += 1
                    if path.parent not in self.roots:
                        _rmdir(path.parent)  # Gradio keeps one folder per file: drop it when empty
            if removed:
                logger.info("demo cache: deleted %d file(s), %.1f MB; %.1f MB left", removed, freed / 2**20,
                            (total - freed) / 2**20)
            if total - freed > self.max_bytes:
                logger.warning("demo cache: %.1f MB in files that open sessions still read, over the cap "
                               "of %.0f MB", (total - freed) / 2**20, self.max_bytes / 2**20)
            return freed

    def _files(self) -> list[tuple[Path, int, float]]:
        out = []
        for root in self.roots:
            if not root.is_dir():
                continue
            for path in root.rglob("*"):
                try:
                    if path.is_file() and not path.is_symlink():
                        st = path.stat()
                        out.append((path, st.st_size, st.st_mtime))
                except FileNotFoundError:  # deleted meanwhile (another request's prune)
                    continue
        return out


def delete_files(paths: Iterable[Path], keep: Iterable[Path] = ()) -> int:
    """Delete these files (and the folders they leave empty), except those in `keep`;
    returns how many were deleted. Missing files are skipped."""
    keep = {Path(p).resolve() for p in keep}
    count = 0
    for path in paths:
        path = Path(path)
        if path.resolve() in keep:
            continue
        if path.is_dir():
            for child in sorted(path.rglob("*"), key=lambda p: -len(p.parts)):
                count += _unlink(child) if child.is_file() else 0
                if child.is_dir():
                    _rmdir(child)
            _rmdir(path)
        elif _unlink(path):
            count += 1
            _rmdir(path.parent)
    return count


def _unlink(path: Path) -> bool:
    try:
        path.unlink()
        return True
    except FileNotFoundError:
        return False
    except OSError as err:
        logger.warning("demo cache: cannot delete %s: %s", path, err)
        return False


def _rmdir(path: Path) -> None:
    try:
        path.rmdir()
    except OSError:
        pass
