"""`segapp info`: versions, device, configs and local checkpoints, as text and as JSON."""
from __future__ import annotations

import json
import platform

import numpy
import pytest
import torch

import segapp
from segapp import registry
from segapp.cli import main


def _expected_device() -> str:
    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


@pytest.fixture
def empty_cwd(tmp_path, monkeypatch):
    """A working directory with no ./checkpoints and no SEGAPP_CHECKPOINTS."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(registry.CHECKPOINTS_ENV, raising=False)
    return tmp_path


def _place(folder, config):
    """A sparse file with the official name and size of `config` (find_local checks the size)."""
    info = registry.get(config)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / info.filename
    with open(path, "wb") as f:
        f.truncate(info.size)
    return path


def test_info_text_reports_versions_device_and_missing_checkpoints(empty_cwd, capsys):
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert segapp.__version__ in out
    assert torch.__version__ in out
    assert numpy.__version__ in out
    assert platform.python_version() in out
    assert f"device   {_expected_device()}" in out
    for info in registry.all_checkpoints():
        assert f"{info.config}" in out
    assert "not found" in out
    assert "segapp download sam2.1_hiera_t" in out


def test_info_lists_configs(empty_cwd, capsys):
    from segapp.build import list_configs  # written alongside; fails until segapp/build.py exists

    assert main(["info"]) == 0
    out = capsys.readouterr().out
    configs = list_configs()
    assert configs, "list_configs() returned no configs"
    assert f"configs  {', '.join(configs)}" in out


def test_info_shows_found_checkpoints(empty_cwd, tmp_path_factory, monkeypatch, capsys):
    local = _place(empty_cwd / "checkpoints", "sam2.1_hiera_t")
    elsewhere = _place(tmp_path_factory.mktemp("shared"), "sam2_hiera_l")
    monkeypatch.setenv(registry.CHECKPOINTS_ENV, str(elsewhere.parent))
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    (tiny,) = [ln for ln in lines if ln.strip().startswith("sam2.1_hiera_t ")]
    assert tiny.endswith(str(local.relative_to(empty_cwd)))
    (large,) = [ln for ln in lines if ln.strip().startswith("sam2_hiera_l ")]
    assert large.endswith(str(elsewhere))
    assert "segapp download" not in out  # no hint once a checkpoint is present


def test_info_json(empty_cwd, capsys):
    _place(empty_cwd / "checkpoints", "sam2.1_hiera_s")
    assert main(["info", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["segapp"] == segapp.__version__
    assert report["torch"] == torch.__version__
    assert report["numpy"] == numpy.__version__
    assert report["python"] == platform.python_version()
    assert report["device"] == _expected_device()
    assert [c["config"] for c in report["checkpoints"]] == registry.names()
    found = {c["config"]: c["path"] for c in report["checkpoints"] if c["path"]}
    assert found == {"sam2.1_hiera_s": "checkpoints/sam2.1_hiera_small.pt"}
    assert report["hint"] is None


def test_info_json_hint_when_nothing_is_downloaded(empty_cwd, capsys):
    assert main(["info", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert all(c["path"] is None for c in report["checkpoints"])
    assert report["hint"] == "segapp download sam2.1_hiera_t"
