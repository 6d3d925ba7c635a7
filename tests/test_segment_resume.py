"""`segapp segment` resumes: a run killed with SIGKILL and rerun ends with exactly the
outputs of an uninterrupted run, and the rerun skips the inputs already done."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from segapp.cli import main
from test_segment_cli import EVERYTHING, make_images

N_IMAGES = 16
ARGS = ["--model", "test_tiny", "--no-progress", "--batch-size", "2", "--format", "png,coco,overlay", *EVERYTHING]


def output_files(out: Path) -> dict[str, bytes]:
    """Every output's bytes, except the run's state folder and the manifest's timings."""
    files = {}
    for path in sorted(out.rglob("*")):
        rel = path.relative_to(out).as_posix()
        if path.is_file() and not rel.startswith(".segapp/"):
            data = path.read_bytes()
            if rel == "manifest.jsonl":
                rows = [json.loads(line) for line in data.decode().splitlines()]
                data = json.dumps([{k: v for k, v in r.items() if k != "seconds"} for r in rows]).encode()
            files[rel] = data
    return files


@pytest.mark.slow
def test_killed_run_resumes_to_identical_outputs(tmp_path):
    src = tmp_path / "in"
    make_images(src, [f"d{i % 3}/img{i:02d}.png" for i in range(N_IMAGES)], size=(64, 64))
    (src / "broken.jpg").write_bytes(b"nope")

    reference = tmp_path / "reference"
    assert main(["segment", str(src), "--out", str(reference), *ARGS]) == 1  # broken.jpg fails

    out = tmp_path / "out"
    records = out / ".segapp" / "records"
    cmd = [sys.executable, "-c", "import sys; from segapp.cli import main; sys.exit(main())",
           "segment", str(src), "--out", str(out), *ARGS]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    try:
        # Kill as soon as the first inputs are done (the broken file's record comes first).
        while time.monotonic() < deadline and proc.poll() is None:
            if records.is_dir() and len(list(records.glob("*.json"))) >= 3:
                break
            time.sleep(0.01)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    done_before = {p.name: p.stat().st_mtime_ns for p in records.glob("*.json")}
    assert 0 < len(done_before) < N_IMAGES + 1
    assert not (out / "manifest.jsonl").exists()

    rc = main(["segment", str(src), "--out", str(out), *ARGS])
    assert rc == 1
    assert output_files(out) == output_files(reference)
    # Inputs finished by the killed run were skipped (their records untouched), except failures,
    # which are retried.
    ok_before = [name for name in done_before
                 if json.loads((records / name).read_text())["status"] == "ok"]
    assert ok_before
    for name in ok_before:
        assert (records / name).stat().st_mtime_ns == done_before[name]
    assert not list(out.rglob("*.segapp-tmp"))

    # A third run has nothing left to do and changes nothing.
    before = output_files(out)
    assert main(["segment", str(src), "--out", str(out), *ARGS]) == 1
    assert output_files(out) == before


@pytest.mark.slow
def test_no_resume_recomputes(tmp_path, capsys):
    src = tmp_path / "in"
    make_images(src, ["a.png", "b.png"], size=(64, 64))
    out = tmp_path / "out"
    assert main(["segment", str(src), "--out", str(out), *ARGS]) == 0
    assert main(["segment", str(src), "--out", str(out), *ARGS]) == 0
    assert "(2 already done" in capsys.readouterr().out
    assert main(["segment", str(src), "--out", str(out), "--no-resume", *ARGS]) == 0
    assert "(0 already done" in capsys.readouterr().out
