"""Video-clip training speed (`segapp train-video`): clip-steps per second.

    python benchmarks/bench_train_video.py [--config segapp_small] [--steps 5] [--device cpu]

On davis2016 clips (../shared/data/davis2016) of --clip-frames frames at the config's image size:
the time to load and augment one clip (what a DataLoader worker does), and one training step
(tracking the clip with memory, the loss of every frame, backward, AdamW) with the whole model
trained and with the image encoder frozen. Steps alternate between the two settings so that
load on the machine hits both alike; the median is reported.
"""
from __future__ import annotations

import argparse
import tempfile
import time

import torch

from common import REPO, machine, median

from segapp.build import build_model
from segapp.training.video_data import VideoFolderClips
from segapp.training.video_trainer import VideoTrainConfig, VideoTrainer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="segapp_small")
    parser.add_argument("--videos", default=str(REPO.parent / "shared/data/davis2016"))
    parser.add_argument("--clip-frames", type=int, default=8)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()

    torch.manual_seed(0)
    model = build_model(args.config, device=args.device)
    data = VideoFolderClips(args.videos, model.image_size, clip_frames=args.clip_frames)
    loads, clips = [], []
    for i in range(args.steps + 1):
        start = time.perf_counter()
        clips.append(data[i % len(data)])
        loads.append(time.perf_counter() - start)
    trainers = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, freeze in (("all parts", ()), ("image encoder frozen", ("image_encoder",))):
            config = VideoTrainConfig(clip_frames=args.clip_frames, freeze=freeze, prob_correct_frame=0.5)
            trainers[name] = VideoTrainer(build_model(args.config, device=args.device), data, config, tmp)
        times: dict[str, list[float]] = {name: [] for name in trainers}
        for i in range(args.steps + 1):  # the first step of each is warm-up
            for name, trainer in trainers.items():
                start = time.perf_counter()
                trainer.train_step(clips[i])
                if args.device.startswith("cuda"):
                    torch.cuda.synchronize()
                if i:
                    times[name].append(time.perf_counter() - start)
    objects = sum(c.masks.shape[1] for c in clips[1:]) / args.steps
    print(f"{args.config} at {model.image_size} px, {args.clip_frames}-frame davis2016 clips "
          f"({objects:.1f} objects per clip), {args.device}; {machine()}")
    print(f"| what | s | clips/s |\n|---|---|---|\n| load + augment one clip | {median(loads[1:]):.2f} | "
          f"{1 / median(loads[1:]):.2f} |")
    for name, t in times.items():
        print(f"| training step, {name} | {median(t):.2f} | {1 / median(t):.2f} |")


if __name__ == "__main__":
    main()
