"""`segapp info`: versions, the default device, configs, and which checkpoints are present.

    segapp info          # human-readable report (the bundled model segapp_small included)
    segapp info --json   # the same as one JSON object, for scripts and bug reports
"""
from __future__ import annotations

import argparse
import json
import platform
from typing import Any

from segapp.cli import EXIT_OK


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "info",
        help="show versions, device, configs and local checkpoints",
        description="Show library versions, the default device, the available configs and "
        "which official checkpoints are present locally.",
    )
    parser.add_argument("--json", action="store_true", help="print one machine-readable JSON object")
    parser.set_defaults(func=run)


def _default_device() -> str:
    import torch

    if torch.cuda.is_available():
        return "cuda"
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return "mps"
    return "cpu"


def _opencv_version() -> str | None:
    try:
        import cv2
    except ImportError:
        return None
    return cv2.__version__


def _configs() -> tuple[list[str] | None, str | None]:
    """(config names, None) or (None, why they could not be listed)."""
    try:
        from segapp.build import list_configs
    except ImportError as err:
        return None, f"segapp.build is not available ({err})"
    return list(list_configs()), None


def collect() -> dict[str, Any]:
    """Everything `segapp info` reports, as plain JSON-serialisable data."""
    import numpy
    import torch

    from segapp import __version__, registry

    configs, configs_error = _configs()
    checkpoints = []
    for info in registry.all_checkpoints():
        path = registry.find_local(info.config)
        checkpoints.append({
            "config": info.config,
            "file": info.filename,
            "size": info.size,
            "path": str(path) if path else None,
        })
    found = any(c["path"] for c in checkpoints)
    from segapp import bundled

    if bundled.available():
        bundled_model = {"name": bundled.NAME, "path": str(bundled.path()),
                         "size": bundled.path().stat().st_size, "description": bundled.description(hint=False)}
    else:
        bundled_model = {"name": bundled.NAME, "path": None, "size": None,
                         "description": f"missing from this install (expected {bundled.path()})"}
    return {
        "segapp": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "opencv": _opencv_version(),
        "device": _default_device(),
        "configs": configs,
        "configs_error": configs_error,
        "checkpoint_dirs": [str(d) for d in registry.default_search_dirs()],
        "checkpoints": checkpoints,
        "bundled_model": bundled_model,
        # What `segapp demo`, `segment` and `eval coco` run without --model and --checkpoint.
        "default_model": (registry.DEFAULT_CHECKPOINT
                          if registry.find_local(registry.DEFAULT_CHECKPOINT) else
                          bundled.NAME if bundled_model["path"] else None),
        "hint": None if found else f"segapp download {registry.DEFAULT_CHECKPOINT}",
    }


def run(args: argparse.Namespace) -> int:
    report = collect()
    if args.json:
        print(json.dumps(report, indent=2))
        return EXIT_OK

    print(f"segapp   {report['segapp']}")
    print(f"python   {report['python']}")
    print(f"torch    {report['torch']}")
    print(f"numpy    {report['numpy']}")
    print(f"opencv   {report['opencv'] or 'not installed'}")
    print(f"device   {report['device']}")
    if report["configs"] is not None:
        print(f"configs  {', '.join(report['configs']) or '(none)'}")
    else:
        print(f"configs  unavailable: {report['configs_error']}")
    print(f"checkpoints (searched: {', '.join(report['checkpoint_dirs'])})")
    for ckpt in report["checkpoints"]:
        where = ckpt["path"] or "not found"
        print(f"  {ckpt['config']:<16} {ckpt['file']:<26} {where}")
    bundled_model = report["bundled_model"]
    print(f"bundled  {bundled_model['description']}")
    if bundled_model["path"]:
        print(f"         {bundled_model['path']}")
    print(f"default model (no --model, no --checkpoint): {report['default_model'] or 'none'}")
    if report["hint"]:
        print(f"No official checkpoint found. For full quality get one with:  {report['hint']}")
    return EXIT_OK
