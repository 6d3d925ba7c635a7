"""What the real-browser tests share: Debian's chromium driven by Playwright (no browser download),
the demo served on a free port of 127.0.0.1 (in this process, or `segapp ...` in a subprocess),
and where an <img> shows a pixel of the picture it letterboxes.
"""
from __future__ import annotations

import io
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-default-apps", "--disable-extensions", "--metrics-recording-only"]
ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"
TIMEOUT_MS = 30_000
# The segapp command as a subprocess runs it, with this test run's interpreter.
CLI = [sys.executable, "-c", "import sys; from segapp.cli import main; sys.exit(main())"]


@pytest.fixture(scope="session")
def chromium() -> str:
    """Debian's chromium, installed with apt-get when missing (never `playwright install`)."""
    if not Path(CHROMIUM).exists():
        if shutil.which("apt-get") is None:
            pytest.fail(f"{CHROMIUM} is missing and apt-get is not available: install Debian's chromium package")
        for cmd in (["apt-get", "update"], ["apt-get", "install", "-y", "chromium"]):
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
            if done.returncode != 0:
                pytest.fail(f"`{' '.join(cmd)}` failed (exit {done.returncode}), so {CHROMIUM} is missing; "
                            f"install it by hand with `apt-get install -y chromium`.\n{done.stderr[-2000:]}")
        if not Path(CHROMIUM).exists():
            pytest.fail(f"apt-get installed chromium but {CHROMIUM} does not exist")
    return CHROMIUM


@contextmanager
def chromium_page(executable: str, *, width: int = 1400, height: int = 1000, timeout_ms: int = TIMEOUT_MS,
                  accept_downloads: bool = True):
    """A page of a headless chromium (`executable`, the `chromium` fixture's path) whose waits and
    expect() assertions time out after timeout_ms; the browser is closed on exit. A second user
    is `page.context.browser.new_context().new_page()`."""
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=executable, headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": width, "height": height}, accept_downloads=accept_downloads)
            page.set_default_timeout(timeout_ms)
            expect.set_options(timeout=timeout_ms)
            yield page
        finally:
            browser.close()


def free_port() -> int:
    """A TCP port of 127.0.0.1 that nothing listens on (at the time of the call)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def served(service):
    """The demo's Gradio app on `service` (a DemoService), in this process on a free port of
    127.0.0.1: yields (its URL, the launched gradio Blocks); closed on exit."""
    from segapp.demo.app import launch

    port = free_port()
    demo = launch(service, host="127.0.0.1", port=port, block=False)
    try:
        yield f"http://127.0.0.1:{port}/", demo
    finally:
        demo.close()


@dataclass(frozen=True)
class Started:
    """A `segapp` command serving on 127.0.0.1:port: its URL, process id, and the HTTP status and
    body of its /config (status None when it did not answer in time)."""
    url: str
    port: int
    pid: int
    status: int | None
    config: str | None


@contextmanager
def segapp_server(args: list[str], *, cwd: Path, env: dict[str, str], stdout: Path,
                  stderr: Path | None = None, wait_s: float = 300):
    """`segapp ARGS --port PORT` in a subprocess (PORT free), its output written to the file
    `stdout` (and `stderr`, or into `stdout` when None). Waits up to wait_s seconds for its /config
    to answer and fails, with the output, when the process exits first; yields a Started.
    Terminated on exit (killed after 30 s)."""
    port = free_port()
    with open(stdout, "w") as out, open(stderr or os.devnull, "w") as err:
        proc = subprocess.Popen([*CLI, *args, "--port", str(port)], cwd=cwd, env=env, stdout=out,
                                stderr=err if stderr else subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline, status, config = time.monotonic() + wait_s, None, None
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                with urllib.request.urlopen(url + "config", timeout=5) as r:
                    status, config = r.status, r.read().decode("utf-8")
                break
            except OSError:
                time.sleep(1)
        logs = "\n".join(path.read_text() for path in (stdout, stderr) if path)
        assert proc.poll() is None, f"the demo exited with {proc.returncode}:\n{logs}"
        yield Started(url, port, proc.pid, status, config)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def shot(locator) -> np.ndarray:
    """A screenshot of the element, [H, W, 3] int16 (differences do not wrap)."""
    return np.asarray(Image.open(io.BytesIO(locator.screenshot())).convert("RGB")).astype(np.int16)


def content_position(img, x: float, y: float) -> dict:
    """Where pixel (x, y) of the image is inside the <img> element, which letterboxes it
    (object-fit contain or scale-down, centred)."""
    box = img.bounding_box()
    nw, nh, fit = img.evaluate("e => [e.naturalWidth, e.naturalHeight, getComputedStyle(e).objectFit]")
    scale = min(box["width"] / nw, box["height"] / nh)
    if fit == "scale-down":
        scale = min(scale, 1.0)
    elif fit == "none":
        scale = 1.0
    return {"x": (box["width"] - nw * scale) / 2 + (x + 0.5) * scale,
            "y": (box["height"] - nh * scale) / 2 + (y + 0.5) * scale}
