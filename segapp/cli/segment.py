"""`segapp segment`: segment folders of images and videos, resumably, locally or on Ray.

    segapp segment photos/ clips/ --out seg_out                       # segment everything
    segapp segment photos/ --out seg_out --prompts prompts.json       # prompted (docs/segment.md)
    segapp segment val2017/ --out seg_out --prompts instances_val2017.json   # COCO boxes
    segapp segment photos/ --out seg_out --engine ray                 # on Ray (RAY_ADDRESS)

Without --model and --checkpoint: sam2.1_hiera_t if downloaded, else the bundled segapp_small
(images and videos, at lower quality). The rule: segapp.cli.models.

Exit codes: 0 every input succeeded (or was skipped for want of prompts), 1 some failed (see
the manifest and the summary), 2 usage errors. Rerunning the same command resumes.
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from segapp.bundled import AMG_FILTERS, amg_filters
from segapp.cli import EXIT_FAILED, EXIT_OK, EXIT_USAGE, CLIError
from segapp.formats.hashing import sha256_file

logger = logging.getLogger(__name__)

ENGINES = ("local", "ray")
# Prompts-file keys that match no input: how many are named one by one before a count.
MAX_UNMATCHED_LISTED = 10


def register(subparsers) -> None:
    from segapp.batch.outputs import FORMATS

    p = subparsers.add_parser(
        "segment", help="segment folders of images and videos (batch, resumable, local or Ray)",
        description="Segment images and videos: everything (no prompts), or the objects of a "
                    "prompts file (segapp JSON or COCO annotations). Outputs mirror the input tree "
                    "under --out: instance-id PNGs, one COCO results JSON, optional overlays and a "
                    "manifest. Rerunning the same command resumes. See docs/segment.md.")
    p.add_argument("inputs", nargs="*", type=Path, metavar="INPUT",
                   help="image or video files, or folders (searched recursively)")
    p.add_argument("--out", required=True, type=Path, metavar="DIR", help="output folder")
    p.add_argument("--prompts", type=Path, metavar="FILE",
                   help="prompts JSON (schema in docs/segment.md) or a COCO annotation file (boxes)")
    p.add_argument("--model", default=None, metavar="NAME",
                   help="model config name or YAML path (default: sam2.1_hiera_t if downloaded, else "
                        "the bundled segapp_small, which segments images but cannot track video)")
    p.add_argument("--checkpoint", type=Path, metavar="PATH",
                   help="model checkpoint (default: the downloaded official one for --model)")
    p.add_argument("--device", help="cpu, cuda, ... (default: the best available)")
    p.add_argument("--format", default="png,coco", metavar="LIST",
                   help=f"comma-separated outputs among {','.join(FORMATS)} (default: png,coco); mot, mots "
                        "and ytvis are tracking outputs of videos (MOT / MOTS Challenge text, YouTube-VIS JSON)")
    p.add_argument("--engine", choices=ENGINES, default="local",
                   help="local: this machine; ray: a Ray cluster (pip install 'segapp[ray]')")
    p.add_argument("--batch-size", type=int, default=4, metavar="N",
                   help="images per encoder batch (default: 4)")
    p.add_argument("--ray-actors", type=int, metavar="N",
                   help="Ray engine: model actors (default: one per GPU, else one per 4 CPUs)")
    p.add_argument("--no-resume", action="store_true",
                   help="recompute every input, even those a previous run finished")
    p.add_argument("--points-per-side", type=int, default=32, metavar="N",
                   help="segment everything: grid points per side (default: 32)")
    p.add_argument("--pred-iou-thresh", type=float, metavar="T",
                   help="segment everything: keep masks with predicted IoU above T (default: 0.8, the "
                        "official filter; %g for the bundled model)" % AMG_FILTERS["pred_iou_thresh"])
    p.add_argument("--stability-score-thresh", type=float, metavar="T",
                   help="segment everything: keep masks with stability at least T (default: 0.95; %g for "
                        "the bundled model)" % AMG_FILTERS["stability_score_thresh"])
    p.add_argument("--bf16-attention", action="store_true",
                   help="videos: run the memory attention kernels in bfloat16 (faster on CPUs with bf16 "
                        "matrix units and on GPUs; masks within the parity tolerance of fp32)")
    p.add_argument("--track-everything", nargs="?", type=int, const=10, default=None, metavar="K",
                   help="videos without prompts: segment everything every K frames (default 10), add the "
                        "objects no tracked object covers, merge duplicates, drop vanished ones "
                        "(segapp.VideoAutoTracker)")
    p.add_argument("--stream", metavar="SOURCE",
                   help="segment a live stream instead of INPUTs: a camera index (0), an rtsp:// or http(s):// "
                        "URL, or a growing video file; frame by frame on constant memory")
    p.add_argument("--max-frames", type=int, metavar="N", help="--stream: stop after N frames")
    p.add_argument("--stream-idle-timeout", type=float, default=2.0, metavar="S",
                   help="--stream: end when no new frame came for S seconds (default: 2)")
    p.add_argument("--no-progress", action="store_true", help="do not show a progress bar")
    p.set_defaults(func=run)


def parse_formats(text: str) -> tuple[str, ...]:
    from segapp.batch.outputs import FORMATS

    wanted = [f.strip().lower() for f in text.split(",") if f.strip()]
    bad = [f for f in wanted if f not in FORMATS]
    if bad or not wanted:
        raise CLIError(f"--format: unknown output(s) {', '.join(bad) or '(none)'}; choose from {','.join(FORMATS)}")
    return tuple(f for f in FORMATS if f in wanted)  # canonical order


def run(args: argparse.Namespace) -> int:
    from segapp import __version__
    from segapp.batch import inputs as inputs_mod
    from segapp.batch import prompts as prompts_mod
    from segapp.batch.config import ModelSpec, Options
    from segapp.batch.outputs import MANIFEST, VIDEO_FORMATS, OutputStopped, RunState

    formats = parse_formats(args.format)
    if args.batch_size < 1:
        raise CLIError(f"--batch-size must be at least 1, got {args.batch_size}")
    if args.points_per_side < 1:
        raise CLIError(f"--points-per-side must be at least 1, got {args.points_per_side}")
    if args.ray_actors is not None and (args.ray_actors < 1 or args.engine != "ray"):
        raise CLIError("--ray-actors needs --engine ray and a value of at least 1")
    if args.out.exists() and not args.out.is_dir():
        raise CLIError(f"--out {args.out} exists and is not a folder")
    if args.track_everything is not None and args.track_everything < 1:
        raise CLIError(f"--track-everything K needs K of at least 1, got {args.track_everything}")
    if args.stream is not None:
        return _run_stream(args, formats)
    if not args.inputs:
        raise CLIError("give INPUT files or folders to segment, or --stream SOURCE")
    try:
        inputs_mod.check_output_folder(args.inputs, args.out)
    except inputs_mod.InputError as err:
        raise CLIError(str(err)) from err
    prompts = None
    if args.prompts is not None:
        try:
            prompts = prompts_mod.load(args.prompts)
        except prompts_mod.PromptsError as err:
            raise CLIError(str(err)) from err
    from segapp.cli.models import choose_model

    choice = choose_model(args.model, args.checkpoint)
    print(choice.line, flush=True)  # first, before any warning about the inputs or prompts
    _default_amg_filters(args, choice)
    checkpoint = choice.checkpoint
    exclude = [args.out] + ([args.prompts] if args.prompts else [])
    try:
        items = inputs_mod.discover(args.inputs, exclude=exclude)
    except (FileNotFoundError, inputs_mod.InputError) as err:
        raise CLIError(str(err)) from err
    if not items:
        raise CLIError(f"no input files found in {', '.join(str(p) for p in args.inputs)}")
    video_only = [f for f in formats if f in VIDEO_FORMATS]
    if video_only and not any(i.kind == "video" for i in items):
        raise CLIError(f"--format {','.join(video_only)}: tracking outputs are written for videos, and none of "
                       f"the {len(items)} inputs is a video")
    if prompts is not None:
        unmatched = prompts.unmatched([i.rel for i in items])
        for key in unmatched[:MAX_UNMATCHED_LISTED]:
            logger.warning("prompts for %r match no input", key)
        if len(unmatched) > MAX_UNMATCHED_LISTED:
            logger.warning("... and %d more keys of %s match no input (%d in all)",
                           len(unmatched) - MAX_UNMATCHED_LISTED, args.prompts, len(unmatched))

    spec = ModelSpec(choice.config, str(checkpoint) if checkpoint else None, args.device)
    options = Options(formats=formats, batch_size=args.batch_size, points_per_side=args.points_per_side,
                      pred_iou_thresh=args.pred_iou_thresh, stability_score_thresh=args.stability_score_thresh,
                      resume=not args.no_resume, progress=not args.no_progress and sys.stderr.isatty(),
                      bf16_attention=args.bf16_attention, track_every=args.track_everything)
    signature = {
        "segapp": __version__, "model": spec.name, "bundled": choice.bundled,
        "checkpoint": None if checkpoint is None else {"name": checkpoint.name, "size": checkpoint.stat().st_size},
        "prompts": None if args.prompts is None else sha256_file(args.prompts),
        "formats": list(formats), "batch_size": args.batch_size, "points_per_side": args.points_per_side,
        "pred_iou_thresh": args.pred_iou_thresh, "stability_score_thresh": args.stability_score_thresh,
        "inputs": [i.rel for i in items],
    }
    if args.track_everything is not None:
        signature["track_everything"] = args.track_everything
    try:
        RunState(args.out).start(signature, resume=options.resume)
    except OSError as err:  # read-only, no permission, disk full: nothing written yet
        raise CLIError(f"cannot write to the output folder {args.out}: {err.strerror or err}",
                       exit_code=EXIT_FAILED) from err

    try:
        if args.engine == "ray":
            from segapp.batch.ray_engine import RayMissing, run_ray

            try:
                summary = run_ray(items, spec, options, prompts, args.out, actors=args.ray_actors)
            except RayMissing as err:
                raise CLIError(str(err)) from err
        else:
            from segapp.batch.local_engine import run_local

            summary = run_local(items, spec, options, prompts, args.out)
    except OutputStopped as err:  # disk full or read-only mid-run; finished inputs are kept
        raise CLIError(str(err), exit_code=EXIT_FAILED) from err

    ok, skipped, failed = summary.count("ok"), summary.count("skipped"), summary.count("failed")
    rate = (len(items) - summary.already_done) / summary.seconds if summary.seconds > 0 else 0.0
    done = [r for r in summary.records if r["status"] == "ok"]
    empty = [r["input"] for r in done if r.get("masks") == 0]
    masks = sum(r.get("masks") or 0 for r in done)
    print(f"segment: {len(items)} inputs: {ok} ok, {skipped} skipped, {failed} failed"
          f" ({summary.already_done} already done by an earlier run); {masks} mask{'' if masks == 1 else 's'} found; "
          f"{summary.seconds:.1f} s, {rate:.2f} inputs/s")
    for record in summary.records:
        if record["status"] == "failed":
            print(f"  failed  {inputs_mod.display(record['input'])}: {record['error']}")
    if empty:
        _print_nothing_found(empty, len(done), choice, args)
    print(f"outputs in {args.out} (manifest: {args.out / MANIFEST})")
    return EXIT_FAILED if failed else EXIT_OK


def _run_stream(args: argparse.Namespace, formats: tuple[str, ...]) -> int:
    """segment --stream SOURCE (segapp.batch.stream)."""
    from segapp.batch.config import ModelSpec, Options
    from segapp.batch.outputs import MANIFEST, OutputStopped
    from segapp.batch.stream import StreamError, parse_source, run_stream
    from segapp.cli.models import choose_model

    if args.inputs:
        raise CLIError("give either INPUT files or --stream SOURCE, not both")
    if args.prompts is not None or args.engine != "local":
        raise CLIError("--stream runs locally and without --prompts (objects come from segment everything)")
    if args.max_frames is not None and args.max_frames < 1:
        raise CLIError(f"--max-frames must be at least 1, got {args.max_frames}")
    try:
        parse_source(args.stream)
    except StreamError as err:
        raise CLIError(str(err)) from err
    choice = choose_model(args.model, args.checkpoint)
    print(choice.line, flush=True)
    _default_amg_filters(args, choice)
    spec = ModelSpec(choice.config, str(choice.checkpoint) if choice.checkpoint else None, args.device)
    options = Options(formats=formats, points_per_side=args.points_per_side, pred_iou_thresh=args.pred_iou_thresh,
                      stability_score_thresh=args.stability_score_thresh, resume=False, progress=False,
                      bf16_attention=args.bf16_attention)
    try:
        record = run_stream(args.stream, spec, options, args.out, max_frames=args.max_frames,
                            idle_timeout=args.stream_idle_timeout, track_every=args.track_everything)
    except StreamError as err:
        raise CLIError(str(err), exit_code=EXIT_FAILED) from err
    except OutputStopped as err:
        raise CLIError(str(err), exit_code=EXIT_FAILED) from err
    print(f"segment --stream: {record['input']}: {record['status']}, {record['frames']} frames, "
          f"{record.get('masks') or 0} masks, {record['seconds']:.1f} s"
          + (f": {record['error']}" if record["error"] else ""))
    print(f"outputs in {args.out} (manifest: {args.out / MANIFEST})")
    return EXIT_OK if record["status"] == "ok" else EXIT_FAILED


def _default_amg_filters(args: argparse.Namespace, choice) -> None:
    """Fill the segment-everything filters the user did not set: the bundled model's own, else
    the official ones."""
    for key, value in amg_filters(choice.bundled).items():
        if getattr(args, key) is None:
            setattr(args, key, value)


def _print_nothing_found(empty: list[str], done: int, choice, args: argparse.Namespace) -> None:
    """Name the inputs where no mask was found, and what to change: the model and thresholds."""
    from segapp.batch.inputs import display

    where = "any input" if len(empty) == done else f"{len(empty)} of {done} inputs"
    print(f"no masks found in {where}:")
    for rel in empty[:MAX_UNMATCHED_LISTED]:
        print(f"  no masks  {display(rel)}")
    if len(empty) > MAX_UNMATCHED_LISTED:
        print(f"  ... and {len(empty) - MAX_UNMATCHED_LISTED} more (manifest: \"masks\": 0)")
    hint = (f"hint: the model was {choice.description}. Inputs segmented without prompts keep only "
            f"masks above --pred-iou-thresh {args.pred_iou_thresh:g} and --stability-score-thresh "
            f"{args.stability_score_thresh:g}: lower them to keep more")
    print(hint + ".")


__all__ = ["register", "run", "EXIT_USAGE"]
