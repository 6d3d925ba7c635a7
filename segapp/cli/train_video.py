"""`segapp train-video`: train the video memory on clips, so that a model can track.

    segapp train-video --videos ../shared/data/davis2016 --hold-out 4 \\
        --annotations instances.json --images images/ --freeze image_encoder --out runs/video
    segapp train-video ... --out runs/video --resume      # continue from runs/video/last.pt

Clips of --clip-frames frames come from DAVIS-layout folders (--videos) and from COCO images as
pseudo-clips (--annotations/--images, the same image under a drifting affine jitter). Starts
from --init, or from the bundled weights for segapp_small. Writes last.pt, best.safetensors,
final.safetensors and log.csv into --out (docs/training.md, "Training the video memory"); the
weights' metadata lists the memory among the trained parts, so `VideoPredictor` accepts them.
Exit codes: 0 trained, 2 usage errors (missing or malformed folders, masks that do not match
their frames, bad arguments, an --out that holds a run and no --resume).
"""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

from segapp.cli import EXIT_OK, CLIError

logger = logging.getLogger(__name__)

DEFAULT_CONFIG = "segapp_small"


class _RecipeDefault:
    """An option's default: VideoTrainConfig's value, looked up only when --help shows it (so
    that building the parser does not import torch) and left to the config when not overridden."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __str__(self) -> str:
        from segapp.training.video_trainer import VideoTrainConfig

        value = getattr(VideoTrainConfig(), self.name)
        return f"{value:g}" if isinstance(value, float) else str(value)


# VideoTrainConfig fields set from options of the same name (underscores for dashes).
_RECIPE_OPTIONS = ("epochs", "clip_frames", "max_objects", "lr", "image_lr_scale", "weight_decay", "warmup_steps",
                   "grad_clip", "prob_mask", "prob_box", "correction_rounds", "prob_correct_frame", "amp", "seed",
                   "workers", "max_steps_per_epoch", "val_frames", "log_every")


def register(subparsers) -> None:
    recipe = _RecipeDefault
    parser = subparsers.add_parser(
        "train-video", help="train the video memory on clips (DAVIS-layout folders, COCO pseudo-clips)",
        description="Train the memory modules (memory encoder, memory attention, object pointers) and, "
                    "unless frozen, the image path on clips: a prompt on the first frame (mask, box or "
                    "clicks), every later frame tracked with memory, losses on every frame, as SAM 2 "
                    "trains. See docs/training.md.")
    data = parser.add_argument_group("data")
    data.add_argument("--videos", type=Path, action="append", default=[], metavar="DIR",
                      help="folder in the DAVIS layout: JPEGImages/<seq>/*.jpg and Annotations/<seq>/*.png "
                           "(repeatable)")
    data.add_argument("--annotations", type=Path, action="append", default=[], metavar="JSON",
                      help="COCO instances file whose images become pseudo-clips (repeatable, with --images)")
    data.add_argument("--images", type=Path, action="append", default=[], metavar="DIR",
                      help="folder of the images of the --annotations of the same position")
    data.add_argument("--max-images", type=int, metavar="N", help="use the first N images of each COCO source")
    data.add_argument("--val-videos", type=Path, action="append", default=[], metavar="DIR",
                      help="DAVIS-layout folder for validation J after each epoch (repeatable)")
    data.add_argument("--hold-out", type=int, default=0, metavar="N",
                      help="hold the last N sequences (by name) of --videos out of training and validate "
                           "on them (default: none)")
    data.add_argument("--val-frames", type=int, default=recipe("val_frames"), metavar="N",
                      help="frames of each validation sequence tracked, from its first (default: %(default)s)")
    data.add_argument("--clip-frames", type=int, default=recipe("clip_frames"), metavar="N",
                      help="frames per training clip (default: %(default)s)")
    data.add_argument("--max-objects", type=int, default=recipe("max_objects"), metavar="K",
                      help="objects per clip, among those visible on its first frame (default: %(default)s)")
    data.add_argument("--augment", choices=("strong", "none"), default="strong",
                      help="strong: one flip, affine map and colour jitter per clip; none: none (pseudo-clips "
                           "keep their drift) (default: %(default)s)")
    data.add_argument("--workers", type=int, default=recipe("workers"), metavar="N",
                      help="data-loading processes (default: %(default)s)")

    model = parser.add_argument_group("model")
    model.add_argument("--config", default=DEFAULT_CONFIG, metavar="NAME",
                       help="model config name or YAML path (default: %(default)s)")
    model.add_argument("--init", type=Path, metavar="CHECKPOINT",
                       help="start from these weights (default: the bundled weights for segapp_small, "
                            "random weights otherwise)")
    model.add_argument("--image-size", type=int, metavar="S", help="model input side (default: the config's)")
    model.add_argument("--freeze", action="append", default=[], metavar="PART",
                       help="do not train PART: image_encoder, prompt_encoder or mask_decoder (repeatable); "
                            "the memory parts are always trained")
    model.add_argument("--device", help="cpu, cuda, ... (default: the best available)")
    model.add_argument("--amp", default=recipe("amp"), metavar="MODE",
                       help="auto (bf16 autocast on CUDA), bf16 or off (default: %(default)s)")

    opt = parser.add_argument_group("optimisation")
    opt.add_argument("--epochs", type=int, default=recipe("epochs"),
                     help="total epochs; an epoch is one clip per sequence and image (default: %(default)s)")
    opt.add_argument("--lr", type=float, default=recipe("lr"), help="peak learning rate (default: %(default)s)")
    opt.add_argument("--image-lr-scale", type=float, default=recipe("image_lr_scale"),
                     help="lr of the image path's parts relative to --lr (default: %(default)s)")
    opt.add_argument("--weight-decay", type=float, default=recipe("weight_decay"),
                     help="AdamW weight decay (default: %(default)s)")
    opt.add_argument("--warmup-steps", type=int, default=recipe("warmup_steps"),
                     help="linear warm-up steps (default: %(default)s)")
    opt.add_argument("--grad-clip", type=float, default=recipe("grad_clip"),
                     help="max gradient norm, 0 for none (default: %(default)s)")
    opt.add_argument("--prob-mask", type=float, default=recipe("prob_mask"),
                     help="probability that the first-frame prompt is the mask (default: %(default)s)")
    opt.add_argument("--prob-box", type=float, default=recipe("prob_box"),
                     help="otherwise, probability of a box rather than one click (default: %(default)s)")
    opt.add_argument("--correction-rounds", type=int, default=recipe("correction_rounds"),
                     help="corrective clicks after a box or click, and on a corrected frame (default: %(default)s)")
    opt.add_argument("--prob-correct-frame", type=float, default=recipe("prob_correct_frame"),
                     help="probability that a random later frame gets corrective clicks (default: %(default)s)")
    opt.add_argument("--loss-weights", metavar="F,D,I,O",
                     help="weights of the focal, dice, IoU and object-score losses (default: SAM 2's 20,1,1,1)")
    opt.add_argument("--max-steps-per-epoch", type=int, metavar="N", help="cut epochs short (quick runs)")
    opt.add_argument("--seed", type=int, default=recipe("seed"),
                     help="seed of every random choice (default: %(default)s)")
    opt.add_argument("--log-every", type=int, default=recipe("log_every"),
                     help="clips between log lines (default: %(default)s)")

    out = parser.add_argument_group("output")
    out.add_argument("--out", type=Path, default=Path("train_video_out"), metavar="DIR",
                     help="output folder (default: ./train_video_out)")
    out.add_argument("--resume", action="store_true", help="continue the run saved in --out/last.pt")
    parser.set_defaults(func=run)


def _check_args(args: argparse.Namespace) -> None:
    from segapp.training.video_trainer import LAST_NAME

    if not args.videos and not args.annotations:
        raise CLIError("no training data: give --videos DIR (DAVIS layout) and/or --annotations JSON --images DIR")
    if len(args.annotations) != len(args.images):
        raise CLIError(f"{len(args.annotations)} --annotations for {len(args.images)} --images: "
                       "give one images folder per annotation file")
    for ann, images in zip(args.annotations, args.images):
        if not ann.is_file():
            raise CLIError(f"annotation file not found: {ann}")
        if not images.is_dir():
            raise CLIError(f"images folder not found: {images}")
    for folder in args.videos + args.val_videos:
        if not folder.is_dir():
            raise CLIError(f"video folder not found: {folder}")
    if args.hold_out < 0:
        raise CLIError(f"--hold-out must not be negative, got {args.hold_out}")
    if args.hold_out and not args.videos:
        raise CLIError("--hold-out needs --videos to hold sequences out of")
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


def _train_config(args: argparse.Namespace):
    from segapp.training.video_data import ClipAugment
    from segapp.training.video_trainer import VideoTrainConfig

    values = {name: getattr(args, name) for name in _RECIPE_OPTIONS
              if not isinstance(getattr(args, name), _RecipeDefault)}
    if args.loss_weights:
        from segapp.training.losses import LossWeights
        try:
            focal, dice, iou, obj = (float(x) for x in args.loss_weights.split(","))
        except ValueError:
            raise CLIError(f"--loss-weights takes four numbers F,D,I,O, got {args.loss_weights!r}") from None
        values["loss"] = LossWeights(focal, dice, iou, obj)
    augment = ClipAugment() if args.augment == "strong" else ClipAugment.none()
    try:
        return VideoTrainConfig(**values, freeze=tuple(dict.fromkeys(args.freeze)), augment=augment)
    except ValueError as err:
        raise CLIError(str(err)) from err


def _datasets(args: argparse.Namespace, config, image_size: int):
    """(training clips, validation clips or None, held-out sequence names)."""
    from segapp.evaluation.coco import AnnotationFileError
    from segapp.training.video_data import (ConcatClips, CocoPseudoClips, VideoDataError, VideoFolderClips,
                                            scan_video_folder)

    common = dict(image_size=image_size, clip_frames=config.clip_frames, max_objects=config.max_objects,
                  seed=config.seed)
    try:
        parts, held, val = [], [], None
        if args.videos:
            names = sorted({s.name for root in args.videos for s in scan_video_folder(root)})
            if args.hold_out >= len(names):
                raise CLIError(f"--hold-out {args.hold_out} leaves no training sequence of {len(names)}")
            held = names[len(names) - args.hold_out:] if args.hold_out else []
            train_names = [n for n in names if n not in held]
            parts.append(VideoFolderClips(args.videos, augment=config.augment, sequences=train_names, **common))
        if args.annotations:
            parts.append(CocoPseudoClips(args.annotations, args.images, augment=config.augment,
                                         max_images=args.max_images, **common))
        val_common = {**common, "clip_frames": config.val_frames}
        if args.val_videos:
            val = VideoFolderClips(args.val_videos, val=True, **val_common)
        elif held:
            val = VideoFolderClips(args.videos, val=True, sequences=held, **val_common)
    except (VideoDataError, AnnotationFileError) as err:
        raise CLIError(str(err)) from err
    train = parts[0] if len(parts) == 1 else ConcatClips(parts)
    return train, val, held


def run(args: argparse.Namespace) -> int:
    from segapp.build import build_model, is_bundled_config
    from segapp.build_info import model_info
    from segapp.checkpoint import CheckpointError
    from segapp.training.trainer import ResumeError
    from segapp.training.video_trainer import IMAGE_PATH_PARTS, MEMORY_PARTS, VideoTrainer

    _check_args(args)
    config = _train_config(args)
    try:
        model = build_model(args.config, args.init, device=args.device, image_size=args.image_size)
    except (ValueError, FileNotFoundError) as err:
        raise CLIError(str(err)) from err
    except CheckpointError as err:
        raise CLIError(f"{err}\n  (pass the --config of this checkpoint)") from err
    loaded = args.init is not None or is_bundled_config(args.config)
    info = model_info(model)
    prior = (info.trained_parts or IMAGE_PATH_PARTS + MEMORY_PARTS) if loaded else ()
    print(f"model: {info.label}")
    train, val, held = _datasets(args, config, model.image_size)
    extra = {"videos": [str(p) for p in args.videos], "annotations": [str(p) for p in args.annotations],
             "images": [str(p) for p in args.images], "val_videos": [str(p) for p in args.val_videos],
             "held_out": held, "init": str(args.init or ("bundled" if loaded else "")),
             "train_clip_count": len(train)}
    trainer = VideoTrainer(model, train, config, args.out, val_data=val, config_name=args.config,
                           prior_parts=tuple(prior), recipe_extra=extra)
    try:
        result = trainer.fit(resume=args.resume)
    except ResumeError as err:
        raise CLIError(str(err)) from err
    skipped = dict(train.skip_counts)
    best = (f"best validation J {result['best']:.4f}" if val is not None
            else f"lowest training loss {-result['best']:.4f}")
    print(f"trained {result['epochs']} epochs ({result['steps']} clips); {best}; weights: {result['final']}"
          + (f"; skipped: {skipped}" if skipped else ""))
    return EXIT_OK
