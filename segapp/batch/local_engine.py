"""The local engine of `segapp segment`: the run on this machine, three stages overlapped with
two threads and bounded queues:

    reader thread:  decode the next chunks (images, video probes)      -> queue
    main thread:    the model (batched encoder, decoder, video tracker) -> queue
    writer thread:  instance-id PNGs, COCO fragments, overlays, records

A full or read-only disk stops the run at once (the finished inputs are kept and listed);
any other failure of a stage is raised on the main thread.
"""
from __future__ import annotations

import queue
import threading
import time
from pathlib import Path

from segapp.batch.chunks import chunks, prepare_chunk, run_chunk
from segapp.batch.config import ModelSpec, Options, RunSummary
from segapp.batch.inputs import Input
from segapp.batch.outputs import RunState, stops_run
from segapp.batch.prompts import Prompts
from segapp.batch.segmenter import Segmenter

QUEUE_CHUNKS = 2  # decoded chunks waiting for the model
QUEUE_WRITES = 64  # results waiting for the writer


def run_local(items: list[Input], spec: ModelSpec, options: Options, prompts: Prompts | None,
              out: Path) -> RunSummary:
    """Segment `items` on this machine; outputs go under `out`. Returns the run's records."""
    from tqdm import tqdm

    state = RunState(out)
    started = time.perf_counter()
    groups = chunks(items, options.batch_size)
    done_before = sum(1 for item in items if options.resume and state.is_complete(item, options.formats))
    segmenter = Segmenter(spec, options, prompts)

    to_model: queue.Queue = queue.Queue(maxsize=QUEUE_CHUNKS)
    to_writer: queue.Queue = queue.Queue(maxsize=QUEUE_WRITES)
    stop = threading.Event()
    failures: list[BaseException] = []
    bar = tqdm(total=len(items), initial=done_before, unit="input", disable=not options.progress,
               dynamic_ncols=True, desc="segment")

    def reader() -> None:
        try:
            for chunk in groups:
                if stop.is_set():
                    return
                decoded = prepare_chunk(chunk, state, options.formats, options.resume,
                                        stored_pixels=prompts is not None and prompts.stored_pixels)
                if decoded is not None:
                    to_model.put(decoded)
        except BaseException as err:  # noqa: BLE001 - re-raised on the main thread
            failures.append(err)
        finally:
            to_model.put(None)

    def writer() -> None:
        while True:
            task = to_writer.get()
            if task is None:
                return
            if failures:  # stopping: drain the queue, write nothing more
                continue
            try:
                result = task()
            except BaseException as err:  # noqa: BLE001 - re-raised on the main thread
                failures.append(err)
                stop.set()
                continue
            if isinstance(result, dict):
                bar.update(1)

    threads = [threading.Thread(target=reader, name="segment-reader", daemon=True),
               threading.Thread(target=writer, name="segment-writer", daemon=True)]
    for t in threads:
        t.start()
    try:
        while not stop.is_set():
            decoded = to_model.get()
            if decoded is None:
                break
            run_chunk(segmenter, decoded, state, to_writer.put)
    finally:
        stop.set()
        to_writer.put(None)
        threads[1].join()
        while threads[0].is_alive():  # unblock a reader waiting on a full queue
            try:
                to_model.get_nowait()
            except queue.Empty:
                threads[0].join(timeout=0.1)
        bar.close()
    categories = prompts.categories if prompts is not None else [{"id": 1, "name": "object"}]
    if failures:
        if stops_run(failures[0]):
            raise state.stopped(failures[0], items, options.formats, categories) from failures[0]
        raise failures[0]
    try:
        records = state.finalise(items, options.formats, categories)
    except OSError as err:
        if stops_run(err):
            raise state.stopped(err, items, options.formats, categories) from err
        raise
    return RunSummary(records, done_before, time.perf_counter() - started)


__all__ = ["run_local"]
