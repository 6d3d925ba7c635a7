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

logger = logging.getLogger(__name__)

DEFAULT_CONFIG = "segapp_small"
AUGMENT_PRESETS = ("strong", "light", "object", "none", "copy-paste", "strong+copy-paste", "light+copy-paste",
                   "object+copy-paste")


class _RecipeDefault:
    """An option's default: TrainConfig's value, looked up only when --help shows it (so that
    building the parser does not import torch) and left to TrainConfig when not overridden."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __str__(self) -> str:
        from segapp.training.trainer import TrainConfig

        value = getattr(TrainConfig(), self.name)
        return f"{value:g}" if isinstance(value, float) else str(value)


def register(subparsers) -> None:
    def recipe(name: str) -> _RecipeDefault:
        return _RecipeDefault(name)

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
    data.add_argument("--max-images", type=int, metavar="N", help="train on the first N images only")
    data.add_argument("--instances-per-image", type=int, default=recipe("instances_per_image"), metavar="K",
                      help="instances sampled per image and step (default: %(default)s)")
    data.add_argument("--augment", choices=AUGMENT_PRESETS, metavar="PRESET",
                      help="strong (scale/crop, flip, colour, copy-paste: for training from scratch), "
                           "light (flip, mild colour and scale: for fine-tuning), object (light, and crops "
                           "centred on one instance: for models run with box zoom) or none; "
                           "PRESET+copy-paste adds instances of other images pasted on top (scaled 0.5-1.5, "
                           "in half the samples), copy-paste alone is light+copy-paste "
                           "(default: strong, light with --init)")
    data.add_argument("--workers", type=int, default=recipe("workers"), metavar="N",
                      help="data-loading processes, 0 to load in the training process (default: one "
                           "per core beside the training process, at most 8)")

    model = parser.add_argument_group("model")
    model.add_argument("--config", default=DEFAULT_CONFIG, metavar="NAME",
                       help="model config name or YAML path (default: %(default)s); with --init, "
                            "the config of that checkpoint")
    model.add_argument("--init", type=Path, metavar="CHECKPOINT",
                       help="start from these weights (official .pt or segapp .safetensors); "
                            "default: random weights (training from scratch)")
    model.add_argument("--image-size", type=int, metavar="S",
                       help="model input side, a multiple of 32 (default: the config's)")
    model.add_argument("--freeze", action="append", default=[], metavar="PART",
                       help="do not train PART: image_encoder, prompt_encoder or mask_decoder "
                            "(repeatable); the memory parts are never trained here")
    model.add_argument("--device", help="cpu, cuda, ... (default: the best available)")
    model.add_argument("--amp", default=recipe("amp"), metavar="MODE",
                       help="auto (bf16 autocast on CUDA), bf16 or off (default: %(default)s)")

    opt = parser.add_argument_group("optimisation")
    opt.add_argument("--epochs", type=int, default=recipe("epochs"), help="total epochs (default: %(default)s)")
    opt.add_argument("--batch-size", type=int, default=recipe("batch_size"),
                     help="images per step (default: %(default)s)")
    opt.add_argument("--lr", type=float, default=recipe("lr"), help="peak learning rate (default: %(default)s)")
    opt.add_argument("--encoder-lr-scale", type=float, default=recipe("encoder_lr_scale"),
                     help="the image encoder's lr relative to --lr (default: %(default)s)")
    opt.add_argument("--weight-decay", type=float, default=recipe("weight_decay"),
                     help="AdamW weight decay (default: %(default)s)")
    opt.add_argument("--warmup-steps", type=int, default=recipe("warmup_steps"),
                     help="linear warm-up steps before the cosine decay (default: %(default)s)")
    opt.add_argument("--grad-clip", type=float, default=recipe("grad_clip"),
                     help="max gradient norm, 0 for none (default: %(default)s)")
    opt.add_argument("--correction-rounds", type=int, default=recipe("correction_rounds"),
                     help="corrective-click rounds after the first prompt (default: %(default)s)")
    opt.add_argument("--loss-weights", metavar="F,D,I,O",
                     help="weights of the focal, dice, IoU and object-score losses "
                          "(default: SAM 2's 20,1,1,1)")
    opt.add_argument("--loss-resolution", default=recipe("loss_resolution"), metavar="RES",
                     help="mask (the decoder's low-resolution logits against the share of each cell "
                          "the object covers) or input (logits upsampled to the input size, as SAM 2) "
                          "(default: %(default)s)")
    opt.add_argument("--prob-box", type=float, default=recipe("prob_box"),
                     help="probability that the first prompt is a box, not a point (default: %(default)s)")
    opt.add_argument("--max-steps-per-epoch", type=int, metavar="N", help="cut epochs short (quick runs)")
    opt.add_argument("--seed", type=int, default=recipe("seed"),
                     help="seed of every random choice (default: %(default)s)")
    opt.add_argument("--log-every", type=int, default=recipe("log_every"),
                     help="steps between log lines (default: %(default)s)")

    out = parser.add_argument_group("output")
    out.add_argument("--out", type=Path, default=Path("train_out"), metavar="DIR",
                     help="output folder (default: ./train_out)")
    out.add_argument("--resume", action="store_true", help="continue the run saved in --out/last.pt")
    out.add_argument("--allow-changed-recipe", action="store_true",
                     help="with --resume: continue although the data, learning rate, batch size, "
                          "augmentation or another setting differs from the saved run's (refused "
                          "otherwise; --epochs, --workers and the validation prompt may always change)")
    parser.set_defaults(func=run)


def _check_args(args: argparse.Namespace) -> None:
    from segapp.training.trainer import LAST_NAME

    if len(args.annotations) != len(args.images):
        raise CLIError(f"{len(args.annotations)} --annotations for {len(args.images)} --images: "
                       "give one images folder per annotation file")
    for ann, images in zip(args.annotations, args.images):
        if not ann.is_file():
            raise CLIError(f"annotation file not found: {ann}")
        if not images.is_dir():
            raise CLIError(f"images folder not found: {images}")
    val_ann, val_images = args.val_annotations or [], args.val_images or []
    if len(val_ann) != len(val_images):
        raise CLIError("give --val-annotations and --val-images together, one folder per file")
    for ann, images in zip(val_ann, val_images):
        if not ann.is_file():
            raise CLIError(f"validation annotation file not found: {ann}")
        if not images.is_dir():
            raise CLIError(f"validation images folder not found: {images}")
    if args.init is not None and not args.init.is_file():
        raise CLIError(f"--init checkpoint not found: {args.init}")
    if args.image_size is not None and (args.image_size <= 0 or args.image_size % 32):
        raise CLIError(f"--image-size must be a positive multiple of 32, got {args.image_size}")
    last = args.out / LAST_NAME
    if args.resume and not last.is_file():
        raise CLIError(f"--resume: {last} does not exist")
    if not args.resume and last.is_file():
        raise CLIError(f"{args.out} holds a run already ({last}): pass --resume to continue it, "
                       "or choose another --out")


# TrainConfig fields set from options of the same name (underscores for dashes).
_RECIPE_OPTIONS = ("epochs", "batch_size", "instances_per_image", "lr", "encoder_lr_scale", "weight_decay",
                   "warmup_steps", "grad_clip", "correction_rounds", "prob_box", "amp", "seed", "workers",
                   "loss_resolution", "max_steps_per_epoch", "val_prompt", "log_every")


def _train_config(args: argparse.Namespace):
    from segapp.training.data import AugmentConfig
    from segapp.training.trainer import TrainConfig

    values = {name: getattr(args, name) for name in _RECIPE_OPTIONS
              if not isinstance(getattr(args, name), _RecipeDefault)}
    augment = args.augment or ("light" if args.init is not None else "strong")
    logger.info("augmentation: %s", augment)
    if args.loss_weights:
        from segapp.training.losses import LossWeights
        try:
            focal, dice, iou, obj = (float(x) for x in args.loss_weights.split(","))
        except ValueError:
            raise CLIError(f"--loss-weights takes four numbers F,D,I,O, got {args.loss_weights!r}") from None
        values["loss"] = LossWeights(focal, dice, iou, obj)
    try:
        return TrainConfig(**values, freeze=tuple(dict.fromkeys(args.freeze)),
                           augment=AugmentConfig.preset(augment))
    except ValueError as err:
        raise CLIError(str(err)) from err


def run(args: argparse.Namespace) -> int:
    from segapp.build import build_model
    from segapp.checkpoint import CheckpointError
    from segapp.evaluation.coco import AnnotationFileError
    from segapp.training.data import CocoInstanceDataset, load_coco_sources
    from segapp.training.trainer import ResumeError, Trainer

    _check_args(args)
    config = _train_config(args)
    import torch

    # Random initial weights, and anything else drawn from the global generators, follow --seed.
    torch.manual_seed(config.seed)
    try:
        # Without --init, random weights (training from scratch), even for segapp_small,
        # whose bundled weights build_model would load otherwise.
        model = build_model(args.config, args.init, device=args.device, image_size=args.image_size,
                            random_init=args.init is None)
    except (ValueError, FileNotFoundError) as err:
        raise CLIError(str(err)) from err
    except CheckpointError as err:
        raise CLIError(f"{err}\n  (pass the --config of this checkpoint)") from err
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
