"""The unit of work of both engines of `segapp segment`: a chunk of consecutive inputs.

Inputs are cut into chunks of `batch_size` consecutive inputs. A chunk's images go through
the image encoder together (`set_image_batch`); its videos are tracked one by one. Chunks
are fixed by the sorted input list, never by what a previous run finished: on resume a
chunk with anything left to do is recomputed whole (only the missing inputs are written),
so every image is always encoded in the same batch and a resumed run writes the same
bytes as an uninterrupted one.

`prepare_chunk` is the reading stage, `run_chunk` the model stage; the writes it produces
are handed to the engine as callables (the local engine runs them on its writer thread, the
Ray engine in place).
"""
from __future__ import annotations

import logging
import time
from functools import partial
from typing import Any, Callable

from segapp.batch.decoding import Decoded, decode
from segapp.batch.inputs import Input
from segapp.batch.outputs import RunState
from segapp.batch.segmenter import Segmenter
from segapp.batch.writer import InputWriter

logger = logging.getLogger(__name__)


def chunks(items: list[Input], batch_size: int) -> list[list[Input]]:
    return [items[i:i + batch_size] for i in range(0, len(items), batch_size)]


def prepare_chunk(chunk: list[Input], state: RunState, formats: tuple[str, ...], resume: bool,
                  stored_pixels: bool = False) -> list[Decoded] | None:
    """Decode a chunk, or None when every input in it is already complete. stored_pixels:
    images as stored, EXIF orientation not applied (`Prompts.stored_pixels`)."""
    todo = [not (resume and state.is_complete(item, formats)) for item in chunk]
    if not any(todo):
        return None
    decoded = []
    for item, needed in zip(chunk, todo):
        if needed or item.kind == "image":  # complete images still join the encoder batch
            d = decode(item, stored_pixels)
            d.write = needed
            decoded.append(d)
    return decoded


def run_chunk(segmenter: Segmenter, decoded: list[Decoded], state: RunState,
              emit: Callable[[Callable[[], Any]], None]) -> None:
    """The model's part of one chunk. Every write is handed to `emit` as a callable (the
    local engine queues them for its writer thread; the Ray engine runs them in place);
    the callable that finishes an input returns its record."""
    fmt = segmenter.options.formats
    prompts = segmenter.prompts
    writers = {id(d): InputWriter(d, state, fmt, prompts) for d in decoded}
    images = [d for d in decoded if d.error is None and d.item.kind == "image"]
    if images:
        start = time.perf_counter()
        results = segmenter.segment_images(images)
        share = (time.perf_counter() - start) / len(images)
        for d, res in zip(images, results):
            if not d.write:
                continue
            w = writers[id(d)]
            if isinstance(res, LookupError):
                emit(_then_finish(w, w.skip, str(res), share))
            elif isinstance(res, Exception):
                emit(_then_finish(w, w.fail, _describe(res), share))
            else:
                emit(_then_finish(w, w.add, res, share))
    for d in decoded:
        if not d.write:
            continue
        w = writers[id(d)]
        if d.error is not None:
            emit(_then_finish(w, w.fail, d.error, 0.0))
        elif d.item.kind == "video":
            start = time.perf_counter()
            try:
                for frame, seg, rgb in segmenter.segment_video(d, with_frames=w.wants_frames):
                    emit(partial(w.add, seg, frame, rgb))
            except LookupError as err:
                emit(partial(w.skip, str(err)))
            except Exception as err:  # noqa: BLE001 - reported per input
                logger.debug("video %s failed", d.item.rel, exc_info=True)
                emit(partial(w.fail, _describe(err)))
            took = time.perf_counter() - start
            emit(partial(w.finish, took))


def _then_finish(w: InputWriter, action: Callable[[Any], Any], arg: Any, seconds: float) -> Callable[[], dict]:
    """A write task: `action(arg)` on the input's writer, then finish the input."""
    def task() -> dict:
        action(arg)
        return w.finish(seconds)
    return task


def _describe(err: Exception) -> str:
    text = str(err) or type(err).__name__
    return text if isinstance(err, (ValueError, RuntimeError)) else f"{type(err).__name__}: {text}"


__all__ = ["chunks", "prepare_chunk", "run_chunk"]
