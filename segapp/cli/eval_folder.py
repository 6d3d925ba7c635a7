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

from segapp.cli import EXIT_FAILED, EXIT_OK, EXIT_USAGE, CLIError

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
    folder.add_argument("--clicks", type=int, metavar="K",
                        help=f"number of clicks for --prompt clicks (default: {DEFAULT_CLICKS})")
    folder.add_argument("--model", default=None, metavar="NAME",
                        help="model config name or YAML path (default: sam2.1_hiera_t if "
                             "downloaded, else the bundled small model segapp_small)")
    folder.add_argument("--checkpoint", type=Path, metavar="PATH",
                        help="model checkpoint (official .pt or segapp .safetensors)")
    folder.add_argument("--predictor", choices=PREDICTORS,
                        help="a model-free baseline instead of a model (box prompt only)")
    folder.add_argument("--device", help="device for the model, e.g. cpu or cuda (default: best)")
    folder.add_argument("--max-images", type=int, metavar="N",
                        help="evaluate the first N images (natural order of names) only")
    folder.add_argument("--out", type=Path, default=Path("eval_out"), metavar="DIR",
                        help="output folder (default: ./eval_out)")
    folder.add_argument("--no-progress", action="store_true", help="do not show a progress bar")
    folder.set_defaults(func=run_folder)


def _check_args(args: argparse.Namespace) -> None:
    if args.clicks is not None:
        if args.prompt != "clicks":
            raise CLIError(f"--clicks applies to --prompt clicks, not --prompt {args.prompt}")
        if args.clicks < 1:
            raise CLIError(f"--clicks must be at least 1, got {args.clicks}")
    if args.max_images is not None and args.max_images < 1:
        raise CLIError(f"--max-images must be at least 1, got {args.max_images}")
    if args.predictor and (args.checkpoint or args.model):
        raise CLIError("give --model/--checkpoint (a model) or --predictor (a baseline), not both")
    if args.predictor and args.prompt != "box":
        raise CLIError(f"the {args.predictor} predictor needs a box prompt: it has no use for "
                       f"clicks; use --prompt box, or a model (--checkpoint) for --prompt {args.prompt}")
    if args.checkpoint and not args.checkpoint.is_file():
        raise CLIError(f"checkpoint not found: {args.checkpoint} (get one with "
                       "`segapp download sam2.1_hiera_t`)")


def run_folder(args: argparse.Namespace) -> int:
    from segapp.cli.eval import log_skipped, make_image_predictor
    from segapp.evaluation import folder, runner

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
    predictor, predictor_info = make_image_predictor(args)
    result = runner.evaluate(predictor, dataset, args.prompt, num_clicks,
                             progress=not args.no_progress)
    if hasattr(predictor, "stats"):
        predictor_info.update(predictor.stats())
    report = runner.build_report(result, dataset, predictor_info, {"max_images": args.max_images})
    title = f"{predictor_info['model'] or predictor_info['name']}, --prompt {args.prompt}"
    paths = runner.write_outputs(args.out, result, report, title, dataset.file_names)
    log_skipped(result.skipped, folder.FOLDER_BAD_INPUT_SKIPS)
    if not result.instances:
        raise CLIError(f"no instance could be evaluated (see {paths['report']})", EXIT_FAILED)
    print(runner.format_table(result))
    print(f"wrote {paths['report']}, {paths['csv']}, {paths['plot']}")
    bad = sum(s.reason in folder.FOLDER_BAD_INPUT_SKIPS for s in result.skipped)
    if bad:
        logger.error("%d image(s) or instance(s) could not be evaluated because of bad input; see "
                     "'skipped' in %s", bad, paths["report"])
        return EXIT_FAILED
    return EXIT_OK
