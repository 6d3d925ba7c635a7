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
from segapp.cli.training_options import (add_options, build_training_model, check_image_size, check_init, check_out,
                                         check_paired_sources, loss_weights, recipe_defaults, recipe_values)

logger = logging.getLogger(__name__)

# VideoTrainConfig fields set from options of the same name (underscores for dashes).
_RECIPE_OPTIONS = ("epochs", "clip_frames", "max_objects", "lr", "image_lr_scale", "weight_decay", "warmup_steps",
                   "grad_clip", "prob_mask", "prob_box", "correction_rounds", "prob_correct_frame", "amp", "seed",
                   "workers", "max_steps_per_epoch", "val_frames", "log_every")


def register(subparsers) -> None:
    recipe = recipe_defaults("segapp.training.video_trainer:VideoTrainConfig")
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
    add_options(data, recipe, "--max-images", helps={"--max-images": "use the first N images of each COCO source"})
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
    add_options(data, recipe, "--workers", helps={"--workers": "data-loading processes (default: %(default)s)"})

    model = parser.add_argument_group("model")
    add_options(model, recipe, "--config", "--init", "--image-size", "--freeze", "--device", "--amp", helps={
        "--config": "model config name or YAML path (default: %(default)s)",
        "--init": "start from these weights (default: the bundled weights for segapp_small, random weights "
                  "otherwise)",
        "--image-size": "model input side (default: the config's)",
        "--freeze": "do not train PART: image_encoder, prompt_encoder or mask_decoder (repeatable); the memory "
                    "parts are always trained"})

    opt = parser.add_argument_group("optimisation")
    add_options(opt, recipe, "--epochs", "--lr", helps={
        "--epochs": "total epochs; an epoch is one clip per sequence and image (default: %(default)s)"})
    opt.add_argument("--image-lr-scale", type=float, default=recipe("image_lr_scale"),
                     help="lr of the image path's parts relative to --lr (default: %(default)s)")
    add_options(opt, recipe, "--weight-decay", "--warmup-steps", "--grad-clip",
                helps={"--warmup-steps": "linear warm-up steps (default: %(default)s)"})
    opt.add_argument("--prob-mask", type=float, default=recipe("prob_mask"),
                     help="probability that the first-frame prompt is the mask (default: %(default)s)")
    add_options(opt, recipe, "--prob-box", "--correction-rounds", helps={
        "--prob-box": "otherwise, probability of a box rather than one click (default: %(default)s)",
        "--correction-rounds": "corrective clicks after a box or click, and on a corrected frame "
                               "(default: %(default)s)"})
    opt.add_argument("--prob-correct-frame", type=float, default=recipe("prob_correct_frame"),
                     help="probability that a random later frame gets corrective clicks (default: %(default)s)")
    add_options(opt, recipe, "--loss-weights", "--max-steps-per-epoch", "--seed", "--log-every",
                helps={"--log-every": "clips between log lines (default: %(default)s)"})

    out = parser.add_argument_group("output")
    add_options(out, recipe, "--out", default=Path("train_video_out"),
                help="output folder (default: ./train_video_out)")
    add_options(out, recipe, "--resume")
    parser.set_defaults(func=run)


def _check_args(args: argparse.Namespace) -> None:
    from segapp.training.epochs import LAST_NAME

    if not args.videos and not args.annotations:
        raise CLIError("no training data: give --videos DIR (DAVIS layout) and/or --annotations JSON --images DIR")
    if len(args.annotations) != len(args.images):
        raise CLIError(f"{len(args.annotations)} --annotations for {len(args.images)} --images: "
                       "give one images folder per annotation file")
    check_paired_sources(args.annotations, args.images)
    for folder in args.videos + args.val_videos:
        if not folder.is_dir():
            raise CLIError(f"video folder not found: {folder}")
    if args.hold_out < 0:
        raise CLIError(f"--hold-out must not be negative, got {args.hold_out}")
    if args.hold_out and not args.videos:
        raise CLIError("--hold-out needs --videos to hold sequences out of")
    check_init(args.init)
    check_image_size(args.image_size)
    check_out(args.out, args.resume, LAST_NAME)


def _train_config(args: argparse.Namespace):
    from segapp.training.clip_augment import ClipAugment
    from segapp.training.video_trainer import VideoTrainConfig

    values = recipe_values(args, _RECIPE_OPTIONS)
    if args.loss_weights:
        values["loss"] = loss_weights(args.loss_weights)
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
    from segapp.build import is_bundled_config
    from segapp.build_info import model_info
    from segapp.training.state import ResumeError
    from segapp.training.video_trainer import IMAGE_PATH_PARTS, MEMORY_PARTS, VideoTrainer

    _check_args(args)
    config = _train_config(args)
    model = build_training_model(args.config, args.init, args.device, args.image_size)
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
