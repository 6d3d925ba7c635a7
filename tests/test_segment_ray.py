"""`segapp segment --engine ray` on a local Ray (2 CPUs) writes the same outputs as the local engine.

Ray is started with RAY_USAGE_STATS_ENABLED=0 and HOME pointing at a folder holding
`ray_bootstrap_config.yaml` with `provider: {type: local}`: that stops Ray's start-up probes
of cloud metadata addresses, so the test talks to nothing but loopback.
"""
from __future__ import annotations

import json

import pytest

from segapp.cli import main
from test_segment_cli import EVERYTHING, make_images
from test_segment_resume import output_files


@pytest.fixture
def local_ray(tmp_path_factory, monkeypatch):
    ray = pytest.importorskip("ray", reason="Ray is an optional extra: pip install 'segapp[ray]'")
    home = tmp_path_factory.mktemp("ray_home")
    (home / "ray_bootstrap_config.yaml").write_text("provider: {type: local}\n")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("RAY_USAGE_STATS_ENABLED", "0")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        yield ray
    finally:
        ray.shutdown()


@pytest.mark.slow
def test_ray_engine_matches_local_engine(tmp_path, local_ray):
    src = tmp_path / "in"
    make_images(src, ["a.png", "b.png", "sub/c.jpg", "sub/d.png", "e.png"], size=(64, 80))
    (src / "bad.png").write_bytes(b"")
    (tmp_path / "p.json").write_text(json.dumps({"default": "everything", "images": {
        "a.png": [{"box": [10, 10, 50, 45]}, {"id": 9, "points": [[70, 50]], "labels": [1]}],
        "sub/c.jpg": [{"points": [[20, 20], [60, 50]], "labels": [1, 0]}],
        "sub/d.png": [{"id": 300, "box": [0, 0, 40, 40]}],
    }}))
    args = [str(src), "--model", "test_tiny", "--no-progress", "--batch-size", "2", "--prompts",
            str(tmp_path / "p.json"), "--format", "png,coco,overlay", *EVERYTHING]
    local, distributed = tmp_path / "local", tmp_path / "ray"
    assert main(["segment", *args, "--out", str(local)]) == 1  # bad.png
    assert main(["segment", *args, "--out", str(distributed), "--engine", "ray", "--ray-actors", "2"]) == 1
    ours, theirs = output_files(local), output_files(distributed)
    assert sorted(ours) == sorted(theirs) and "sub/d.png" in ours
    assert ours == theirs
    # Resume works the same way on Ray: nothing left to do.
    assert main(["segment", *args, "--out", str(distributed), "--engine", "ray", "--ray-actors", "2"]) == 1
    assert output_files(distributed) == theirs


def test_ray_missing_is_a_clear_usage_error(tmp_path, monkeypatch, capsys):
    import builtins

    real_import = builtins.__import__

    def no_ray(name, *args, **kwargs):
        if name == "ray" or name.startswith("ray."):
            raise ImportError("No module named 'ray'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_ray)
    make_images(tmp_path / "in", ["a.png"])
    rc = main(["segment", str(tmp_path / "in"), "--out", str(tmp_path / "out"), "--model", "test_tiny",
               "--no-progress", "--engine", "ray"])
    assert rc == 2
    assert "pip install 'segapp[ray]'" in capsys.readouterr().err
