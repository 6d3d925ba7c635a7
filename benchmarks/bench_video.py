"""Video predictor benchmark: memory growth with video length, and per-frame time, against the
reference SAM2VideoPredictor (sam2==1.1.0, fp32 on CPU; see tests/setup_reference.sh).

    python benchmarks/bench_video.py                # writes docs/benchmarks/video.md
    python benchmarks/bench_video.py --quick        # smaller runs, same tables

Memory: every run is a fresh process that reports its peak RSS (ru_maxrss) after tracking 1, ...
frames; the clip is a synthetic 1280x720 video with two objects clicked on frame 0.
  - segapp alone on the tiny config over a long mp4 (decoded lazily by the read-ahead thread);
  - segapp and the reference side by side on sam2.1_hiera_t (random official-format weights)
    over JPEG folders of increasing length (the reference reads only JPEG folders without decord).
Speed: both predictors track the same clip with the same prompts, one frame each in turn, so
that both see the same machine load; the ratio is the median of per-frame time ratios.
Host overhead: the same, on the tiny config at 128 px (`--only-host` runs just these rows and
replaces their section in the existing file), where the model's arithmetic is small and the
per-frame host work (frame decoding and resizing, mask upsampling, per-object bookkeeping) is
most of the time.

    OMP_WAIT_POLICY=PASSIVE python benchmarks/bench_video.py --only-host --threads 1
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

# Idle OpenMP threads spin by default, which on a shared, loaded CPU costs far more than the
# work timed here (the segapp command sets the same default).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("TQDM_DISABLE", "1")  # the reference's progress bars

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
OUT = REPO / "docs" / "benchmarks" / "video.md"
HEIGHT, WIDTH = 720, 1280


def synthetic_frame(t: int, num_objects: int = 4) -> np.ndarray:
    """A 720p frame with `num_objects` coloured shapes moving over textured background."""
    rng = np.random.default_rng(t)
    img = np.empty((HEIGHT, WIDTH, 3), np.uint8)
    img[:] = rng.integers(20, 70, (HEIGHT // 8, WIDTH // 8, 3), dtype=np.uint8).repeat(8, 0).repeat(8, 1)
    for k, (cx, cy) in enumerate(object_centres(t, num_objects)):
        colour = [(220, 50, 40), (40, 200, 60), (50, 80, 230), (230, 210, 40)][k % 4]
        img[cy - 60: cy + 60, cx - 80: cx + 80] = colour
    return img


def object_centres(t: int, num_objects: int) -> list[tuple[int, int]]:
    out = []
    for k in range(num_objects):
        phase = t / 40.0 + k * 1.7
        out.append((int(200 + k * 280 + 60 * np.sin(phase)), int(200 + (k % 2) * 300 + 40 * np.cos(phase))))
    return out


def write_mp4(path: Path, n: int) -> None:
    import cv2

    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 30, (WIDTH, HEIGHT))
    for t in range(n):
        writer.write(synthetic_frame(t)[..., ::-1])
    writer.release()


def write_jpegs(folder: Path, n: int) -> None:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    for t in range(n):
        Image.fromarray(synthetic_frame(t)).save(folder / f"{t:05d}.jpg", quality=90)


def tracking_checkpoint(path: Path) -> Path:
    """Random official-format sam2.1_hiera_t weights, object-score head biased to "present"."""
    import torch

    import reference

    if not path.exists():
        torch.manual_seed(0)
        reference.make_official_checkpoint("sam2.1_hiera_t", path, seed=0)
        sd = torch.load(path, weights_only=True)
        head = "sam_mask_decoder.pred_obj_score_head.layers.2"
        sd["model"][f"{head}.weight"] *= 0.1
        sd["model"][f"{head}.bias"].fill_(1.0)
        torch.save(sd, path)
    return path


def build(impl: str, config: str, checkpoint: str | None, image_size: int):
    """impl: "segapp", "segapp-bf16" (bf16 memory-attention kernels) or "reference"."""
    import torch

    torch.manual_seed(0)
    if impl.startswith("segapp"):
        import segapp
        from segapp.video.predictor import VideoPredictor

        model = segapp.build_model(config, checkpoint, device="cpu", image_size=image_size)
        if checkpoint is None:
            with torch.no_grad():
                model.mask_decoder.pred_obj_score_head.layers[-1].bias.fill_(5.0)
        dtype = torch.bfloat16 if impl == "segapp-bf16" else torch.float32
        # The reference cannot fill holes on CPU (no CUDA extension: it warns and skips), so
        # neither does segapp here: same outputs to compare, same work to time.
        return VideoPredictor(model, fill_hole_area=0, attention_dtype=dtype)
    import reference

    return reference.build_reference_model(config, image_size=image_size, video=True, checkpoint=checkpoint)


def add_clicks(pred, state, num_objects: int) -> None:
    for k, (cx, cy) in enumerate(object_centres(0, num_objects)):
        pred.add_new_points_or_box(state, 0, k + 1, points=[[cx, cy]], labels=[1])


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


def worker(args) -> None:
    """Track a video in this (fresh) process; print peak RSS after each sample frame count."""
    import torch

    torch.set_num_threads(args.threads)
    pred = build(args.impl, args.config, args.checkpoint, args.image_size)
    samples = sorted(int(s) for s in args.samples.split(","))
    start = time.perf_counter()
    with torch.inference_mode():
        state = pred.init_state(args.video)
        init_s = time.perf_counter() - start
        add_clicks(pred, state, args.objects)
        peaks = {}
        for count, _ in enumerate(pred.propagate_in_video(state), start=1):
            if count in samples:
                peaks[count] = rss_mb()
            if count >= samples[-1]:
                break
    print(json.dumps({"init_s": init_s, "peaks": peaks, "total_s": time.perf_counter() - start}))


def run_worker(impl, config, checkpoint, image_size, video, objects, samples, threads) -> dict:
    cmd = [sys.executable, __file__, "_worker", "--impl", impl, "--config", config, "--image-size", str(image_size),
           "--video", str(video), "--objects", str(objects), "--samples", ",".join(map(str, samples)),
           "--threads", str(threads)]
    if checkpoint:
        cmd += ["--checkpoint", str(checkpoint)]
    env = dict(os.environ, TQDM_DISABLE="1", PYTHONWARNINGS="ignore")
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO)
    if done.returncode:
        raise RuntimeError(f"{impl} worker failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


SPEED_IMPLS = ("segapp", "segapp-bf16", "reference")


def speed(checkpoint, image_size: int, frames: Path, num_objects: int, num_frames: int, threads: int) -> dict:
    """Per-frame propagation time of the predictors, frame by frame in turn, and how far each
    segapp variant's masks are from the reference's (IoU of the binary masks, worst over
    frames and objects; largest logit difference relative to the largest reference logit)."""
    import torch

    torch.set_num_threads(threads)
    preds = {impl: build(impl, "sam2.1_hiera_t", str(checkpoint), image_size) for impl in SPEED_IMPLS}
    times = {impl: [] for impl in preds}
    worst = {impl: {"iou": 1.0, "rel": 0.0} for impl in preds if impl != "reference"}
    with torch.inference_mode():
        gens = {}
        for impl, pred in preds.items():
            state = pred.init_state(str(frames))
            add_clicks(pred, state, num_objects)
            gens[impl] = pred.propagate_in_video(state, max_frame_num_to_track=num_frames)
        for step in range(num_frames + 1):
            logits = {}
            for impl, gen in gens.items():
                t0 = time.perf_counter()
                _, _, logits[impl] = next(gen)
                times[impl].append(time.perf_counter() - t0)
            ref = logits["reference"].float()
            for impl in worst:
                ours = logits[impl].float()
                a, b = ours > 0, ref > 0
                for o in range(ref.shape[0]):
                    union = (a[o] | b[o]).sum().item()
                    iou = 1.0 if union == 0 else (a[o] & b[o]).sum().item() / union
                    worst[impl]["iou"] = min(worst[impl]["iou"], iou)
                rel = ((ours - ref).abs().max() / ref.abs().max().clamp_min(1e-6)).item()
                worst[impl]["rel"] = max(worst[impl]["rel"], rel)
    # Frame 0 holds the prompts (no tracking) in all; compare tracked frames only.
    out = {"frames": num_frames, "reference_s": statistics.median(times["reference"][1:])}
    for impl in worst:
        ratios = [s / r for s, r in zip(times[impl][1:], times["reference"][1:])]
        out[impl] = {"s": statistics.median(times[impl][1:]), "ratio": statistics.median(ratios), **worst[impl]}
    return out


# ---------------------------------------------------------------------------- host overhead
# test_tiny's SAM heads are narrower than the reference can build (its SAM2Base fixes the mask
# decoder at 8 heads, MLP 2048, IoU head 256): the tiny config with those three widened is the
# smallest model both build, and the reference is given the rest of test_tiny by overrides.
TINY_CONFIG = "test_tiny"
TINY_HEADS = ("model.mask_decoder.iou_head_hidden_dim=256", "model.mask_decoder.transformer.num_heads=8",
              "model.mask_decoder.transformer.mlp_dim=2048")
TINY_SIZE = 128
REFERENCE_TINY = tuple(f"++model.{k}={v}" for k, v in {
    "image_size": TINY_SIZE,
    "image_encoder.trunk.embed_dim": 8, "image_encoder.trunk.num_heads": 1,
    "image_encoder.trunk.stages": "[1,1,2,1]", "image_encoder.trunk.global_att_blocks": "[3]",
    "image_encoder.trunk.window_spec": "[8,4,4,2]", "image_encoder.trunk.window_pos_embed_bkg_spatial_size": "[4,4]",
    "image_encoder.neck.backbone_channel_list": "[64,32,16,8]", "image_encoder.neck.d_model": 32,
    "image_encoder.neck.position_encoding.num_pos_feats": 32,
    "memory_attention.d_model": 32, "memory_attention.num_layers": 2, "memory_attention.layer.d_model": 32,
    "memory_attention.layer.dim_feedforward": 64,
    "memory_attention.layer.self_attention.embedding_dim": 32, "memory_attention.layer.self_attention.feat_sizes": "[8,8]",
    "memory_attention.layer.cross_attention.embedding_dim": 32, "memory_attention.layer.cross_attention.feat_sizes": "[8,8]",
    "memory_attention.layer.cross_attention.kv_in_dim": 16,
    "memory_encoder.in_dim": 32, "memory_encoder.out_dim": 16, "memory_encoder.position_encoding.num_pos_feats": 16,
    "memory_encoder.mask_downsampler.embed_dim": 32, "memory_encoder.fuser.layer.dim": 32,
}.items())


def build_reference_tiny(checkpoint: str | None):
    import reference

    reference.import_reference()
    from sam2.build_sam import build_sam2_video_predictor

    return build_sam2_video_predictor(reference.REFERENCE_CONFIGS["sam2.1_hiera_t"], ckpt_path=checkpoint,
                                      device="cpu", hydra_overrides_extra=list(REFERENCE_TINY))


def tiny_checkpoint(path: Path) -> Path:
    """Random official-format weights of the tiny shape (made by the reference, so that segapp's
    strict load proves the two models are the same), object-score head biased to "present"."""
    import torch

    import reference

    if not path.exists():
        with torch.random.fork_rng():
            torch.manual_seed(0)
            model = build_reference_tiny(None)
        reference.randomize_(model, 0)
        sd = model.state_dict()
        head = "sam_mask_decoder.pred_obj_score_head.layers.2"
        sd[f"{head}.weight"] *= 0.1
        sd[f"{head}.bias"].fill_(1.0)
        torch.save({"model": sd}, path)
    return path


def build_tiny(impl: str, checkpoint: Path):
    import torch

    torch.manual_seed(0)
    if impl == "reference":
        return build_reference_tiny(str(checkpoint))
    import segapp
    from segapp.video.predictor import VideoPredictor

    model = segapp.build_model(TINY_CONFIG, str(checkpoint), device="cpu", overrides=list(TINY_HEADS))
    return VideoPredictor(model, fill_hole_area=0)  # as the reference on CPU: see build()


def alternate(preds: dict, frames: Path, num_objects: int, num_frames: int) -> dict:
    """Track `frames` with every predictor, one frame each in turn. Returns per predictor
    init_state seconds, per-frame seconds (frame 0, the prompted one, first), and for each
    other than "reference" the worst mask IoU and relative logit difference against it."""
    import torch

    out = {impl: {"init_s": 0.0, "times": [], "iou": 1.0, "rel": 0.0} for impl in preds}
    with torch.inference_mode():
        gens = {}
        for impl, pred in preds.items():
            t0 = time.perf_counter()
            state = pred.init_state(str(frames))
            out[impl]["init_s"] = time.perf_counter() - t0
            add_clicks(pred, state, num_objects)
            gens[impl] = pred.propagate_in_video(state, max_frame_num_to_track=num_frames)
        for _ in range(num_frames + 1):
            logits = {}
            for impl, gen in gens.items():
                t0 = time.perf_counter()
                _, _, logits[impl] = next(gen)
                out[impl]["times"].append(time.perf_counter() - t0)
            ref = logits["reference"].float()
            for impl in preds:
                if impl == "reference":
                    continue
                ours = logits[impl].float()
                a, b = ours > 0, ref > 0
                for o in range(ref.shape[0]):
                    union = (a[o] | b[o]).sum().item()
                    iou = 1.0 if union == 0 else (a[o] & b[o]).sum().item() / union
                    out[impl]["iou"] = min(out[impl]["iou"], iou)
                rel = ((ours - ref).abs().max() / ref.abs().max().clamp_min(1e-6)).item()
                out[impl]["rel"] = max(out[impl]["rel"], rel)
    return out


def host_overhead(checkpoint: Path, frames: Path, num_objects: int, num_frames: int, threads: int) -> dict:
    """segapp vs the reference on the tiny shape: medians of per-frame time over the tracked
    frames, the median of per-frame ratios, and seconds per frame end to end (init_state and
    every frame, the prompted one too: the reference decodes all frames in init_state, segapp
    as it goes)."""
    import torch

    torch.set_num_threads(threads)
    r = alternate({impl: build_tiny(impl, checkpoint) for impl in ("segapp", "reference")},
                  frames, num_objects, num_frames)
    s, ref = r["segapp"], r["reference"]
    end_to_end = {impl: (v["init_s"] + sum(v["times"])) / (num_frames + 1) for impl, v in r.items()}
    return {
        "segapp_s": statistics.median(s["times"][1:]), "reference_s": statistics.median(ref["times"][1:]),
        "ratio": statistics.median(a / b for a, b in zip(s["times"][1:], ref["times"][1:])),
        "segapp_e2e": end_to_end["segapp"], "reference_e2e": end_to_end["reference"],
        "segapp_init": s["init_s"], "reference_init": ref["init_s"], "iou": s["iou"], "rel": s["rel"],
    }


HOST_HEADING = "## Host overhead"


def host_section(args, tmp: Path) -> list[str]:
    """The host-overhead section: 1 and 4 objects, with the load average before and after."""
    import torch

    folder = tmp / "host"
    write_jpegs(folder, args.host_frames + 1)
    ckpt = tiny_checkpoint(tmp / "tiny_random.pt")
    load_before = os.getloadavg()
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    rows = []
    for objects in (1, 4):
        r = host_overhead(ckpt, folder, objects, args.host_frames, args.threads)
        rows.append(f"| {objects} | {1000 * r['segapp_s']:.1f} | {1000 * r['reference_s']:.1f} | {r['ratio']:.2f} | "
                    f"{1000 * r['segapp_e2e']:.1f} | {1000 * r['reference_e2e']:.1f} | "
                    f"{1000 * r['segapp_init']:.0f} / {1000 * r['reference_init']:.0f} | {r['iou']:.4f} | {r['rel']:.1e} |")
        print(rows[-1], flush=True)
    load_after = os.getloadavg()
    load = lambda la: "/".join(f"{v:.1f}" for v in la)  # noqa: E731
    return [f"{HOST_HEADING}: per-frame time on CPU, tiny config at {TINY_SIZE} px, segapp vs reference", "",
            f"Run {started}: `OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', '')} python benchmarks/bench_video.py"
            f"{''.join(' ' + a for a in sys.argv[1:])}`; torch {torch.__version__}, {args.threads} thread(s), "
            f"{os.cpu_count()} CPU cores visible, shared with other jobs: load average (1/5/15 min) "
            f"{load(load_before)} before, {load(load_after)} after, so absolute times are noisy; compare the columns "
            "of a row (the two predictors alternate frame by frame and see the same load).",
            "",
            f"Model: `{TINY_CONFIG}` with its SAM heads widened to the sizes the reference fixes "
            f"({', '.join(h.split('.', 1)[1] for h in TINY_HEADS)}), the reference built from sam2.1_hiera_t.yaml "
            "with the rest of test_tiny as overrides; one random official-format checkpoint loaded strictly by both. "
            f"Clip: {args.host_frames + 1} synthetic 1280x720 JPEG frames, objects clicked on frame 0, "
            "fill_hole_area=0 on both (the reference cannot fill holes on CPU). s/frame: medians over the "
            f"{args.host_frames} tracked frames; ratio: median of per-frame ratios (below 1: segapp faster); "
            "end to end: init_state plus every frame, over the frames (the reference decodes and resizes every "
            "frame in init_state, segapp in a read-ahead thread as it tracks).",
            "",
            "| objects | segapp ms/frame | reference ms/frame | ratio | segapp ms/frame end to end | "
            "reference ms/frame end to end | init_state ms segapp / ref | mask IoU vs ref | logit diff |",
            "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
            *rows, "",
            "GPU rows (bf16, targets 1 object >= 1.0x and 4 objects >= 1.2x the reference's frames/s): "
            "not measured, no GPU in the session that ran this.", ""]


def replace_section(text: str, heading: str, section: list[str]) -> str:
    """`text` with its section starting `heading` replaced by `section` (or `section` put
    before "## Notes", else at the end)."""
    lines = text.rstrip("\n").splitlines()
    start = next((i for i, line in enumerate(lines) if line.startswith(heading)), None)
    if start is not None:
        end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
        del lines[start:end]
    else:
        start = next((i for i, line in enumerate(lines) if line.startswith("## Notes")), len(lines))
    if start and lines[start - 1].strip():
        section = [""] + section
    lines[start:start] = section
    return "\n".join(lines) + "\n"


def best_of(fn, repeats: int = 3) -> float:
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def components(checkpoint, image_size: int, threads: int) -> list[tuple[str, float, float]]:
    """Time the model parts both predictors run per frame, segapp's vs the reference's."""
    import torch

    import reference
    from sam2.modeling.position_encoding import apply_rotary_enc

    torch.set_num_threads(threads)
    ours = build("segapp", "sam2.1_hiera_t", str(checkpoint), image_size).model
    ref = build("reference", "sam2.1_hiera_t", str(checkpoint), image_size)
    reference.import_reference()
    side = image_size // 16
    tokens, objects = side * side, 4
    gen = torch.Generator().manual_seed(0)
    image = torch.randn(1, 3, image_size, image_size, generator=gen)
    curr = torch.randn(tokens, objects, 256, generator=gen)
    curr_pos = torch.randn(tokens, objects, 256, generator=gen)
    memory = torch.randn(7 * tokens + 64, objects, 64, generator=gen)
    memory_pos = torch.randn(7 * tokens + 64, objects, 64, generator=gen)
    q = torch.randn(1, 1, tokens, 256, generator=gen)
    k = torch.randn(1, 1, 7 * tokens, 256, generator=gen)
    ref_attn = ref.memory_attention.layers[0].cross_attn_image
    ref_attn(q[0], k[0, :, :, :64], k[0, :, :, :64])  # builds its rotation table for this grid
    rows = []
    with torch.inference_mode():
        rows.append(("image encoder (1 frame)", best_of(lambda: ours.forward_image(image)),
                     best_of(lambda: ref.forward_image(image))))
        rows.append((f"memory attention ({objects} objects, 7 memories + 16 pointers each)",
                     best_of(lambda: ours.memory_attention(curr, memory, curr_pos=curr_pos, memory_pos=memory_pos,
                                                           num_obj_ptr_tokens=64, grid_hw=(side, side))),
                     best_of(lambda: [ref.memory_attention(curr=[curr[:, i: i + 1]], curr_pos=[curr_pos[:, i: i + 1]],
                                                           memory=memory[:, i: i + 1], memory_pos=memory_pos[:, i: i + 1],
                                                           num_obj_ptr_tokens=64) for i in range(objects)])))
        rows.append((f"the same, segapp with bf16 attention kernels (attention_dtype)",
                     best_of(lambda: ours.memory_attention(curr, memory, curr_pos=curr_pos, memory_pos=memory_pos,
                                                           num_obj_ptr_tokens=64, grid_hw=(side, side),
                                                           kernel_dtype=torch.bfloat16)),
                     rows[-1][2]))
        rope = ours.memory_attention.layers[0].cross_attn_image.rope
        rows.append(("RoPE of one cross-attention (1 object)", best_of(lambda: rope(q, k, grid_hw=(side, side))),
                     best_of(lambda: apply_rotary_enc(q, k, freqs_cis=ref_attn.freqs_cis, repeat_freqs_k=True))))
    return rows


def memory_sections(text: str) -> list[str]:
    """The "## Memory..." sections of an earlier output, up to the next other "## " heading."""
    kept, inside = [], False
    for line in text.splitlines():
        if line.startswith("## "):
            inside = line.startswith("## Memory")
        if inside and not line.startswith("(Memory tables above"):
            kept.append(line)
    return kept


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smaller runs (for a loaded machine)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--tiny-frames", default="100,500,1000")
    parser.add_argument("--ref-frames", default="10,20,40")
    parser.add_argument("--ref-image-size", type=int, default=512)
    parser.add_argument("--speed-image-size", type=int, default=1024)
    parser.add_argument("--speed-frames", type=int, default=6)
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--skip-speed", action="store_true")
    parser.add_argument("--host-frames", type=int, default=40, help="tracked frames of the host-overhead rows")
    parser.add_argument("--only-host", action="store_true",
                        help="run only the host-overhead rows and replace their section in --out")
    parser.add_argument("--out", type=Path, default=OUT, help="markdown file to write (default: %(default)s)")
    args = parser.parse_args()
    if args.quick:
        args.tiny_frames, args.ref_frames, args.speed_frames, args.speed_image_size = "50,100,200", "5,10,20", 4, 512
    if args.only_host:
        with tempfile.TemporaryDirectory() as tmp:
            section = host_section(args, Path(tmp))
        text = args.out.read_text() if args.out.exists() else "# Video predictor benchmark\n"
        args.out.write_text(replace_section(text, HOST_HEADING, section))
        print("\n".join(section))
        return
    tiny = [int(x) for x in args.tiny_frames.split(",")]
    ref_counts = [int(x) for x in args.ref_frames.split(",")]
    lines = ["# Video predictor benchmark", "",
             f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores visible, "
             f"torch threads {args.threads}, CPU only, fp32 unless a row says otherwise. Command: "
             f"`python benchmarks/bench_video.py{''.join(' ' + a for a in sys.argv[1:])}`.", ""]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        ckpt = tracking_checkpoint(tmp / "sam2.1_hiera_t_random.pt")
        if not args.skip_memory:
            mp4 = tmp / "long.mp4"
            write_mp4(mp4, tiny[-1])
            res = run_worker("segapp", "test_tiny", None, 128, mp4, 2, tiny, args.threads)
            peaks = {int(k): v for k, v in res["peaks"].items()}
            base = peaks[tiny[0]]
            lines += ["## Memory: segapp, tiny config, 1280x720 mp4, 2 objects", "",
                      f"One process tracks a {tiny[-1]}-frame video; peak RSS after n frames. "
                      f"`init_state` returned in {res['init_s'] * 1000:.0f} ms.", "",
                      "| frames tracked | peak RSS (MB) | growth vs first |", "|---:|---:|---:|"]
            lines += [f"| {n} | {peaks[n]:.0f} | {100 * (peaks[n] - base) / base:+.1f}% |" for n in tiny]
            lines += ["", "## Memory: segapp vs reference, sam2.1_hiera_t, 1280x720 JPEG frames, 2 objects", "",
                      f"Image size {args.ref_image_size} (the reference preloads every frame as an "
                      f"{args.ref_image_size}x{args.ref_image_size} float32 tensor, 12.6 MB a frame at 1024); "
                      "one fresh process per video length; peak RSS at the end.", "",
                      "| frames | segapp peak RSS (MB) | reference peak RSS (MB) | reference init_state (s) | segapp init_state (s) |",
                      "|---:|---:|---:|---:|---:|"]
            rows = {}
            for n in ref_counts:
                folder = tmp / f"jpeg{n}"
                write_jpegs(folder, n)
                rows[n] = {impl: run_worker(impl, "sam2.1_hiera_t", ckpt, args.ref_image_size, folder, 2, [n], args.threads)
                           for impl in ("segapp", "reference")}
                s, r = rows[n]["segapp"], rows[n]["reference"]
                lines.append(f"| {n} | {s['peaks'][str(n)]:.0f} | {r['peaks'][str(n)]:.0f} | {r['init_s']:.2f} | {s['init_s']:.2f} |")
                print(lines[-1], flush=True)
            first, last = ref_counts[0], ref_counts[-1]
            for impl in ("segapp", "reference"):
                a, b = rows[first][impl]["peaks"][str(first)], rows[last][impl]["peaks"][str(last)]
                lines.append(f"\n{impl}: {100 * (b - a) / a:+.1f}% peak RSS from {first} to {last} frames.")
        folder = tmp / "speed"
        write_jpegs(folder, args.speed_frames + 1)
        objects_targets = () if args.skip_speed else ((1, 1.0), (4, 0.8))
        lines += ["", f"## Speed: per-frame propagation time, sam2.1_hiera_t at {args.speed_image_size}, CPU", "",
                  "The predictors track the same clip with the same clicks, alternating frame by frame; medians over "
                  f"{args.speed_frames} tracked frames. `segapp` is fp32 throughout, as the reference; "
                  "`segapp bf16-attn` is `VideoPredictor(model, attention_dtype=torch.bfloat16)`: the memory "
                  "cross-attention kernels in bf16, all else fp32. Mask IoU: worst over frames and objects against "
                  "the reference's masks; logit diff: largest |difference| over the largest |reference logit|.", "",
                  "| objects | predictor | s/frame | reference s/frame | ratio (target) | mask IoU vs ref | logit diff |",
                  "|---:|---|---:|---:|---:|---:|---:|"]
        for objects, target in objects_targets:
            r = speed(ckpt, args.speed_image_size, folder, objects, args.speed_frames, args.threads)
            for impl, label in (("segapp", "segapp (fp32)"), ("segapp-bf16", "segapp bf16-attn")):
                v = r[impl]
                lines.append(f"| {objects} | {label} | {v['s']:.2f} | {r['reference_s']:.2f} | {v['ratio']:.2f} "
                             f"(<= {target}) | {v['iou']:.4f} | {v['rel']:.1e} |")
                print(lines[-1], flush=True)
        if not args.skip_speed:
            lines += [""] + host_section(args, tmp)
        lines += ["", f"## Where the time goes: model parts per frame, sam2.1_hiera_t at {args.speed_image_size}", "",
                  "Best of 3; segapp's parts against the reference's on the same inputs.", "",
                  "| part | segapp s | reference s | ratio |", "|---|---:|---:|---:|"]
        for name, ours_s, ref_s in components(ckpt, args.speed_image_size, args.threads):
            lines.append(f"| {name} | {ours_s:.3f} | {ref_s:.3f} | {ours_s / ref_s:.2f} |")
            print(lines[-1], flush=True)
    if args.skip_memory and args.out.exists():
        # Keep the memory tables of an earlier full run instead of dropping them.
        kept = memory_sections(args.out.read_text())
        if kept:
            lines[4:4] = kept + ["(Memory tables above: kept from an earlier full run of this script; "
                                 "the sections below are from this run.)", ""]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "_worker":
        p = argparse.ArgumentParser()
        for name in ("--impl", "--config", "--checkpoint", "--video", "--samples"):
            p.add_argument(name)
        for name in ("--image-size", "--objects", "--threads"):
            p.add_argument(name, type=int)
        worker(p.parse_args(sys.argv[2:]))
    else:
        main()
