"""Pack the bundled model's training data into a small folder for a lent GPU machine.

    python benchmarks/gpu/pack_data.py --src ../shared/data --dst .gpu/data [--coco-side 416] [--davis-side 352]

Writes (all JPEG quality 90, the longer side at most --coco-side / --davis-side px, never enlarged;
COCO polygons, RLE masks, boxes and areas rescaled with their image):
  coco/<name>/images + coco/<name>/instances.json  for coco128, coco_tiny, coco_tiny50 (train2017)
                                                   and coco_extra: the bundled model's 278 images
  coco/val20/images + coco/val20/instances.json     the first 20 images of coco_tiny50/val2017
                                                   (those `--val-max-images 20` validates on)
  davis_train/, davis_val/                          DAVIS-2016 in DAVIS layout, the 6 held-out
                                                   sequences of the model card in davis_val
Deterministic: the same inputs give the same bytes.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils

from segapp.evaluation.coco import load_coco_instances

COCO_SETS = {  # name: (annotations, images) under --src
    "coco128": ("coco128/annotations/instances_train2017.json", "coco128/train2017"),
    "coco_tiny": ("coco_tiny/annotations/instances_train2017.json", "coco_tiny/train2017"),
    "coco_tiny50": ("coco_tiny50/annotations/instances_train2017.json", "coco_tiny50/train2017"),
    "coco_extra": ("coco_extra/annotations/instances.json", "coco_extra/images"),
}
VAL = ("coco_tiny50/annotations/instances_val2017.json", "coco_tiny50/val2017", 20)
DAVIS_HELD_OUT = ("bmx-bumps", "car-turn", "dog-agility", "horsejump-low", "paragliding", "tennis")


def resized(image: Image.Image, side: int) -> Image.Image:
    scale = side / max(image.size)
    if scale >= 1:
        return image
    return image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))),
                        Image.BICUBIC)


def rescale_segmentation(seg, old_hw: tuple[int, int], new_hw: tuple[int, int]):
    (oh, ow), (nh, nw) = old_hw, new_hw
    sx, sy = nw / ow, nh / oh
    if isinstance(seg, list):  # polygons [x0, y0, x1, y1, ...]
        return [[round(v * (sx if i % 2 == 0 else sy), 2) for i, v in enumerate(poly)] for poly in seg]
    rle = mask_utils.frPyObjects(seg, oh, ow) if isinstance(seg.get("counts"), list) else seg
    if isinstance(rle.get("counts"), str):
        rle = {"size": rle["size"], "counts": rle["counts"].encode()}
    mask = mask_utils.decode(rle)
    small = np.array(Image.fromarray(mask * 255).resize((nw, nh), Image.BILINEAR)) >= 128
    out = mask_utils.encode(np.asfortranarray(small.astype(np.uint8)))
    return {"size": [nh, nw], "counts": out["counts"].decode()}


def pack_coco(ann_path: Path, image_dir: Path, dst: Path, side: int, keep_ids: set[int] | None = None) -> int:
    data = json.loads(ann_path.read_text())
    (dst / "images").mkdir(parents=True, exist_ok=True)
    images, sizes = [], {}
    for info in sorted(data["images"], key=lambda i: i["id"]):
        if keep_ids is not None and info["id"] not in keep_ids:
            continue
        src = image_dir / info["file_name"]
        if not src.is_file():
            continue
        with Image.open(src) as im:
            small = resized(im.convert("RGB"), side)
            old = (im.height, im.width)
        name = Path(info["file_name"]).with_suffix(".jpg").name
        small.save(dst / "images" / name, "JPEG", quality=90)
        sizes[info["id"]] = (old, (small.height, small.width))
        images.append({**info, "file_name": name, "height": small.height, "width": small.width})
    annotations = []
    for ann in data["annotations"]:
        if ann.get("image_id") not in sizes:
            continue
        old, new = sizes[ann["image_id"]]
        sx, sy = new[1] / old[1], new[0] / old[0]
        ann = dict(ann)
        if "segmentation" in ann:
            ann["segmentation"] = rescale_segmentation(ann["segmentation"], old, new)
        if "bbox" in ann:
            x, y, w, h = ann["bbox"]
            ann["bbox"] = [round(x * sx, 2), round(y * sy, 2), round(w * sx, 2), round(h * sy, 2)]
        if "area" in ann:
            ann["area"] = round(ann["area"] * sx * sy, 2)
        annotations.append(ann)
    out = {"images": images, "annotations": annotations, "categories": data["categories"]}
    (dst / "instances.json").write_text(json.dumps(out, separators=(",", ":")))
    return len(images)


def pack_davis(src: Path, dst: Path, side: int) -> tuple[int, int]:
    counts = [0, 0]
    for seq in sorted(p.name for p in (src / "JPEGImages").iterdir() if p.is_dir()):
        held_out = seq in DAVIS_HELD_OUT
        root = dst / ("davis_val" if held_out else "davis_train")
        (root / "JPEGImages" / seq).mkdir(parents=True, exist_ok=True)
        (root / "Annotations" / seq).mkdir(parents=True, exist_ok=True)
        for frame in sorted((src / "JPEGImages" / seq).glob("*.jpg")):
            with Image.open(frame) as im:
                small = resized(im.convert("RGB"), side)
            small.save(root / "JPEGImages" / seq / frame.name, "JPEG", quality=90)
            mask_path = src / "Annotations" / seq / (frame.stem + ".png")
            if mask_path.is_file():
                with Image.open(mask_path) as m:  # ids (or 0/255): nearest keeps them
                    m.resize(small.size, Image.NEAREST).save(root / "Annotations" / seq / mask_path.name,
                                                             optimize=True)
            counts[held_out] += 1
    return counts[0], counts[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--src", type=Path, required=True, help="the shared data folder (../shared/data)")
    parser.add_argument("--dst", type=Path, required=True)
    parser.add_argument("--coco-side", type=int, default=416, help="longer side of COCO images (max 640)")
    parser.add_argument("--davis-side", type=int, default=352, help="longer side of DAVIS frames (max 640)")
    args = parser.parse_args()
    for name, (ann, images) in COCO_SETS.items():
        n = pack_coco(args.src / ann, args.src / images, args.dst / "coco" / name, args.coco_side)
        print(f"coco/{name}: {n} images")
    ann, images, count = VAL
    val_ids = {e.image_id for e in load_coco_instances(args.src / ann, args.src / images, max_images=count).images}
    n = pack_coco(args.src / ann, args.src / images, args.dst / "coco" / "val20", args.coco_side, val_ids)
    print(f"coco/val20: {n} images")
    train, val = pack_davis(args.src / "davis2016", args.dst, args.davis_side)
    print(f"davis_train: {train} frames, davis_val: {val} frames ({', '.join(DAVIS_HELD_OUT)})")


if __name__ == "__main__":
    main()
