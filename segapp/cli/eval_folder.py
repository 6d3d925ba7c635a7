"""`segapp eval folder`: mIoU and NoC on an image folder with a mask folder (the layout of the
interactive-segmentation benchmarks: GrabCut, Berkeley, DAVIS-345, COCO-MVal).

    segapp eval folder --images berkeley/img --masks berkeley/gt --prompt clicks \\
        --checkpoint checkpoints/sam2.1_hiera_tiny.pt --out eval_berkeley

Masks are matched to images by file stem; a palette mask gives one instance per index, a 0/255
mask one instance. Prompts, metrics and outputs are those of `segapp eval coco`, except that
`--prompt clicks` defaults to 20 clicks, the usual cap of NoC@85/90.
Exit codes: 0 done, 1 evaluated but part of the data was unusable (listed in the report) or
nothing could be evaluated, 2 usage errors. The protocol is described in docs/evaluation.md.
"""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

from segapp.cli import EXIT_FAILED, EXIT_USAGE, CLIError
from segapp.cli.eval_options import (add_clicks_option, add_model_options, add_output_options, check_box_baseline,
                                     check_checkpoint, check_clicks_and_limit, check_model_or_baseline)

logger = logging.getLogger(__name__)

DEFAULT_CLICKS = 20  # the usual cap of the interactive benchmarks' NoC


def register(datasets) -> None:
    """Add `folder` to the `segapp eval` dataset subparsers."""
    from segapp.cli.eval import PREDICTORS

    folder = datasets.add_parser(
        "folder", help="mIoU and NoC on an image folder with a mask folder (GrabCut, Berkeley, ...)",
        description="Promptable-segmentation mIoU and NoC on images with palette or 0/255 masks "
                    "matched by file name (protocol: docs/evaluation.md). Writes report.json, "
                    "per_instance.csv and miou_vs_clicks.png into --out.")
    folder.add_argument("--images", required=True, type=Path, metavar="DIR", help="image folder")
    folder.add_argument("--masks", required=True, type=Path, metavar="DIR",
                        help="mask folder: one palette or 0/255 mask per image, same file stem")
    folder.add_argument("--prompt", choices=("box", "point", "clicks"), default="box",
                        help="box: the mask's box; point: one click at the object's centre; "
                             "clicks: K interactive clicks (default: box)")
    add_clicks_option(folder, DEFAULT_CLICKS)
    add_model_options(folder, PREDICTORS)
    folder.add_argument("--max-images", type=int, metavar="N",
                        help="evaluate the first N images (natural order of names) only")
    add_output_options(folder, "eval_out")
    folder.set_defaults(func=run_folder)


def _check_args(args: argparse.Namespace) -> None:
    check_clicks_and_limit(args)
    check_model_or_baseline(args)
    check_box_baseline(args)
    check_checkpoint(args)


def run_folder(args: argparse.Namespace) -> int:
    from segapp.cli.eval import evaluate_and_report, log_skipped
    from segapp.evaluation import folder

    _check_args(args)
    try:
        dataset = folder.load_folder(args.images, args.masks, max_images=args.max_images)
    except folder.FolderDatasetError as err:
        raise CLIError(str(err), EXIT_USAGE) from err
    if not dataset.images:
        log_skipped(dataset.skipped, folder.FOLDER_BAD_INPUT_SKIPS)
        raise CLIError(f"no image of {args.images} has a usable mask in {args.masks} (see the "
                       "messages above)", EXIT_FAILED)
    num_clicks = (args.clicks or DEFAULT_CLICKS) if args.prompt == "clicks" else None
    return evaluate_and_report(args, dataset, num_clicks, {"max_images": args.max_images},
                               folder.FOLDER_BAD_INPUT_SKIPS, "image(s) or instance(s)", dataset.file_names)
