"""`segapp demo`: the web demo (Gradio), for images (and video, when the video predictor is built in).

    segapp demo                                   # sam2.1_hiera_t if downloaded, else the bundled segapp_small
    segapp demo --model segapp_small              # the small model shipped with segapp (images only)
    segapp demo --model sam2.1_hiera_l --checkpoint weights/sam2.1_hiera_large.pt
    segapp demo --model test_tiny                 # random weights: tests and development only
    segapp demo --host 0.0.0.0 --port 8080        # listen beyond this machine (default: 127.0.0.1)

Which model runs without --model and --checkpoint: segapp.cli.models (the same rule as
`segapp segment` and `segapp eval coco`).

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
    from segapp.bundled import NAME as BUNDLED
    from segapp.demo import DEFAULT_HOST, DEFAULT_PORT
    from segapp.registry import DEFAULT_CHECKPOINT

    parser = subparsers.add_parser(
        "demo",
        help="run the web demo (Gradio) on this machine",
        description="Run the web demo: click to segment images, segment everything, download "
        "masks; also two API endpoints for gradio_client (/segment_image, /segment_everything).",
    )
    parser.add_argument("--model", default=None,
                        help=f"config name or YAML path (default: {DEFAULT_CHECKPOINT} if downloaded, "
                        f"else the bundled {BUNDLED}); "
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


def resolve_checkpoint(model: str | None, checkpoint: Path | None) -> Path | None:
    """The checkpoint to load (see segapp.cli.models.choose_model); None only for the
    random-weights test model. Raises CLIError saying how to get one."""
    from segapp.cli.models import choose_model

    return choose_model(model, checkpoint).checkpoint


def model_config(model: str) -> str:
    """The config to build for a model name (registry aliases such as 'tiny' included)."""
    from segapp.cli.models import official_config

    return official_config(model)


def build_service(model: str | None = None, checkpoint: Path | None = None, device: str | None = None):
    """(DemoService, the note shown under the title, the ModelChoice) for these arguments:
    everything `segapp demo` does before it serves."""
    from segapp.build import build_model
    from segapp.checkpoint import CheckpointError
    from segapp.cli.models import choose_model
    from segapp.demo.service import DemoService

    choice = choose_model(model, checkpoint)
    try:
        built = build_model(choice.config, choice.checkpoint, device=device)
    except (ValueError, FileNotFoundError, CheckpointError) as err:
        raise CLIError(f"cannot build model {choice.config}: {err}") from err
    if choice.random_weights:
        note = f"Model **{choice.config}** with **random weights** (for tests and development: masks are meaningless)."
        amg = TEST_MODEL_AMG
    elif choice.bundled:
        note = f"Model **{choice.description}**."
        amg = None
    else:
        note = f"Model **{choice.config}**, checkpoint `{choice.checkpoint.name}`."
        amg = None
    return DemoService(built, amg_options=amg), note, choice


def run(args: argparse.Namespace) -> int:
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    try:
        import gradio  # noqa: F401
    except ImportError:
        raise CLIError("the demo needs Gradio: pip install 'segapp[demo]'", EXIT_USAGE) from None
    from segapp.demo.app import launch

    if args.port < 0 or args.port > 65535:
        raise CLIError(f"--port must be in 0..65535, got {args.port}")
    service, note, choice = build_service(args.model, args.checkpoint, args.device)
    print(choice.line, flush=True)
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        logger.warning("listening on %s: the demo is reachable from other machines", args.host)
    print(f"segapp demo on http://{args.host}:{args.port}/  (Ctrl+C to stop)", flush=True)
    launch(service, host=args.host, port=args.port, share=args.share, model_note=note, block=True)
    return EXIT_OK
