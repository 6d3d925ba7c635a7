"""The `segapp` command line.

Each subcommand lives in its own module under `segapp.cli` and exposes
`register(subparsers)`, which adds its parser and sets `func(args) -> int` as the
handler. Exit codes: 0 success, 1 the work failed (partly or wholly), 2 usage errors.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from typing import Sequence

# Subcommand modules, in the order `segapp --help` lists them.
SUBCOMMANDS = ("info", "download", "eval", "demo", "segment", "train", "pretrain", "train_video")

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2

# How idle OpenMP threads wait for work (PyTorch's CPU thread pool is OpenMP). The default
# spins, which on a CPU shared with other jobs steals the core from the thread doing the
# work: measured 30-60x slower per segapp_small encoder pass (2 threads, load average 12).
# PASSIVE threads sleep; set OMP_WAIT_POLICY yourself to choose otherwise.
OMP_WAIT_POLICY_DEFAULT = "PASSIVE"


class CLIError(Exception):
    """A problem the user can fix (bad argument, missing file); printed without a traceback."""

    def __init__(self, message: str, exit_code: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def build_parser() -> argparse.ArgumentParser:
    from segapp import __version__

    parser = argparse.ArgumentParser(
        prog="segapp",
        description="SAM 2-style promptable segmentation: images, video, batch, evaluation, web demo.",
    )
    parser.add_argument("--version", action="version", version=f"segapp {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in SUBCOMMANDS:
        importlib.import_module(f"segapp.cli.{name}").register(subparsers)
    return parser


def set_thread_wait_policy() -> None:
    """Default OMP_WAIT_POLICY to PASSIVE (kept if the user set it). OpenMP reads it once, when
    torch is first imported, so this does nothing once torch is loaded."""
    if "torch" not in sys.modules:
        os.environ.setdefault("OMP_WAIT_POLICY", OMP_WAIT_POLICY_DEFAULT)


def main(argv: Sequence[str] | None = None) -> int:
    set_thread_wait_policy()
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )
    # Each command prints its own `model: ...` line first; build_model's INFO lines (which
    # config file, which model) would say it a second time. --verbose shows them.
    logging.getLogger("segapp.build").setLevel(logging.NOTSET if args.verbose else logging.WARNING)
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_USAGE
    try:
        return int(args.func(args))
    except CLIError as err:
        print(f"segapp {args.command}: error: {err}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        print(f"segapp {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
