"""`segapp pretrain`: pretrain a config's Hiera trunk as a masked autoencoder on unlabelled images.

    segapp pretrain --images photos/ more_photos/ --videos ../shared/data/davis2016 \\
        --config segapp_small --epochs 50 --out runs/mae
    segapp pretrain ... --out runs/mae --resume        # continue from runs/mae/last.pt
    segapp train --init runs/mae/pretrained.safetensors --config segapp_small --augment strong ...

Writes pretrained.safetensors (a whole model of the config: the pretrained trunk, the rest
randomly initialised), last.pt and log.csv into --out (docs/training.md, "Pretraining the
trunk"). Exit codes: 0 pretrained, 2 usage errors (unknown config, missing or empty folders, no
readable image, bad arguments, an --out that holds a run and no --resume, a resume with other
settings).
"""
from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

from segapp.cli import EXIT_OK, CLIError
from segapp.cli.training_options import (add_options, build_training_model, check_image_size, check_out,
                                         recipe_defaults, recipe_values)

logger = logging.getLogger(__name__)

def default_workers() -> int:
    """Data-loading processes: one core is left to the training step (up to 8)."""
    return max(0, min(8, (os.cpu_count() or 1) - 1))


# PretrainConfig fields set from options of the same name (underscores for dashes).
_RECIPE_OPTIONS = ("epochs", "batch_size", "lr", "weight_decay", "warmup_steps", "grad_clip", "mask_ratio",
                   "decoder_dim", "decoder_depth", "decoder_heads", "amp", "seed", "workers",
                   "max_steps_per_epoch", "log_every", "save_every")


def register(subparsers) -> None:
    recipe = recipe_defaults("segapp.training.pretrain:PretrainConfig")
    parser = subparsers.add_parser(
        "pretrain", help="pretrain the Hiera trunk as a masked autoencoder on unlabelled images",
        description="Masked-autoencoder pretraining of a config's Hiera trunk (mask units of 32 px, "
                    "a light pixel decoder, per-unit normalised pixel targets, loss on masked units), "
                    "on any folders of images and video frames. Writes a whole-model checkpoint that "
                    "`segapp train --init` accepts. See docs/training.md.")
    data = parser.add_argument_group("data")
    data.add_argument("--images", nargs="+", type=Path, default=[], metavar="DIR",
                      help="folders of images, read recursively (.jpg, .jpeg, .png)")
    data.add_argument("--videos", nargs="+", type=Path, default=[], metavar="DIR",
                      help="folders of video frames: DAVIS layout (JPEGImages/<seq>/*.jpg) or <seq>/*.jpg")
    add_options(data, recipe, "--max-images", helps={"--max-images": "use the first N images only"})
    add_options(data, recipe, "--workers", default=default_workers(),
                help="data-loading processes (default: %(default)s, from the CPU count)")

    model = parser.add_argument_group("model")
    add_options(model, recipe, "--config", "--image-size", "--device", "--amp", helps={
        "--config": "model config name or YAML path whose trunk is pretrained (default: %(default)s)",
        "--image-size": "input side, a multiple of 32 (default: the config's)"})
    model.add_argument("--mask-ratio", type=float, default=recipe("mask_ratio"),
                       help="fraction of mask units masked in each image (default: %(default)s)")
    model.add_argument("--decoder-dim", type=int, default=recipe("decoder_dim"),
                       help="decoder width (default: %(default)s)")
    model.add_argument("--decoder-depth", type=int, default=recipe("decoder_depth"),
                       help="decoder transformer blocks (default: %(default)s)")
    model.add_argument("--decoder-heads", type=int, default=recipe("decoder_heads"),
                       help="decoder attention heads (default: %(default)s)")

    opt = parser.add_argument_group("optimisation")
    add_options(opt, recipe, "--epochs", "--batch-size", "--lr", "--weight-decay", "--warmup-steps", "--grad-clip",
                "--max-steps-per-epoch", "--seed")

    out = parser.add_argument_group("output")
    add_options(out, recipe, "--out", default=Path("runs/mae"), help="output folder (default: %(default)s)")
    add_options(out, recipe, "--resume", "--log-every",
                helps={"--log-every": "steps per progress line and log.csv row (default: %(default)s)"})
    out.add_argument("--save-every", type=int, default=recipe("save_every"),
                     help="steps between checkpoints besides the epoch ends, 0 for none (default: %(default)s)")
    parser.set_defaults(func=run)


def _check_args(args: argparse.Namespace) -> None:
    from segapp.build import resolve_config
    from segapp.training.pretrain import LAST_NAME

    if not args.images and not args.videos:
        raise CLIError("give at least one folder: --images DIR [DIR ...] and/or --videos DIR [DIR ...]")
    try:
        resolve_config(args.config)
    except (ValueError, FileNotFoundError) as err:
        raise CLIError(str(err)) from err
    check_image_size(args.image_size)
    if args.max_images is not None and args.max_images < 1:
        raise CLIError(f"--max-images must be at least 1, got {args.max_images}")
    check_out(args.out, args.resume, LAST_NAME)


def run(args: argparse.Namespace) -> int:
    import torch

    from segapp.training.image_folders import ImageFolderDataset, NoImagesError
    from segapp.training.pretrain import PretrainConfig, Pretrainer, PretrainResumeError

    _check_args(args)
    values = recipe_values(args, _RECIPE_OPTIONS)
    try:
        config = PretrainConfig(**values)
    except ValueError as err:
        raise CLIError(str(err)) from err
    torch.manual_seed(config.seed)  # the random initial weights of the model and the decoder
    model = build_training_model(args.config, None, args.device, args.image_size, random_init=True)
    try:
        data = ImageFolderDataset(args.images, args.videos, image_size=model.image_size,
                                  scale=config.crop_scale, seed=config.seed, max_images=args.max_images)
        if data.skipped:
            print(f"skipped {len(data.skipped)} unreadable image files (listed in the log)")
        extra = {"images": [str(p) for p in args.images], "videos": [str(p) for p in args.videos],
                 "skipped_files": len(data.skipped)}
        trainer = Pretrainer(model, data, config, args.out, config_name=args.config, recipe_extra=extra)
    except (NoImagesError, ValueError) as err:
        raise CLIError(str(err)) from err
    try:
        result = trainer.fit(resume=args.resume)
    except PretrainResumeError as err:
        raise CLIError(str(err)) from err
    print(f"pretrained the {args.config} trunk on {len(data)} images: {result['steps']} steps, "
          f"last loss {result['loss']:.4f}; weights: {result['weights']} "
          f"(segapp train --init {result['weights']} --config {args.config})")
    return EXIT_OK
