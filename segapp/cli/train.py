"""`segapp train`: train or fine-tune the image path on COCO-format instance masks.

    segapp train --annotations train.json --images train/ --config sam2.1_hiera_t \\
        --init checkpoints/sam2.1_hiera_tiny.pt --freeze image_encoder --epochs 10 \\
        --val-annotations val.json --val-images val/ --out runs/ft
    segapp train ... --out runs/ft --resume      # continue from runs/ft/last.pt

Writes last.pt, best.safetensors, final.safetensors and log.csv into --out (docs/training.md).
Exit codes: 0 trained, 2 usage errors (missing files, bad arguments, a checkpoint that does
not fit the config, an --out that holds a run and no --resume).
"""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

from segapp.cli import EXIT_OK, EXIT_USAGE, CLIError
from segapp.cli.training_options import (add_options, build_training_model, check_image_size, check_init, check_out,
                                         check_paired_sources, loss_weights, recipe_defaults, recipe_values)

logger = logging.getLogger(__name__)

AUGMENT_PRESETS = ("strong", "light", "object", "none", "copy-paste", "strong+copy-paste", "light+copy-paste",
                   "object+copy-paste")


def register(subparsers) -> None:
    recipe = recipe_defaults("segapp.training.recipe:TrainConfig")
    parser = subparsers.add_parser(
        "train", help="train or fine-tune on COCO-format instance masks",
        description="Train the image path (image encoder, prompt encoder, mask decoder) on "
                    "COCO-format instance masks with simulated box, point and corrective-click "
                    "prompts, as SAM 2 is trained. See docs/training.md.")
    data = parser.add_argument_group("data")
    data.add_argument("--annotations", required=True, type=Path, action="append", metavar="JSON",
                      help="COCO instances file of the training images (repeat with --images to "
                           "train on several datasets at once)")
    data.add_argument("--images", required=True, type=Path, action="append", metavar="DIR",
                      help="folder of the images of the --annotations of the same position")
    data.add_argument("--val-annotations", type=Path, action="append", metavar="JSON",
                      help="COCO instances file for validation mIoU after each epoch (repeatable)")
    data.add_argument("--val-images", type=Path, action="append", metavar="DIR",
                      help="folder of the validation images (one per --val-annotations)")
    data.add_argument("--val-max-images", type=int, metavar="N", help="validate on the first N images only")
    data.add_argument("--val-prompt", default=recipe("val_prompt"), metavar="PROMPT",
                      help="prompt of the validation mIoU: box, point or clicks (default: %(default)s)")
    add_options(data, recipe, "--max-images", helps={"--max-images": "train on the first N images only"})
    data.add_argument("--instances-per-image", type=int, default=recipe("instances_per_image"), metavar="K",
                      help="instances sampled per image and step (default: %(default)s)")
    data.add_argument("--augment", choices=AUGMENT_PRESETS, metavar="PRESET",
                      help="strong (scale/crop, flip, colour, copy-paste: for training from scratch), "
                           "light (flip, mild colour and scale: for fine-tuning), object (light, and crops "
                           "centred on one instance: for models run with box zoom) or none; "
                           "PRESET+copy-paste adds instances of other images pasted on top (scaled 0.5-1.5, "
                           "in half the samples), copy-paste alone is light+copy-paste "
                           "(default: strong, light with --init)")
    add_options(data, recipe, "--workers", helps={
        "--workers": "data-loading processes, 0 to load in the training process (default: one per core beside "
                     "the training process, at most 8)"})

    model = parser.add_argument_group("model")
    add_options(model, recipe, "--config", "--init", "--image-size", "--freeze", "--device", "--amp", helps={
        "--config": "model config name or YAML path (default: %(default)s); with --init, the config of that "
                    "checkpoint",
        "--init": "start from these weights (official .pt or segapp .safetensors); default: random weights "
                  "(training from scratch)",
        "--image-size": "model input side, a multiple of 32 (default: the config's)",
        "--freeze": "do not train PART: image_encoder, prompt_encoder or mask_decoder (repeatable); the memory "
                    "parts are never trained here"})

    opt = parser.add_argument_group("optimisation")
    add_options(opt, recipe, "--epochs", "--batch-size", "--lr")
    opt.add_argument("--encoder-lr-scale", type=float, default=recipe("encoder_lr_scale"),
                     help="the image encoder's lr relative to --lr (default: %(default)s)")
    add_options(opt, recipe, "--weight-decay", "--warmup-steps", "--grad-clip", "--correction-rounds",
                "--loss-weights", helps={
                    "--correction-rounds": "corrective-click rounds after the first prompt (default: %(default)s)"})
    opt.add_argument("--loss-resolution", default=recipe("loss_resolution"), metavar="RES",
                     help="mask (the decoder's low-resolution logits against the share of each cell "
                          "the object covers) or input (logits upsampled to the input size, as SAM 2) "
                          "(default: %(default)s)")
    add_options(opt, recipe, "--prob-box", "--max-steps-per-epoch", "--seed", "--log-every", helps={
        "--prob-box": "probability that the first prompt is a box, not a point (default: %(default)s)",
        "--log-every": "steps between log lines (default: %(default)s)"})

    out = parser.add_argument_group("output")
    add_options(out, recipe, "--out", default=Path("train_out"), help="output folder (default: ./train_out)")
    add_options(out, recipe, "--resume")
    out.add_argument("--allow-changed-recipe", action="store_true",
                     help="with --resume: continue although the data, learning rate, batch size, "
                          "augmentation or another setting differs from the saved run's (refused "
                          "otherwise; --epochs, --workers and the validation prompt may always change)")
    parser.set_defaults(func=run)


def _check_args(args: argparse.Namespace) -> None:
    from segapp.training.epochs import LAST_NAME

    if len(args.annotations) != len(args.images):
        raise CLIError(f"{len(args.annotations)} --annotations for {len(args.images)} --images: "
                       "give one images folder per annotation file")
    check_paired_sources(args.annotations, args.images)
    val_ann, val_images = args.val_annotations or [], args.val_images or []
    if len(val_ann) != len(val_images):
        raise CLIError("give --val-annotations and --val-images together, one folder per file")
    check_paired_sources(val_ann, val_images, "validation")
    check_init(args.init)
    check_image_size(args.image_size)
    check_out(args.out, args.resume, LAST_NAME)


# TrainConfig fields set from options of the same name (underscores for dashes).
_RECIPE_OPTIONS = ("epochs", "batch_size", "instances_per_image", "lr", "encoder_lr_scale", "weight_decay",
                   "warmup_steps", "grad_clip", "correction_rounds", "prob_box", "amp", "seed", "workers",
                   "loss_resolution", "max_steps_per_epoch", "val_prompt", "log_every")


def _train_config(args: argparse.Namespace):
    from segapp.training.augment import AugmentConfig
    from segapp.training.recipe import TrainConfig

    values = recipe_values(args, _RECIPE_OPTIONS)
    augment = args.augment or ("light" if args.init is not None else "strong")
    logger.info("augmentation: %s", augment)
    if args.loss_weights:
        values["loss"] = loss_weights(args.loss_weights)
    try:
        return TrainConfig(**values, freeze=tuple(dict.fromkeys(args.freeze)),
                           augment=AugmentConfig.preset(augment))
    except ValueError as err:
        raise CLIError(str(err)) from err


def run(args: argparse.Namespace) -> int:
    from segapp.evaluation.coco import AnnotationFileError
    from segapp.training.data import CocoInstanceDataset, load_coco_sources
    from segapp.training.state import ResumeError
    from segapp.training.trainer import Trainer

    _check_args(args)
    config = _train_config(args)
    import torch

    # Random initial weights, and anything else drawn from the global generators, follow --seed.
    torch.manual_seed(config.seed)
    # Without --init, random weights (training from scratch), even for segapp_small,
    # whose bundled weights build_model would load otherwise.
    model = build_training_model(args.config, args.init, args.device, args.image_size,
                                 random_init=args.init is None)
    try:
        train = CocoInstanceDataset(args.annotations, args.images, model.image_size,
                                    instances_per_image=config.instances_per_image, augment=config.augment,
                                    seed=config.seed, max_images=args.max_images)
        val = None
        if args.val_annotations:
            val = load_coco_sources(args.val_annotations, args.val_images, max_images=args.val_max_images)
    except (AnnotationFileError, ValueError) as err:
        raise CLIError(str(err)) from err
    extra = {"train_annotations": [str(p) for p in args.annotations],
             "train_images": [str(p) for p in args.images],
             "val_annotations": [str(p) for p in args.val_annotations or []], "init": str(args.init or ""),
             "train_image_count": len(train), "max_images": args.max_images}
    trainer = Trainer(model, train, config, args.out, val_data=val, config_name=args.config, recipe_extra=extra)
    try:
        result = trainer.fit(resume=args.resume, allow_changed_recipe=args.allow_changed_recipe)
    except ResumeError as err:
        raise CLIError(str(err), EXIT_USAGE) from err
    best = (f"best validation mIoU {result['best']:.4f}" if val is not None
            else f"lowest training loss {-result['best']:.4f}")
    print(f"trained {result['epochs']} epochs ({result['steps']} steps); {best}; "
          f"weights: {result['final']}")
    return EXIT_OK
