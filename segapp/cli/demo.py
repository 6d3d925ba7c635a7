"""`segapp demo`: the web demo (Gradio), for images (and video, when the video predictor is built in).

    segapp demo                                   # sam2.1_hiera_t from ./checkpoints
    segapp demo --model sam2.1_hiera_l --checkpoint weights/sam2.1_hiera_large.pt
    segapp demo --model test_tiny                 # random weights: tests and development only
    segapp demo --host 0.0.0.0 --port 8080        # listen beyond this machine (default: 127.0.0.1)

Exit codes: 0 after a clean shutdown, 2 when no checkpoint is available or arguments are bad.
"""
from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

from segapp.cli import EXIT_OK, EXIT_USAGE, CLIError

logger = logging.getLogger(__name__)

# The random-weights config that may run without a checkpoint.
TEST_MODEL = "test_tiny"
# "Segment everything" on random weights: the official score filters would drop every mask.
TEST_MODEL_AMG = {"pred_iou_thresh": 0.0, "stability_score_thresh": 0.0}


def register(subparsers) -> None:
    from segapp.demo import DEFAULT_HOST, DEFAULT_PORT
    from segapp.registry import DEFAULT_CHECKPOINT

    parser = subparsers.add_parser(
        "demo",
        help="run the web demo (Gradio) on this machine",
        description="Run the web demo: click to segment images, segment everything, download "
        "masks; also two API endpoints for gradio_client (/segment_image, /segment_everything).",
    )
    parser.add_argument("--model", default=DEFAULT_CHECKPOINT,
                        help=f"config name or YAML path (default: {DEFAULT_CHECKPOINT}); "
                        f"'{TEST_MODEL}' runs a tiny random-weights model without a checkpoint")
    parser.add_argument("--checkpoint", type=Path,
                        help="checkpoint file (default: the official one found by `segapp download`)")
    parser.add_argument("--device", help="cpu, cuda, mps, ... (default: the best available)")
    parser.add_argument("--host", default=DEFAULT_HOST,
                        help=f"address to listen on (default: {DEFAULT_HOST}, this machine only)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default: {DEFAULT_PORT})")
    parser.add_argument("--share", action="store_true",
                        help="also open a public Gradio share link (needs internet)")
    parser.set_defaults(func=run)


def resolve_checkpoint(model: str, checkpoint: Path | None) -> Path | None:
    """The checkpoint to load for `model`: the given path, else the downloaded official one;
    None only for the random-weights test model. Raises CLIError saying how to get one."""
    from segapp import registry

    if checkpoint is not None:
        if not checkpoint.is_file():
            raise CLIError(f"checkpoint not found: {checkpoint}", EXIT_USAGE)
        return checkpoint
    if model == TEST_MODEL:
        return None
    try:
        info = registry.get(model)
    except registry.UnknownCheckpointError:
        raise CLIError(f"no checkpoint for model {model!r}: pass --checkpoint PATH "
                       f"(or `--model {TEST_MODEL}` for a tiny random-weights model, for tests only)",
                       EXIT_USAGE) from None
    found = registry.find_local(info.config)
    if found is None:
        dirs = ", ".join(str(d) for d in registry.default_search_dirs())
        raise CLIError(
            f"no checkpoint for {info.config} found (looked in: {dirs}). Get it with:\n"
            f"    segapp download {info.config}\n"
            f"then run `segapp demo --model {info.config}` again, or pass --checkpoint PATH. "
            f"To try the interface with random weights: segapp demo --model {TEST_MODEL}",
            EXIT_USAGE)
    return found


def model_config(model: str) -> str:
    """The config to build for a model name (registry aliases such as 'tiny' included)."""
    from segapp import registry

    try:
        return registry.get(model).config
    except registry.UnknownCheckpointError:
        return model


def run(args: argparse.Namespace) -> int:
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    try:
        import gradio  # noqa: F401
    except ImportError:
        raise CLIError("the demo needs Gradio: pip install 'segapp[demo]'", EXIT_USAGE) from None
    from segapp.build import build_model
    from segapp.checkpoint import CheckpointError
    from segapp.demo.app import launch
    from segapp.demo.service import DemoService

    checkpoint = resolve_checkpoint(args.model, args.checkpoint)
    config = args.model if checkpoint is None else model_config(args.model)
    if args.port < 0 or args.port > 65535:
        raise CLIError(f"--port must be in 0..65535, got {args.port}")
    try:
        model = build_model(config, checkpoint, device=args.device)
    except (ValueError, FileNotFoundError, CheckpointError) as err:
        raise CLIError(f"cannot build model {config}: {err}") from err
    if checkpoint is None:
        note = f"Model **{config}** with **random weights** (for tests and development: masks are meaningless)."
        amg = TEST_MODEL_AMG
    else:
        note = f"Model **{config}**, checkpoint `{checkpoint.name}`."
        amg = None
    service = DemoService(model, amg_options=amg)
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        logger.warning("listening on %s: the demo is reachable from other machines", args.host)
    print(f"segapp demo on http://{args.host}:{args.port}/  (Ctrl+C to stop)", flush=True)
    launch(service, host=args.host, port=args.port, share=args.share, model_note=note, block=True)
    return EXIT_OK
