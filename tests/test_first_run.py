"""The first ten minutes (issue 19): README command 1 ends in a running demo even when the
checkpoint cannot be downloaded; a run that finds nothing says so; the `model:` line comes once
and first; messages about missing checkpoints name the bundled fallback.

Every network test talks to a server on 127.0.0.1 started here; nothing else is contacted.
"""
from __future__ import annotations

import http.server
import json
import os
import re
import shlex
import socket
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from segapp import registry
from segapp.cli import main
from browser import CLI, free_port, segapp_server, served
from tiny_models import tiny_model

BUNDLED_HINT = "run the bundled small model segapp_small (`segapp demo` alone starts it)"


@pytest.fixture
def no_downloads(tmp_path, monkeypatch):
    """A working directory without ./checkpoints and no SEGAPP_CHECKPOINTS."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(registry.CHECKPOINTS_ENV, raising=False)
    return tmp_path


def manifest(out: Path) -> dict[str, dict]:
    return {r["input"]: r for r in map(json.loads, (out / "manifest.jsonl").read_text().splitlines())}


# ------------------------------------------------------------------ a run that finds nothing

def _rectangle_and_blank(folder: Path) -> None:
    folder.mkdir()
    image = np.full((96, 128, 3), 40, np.uint8)
    image[24:72, 32:96] = (230, 120, 40)
    Image.fromarray(image).save(folder / "rect.png")
    Image.fromarray(np.full((96, 128, 3), 128, np.uint8)).save(folder / "blank.png")


def test_segment_that_finds_nothing_says_so_in_summary_and_manifest(no_downloads, capsys):
    src = no_downloads / "in"
    _rectangle_and_blank(src)
    (src / "rect.png").unlink()
    out = no_downloads / "out"
    code = main(["segment", str(src), "--out", str(out), "--points-per-side", "4", "--no-progress",
                 "--pred-iou-thresh", "0.8", "--stability-score-thresh", "0.95"])
    stdout = capsys.readouterr().out
    assert code == 0
    assert "1 ok, 0 skipped, 0 failed" in stdout and "; 0 masks found;" in stdout
    assert "no masks found in any input:" in stdout and "  no masks  blank.png" in stdout
    hint = next(line for line in stdout.splitlines() if line.startswith("hint:"))
    assert "segapp_small (bundled" in hint  # the model in use
    assert "--pred-iou-thresh 0.8" in hint and "--stability-score-thresh 0.95" in hint  # what was used
    assert manifest(out)["blank.png"]["masks"] == 0
    assert json.loads((out / "coco_results.json").read_text()) == []



@pytest.mark.parametrize("given, used", [([], (0.15, 0.8)), (["--pred-iou-thresh", "0.9"], (0.9, 0.8)),
                                         (["--stability-score-thresh", "0.97"], (0.15, 0.97))])
def test_segment_with_the_bundled_model_uses_its_own_filters_unless_set(no_downloads, capsys, given, used):
    from segapp.bundled import AMG_FILTERS

    assert (AMG_FILTERS["pred_iou_thresh"], AMG_FILTERS["stability_score_thresh"]) == (0.15, 0.8)
    src = no_downloads / "in"
    _rectangle_and_blank(src)
    out = no_downloads / "out"
    code = main(["segment", str(src / "blank.png"), "--out", str(out), "--points-per-side", "2",
                 "--no-progress", *given])
    assert code == 0
    run = json.loads((out / ".segapp" / "run.json").read_text())
    assert (run["pred_iou_thresh"], run["stability_score_thresh"]) == used


def test_segment_counts_masks_per_input_and_names_the_empty_one(no_downloads, capsys):
    src = no_downloads / "in"
    _rectangle_and_blank(src)
    prompts = no_downloads / "prompts.json"
    prompts.write_text(json.dumps({"default": "everything",
                                   "images": {"rect.png": [{"box": [32, 24, 96, 72]}]}}))
    out = no_downloads / "out"
    code = main(["segment", str(src), "--out", str(out), "--prompts", str(prompts),
                 "--points-per-side", "4", "--no-progress", "--pred-iou-thresh", "0.8",
                 "--stability-score-thresh", "0.95"])
    stdout = capsys.readouterr().out
    assert code == 0
    records = manifest(out)
    assert records["rect.png"]["masks"] == 1 and records["blank.png"]["masks"] == 0
    assert "; 1 mask found;" in stdout
    assert "no masks found in 1 of 2 inputs:" in stdout
    assert "  no masks  blank.png" in stdout and "  no masks  rect.png" not in stdout


# ------------------------------------------------------- README command 1, download refused

README = Path(__file__).resolve().parents[1] / "README.md"


def readme_command_1() -> str:
    """The segapp part of README command 1 (what follows the pip installs)."""
    text = README.read_text(encoding="utf-8")
    block = re.search(r"# 1\. [^\n]*\n([^\n]+)", text)
    assert block, "README.md has no '# 1.' command"
    parts = [p.strip() for p in block.group(1).split("&&")]
    segapp_parts = [p for p in parts if p.startswith("segapp ")]
    assert len(segapp_parts) == 1, f"README command 1 should end in one segapp command: {parts}"
    assert all(p.startswith("pip install") for p in parts[:-1]) and parts[-1] == segapp_parts[0]
    return segapp_parts[0]


def test_readme_command_1_starts_the_demo_on_the_bundled_model_when_the_download_is_refused(
        tmp_path):
    command = readme_command_1()
    assert command == "segapp demo --download sam2.1_hiera_t"
    refused = free_port()  # nothing listens on it
    env = {k: v for k, v in os.environ.items() if k != registry.CHECKPOINTS_ENV}
    env.update(SEGAPP_DOWNLOAD_MIRROR=f"http://127.0.0.1:{refused}", GRADIO_ANALYTICS_ENABLED="False")
    out, err = tmp_path / "stdout.txt", tmp_path / "stderr.txt"
    with segapp_server(shlex.split(command)[1:], cwd=tmp_path, env=env, stdout=out, stderr=err) as started:
        assert started.status == 200, f"the demo did not come up:\n{out.read_text()}\n{err.read_text()}"
    port, config = started.port, started.config
    stdout, stderr = out.read_text(), err.read_text()
    notice = next(line for line in stderr.splitlines() if line.startswith("segapp demo: could not"))
    assert f"could not download sam2.1_hiera_t (the host 127.0.0.1:{refused} could not be reached" in notice
    assert "running the bundled segapp_small instead" in notice
    assert "For full quality run `segapp download sam2.1_hiera_t`" in notice
    assert "model: segapp_small (bundled" in stdout and f"http://127.0.0.1:{port}/" in stdout
    assert "Model **segapp_small (bundled" in config and "could not download sam2.1_hiera_t" in config
    assert not (tmp_path / "checkpoints" / "sam2.1_hiera_tiny.pt").exists()


class _FailingHandler(http.server.BaseHTTPRequestHandler):
    """/500/...: HTTP 500; /close/...: the connection is closed without an answer."""

    def log_message(self, *args):
        pass

    def do_GET(self):
        if self.path.startswith("/500/"):
            self.send_error(500, "Internal Server Error")
        else:
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)


@pytest.fixture(scope="module")
def failing_server():
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _FailingHandler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


@pytest.mark.parametrize("mode, reason", [("500", "HTTP 500"), ("close", "invalid HTTP response")])
def test_download_or_bundled_falls_back_on_server_errors(failing_server, no_downloads, monkeypatch,
                                                         mode, reason):
    from segapp.cli.models import download_or_bundled

    monkeypatch.setenv("SEGAPP_DOWNLOAD_MIRROR", f"{failing_server}/{mode}/")
    choice, notice = download_or_bundled("tiny", progress=False, timeout=5)
    assert choice.bundled and choice.config == "segapp_small"
    assert notice.startswith("could not download sam2.1_hiera_t (") and reason in notice
    assert f"{failing_server}/{mode}/sam2.1_hiera_tiny.pt" in notice  # the mirror was used
    assert "\n" not in notice  # one line
    assert "running the bundled segapp_small instead" in notice


def test_download_or_bundled_uses_a_checkpoint_already_there_without_network(no_downloads, monkeypatch):
    from segapp.cli.models import download_or_bundled

    (no_downloads / "checkpoints").mkdir()
    present = no_downloads / "checkpoints" / "sam2.1_hiera_tiny.pt"
    with open(present, "wb") as f:  # a sparse stand-in of the official size (find_local checks it)
        f.truncate(registry.get("sam2.1_hiera_t").size)
    monkeypatch.setenv("SEGAPP_DOWNLOAD_MIRROR", "http://127.0.0.1:1")  # would be refused
    choice, notice = download_or_bundled("sam2.1_hiera_t", progress=False)
    assert notice is None and not choice.bundled
    assert choice.config == "sam2.1_hiera_t" and choice.checkpoint.resolve() == present.resolve()


def test_demo_download_usage_errors_exit_2(no_downloads, capsys):
    pytest.importorskip("gradio")
    assert main(["demo", "--download", "sam9_hiera_x"]) == 2
    assert "--download: unknown checkpoint name 'sam9_hiera_x'; valid names: sam2.1_hiera_t" in \
        capsys.readouterr().err
    assert main(["demo", "--download", "tiny", "--model", "segapp_small"]) == 2
    assert "--download NAME picks the model" in capsys.readouterr().err


# ------------------------------------------------- missing checkpoints name the bundled fallback

def test_segapp_download_failure_names_the_bundled_fallback(failing_server, no_downloads, capsys):
    code = main(["download", "sam2.1_hiera_t", "--url", f"{failing_server}/500/x", "--no-progress"])
    err = capsys.readouterr().err
    assert code == 1
    assert "HTTP 500" in err
    assert "1 of 1 download(s) failed; with neither --model nor --checkpoint" in err and BUNDLED_HINT in err


def test_segapp_download_honours_the_mirror_variable(failing_server, no_downloads, monkeypatch, capsys):
    monkeypatch.setenv("SEGAPP_DOWNLOAD_MIRROR", f"{failing_server}/500")
    assert main(["download", "sam2.1_hiera_t", "--no-progress"]) == 1
    assert f"HTTP 500 Internal Server Error for {failing_server}/500/sam2.1_hiera_tiny.pt" in \
        capsys.readouterr().err


@pytest.mark.parametrize("argv", [
    ["demo", "--checkpoint", "missing.pt"],
    ["segment", "in", "--out", "out", "--checkpoint", "missing.pt"],
    ["eval", "coco", "--annotations", "ann.json", "--images", ".", "--checkpoint", "missing.pt"],
    ["demo", "--model", "sam2.1_hiera_l"],
])
def test_checkpoint_not_found_names_the_bundled_fallback(argv, no_downloads, capsys):
    if argv[0] == "demo":
        pytest.importorskip("gradio")
    (no_downloads / "in").mkdir()
    (no_downloads / "ann.json").write_text("{}")
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2
    assert "checkpoint not found: missing.pt" in err or "no checkpoint for sam2.1_hiera_l" in err
    assert BUNDLED_HINT in err


# ------------------------------------------------------------------ the model line, once and first

def test_model_line_comes_once_and_first_and_unmatched_prompts_are_counted(tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    Image.fromarray(np.full((48, 64, 3), 90, np.uint8)).save(src / "a.png")
    prompts = tmp_path / "prompts.json"
    prompts.write_text(json.dumps({"default": "everything", "images": {
        f"missing{i:02d}.png": [{"box": [1, 1, 9, 9]}] for i in range(13)}}))
    done = subprocess.run([*CLI, "segment", str(src), "--out", str(tmp_path / "out"), "--prompts",
                           str(prompts), "--model", "test_tiny", "--points-per-side", "2",
                           "--format", "png", "--no-progress"],
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=300)
    assert done.returncode == 0, done.stdout
    lines = done.stdout.splitlines()
    assert lines[0].startswith("model: test_tiny (random weights")
    assert sum("model: " in line for line in lines) == 1
    unmatched = [line for line in lines if "match no input" in line]
    assert len(unmatched) == 11
    assert unmatched[-1].endswith("... and 3 more keys of " + str(prompts) + " match no input (13 in all)")


# ------------------------------------------------------- "segment everything" that finds nothing

@pytest.fixture(scope="module")
def bundled_model():
    import segapp

    return segapp.build_model(device="cpu")


BLANK = np.full((64, 96, 3), 128, np.uint8)


def test_amg_that_finds_nothing_logs_a_hint_once(bundled_model, caplog):
    from segapp import AutomaticMaskGenerator

    generator = AutomaticMaskGenerator(bundled_model, points_per_side=4)
    with caplog.at_level("DEBUG", logger="segapp.automatic_mask_generator"):
        assert generator.generate(BLANK) == []
        assert generator.generate(BLANK) == []
    hints = [r for r in caplog.records if r.getMessage().startswith("no masks found")]
    assert [r.levelname for r in hints] == ["WARNING", "DEBUG"]  # once loud, then quiet
    assert hints[0].getMessage() == (
        "no masks found by segapp_small (bundled): no mask passed pred_iou_thresh=0.8 and "
        "stability_score_thresh=0.95; lower them to keep more")


def test_demo_segment_everything_with_no_mask_says_so(bundled_model):
    pytest.importorskip("gradio")
    from segapp.service import DemoService

    service = DemoService(bundled_model)
    sid = service.create_session()
    service.set_image(sid, BLANK)
    timing = service.segment_everything(sid, points_per_side=4)
    assert service.get_session(sid).objects == ()
    text = str(timing)
    assert text.startswith("segment everything (0 masks): ")
    assert ("No masks found by segapp_small (bundled): none passed the quality filters "
            "(predicted IoU > 0.8, stability >= 0.95). Click the object instead") in text
    assert "segapp demo --download sam2.1_hiera_t" in text


# ------------------------------------------------------------------------- the smaller items

def test_demo_refused_input_is_one_log_line_not_a_traceback(tmp_path, capfd, caplog):
    pytest.importorskip("gradio")
    from gradio_client import Client, handle_file

    from segapp.service import DemoService

    image = tmp_path / "x.png"
    Image.fromarray(np.zeros((40, 50, 3), np.uint8)).save(image)
    with served(DemoService(tiny_model())) as (url, _):
        client = Client(url, verbose=False)
        with caplog.at_level("INFO", logger="segapp.demo"), pytest.raises(Exception) as excinfo:
            client.predict(handle_file(str(image)), '{"points": [[1, 2, 3]]}', api_name="/segment_image")
    assert "points must be a list of [x, y] pairs" in str(excinfo.value)  # the user sees why
    server_output = capfd.readouterr()
    assert "Traceback" not in server_output.err + server_output.out
    refused = [r.getMessage() for r in caplog.records if "input refused" in r.getMessage()]
    assert refused == ["segment_image: input refused: points must be a list of [x, y] pairs"]


def test_set_image_from_pil_does_not_warn():
    # torch warns about read-only arrays once per process: check in a fresh one.
    script = ("import warnings; warnings.simplefilter('error')\n"
              "import numpy as np; from PIL import Image; import segapp\n"
              "p = segapp.ImagePredictor(segapp.build_model('test_tiny', device='cpu'))\n"
              "p.set_image(Image.fromarray(np.zeros((40, 50, 3), np.uint8)))\n"
              "print('set')\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and done.stdout.strip() == "set", done.stderr
    assert "not writable" not in done.stderr


def test_low_res_is_a_quarter_of_the_image_size_as_the_readme_says(bundled_model):
    import segapp

    assert "low_res [3, S/4, S/4]" in README.read_text(encoding="utf-8")
    assert "[3, 96, 96] for segapp_small" in README.read_text(encoding="utf-8")
    predictor = segapp.ImagePredictor(bundled_model)
    predictor.set_image(np.full((60, 80, 3), 100, np.uint8))
    _, _, low_res = predictor.predict(point_coords=np.array([[40, 30]]), point_labels=np.array([1]))
    size = bundled_model.image_size
    assert low_res.shape == (3, size // 4, size // 4) == (3, 96, 96)


def test_eval_coco_help_says_where_the_click_goes(capsys):
    with pytest.raises(SystemExit):
        main(["eval", "coco", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "point: one click at the pixel farthest from the object's boundary" in text
    assert "object's centre" not in text


def test_demo_segment_everything_on_the_bundled_model_finds_masks_in_a_photo(shared_data, no_downloads):
    pytest.importorskip("gradio")
    from segapp.cli.demo import BUNDLED_MODEL_AMG, build_service

    service, note, choice = build_service(device="cpu")
    assert choice.bundled and service.amg_options == BUNDLED_MODEL_AMG
    assert "predicted IoU > 0.15 and stability >= 0.8" in note
    sid = service.create_session()
    service.set_image(sid, shared_data / "coco_tiny" / "val2017" / "000000020992.jpg")
    timing = service.segment_everything(sid, points_per_side=16)
    assert len(service.get_session(sid).objects) >= 1, str(timing)
    assert "No masks found" not in str(timing)
