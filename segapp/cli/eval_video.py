"""`segapp eval video`: J, F and J&F of video object segmentation on DAVIS-layout folders.

    segapp eval video --videos DAVIS --checkpoint checkpoints/sam2.1_hiera_tiny.pt --out eval_video
    segapp eval video --videos DAVIS --sequences bear,boat --predictor first-mask

The prompt is given on the first frame: the ground-truth masks (`--prompt mask`, the
semi-supervised protocol), or a box or one click per object made from them. Writes report.json,
per_object.csv, per_sequence.csv and jf_per_sequence.png into --out and prints a table.
Exit codes: 0 done, 1 evaluated but some sequences were unusable (listed in the report, each
naming the file) or nothing could be evaluated, 2 usage errors (bad arguments, not a DAVIS
folder, unknown sequence, a model that cannot track video).
The protocol is described in docs/evaluation.md.
"""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

from segapp.cli import EXIT_FAILED, EXIT_OK, EXIT_USAGE, CLIError
from segapp.cli.eval_options import (add_model_options, add_output_options, build_predictor, check_checkpoint,
                                     check_model_or_baseline, choose_evaluated_model)

logger = logging.getLogger(__name__)

BASELINES = ("first-mask",)


def register(datasets) -> None:
    """Add `video` to the `segapp eval` dataset subparsers."""
    video = datasets.add_parser(
        "video", help="J, F and J&F of video object segmentation on DAVIS-layout folders",
        description="Video object segmentation J&F on a DAVIS-layout folder (JPEGImages/<seq>, "
                    "Annotations/<seq>; protocol: docs/evaluation.md). Writes report.json, "
                    "per_object.csv, per_sequence.csv and jf_per_sequence.png into --out.")
    video.add_argument("--videos", required=True, type=Path, metavar="DIR",
                       help="DAVIS-layout folder holding JPEGImages/ and Annotations/")
    video.add_argument("--sequences", metavar="LIST",
                       help="comma-separated sequence names, or a file with one per line "
                            "(default: every sequence in JPEGImages/)")
    video.add_argument("--prompt", choices=("mask", "box", "point"), default="mask",
                       help="first-frame prompt per object: its ground-truth mask "
                            "(semi-supervised, default), its box, or one click at its centre")
    add_model_options(video, BASELINES,
                      model_help="model config name or YAML path (default: sam2.1_hiera_t if downloaded)",
                      baseline_help="first-mask: the baseline copying each first-frame mask to every frame "
                                    "(--prompt mask only)")
    add_output_options(video, "eval_video")
    video.set_defaults(func=run_video)


def _check_args(args: argparse.Namespace) -> None:
    check_model_or_baseline(args)
    if args.predictor == "first-mask" and args.prompt != "mask":
        raise CLIError(f"the first-mask baseline copies the first frame's mask: it needs --prompt "
                       f"mask, not --prompt {args.prompt}")
    if not args.videos.is_dir():
        raise CLIError(f"video folder not found: {args.videos}")
    check_checkpoint(args)


def _make_tracker(args: argparse.Namespace):
    """(tracker, the report's `predictor` entry)."""
    from segapp.evaluation.video import FirstMaskTracker, PredictorTracker

    if args.predictor:
        return FirstMaskTracker(), {"name": args.predictor, "model": None, "checkpoint": None}
    import segapp
    from segapp.bundled import ImageOnlyModelError

    choice, info = choose_evaluated_model(args, "segapp.VideoPredictor")
    info["non_overlap_masks"] = True

    def video_predictor(model):
        try:
            return segapp.VideoPredictor(model, non_overlap_masks=True)
        except ImageOnlyModelError as err:
            raise CLIError(f"{err}; or run the baseline with --predictor first-mask", EXIT_USAGE) from err

    return PredictorTracker(build_predictor(args, choice, video_predictor)), info


def run_video(args: argparse.Namespace) -> int:
    from segapp.evaluation import davis, video

    _check_args(args)
    try:
        dataset = davis.load_davis(args.videos, davis.read_sequence_list(args.sequences))
    except davis.VideoDatasetError as err:
        raise CLIError(str(err), EXIT_USAGE) from err
    for s in dataset.skipped:
        logger.error("sequence %s not evaluated: %s", s.sequence, s.detail)
    if not dataset.sequences:
        raise CLIError(f"no sequence of {args.videos} can be evaluated (see the errors above)",
                       EXIT_FAILED)
    tracker, predictor_info = _make_tracker(args)
    result = video.evaluate_video(tracker, dataset, args.prompt, progress=not args.no_progress)
    for s in result.skipped[len(dataset.skipped):]:
        logger.error("sequence %s not evaluated: %s", s.sequence, s.detail)
    report = video.build_video_report(result, dataset, predictor_info,
                                      {"sequences": [s.name for s in dataset.sequences]})
    title = f"{predictor_info['model'] or predictor_info['name']}, --prompt {args.prompt}"
    paths = video.write_video_outputs(args.out, result, report, title)
    if not result.objects:
        raise CLIError(f"no sequence could be evaluated (see {paths['report']})", EXIT_FAILED)
    print(video.format_video_table(result))
    print(f"wrote {paths['report']}, {paths['objects_csv']}, {paths['sequences_csv']}, "
          f"{paths['plot']}")
    if result.bad_input:
        logger.error("%d sequence(s) could not be evaluated because of bad input; see 'skipped' "
                     "in %s", sum(s.reason not in davis.PROTOCOL_SKIPS for s in result.skipped),
                     paths["report"])
        return EXIT_FAILED
    return EXIT_OK
