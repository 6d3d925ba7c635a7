"""The checkpoint registry, the resumable downloader and `segapp download`.

Every network test talks to an HTTP server on 127.0.0.1 started here; nothing else is contacted.
"""
from __future__ import annotations

import dataclasses
import hashlib
import http.server
import os
import re
import socket
import threading

import pytest

from segapp import registry
from segapp.cli import main
from segapp.download import ChecksumError, DownloadError, download, sha256_file

PAYLOAD_BYTES = 3 * 1024 * 1024 + 12345  # a few MB, not a multiple of the 1 MiB chunk
DROP_AFTER = 1024 * 1024 + 777  # the "drop" server sends this much of the first response


@pytest.fixture(autouse=True)
def loopback_only(monkeypatch):
    """Fail any test that would open a connection to anything but 127.0.0.1."""
    real = socket.create_connection

    def guarded(address, *args, **kwargs):
        assert address[0] == "127.0.0.1", f"test tried to connect to {address}"
        return real(address, *args, **kwargs)

    monkeypatch.setattr(socket, "create_connection", guarded)


@pytest.fixture(scope="module")
def payload() -> bytes:
    return os.urandom(PAYLOAD_BYTES)


@pytest.fixture(scope="module")
def payload_sha(payload) -> str:
    return hashlib.sha256(payload).hexdigest()


class _Handler(http.server.BaseHTTPRequestHandler):
    """Serves `server.payload` at any path; the first path segment picks the behaviour:

    /range/...   honours `Range: bytes=N-` with 206 Partial Content
    /ignore/...  ignores Range and always answers 200 with the whole file
    /drop/...    honours Range, but the first request's body stops after DROP_AFTER bytes
                 and the connection is closed (Content-Length still promises the whole file)
    /missing/... answers 404
    """

    def log_message(self, *args):  # keep test output clean
        pass

    def do_GET(self):
        server = self.server
        mode = self.path.strip("/").split("/", 1)[0]
        record = {"path": self.path, "range": self.headers.get("Range"), "sent": 0}
        server.requests.append(record)
        if mode == "missing":
            self.send_error(404, "Not Found")
            return
        data = server.payload
        start = 0
        match = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range") or "")
        if match and mode in ("range", "drop"):
            start = int(match.group(1))
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:]
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Content-Type", "application/octet-stream")
        self.end_headers()
        if mode == "drop" and not server.dropped:
            server.dropped = True
            body = body[:DROP_AFTER]
        self.wfile.write(body)
        self.wfile.flush()
        record["sent"] = len(body)
        self.close_connection = True


@pytest.fixture
def server(payload):
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.payload = payload
    httpd.requests = []
    httpd.dropped = False
    httpd.base = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()
    thread.join(timeout=5)


@pytest.fixture
def closed_port() -> int:
    """A port on 127.0.0.1 with nothing listening (bound once, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# --- registry -------------------------------------------------------------------------------

OFFICIAL = {
    "sam2.1_hiera_t": "sam2.1_hiera_tiny.pt",
    "sam2.1_hiera_s": "sam2.1_hiera_small.pt",
    "sam2.1_hiera_b+": "sam2.1_hiera_base_plus.pt",
    "sam2.1_hiera_l": "sam2.1_hiera_large.pt",
    "sam2_hiera_t": "sam2_hiera_tiny.pt",
    "sam2_hiera_s": "sam2_hiera_small.pt",
    "sam2_hiera_b+": "sam2_hiera_base_plus.pt",
    "sam2_hiera_l": "sam2_hiera_large.pt",
}


def test_registry_lists_the_eight_official_checkpoints():
    entries = registry.all_checkpoints()
    assert len(entries) == 8
    assert {e.config: e.filename for e in entries} == OFFICIAL
    for e in entries:
        release = "092824" if e.config.startswith("sam2.1") else "072824"
        assert e.url == f"https://dl.fbaipublicfiles.com/segment_anything_2/{release}/{e.filename}"
        assert e.sha256 is None or re.fullmatch(r"[0-9a-f]{64}", e.sha256)
        assert e.size is None or 100_000_000 < e.size < 1_000_000_000
    # The digests identify eight different files.
    digests = [e.sha256 for e in entries if e.sha256]
    assert len(set(digests)) == len(digests)
    assert registry.get("sam2.1_hiera_t").sha256 == (
        "7402e0d864fa82708a20fbd15bc84245c2f26dff0eb43a4b5b93452deb34be69"
    )
    assert registry.get("sam2.1_hiera_t").size == 156008466


@pytest.mark.parametrize(
    "alias, config",
    [
        ("tiny", "sam2.1_hiera_t"),
        ("sam2.1-hiera-tiny", "sam2.1_hiera_t"),
        ("facebook/sam2.1-hiera-tiny", "sam2.1_hiera_t"),
        ("sam2.1_hiera_tiny.pt", "sam2.1_hiera_t"),
        ("SAM2.1_HIERA_L", "sam2.1_hiera_l"),
        ("base-plus", "sam2.1_hiera_b+"),
        ("b+", "sam2.1_hiera_b+"),
        ("facebook/sam2-hiera-base-plus", "sam2_hiera_b+"),
        ("sam2_hiera_small", "sam2_hiera_s"),
        ("sam2_hiera_l", "sam2_hiera_l"),
    ],
)
def test_registry_accepts_aliases(alias, config):
    assert registry.get(alias).config == config


def test_registry_unknown_name_lists_valid_names():
    with pytest.raises(KeyError) as excinfo:
        registry.get("sam3_hiera_huge")
    message = str(excinfo.value)
    assert "sam3_hiera_huge" in message
    for config in OFFICIAL:
        assert config in message
    assert not message.startswith('"')  # a readable message, not KeyError's quoted repr


def test_find_local_searches_dirs_and_env(tmp_path, monkeypatch):
    info = registry.get("sam2.1_hiera_t")
    first, second = tmp_path / "a", tmp_path / "b"
    first.mkdir()
    second.mkdir()
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(registry.CHECKPOINTS_ENV, raising=False)
    assert registry.find_local("sam2.1_hiera_t") is None

    # A truncated file and a partial download are not a checkpoint.
    (first / info.filename).write_bytes(b"truncated")
    (second / (info.filename + ".part")).write_bytes(b"partial")
    assert registry.find_local("tiny", [first, second]) is None

    good = second / info.filename
    with open(good, "wb") as f:
        f.truncate(info.size)  # sparse: the right size without writing 156 MB
    assert registry.find_local("tiny", [first, second]) == good
    assert registry.find_local("tiny", [first], check_size=False) == first / info.filename

    monkeypatch.setenv(registry.CHECKPOINTS_ENV, os.pathsep.join([str(first), str(second)]))
    assert registry.find_local("sam2.1_hiera_t") == good


# --- download() -----------------------------------------------------------------------------


def test_full_download_verifies_and_matches(server, payload, payload_sha, tmp_path):
    path = download(f"{server.base}/range/blob.bin", tmp_path, expected_sha256=payload_sha,
                    expected_size=len(payload), progress=True)
    assert path == tmp_path / "blob.bin"
    assert path.read_bytes() == payload
    assert not (tmp_path / "blob.bin.part").exists()
    assert [r["range"] for r in server.requests] == [None]

    # Already there and verified: returned without touching the network.
    assert download(f"{server.base}/range/blob.bin", tmp_path, expected_sha256=payload_sha,
                    progress=False) == path
    assert len(server.requests) == 1


def test_interrupted_download_keeps_part_and_resumes(server, payload, payload_sha, tmp_path):
    url = f"{server.base}/drop/blob.bin"
    with pytest.raises(DownloadError) as excinfo:
        download(url, tmp_path, expected_sha256=payload_sha, progress=False)
    part = tmp_path / "blob.bin.part"
    assert part.is_file() and part.stat().st_size == DROP_AFTER
    assert not (tmp_path / "blob.bin").exists()
    assert "interrupted" in str(excinfo.value) and str(part) in str(excinfo.value)

    path = download(url, tmp_path, expected_sha256=payload_sha, progress=False)
    assert path.read_bytes() == payload
    assert not part.exists()
    first, second = server.requests
    assert first["range"] is None
    assert second["range"] == f"bytes={DROP_AFTER}-"
    assert second["sent"] == len(payload) - DROP_AFTER < len(payload)


def test_server_ignoring_range_restarts_cleanly(server, payload, payload_sha, tmp_path):
    # A stale partial file whose bytes are wrong: appending to it would fail the digest,
    # so success proves the download restarted from byte 0 and overwrote it.
    (tmp_path / "blob.bin.part").write_bytes(b"\x00" * 500_000)
    path = download(f"{server.base}/ignore/blob.bin", tmp_path, expected_sha256=payload_sha,
                    expected_size=len(payload), progress=False)
    assert path.read_bytes() == payload
    (request,) = server.requests
    assert request["range"] == "bytes=500000-"
    assert request["sent"] == len(payload)


def test_partial_longer_than_remote_file_restarts(server, payload, payload_sha, tmp_path):
    # No size known, so the Range request goes out; the server answers 416 and we start over.
    (tmp_path / "blob.bin.part").write_bytes(b"\x00" * (len(payload) + 10))
    path = download(f"{server.base}/range/blob.bin", tmp_path, expected_sha256=payload_sha,
                    progress=False)
    assert path.read_bytes() == payload
    assert [r["range"] for r in server.requests] == [f"bytes={len(payload) + 10}-", None]


def test_corrupt_final_file_is_downloaded_again(server, payload, payload_sha, tmp_path):
    (tmp_path / "blob.bin").write_bytes(b"not the checkpoint")
    path = download(f"{server.base}/range/blob.bin", tmp_path, expected_sha256=payload_sha,
                    progress=False)
    assert path.read_bytes() == payload
    assert len(server.requests) == 1


def test_wrong_sha256_deletes_file_and_names_both_digests(server, payload_sha, tmp_path):
    wrong = "0123456789abcdef" * 4
    with pytest.raises(ChecksumError) as excinfo:
        download(f"{server.base}/range/blob.bin", tmp_path, expected_sha256=wrong, progress=False)
    message = str(excinfo.value)
    assert wrong in message and payload_sha in message
    assert not (tmp_path / "blob.bin").exists()
    assert not (tmp_path / "blob.bin.part").exists()


def test_size_reported_by_server_must_match(server, payload, tmp_path):
    with pytest.raises(ChecksumError, match=f"reports {len(payload)} bytes, expected 999 bytes"):
        download(f"{server.base}/range/blob.bin", tmp_path, expected_size=999, progress=False)
    assert not (tmp_path / "blob.bin").exists()


def test_unreachable_host_gives_instructions_and_keeps_part(closed_port, tmp_path):
    url = f"http://127.0.0.1:{closed_port}/range/blob.bin"
    part = tmp_path / "blob.bin.part"
    part.write_bytes(b"earlier progress")
    with pytest.raises(DownloadError) as excinfo:
        download(url, tmp_path, progress=False, timeout=5)
    message = str(excinfo.value)
    assert "could not be reached" in message
    assert url in message
    assert f"curl -L -C - {url} -o {tmp_path / 'blob.bin'}" in message
    assert part.read_bytes() == b"earlier progress"


def test_http_error_is_a_clear_download_error(server, tmp_path):
    with pytest.raises(DownloadError, match="HTTP 404"):
        download(f"{server.base}/missing/blob.bin", tmp_path, progress=False)


def test_registry_name_with_mirror_url_uses_official_name_and_digest(server, tmp_path):
    # The served bytes are not the real checkpoint, so the official size check must refuse them.
    with pytest.raises(ChecksumError, match="expected 156008466 bytes"):
        download("sam2.1_hiera_t", tmp_path, url=f"{server.base}/range/x", progress=False)
    assert list(tmp_path.iterdir()) == []


def test_missing_digest_warns_but_still_checks_size(server, payload, tmp_path, caplog):
    with caplog.at_level("WARNING", logger="segapp.download"):
        path = download(f"{server.base}/range/blob.bin", tmp_path, expected_size=len(payload),
                        progress=False)
    assert path.read_bytes() == payload
    assert "no SHA-256 digest is known for blob.bin" in caplog.text


# --- segapp download ------------------------------------------------------------------------


@pytest.fixture
def registry_with_served_tiny(monkeypatch, payload, payload_sha):
    """The registry, with sam2.1_hiera_t's size and digest replaced by the served file's."""
    fake = [
        dataclasses.replace(e, size=len(payload), sha256=payload_sha)
        if e.config == "sam2.1_hiera_t" else e
        for e in registry.CHECKPOINTS
    ]
    monkeypatch.setattr(registry, "CHECKPOINTS", tuple(fake))


def test_cli_download_success(server, payload, tmp_path, capsys, registry_with_served_tiny):
    code = main(["download", "tiny", "--dir", str(tmp_path), "--url", f"{server.base}/range/x",
                 "--no-progress"])
    out = capsys.readouterr().out
    assert code == 0
    target = tmp_path / "sam2.1_hiera_tiny.pt"
    assert target.read_bytes() == payload
    assert f"sam2.1_hiera_t: {target}" in out


def test_cli_download_checksum_failure_exits_1(server, tmp_path, capsys):
    code = main(["download", "sam2.1_hiera_t", "--dir", str(tmp_path), "--url",
                 f"{server.base}/range/x", "--no-progress"])
    err = capsys.readouterr().err
    assert code == 1
    assert "size mismatch" in err and "156008466" in err
    assert not (tmp_path / "sam2.1_hiera_tiny.pt").exists()


def test_cli_download_unreachable_exits_1(closed_port, tmp_path, capsys):
    url = f"http://127.0.0.1:{closed_port}/sam2.1_hiera_tiny.pt"
    code = main(["download", "sam2.1_hiera_t", "--dir", str(tmp_path), "--url", url,
                 "--no-progress", "--timeout", "5"])
    err = capsys.readouterr().err
    assert code == 1
    assert "could not be reached" in err and url in err


def test_cli_download_unknown_name_exits_2(tmp_path, capsys):
    code = main(["download", "sam2.1_hiera_t", "sam9_hiera_x", "--dir", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2
    assert "sam9_hiera_x" in err and "sam2.1_hiera_l" in err
    assert list(tmp_path.iterdir()) == []  # nothing was downloaded before the names were checked


@pytest.mark.parametrize("argv", [["download"], ["download", "tiny", "small", "--url", "http://127.0.0.1:9/x"]])
def test_cli_download_usage_errors_exit_2(argv, capsys):
    assert main(argv) == 2
    assert "error" in capsys.readouterr().err


def test_cli_download_list(tmp_path, capsys):
    info = registry.get("sam2_hiera_s")
    with open(tmp_path / info.filename, "wb") as f:
        f.truncate(info.size)
    assert main(["download", "--list", "--dir", str(tmp_path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    for config, filename in OFFICIAL.items():
        (line,) = [ln for ln in lines if ln.startswith(config + " ")]
        assert filename in line
        assert line.endswith("yes" if config == "sam2_hiera_s" else "no")


def test_sha256_file_matches_hashlib(tmp_path, payload, payload_sha):
    (tmp_path / "f").write_bytes(payload)
    assert sha256_file(tmp_path / "f") == payload_sha


def test_every_registry_checkpoint_has_a_bundled_config():
    # The seam between the registry and the model builder: each checkpoint names a config
    # that `segapp.build` can find.
    from segapp.build import list_configs

    missing = set(registry.names()) - set(list_configs())
    assert not missing, f"registry configs without a bundled YAML: {sorted(missing)}"
