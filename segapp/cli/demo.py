"""`segapp demo`: the web demo (Gradio), for images (and video, when the video predictor is built in).

    segapp demo                                   # sam2.1_hiera_t if downloaded, else the bundled segapp_small
    segapp demo --download sam2.1_hiera_t         # download it first if missing; offline, the bundled model
    segapp demo --model segapp_small              # the small model shipped with segapp
    segapp demo --model sam2.1_hiera_l --checkpoint weights/sam2.1_hiera_large.pt
    segapp demo --model test_tiny                 # random weights: tests and development only
    segapp demo --host 0.0.0.0 --port 8080        # listen beyond this machine (default: 127.0.0.1)

Which model runs without --model and --checkpoint: segapp.cli.models (the same rule as
`segapp segment` and `segapp eval coco`). `--download NAME` runs that official checkpoint,
downloading it into ./checkpoints when segapp does not find it (resumable and verified, as
`segapp download` does); when the download fails the demo still starts, on the bundled model,
after one line saying why and how to get full quality.

Exit codes: 0 after a clean shutdown, 2 when no checkpoint is available or arguments are bad.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from segapp.bundled import amg_filters as bundled_amg_filters
from segapp.cli import EXIT_OK, EXIT_USAGE, CLIError

logger = logging.getLogger(__name__)

# The random-weights config that may run without a checkpoint.
TEST_MODEL = "test_tiny"
# "Segment everything" on random weights: the official score filters would drop every mask.
TEST_MODEL_AMG = {"pred_iou_thresh": 0.0, "stability_score_thresh": 0.0}
# "Segment everything" on the bundled segapp_small: its own filters (segapp.bundled.AMG_FILTERS).
BUNDLED_MODEL_AMG = bundled_amg_filters(True)


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
    parser.add_argument("--download", metavar="NAME",
                        help=f"run this official checkpoint (e.g. {DEFAULT_CHECKPOINT}), downloading "
                        "it into ./checkpoints first if it is missing; if the download fails, run "
                        f"the bundled {BUNDLED} instead and say why")
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


def build_service(model: str | None = None, checkpoint: Path | None = None, device: str | None = None,
                  *, choice=None):
    """(DemoService, the note shown under the title, the ModelChoice) for these arguments:
    everything `segapp demo` does before it serves. choice: a ModelChoice made already
    (segapp.cli.models), in place of model and checkpoint."""
    from segapp.build import build_model
    from segapp.checkpoint import CheckpointError
    from segapp.cli.models import choose_model
    from segapp.service import DemoService

    if choice is None:
        choice = choose_model(model, checkpoint)
    try:
        built = build_model(choice.config, choice.checkpoint, device=device)
    except (ValueError, FileNotFoundError, CheckpointError) as err:
        raise CLIError(f"cannot build model {choice.config}: {err}") from err
    if choice.random_weights:
        note = f"Model **{choice.config}** with **random weights** (for tests and development: masks are meaningless)."
        amg = TEST_MODEL_AMG
    elif choice.bundled:
        note = (f"Model **{choice.description}**. Segment everything keeps masks with predicted IoU > "
                f"{BUNDLED_MODEL_AMG['pred_iou_thresh']:g} and stability >= "
                f"{BUNDLED_MODEL_AMG['stability_score_thresh']:g} (the official 0.8 and 0.95 keep "
                "few masks from this model).")
        amg = BUNDLED_MODEL_AMG
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
    from segapp.cli.models import choose_model, download_or_bundled

    notice = None
    if args.download is not None:
        if args.model is not None or args.checkpoint is not None:
            raise CLIError("--download NAME picks the model: give it without --model and --checkpoint")
        choice, notice = download_or_bundled(args.download)
        if notice is not None:
            print(f"segapp demo: {notice}", file=sys.stderr, flush=True)
    else:
        choice = choose_model(args.model, args.checkpoint)
    print(choice.line, flush=True)
    service, note, choice = build_service(device=args.device, choice=choice)
    if notice is not None:
        note = f"{note} {notice}"
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        logger.warning("listening on %s: the demo is reachable from other machines", args.host)
    print(f"segapp demo on http://{args.host}:{args.port}/  (Ctrl+C to stop)", flush=True)
    launch(service, host=args.host, port=args.port, share=args.share, model_note=note, block=True)
    return EXIT_OK
