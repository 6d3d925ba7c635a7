"""Large freed buffers go back to the system, so a demo server's memory stays flat over uploads.

glibc's malloc raises its mmap threshold to the size of each large block freed (up to 32 MiB):
after the first embedding, the encoder's temporaries (tens of MB) are carved from the heap of
whichever Gradio worker thread ran the request, and each thread's heap keeps its high-water
mark. A `segapp demo` server grew by 65-77 MB between the 5th and the 30th upload into one
session (tests/test_demo_memory.py). Pinning the threshold at 4 MiB keeps such blocks in
mappings of their own, returned when freed (and heap tops over 8 MiB are trimmed): +25 MB over
the same uploads when pinned as the service starts (here), +12 MB when pinned before the model
loads ($MALLOC_MMAP_THRESHOLD_=4194304); embeddings no slower (256 KiB was flatter still but made
embeddings ~75% slower: page faults).
"""
from __future__ import annotations

import ctypes
import logging
import os

logger = logging.getLogger(__name__)

MMAP_THRESHOLD_BYTES = 4 * 1024 * 1024
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameter numbers
_ENV = "MALLOC_MMAP_THRESHOLD_"  # glibc's own setting: when the user set it, it is kept


def pin_mmap_threshold(nbytes: int = MMAP_THRESHOLD_BYTES) -> bool:
    """Pin glibc's mmap threshold at `nbytes` for this process (the dynamic threshold is then
    off) and its trim threshold at twice that (as glibc pairs them; a model loaded before may
    have raised it to 64 MiB, which kept freed heap tops); True when done. A no-op (False) outside glibc or when $MALLOC_MMAP_THRESHOLD_ is set."""
    if os.environ.get(_ENV):
        return False
    try:
        libc = ctypes.CDLL(None)
        libc.gnu_get_libc_version  # glibc only (musl and macOS have no such threshold)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    done = mallopt(_M_MMAP_THRESHOLD, int(nbytes)) == 1 and mallopt(_M_TRIM_THRESHOLD, 2 * int(nbytes)) == 1
    if not done:
        logger.warning("could not set malloc's mmap threshold to %d bytes", nbytes)
    return done


def release_free_memory() -> bool:
    """Give free heap memory back to the system from every malloc arena (glibc's malloc_trim);
    True when some was released. Called after each new image's embedding: with many Gradio
    worker threads (under load their pool grows), each thread's arena kept the high-water mark
    of the encoder's temporaries, and the pinned thresholds alone did not stop a server from
    growing (+64 MB from upload 5 to 30 in a loaded CI run). A no-op (False) outside glibc."""
    try:
        trim = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return False
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    return trim(0) == 1
