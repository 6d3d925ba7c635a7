"""Resumable, verified checkpoint downloads (standard library `urllib` only).

The file is written to ``<name>.part`` next to its final place. A later call resumes a
``.part`` with an HTTP Range request; a server that ignores Range (answers 200 instead of
206) makes the download restart cleanly from byte 0. Only once the size and SHA-256
match is the ``.part`` renamed, atomically, to the final name, so a file under the final
name is always complete. Network failures keep the ``.part`` for the next attempt; a
verification failure deletes it (its bytes are wrong, resuming would not help).
"""
from __future__ import annotations

import http.client
import logging
import os
import re
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from segapp import registry
from segapp.formats.hashing import sha256_file

logger = logging.getLogger(__name__)

CHUNK_BYTES = 1 << 20  # read and write 1 MiB at a time
PART_SUFFIX = ".part"
# Environment variable: a base URL that serves the official files under their own names (a
# mirror, or a local server in tests); registry names are then fetched from <base>/<file name>.
MIRROR_ENV = "SEGAPP_DOWNLOAD_MIRROR"
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
_CONTENT_RANGE_RE = re.compile(r"^bytes (\d+)-(\d+)/(\d+|\*)$")


class DownloadError(RuntimeError):
    """A download failed; the message says why and what to do next."""


class ChecksumError(DownloadError):
    """A downloaded file does not match its expected size or SHA-256."""


def verify_file(
    path: Path, expected_sha256: str | None, expected_size: int | None, *, label: str | None = None
) -> None:
    """Check a file's size (bytes) and SHA-256; raise ChecksumError naming expected vs actual.

    With no digest known, logs a warning that the content cannot be verified and checks
    the size alone (when known). label: the name used in messages (default: the file name).
    """
    label = label or path.name
    size = path.stat().st_size
    if expected_size is not None and size != expected_size:
        raise ChecksumError(
            f"size mismatch for {label}: expected {expected_size} bytes, got {size} bytes"
        )
    if expected_sha256 is None:
        logger.warning(
            "no SHA-256 digest is known for %s: its content cannot be verified (%s)",
            label,
            "size checked" if expected_size is not None else "size unknown too",
        )
        return
    actual = sha256_file(path)
    if actual != expected_sha256:
        raise ChecksumError(
            f"SHA-256 mismatch for {label}: expected {expected_sha256}, got {actual}"
        )


def _manual_instructions(url: str, final: Path) -> str:
    return (
        f"To download it by hand, fetch\n    {url}\n"
        f"for example with\n    curl -L -C - {url} -o {final}\n"
        f"and put the file at {final} (or in a folder listed in ${registry.CHECKPOINTS_ENV})."
    )


def _check_sha256(value: str | None) -> str | None:
    if value is None:
        return None
    value = value.strip().lower()
    if not _SHA256_RE.match(value):
        raise ValueError(f"expected_sha256 must be 64 hex digits, got {value!r}")
    return value


def _resolve(
    name_or_url: str, url: str | None, sha256: str | None, size: int | None
) -> tuple[str, str, str | None, int | None]:
    """(url, file name, sha256, size) for a registry name or a plain URL."""
    if "://" in name_or_url:
        source = url or name_or_url
        filename = Path(urllib.parse.unquote(urllib.parse.urlsplit(name_or_url).path)).name
        if not filename:
            raise ValueError(f"cannot tell a file name from the URL {name_or_url!r}")
        info = registry.by_filename(filename)  # an official file fetched by URL is still verified
    else:
        info = registry.get(name_or_url)
        mirror = os.environ.get(MIRROR_ENV, "").strip()
        default = f"{mirror.rstrip('/')}/{info.filename}" if mirror else info.url
        source, filename = url or default, info.filename
    if info is not None:
        sha256 = sha256 if sha256 is not None else info.sha256
        size = size if size is not None else info.size
    return source, filename, sha256, size


def download(
    name_or_url: str,
    dest_dir: str | os.PathLike = "checkpoints",
    *,
    url: str | None = None,
    expected_sha256: str | None = None,
    expected_size: int | None = None,
    progress: bool = True,
    timeout: float = 30,
) -> Path:
    """Download a checkpoint into `dest_dir` and return the path of the verified file.

    name_or_url: a registry name or alias (``"sam2.1_hiera_t"``, ``"tiny"``), or a URL.
    url: fetch from here instead (a mirror); a registry name keeps its file name and digest.
        Without it, a registry name is fetched from $SEGAPP_DOWNLOAD_MIRROR/<file name> when
        that variable is set, else from the registry's URL.
    expected_sha256, expected_size (bytes): override the registry's values; required for
        verification of files the registry does not know.
    progress: show a tqdm progress bar (bytes, rate, ETA) on stderr.
    timeout: seconds to wait for the connection and for each read.

    A final file that is already present and verifies is returned without any network
    access. Raises DownloadError when the host cannot be reached, the server refuses, or
    the transfer breaks (the ``.part`` file is kept for resuming), and ChecksumError
    (a DownloadError) when the downloaded bytes do not verify (the ``.part`` is deleted).
    """
    source, filename, sha256, size = _resolve(
        name_or_url, url, _check_sha256(expected_sha256), expected_size
    )
    dest = Path(dest_dir)
    final = dest / filename
    part = dest / (filename + PART_SUFFIX)

    if final.is_file():
        try:
            verify_file(final, sha256, size)
        except ChecksumError as err:
            logger.warning("existing %s does not verify (%s); downloading it again", final, err)
        else:
            logger.info("%s is already present and verified", final)
            return final

    dest.mkdir(parents=True, exist_ok=True)
    logger.info("downloading %s from %s", final, source)
    try:
        _fetch(source, part, final, size, progress, timeout)
    except _RangeNotSatisfiable:
        # The .part is at least as long as the remote file, so it cannot be resumed: start over.
        logger.info("partial file %s cannot be resumed; downloading from the start", part)
        part.unlink()
        _fetch(source, part, final, size, progress, timeout)

    try:
        verify_file(part, sha256, size, label=filename)
    except ChecksumError as err:
        part.unlink()
        raise ChecksumError(
            f"{err}. The downloaded file from {source} was deleted; run the download again, "
            "and if it fails the same way the server is serving a different file."
        ) from None
    os.replace(part, final)  # atomic on one filesystem: the final name only ever holds a verified file
    logger.info("saved %s", final)
    return final


class _RangeNotSatisfiable(Exception):
    """HTTP 416: the resume offset is at or past the end of the remote file."""


def _open(source: str, offset: int, timeout: float, final: Path):
    from segapp import __version__

    headers = {"User-Agent": f"segapp/{__version__}"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    request = urllib.request.Request(source, headers=headers)
    try:
        return urllib.request.urlopen(request, timeout=timeout)  # noqa: S310 (http(s) URLs by design)
    except urllib.error.HTTPError as err:
        err.close()
        if err.code == 416 and offset:
            raise _RangeNotSatisfiable() from None
        raise DownloadError(
            f"the server answered HTTP {err.code} {err.reason} for {source}.\n"
            + _manual_instructions(source, final)
        ) from None
    except http.client.HTTPException as err:
        raise DownloadError(
            f"the server sent an invalid HTTP response for {source} ({err!r}).\n"
            + _manual_instructions(source, final)
        ) from None
    except (urllib.error.URLError, OSError) as err:
        reason = getattr(err, "reason", err)
        host = urllib.parse.urlsplit(source).netloc or source
        raise DownloadError(
            f"the host {host} could not be reached ({reason}) while downloading {source}.\n"
            "Check the network connection or proxy settings (HTTPS_PROXY).\n"
            + _manual_instructions(source, final)
        ) from None


def _fetch(
    source: str, part: Path, final: Path, size: int | None, progress: bool, timeout: float
) -> None:
    """Fill `part` with the remote file, resuming from its current length when possible."""
    offset = part.stat().st_size if part.is_file() else 0
    if size is not None and offset > size:
        logger.info("partial file %s is longer than expected; starting over", part)
        offset = 0
    if size is not None and offset == size:
        return  # complete already; the caller verifies it

    response = _open(source, offset, timeout, final)
    with response:
        length = response.headers.get("Content-Length")
        length = int(length) if length is not None and length.isdigit() else None
        if offset and response.status == 206:
            match = _CONTENT_RANGE_RE.match(response.headers.get("Content-Range", ""))
            if match is None or int(match.group(1)) != offset:
                raise DownloadError(
                    f"the server answered a resume request for {source} with an unexpected "
                    f"Content-Range {response.headers.get('Content-Range')!r}; delete {part} "
                    "and try again"
                )
            logger.info("resuming %s at byte %d", final.name, offset)
        elif offset:
            logger.info("the server ignored the range request; downloading %s from the start", final.name)
            offset = 0
        total = offset + length if length is not None else size
        if size is not None and total is not None and total != size:
            raise ChecksumError(
                f"size mismatch for {final.name}: the server at {source} reports {total} bytes, "
                f"expected {size} bytes"
            )
        received = _stream(response, part, offset, total, final.name, progress, source)

    if total is not None and received < total:
        raise DownloadError(
            f"the download of {final.name} from {source} was interrupted after {received} of "
            f"{total} bytes. The partial file is kept at {part}; run the same command again to "
            "resume it."
        )


def _stream(response, part: Path, offset: int, total: int | None, label: str, progress: bool,
            source: str) -> int:
    """Append the response body to `part` (truncated to `offset` first); return bytes on disk."""
    from tqdm import tqdm

    received = offset
    with open(part, "r+b" if offset else "wb") as f, tqdm(
        total=total, initial=offset, unit="B", unit_scale=True, unit_divisor=1024,
        desc=label, disable=not progress, leave=True,
    ) as bar:
        f.truncate(offset)
        f.seek(offset)
        try:
            while True:
                block = response.read(CHUNK_BYTES)
                if not block:
                    break
                f.write(block)
                received += len(block)
                bar.update(len(block))
        except (OSError, http.client.HTTPException) as err:
            f.flush()
            raise DownloadError(
                f"the download of {label} from {source} broke after {received} bytes ({err}). "
                f"The partial file is kept at {part}; run the same command again to resume it."
            ) from None
        f.flush()
        os.fsync(f.fileno())
    return received
