"""benchmarks/gpu (the lent-GPU pipeline, docs/training.md "On a lent GPU"): its --smoke mode runs
every stage on this CPU and leaves in $OUT what a GPU run brings back.

Uses the data pack of `bash benchmarks/gpu/prepare.sh` when it is there, else packs its own
(smaller images) from ../shared/data with benchmarks/gpu/pack_data.py.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import segapp

ROOT = Path(__file__).resolve().parents[1]
WEIGHTS = ("pretrained.safetensors", "image.safetensors", "segapp_small_gpu.safetensors")


@pytest.mark.slow
def test_gpu_pipeline_smoke(tmp_path, shared_data):
    data = ROOT / ".gpu" / "data"
    if not (data / "davis_val").is_dir():
        data = tmp_path / "data"
        subprocess.run([sys.executable, "benchmarks/gpu/pack_data.py", "--src", str(shared_data), "--dst", str(data),
                        "--coco-side", "256", "--davis-side", "256"], cwd=ROOT, check=True, capture_output=True)
    out = tmp_path / "out"
    env = {**os.environ, "OUT": str(out), "WORK": str(tmp_path / "work"), "GPU_DATA": str(data)}
    done = subprocess.run(["bash", "benchmarks/gpu/run.sh", "--smoke", "400"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    files = sorted(p.name for p in out.iterdir())
    assert files == sorted(["results.json", "run.log", "logs.tar.gz", *WEIGHTS])  # the run tool returns <= 8
    results = json.loads((out / "results.json").read_text())
    stages = results["stages"]
    assert [row["config"] for row in stages["bench"]["rows"]] == ["segapp_small", "sam2.1_hiera_t"]
    assert all(row["s_per_step"] > 0 for row in stages["bench"]["rows"])
    assert stages["pretrain"]["status"] == 0 and stages["pretrain"]["steps_done"] == stages["pretrain"]["plan"]["steps"]
    for stage, metric in (("train", "val_miou"), ("video", "val_j")):
        assert stages[stage]["status"] == 0
        assert len(stages[stage]["log"]) == stages[stage]["plan"]["epochs"]
        assert all(0 <= float(row[metric]) <= 1 for row in stages[stage]["log"])
    assert stages["eval"]["eval_gpu_video"]["overall"]["frames"] > 0
    assert 0 <= stages["eval"]["eval_bundled_box"]["overall"]["miou"][0] <= 1
    # the final weights track: their metadata names the trained memory
    from segapp import bundled

    meta = bundled.read_metadata(str(out / "segapp_small_gpu.safetensors"))
    assert "memory_attention" in meta["trained_parts"]
    model = segapp.build_model("segapp_small", out / "segapp_small_gpu.safetensors", device="cpu")
    segapp.VideoPredictor(model)
