"""`segapp download`: fetch official checkpoints into a folder, resumably and verified.

    segapp download sam2.1_hiera_t              # one checkpoint into ./checkpoints
    segapp download tiny large --dir weights    # aliases work; several at once
    segapp download --all                       # all eight
    segapp download --list                      # what exists, sizes, and what is already here

Exit codes: 0 all downloads verified, 1 at least one failed (network, server or checksum),
2 unknown checkpoint names or bad arguments.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from segapp.cli import EXIT_FAILED, EXIT_OK, EXIT_USAGE, CLIError


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "download",
        help="download official SAM 2 / SAM 2.1 checkpoints",
        description="Download official SAM 2 / SAM 2.1 checkpoints, resuming partial downloads "
        "and verifying size and SHA-256 before the file is given its final name.",
    )
    parser.add_argument(
        "names", nargs="*", metavar="NAME",
        help="checkpoint config name or alias, e.g. sam2.1_hiera_t, tiny, facebook/sam2.1-hiera-large",
    )
    parser.add_argument("--dir", default="checkpoints", type=Path,
                        help="folder to download into (default: ./checkpoints)")
    parser.add_argument("--all", action="store_true", help="download all eight official checkpoints")
    parser.add_argument("--list", action="store_true",
                        help="list the official checkpoints and whether they are present in --dir")
    parser.add_argument("--no-progress", action="store_true", help="do not show a progress bar")
    parser.add_argument("--timeout", type=float, default=30, help="network timeout in seconds (default: 30)")
    # Override the source of a single checkpoint (a mirror, or a local server in tests);
    # the registry's file name, size and SHA-256 still apply.
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.set_defaults(func=run)


def _list(folder: Path) -> int:
    from segapp import registry

    print(f"{'config':<16} {'file':<26} {'size':>9}  {'sha256':<12}  in {folder}")
    for info in registry.all_checkpoints():
        size = f"{info.size_mb:.1f} MB" if info.size_mb is not None else "unknown"
        digest = info.sha256[:12] if info.sha256 else "unknown"
        present = registry.find_local(info.config, [folder])
        print(f"{info.config:<16} {info.filename:<26} {size:>9}  {digest:<12}  "
              f"{'yes' if present else 'no'}")
    return EXIT_OK


def run(args: argparse.Namespace) -> int:
    from segapp import registry
    from segapp.cli.models import bundled_fallback
    from segapp.download import DownloadError, download

    if args.list:
        return _list(args.dir)
    if args.all and args.names:
        raise CLIError("give checkpoint names or --all, not both", EXIT_USAGE)
    if not args.all and not args.names:
        raise CLIError(
            "name at least one checkpoint (e.g. `segapp download sam2.1_hiera_t`), "
            "or use --all or --list", EXIT_USAGE,
        )

    # Resolve every name before downloading anything, so a typo costs no bandwidth.
    targets: list[str] = []
    if args.all:
        targets = registry.names()
    else:
        unknown = []
        for name in args.names:
            if "://" in name:
                target = name
            else:
                try:
                    target = registry.get(name).config
                except registry.UnknownCheckpointError:
                    unknown.append(name)
                    continue
            if target not in targets:
                targets.append(target)
        if unknown:
            raise CLIError(
                f"unknown checkpoint name(s): {', '.join(unknown)}; valid names: "
                f"{', '.join(registry.names())}", EXIT_USAGE,
            )
    if args.url and len(targets) != 1:
        raise CLIError("--url replaces the source of one checkpoint; name exactly one", EXIT_USAGE)

    failed = 0
    for target in targets:
        try:
            path = download(target, args.dir, url=args.url, progress=not args.no_progress,
                            timeout=args.timeout)
        except (DownloadError, OSError) as err:
            failed += 1
            print(f"segapp download: {target}: {err}", file=sys.stderr)
            continue
        print(f"{target}: {path}")
    if failed:
        print(f"segapp download: {failed} of {len(targets)} download(s) failed; {bundled_fallback()}",
              file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK
