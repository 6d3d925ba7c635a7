"""What `segapp eval coco`, `eval folder` and `eval video` share: the model options, their
checks, and the model a run evaluates with its entry in the report."""
from __future__ import annotations

import argparse
from pathlib import Path

from segapp.cli import EXIT_USAGE, CLIError

MODEL_HELP = ("model config name or YAML path (default: sam2.1_hiera_t if downloaded, else the bundled "
              "small model segapp_small)")
CHECKPOINT_HELP = "model checkpoint (official .pt or segapp .safetensors; default: the downloaded one for --model)"
BASELINE_HELP = "a model-free baseline instead of a model (box prompt only)"


def add_model_options(parser: argparse.ArgumentParser, baselines: tuple[str, ...], *,
                      model_help: str = MODEL_HELP, baseline_help: str = BASELINE_HELP) -> None:
    """--model, --checkpoint, --predictor (one of `baselines`) and --device."""
    parser.add_argument("--model", default=None, metavar="NAME", help=model_help)
    parser.add_argument("--checkpoint", type=Path, metavar="PATH", help=CHECKPOINT_HELP)
    parser.add_argument("--predictor", choices=baselines, help=baseline_help)
    parser.add_argument("--device", help="device for the model, e.g. cpu or cuda (default: best)")


def add_clicks_option(parser: argparse.ArgumentParser, default: int) -> None:
    parser.add_argument("--clicks", type=int, metavar="K",
                        help=f"number of clicks for --prompt clicks (default: {default})")


def add_output_options(parser: argparse.ArgumentParser, default_out: str) -> None:
    """--out (default ./default_out) and --no-progress."""
    parser.add_argument("--out", type=Path, default=Path(default_out), metavar="DIR",
                        help=f"output folder (default: ./{default_out})")
    parser.add_argument("--no-progress", action="store_true", help="do not show a progress bar")


def check_clicks_and_limit(args: argparse.Namespace) -> None:
    """--clicks only with --prompt clicks and at least 1; --max-images at least 1."""
    if args.clicks is not None:
        if args.prompt != "clicks":
            raise CLIError(f"--clicks applies to --prompt clicks, not --prompt {args.prompt}")
        if args.clicks < 1:
            raise CLIError(f"--clicks must be at least 1, got {args.clicks}")
    if args.max_images is not None and args.max_images < 1:
        raise CLIError(f"--max-images must be at least 1, got {args.max_images}")


def check_model_or_baseline(args: argparse.Namespace) -> None:
    if args.predictor and (args.checkpoint or args.model):
        raise CLIError("give --model/--checkpoint (a model) or --predictor (a baseline), not both")


def check_box_baseline(args: argparse.Namespace) -> None:
    """The image baselines take a box prompt only."""
    if args.predictor and args.prompt != "box":
        raise CLIError(f"the {args.predictor} predictor needs a box prompt: it has no use for "
                       f"clicks; use --prompt box, or a model (--checkpoint) for --prompt {args.prompt}")


def check_checkpoint(args: argparse.Namespace, hint: str = "") -> None:
    """A given --checkpoint exists (`hint`: more words for the message)."""
    if args.checkpoint and not args.checkpoint.is_file():
        raise CLIError(f"checkpoint not found: {args.checkpoint} (get one with "
                       f"`segapp download sam2.1_hiera_t`){hint}")


def choose_evaluated_model(args: argparse.Namespace, predictor_name: str):
    """The model of --model/--checkpoint (segapp.cli.models' rule), announced in one line ->
    (the ModelChoice, the report's `predictor` entry, with the checkpoint's SHA-256)."""
    from segapp.cli.models import choose_model
    from segapp.formats.hashing import sha256_file

    choice = choose_model(args.model, args.checkpoint)
    print(choice.line, flush=True)
    checkpoint = None if choice.checkpoint is None else {
        "path": str(choice.checkpoint), "sha256": sha256_file(choice.checkpoint)}
    info = {"name": predictor_name, "model": choice.config, "bundled": choice.bundled,
            "description": choice.description, "checkpoint": checkpoint}
    return choice, info


def build_predictor(args: argparse.Namespace, choice, wrap):
    """wrap(model) for the model of `choice` (the predictor over it); errors loading the model, or
    wrapping it, as CLIError (exit 2). A CLIError raised by `wrap` passes as it is."""
    import segapp
    from segapp.checkpoint import CheckpointError

    try:
        return wrap(segapp.build_model(choice.config, checkpoint=choice.checkpoint, device=args.device))
    except (CheckpointError, FileNotFoundError, ValueError) as err:
        raise CLIError(f"cannot load model {choice.config!r} from {choice.checkpoint}: {err}",
                       EXIT_USAGE) from err
