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
    parser.add_argument("--out", type=Path, default=OUT, help="markdown file to write (default: %(default)s)")
    args = parser.parse_args()
    if args.quick:
        args.tiny_frames, args.ref_frames, args.speed_frames, args.speed_image_size = "50,100,200", "5,10,20", 4, 512
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
