"""The Ray engine of `segapp segment`: the same pipeline on Ray Data, across a cluster.

The inputs are cut into the same chunks as the local engine (so every image is encoded in
the same batch and the outputs are byte-identical); a Ray dataset holds one row per chunk
that still has work, and `map_batches` sends the rows to an actor pool in which each actor
holds one model (one GPU each when the cluster has GPUs). Each actor decodes, segments and
writes its chunks with the local engine's per-input code (`prepare_chunk`, `run_chunk`),
straight into the output folder, which must therefore be visible to every node (a shared
filesystem) on a multi-node cluster. The driver then writes the manifest and merged COCO
files from the per-input records, exactly as the local engine does.

Ray is an optional extra (`pip install 'segapp[ray]'`) and is imported only here, lazily.
Which cluster: an already initialised Ray, else `ray.init()`, which joins the cluster named
by the RAY_ADDRESS environment variable (e.g. `RAY_ADDRESS=auto` on a cluster node, or
`ray://head:10001`) or starts a local one.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np

from segapp.batch.inputs import Input
from segapp.batch.outputs import RunState
from segapp.batch.chunks import chunks, prepare_chunk, run_chunk
from segapp.batch.config import ModelSpec, Options, RunSummary
from segapp.batch.prompts import DEFAULT_CATEGORY, Prompts
from segapp.batch.segmenter import Segmenter

logger = logging.getLogger(__name__)

CPUS_PER_ACTOR = 4  # default actor size on clusters without GPUs


class RayMissing(RuntimeError):
    """Ray is not installed."""


def import_ray():
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError as err:
        raise RayMissing("the Ray engine needs Ray Data, an optional extra: pip install 'segapp[ray]' "
                         f"(import failed: {err})") from err
    return ray


class ChunkWorker:
    """Ray Data callable class: built once per actor (one model each), then called with
    batches of chunk indices; returns how many inputs of each chunk it wrote."""

    def __init__(self, items: list[Input], spec: ModelSpec, options: Options, prompts: Prompts | None,
                 out: str) -> None:
        self.chunks = chunks(items, options.batch_size)
        self.options = options
        self.state = RunState(Path(out))
        self.segmenter = Segmenter(spec, options, prompts)
        self.stored_pixels = prompts is not None and prompts.stored_pixels

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        indices, written = [], []
        for index in batch["chunk"]:
            decoded = prepare_chunk(self.chunks[int(index)], self.state, self.options.formats, self.options.resume,
                                    stored_pixels=self.stored_pixels)
            records = []
            if decoded is not None:
                # No writer thread here: Ray overlaps actors with each other and with decoding.
                run_chunk(self.segmenter, decoded, self.state, lambda task: records.append(task()))
            indices.append(int(index))
            written.append(sum(1 for r in records if isinstance(r, dict)))
        return {"chunk": np.asarray(indices, dtype=np.int64), "inputs": np.asarray(written, dtype=np.int64)}


def actor_resources(ray, actors: int | None) -> tuple[int, dict[str, float]]:
    """(pool size, resources of each actor): one actor per GPU when there are GPUs, else
    actors of CPUS_PER_ACTOR CPUs (or the cluster's CPUs shared among `actors`)."""
    resources = ray.cluster_resources()
    gpus, cpus = int(resources.get("GPU", 0)), max(1, int(resources.get("CPU", 1)))
    if gpus:
        return (actors or gpus), {"num_gpus": 1}
    size = actors or max(1, cpus // CPUS_PER_ACTOR)
    return size, {"num_cpus": max(1, cpus // size)}


def run_ray(items: list[Input], spec: ModelSpec, options: Options, prompts: Prompts | None, out: Path,
            actors: int | None = None) -> RunSummary:
    """Segment `items` on Ray; outputs under `out` (shared by all nodes). Same outputs as run_local."""
    from tqdm import tqdm

    ray = import_ray()
    started = time.perf_counter()
    if not ray.is_initialized():
        ray.init()  # RAY_ADDRESS names the cluster; without it, a local one starts
    state = RunState(out)
    groups = chunks(items, options.batch_size)
    complete = [options.resume and state.is_complete(item, options.formats) for item in items]
    done_before = sum(complete)
    todo, k = [], 0
    for index, group in enumerate(groups):
        if not all(complete[k:k + len(group)]):
            todo.append(index)
        k += len(group)
    size, per_actor = actor_resources(ray, actors)
    size = max(1, min(size, len(todo)))
    logger.info("Ray: %d chunks to do on %d actor(s), each with %s", len(todo), size, per_actor)
    bar = tqdm(total=len(items), initial=done_before, unit="input", disable=not options.progress,
               dynamic_ncols=True, desc="segment (ray)")
    try:
        if todo:
            ds = ray.data.from_items([{"chunk": i} for i in todo], override_num_blocks=len(todo))
            ds = ds.map_batches(
                ChunkWorker, batch_size=1, batch_format="numpy",
                fn_constructor_kwargs={"items": items, "spec": spec, "options": options, "prompts": prompts,
                                       "out": str(Path(out).resolve())},
                compute=ray.data.ActorPoolStrategy(size=size), **per_actor)
            for row in ds.iter_rows():
                bar.update(int(row["inputs"]))
    finally:
        bar.close()
    categories = prompts.categories if prompts is not None else [dict(DEFAULT_CATEGORY)]
    records = state.finalise(items, options.formats, categories)
    return RunSummary(records, done_before, time.perf_counter() - started)
