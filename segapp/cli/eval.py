"""`segapp eval coco`: promptable-segmentation mIoU on a COCO-format dataset.

    segapp eval coco --images val2017 --annotations instances_val2017.json \\
        --checkpoint checkpoints/sam2.1_hiera_tiny.pt --prompt clicks --clicks 5 --out eval_out
    segapp eval coco --images val2017 --annotations instances_val2017.json --predictor grabcut

Without --model, --checkpoint and --predictor: sam2.1_hiera_t if downloaded, else the bundled
small model segapp_small (the rule: segapp.cli.models).
Writes report.json, per_instance.csv and miou_vs_clicks.png into --out and prints a table.
Exit codes: 0 done, 1 evaluated but part of the dataset was unusable (missing or unreadable
images, malformed annotations; listed in the report) or nothing could be evaluated, 2 usage
errors (bad arguments, missing or malformed annotation file).
The protocol is described in docs/evaluation.md.
"""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

from segapp.cli import EXIT_FAILED, EXIT_OK, EXIT_USAGE, CLIError
from segapp.cli.eval_options import (add_clicks_option, add_model_options, add_output_options, build_predictor,
                                     check_box_baseline, check_checkpoint, check_clicks_and_limit,
                                     check_model_or_baseline, choose_evaluated_model)

logger = logging.getLogger(__name__)

PREDICTORS = ("box-baseline", "grabcut")


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "eval", help="evaluate segmentation quality on a dataset",
        description="Evaluate promptable segmentation on a dataset.")
    datasets = parser.add_subparsers(dest="dataset", metavar="DATASET")
    coco = datasets.add_parser(
        "coco", help="mIoU and NoC of box, point or click prompts on COCO instances",
        description="Promptable-segmentation mIoU on COCO instances (protocol: "
                    "docs/evaluation.md). Writes report.json, per_instance.csv and "
                    "miou_vs_clicks.png into --out.")
    coco.add_argument("--images", required=True, type=Path, metavar="DIR",
                      help="folder of the images (e.g. coco/val2017)")
    coco.add_argument("--annotations", required=True, type=Path, metavar="JSON",
                      help="COCO instances file (e.g. instances_val2017.json)")
    coco.add_argument("--prompt", choices=("box", "point", "clicks"), default="box",
                      help="box: the annotation's box; point: one click at the pixel farthest from "
                           "the object's boundary; clicks: K interactive clicks, each at the pixel "
                           "farthest from the boundary of the larger error region (default: box)")
    add_clicks_option(coco, 5)
    add_model_options(coco, PREDICTORS)
    coco.add_argument("--max-images", type=int, metavar="N",
                      help="evaluate the first N images (by image id) only")
    coco.add_argument("--include-crowd", action="store_true",
                      help="also evaluate crowd regions (iscrowd == 1)")
    coco.add_argument("--min-area", type=float, default=0.0, metavar="A",
                      help="skip annotations whose `area` is below A pixels (default: 0)")
    add_output_options(coco, "eval_out")
    coco.set_defaults(func=run_coco)
    from segapp.cli import eval_folder, eval_video

    eval_video.register(datasets)
    eval_folder.register(datasets)
    parser.set_defaults(func=_needs_dataset)


def _needs_dataset(args: argparse.Namespace) -> int:
    raise CLIError("name a dataset: `segapp eval coco --images DIR --annotations JSON ...`, "
                   "`segapp eval video --videos DIR ...` or `segapp eval folder --images DIR "
                   "--masks DIR ...`", EXIT_USAGE)


def _check_args(args: argparse.Namespace) -> None:
    from segapp.cli.models import bundled_fallback

    check_clicks_and_limit(args)
    if args.min_area < 0:
        raise CLIError(f"--min-area must not be negative, got {args.min_area:g}")
    if not args.images.is_dir():
        raise CLIError(f"image folder not found: {args.images}")
    check_model_or_baseline(args)
    check_box_baseline(args)
    check_checkpoint(args, f"; {bundled_fallback()}")


def make_image_predictor(args: argparse.Namespace):
    """(predictor, the report's `predictor` entry)."""
    if args.predictor:
        from segapp.evaluation.baselines import BASELINES

        return BASELINES[args.predictor](), {"name": args.predictor, "model": None,
                                             "checkpoint": None}
    from segapp.image_predictor import ImagePredictor

    choice, info = choose_evaluated_model(args, "segapp.ImagePredictor")
    return build_predictor(args, choice, ImagePredictor), info


def run_coco(args: argparse.Namespace) -> int:
    from segapp.evaluation.coco import BAD_INPUT_SKIPS, AnnotationFileError, load_coco_instances

    _check_args(args)
    try:
        dataset = load_coco_instances(args.annotations, args.images,
                                      include_crowd=args.include_crowd, min_area=args.min_area,
                                      max_images=args.max_images)
    except AnnotationFileError as err:
        raise CLIError(str(err), EXIT_USAGE) from err
    if not dataset.images:
        missing = sum(s.reason == "missing_image_file" for s in dataset.skipped)
        hint = (f" ({missing} instances' image files are missing from {args.images}: is it the "
                "right folder?)" if missing else "")
        raise CLIError(f"no instance to evaluate in {args.annotations}{hint}", EXIT_FAILED)

    return evaluate_and_report(args, dataset, args.clicks, {"include_crowd": args.include_crowd,
                                                            "min_area": args.min_area, "max_images": args.max_images},
                               BAD_INPUT_SKIPS, "instances")


def evaluate_and_report(args: argparse.Namespace, dataset, num_clicks: int | None, settings: dict,
                        bad_input_reasons, what: str, file_names: dict[int, str] | None = None) -> int:
    """Evaluate --predictor or the model on `dataset` with --prompt, write the report, the
    per-instance CSV and the plot into --out, print the table -> the exit code: EXIT_FAILED when
    nothing was evaluated (CLIError) or `what` (e.g. "instances") were skipped for bad input."""
    from segapp.evaluation import runner

    predictor, predictor_info = make_image_predictor(args)
    result = runner.evaluate(predictor, dataset, args.prompt, num_clicks, progress=not args.no_progress)
    if hasattr(predictor, "stats"):
        predictor_info.update(predictor.stats())
    report = runner.build_report(result, dataset, predictor_info, settings)
    title = f"{predictor_info['model'] or predictor_info['name']}, --prompt {args.prompt}"
    paths = runner.write_outputs(args.out, result, report, title, file_names)
    log_skipped(result.skipped, bad_input_reasons)
    if not result.instances:
        raise CLIError(f"no instance could be evaluated (see {paths['report']})", EXIT_FAILED)
    print(runner.format_table(result))
    print(f"wrote {paths['report']}, {paths['csv']}, {paths['plot']}")
    bad = sum(s.reason in bad_input_reasons for s in result.skipped)
    if bad:
        logger.error("%d %s could not be evaluated because of bad input; see 'skipped' in %s", bad, what,
                     paths["report"])
        return EXIT_FAILED
    return EXIT_OK


def log_skipped(skipped, bad_input_reasons=None) -> None:
    """One log line per skip reason: a warning for bad input, info for the protocol's own."""
    from segapp.evaluation.coco import BAD_INPUT_SKIPS

    bad = BAD_INPUT_SKIPS if bad_input_reasons is None else bad_input_reasons
    counts: dict[str, list] = {}
    for s in skipped:
        counts.setdefault(s.reason, []).append(s)
    for reason, items in sorted(counts.items()):
        example = items[0]
        log = logger.warning if reason in bad else logger.info
        log("skipped %d instance(s): %s (e.g. image %s, annotation %s: %s)", len(items),
                       reason.replace("_", " "), example.image_id, example.annotation_id,
                       example.detail)
