"""The image tab's downloads: instance-id PNG, COCO RLE JSON and overlay PNG of a session's
objects (those with a mask), over segapp.formats (segapp.service.exports)."""
from __future__ import annotations

import io
from pathlib import Path

from segapp.service import exports
from segapp.service.image_session import ImageSession


def instance_png(session: ImageSession) -> bytes:
    """PNG of the instance-id map: pixel value = object id, 0 = background."""
    objs = session.masked_objects
    id_map = exports.instance_id_map([o.mask for o in objs], session.image.shape[:2], [o.obj_id for o in objs])
    return exports.id_map_to_png(id_map)


def coco_json(session: ImageSession) -> str:
    """COCO RLE JSON of the session's objects (one annotation per object with a mask; the
    categories are the objects' class labels, "object" for those without)."""
    objs = session.masked_objects
    return exports.coco_json_for_image(
        [o.mask for o in objs], session.image.shape[:2], file_name=session.image_name,
        names=[o.name for o in objs], scores=[o.scores[o.chosen] for o in objs], ids=[o.obj_id for o in objs],
        labels=[o.label for o in objs])


def overlay_png(session: ImageSession) -> bytes:
    """PNG of the image with every object's mask tinted and outlined (no prompts)."""
    from PIL import Image

    objs = session.masked_objects
    image = exports.overlay(session.image, [o.mask for o in objs], [o.color for o in objs])
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    return buf.getvalue()


def write_all(session: ImageSession, out_dir: str | Path) -> dict[str, Path]:
    """Write the three downloads into out_dir: {"instance_png", "coco_json", "overlay_png"}."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = Path(session.image_name).stem or "image"
    files = {
        "instance_png": (out_dir / f"{stem}_instances.png", instance_png(session)),
        "coco_json": (out_dir / f"{stem}_coco_rle.json", coco_json(session).encode()),
        "overlay_png": (out_dir / f"{stem}_overlay.png", overlay_png(session)),
    }
    for path, data in files.values():
        path.write_bytes(data)
    return {key: path for key, (path, _) in files.items()}
