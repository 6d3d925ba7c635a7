"""The image tab's downloads of a session's objects (those with a mask), over segapp.formats
(segapp.service.exports):

    instance_png        instance-id PNG: pixel value = object id (8- or 16-bit gray)
    coco_json           COCO JSON, segmentation as compressed RLE; categories = class labels
    overlay_png         the image with the masks tinted and outlined
    palette_png         the id map as a palette PNG (values are ids, viewers show colours);
                        left out beyond 255 ids (the 16-bit instance PNG holds them)
    coco_polygons_json  COCO JSON, segmentation as polygons
    yolo_txt, yolo_classes
                        YOLO-seg label text (one line per object) and its classes.txt
"""
from __future__ import annotations

import io
from pathlib import Path
from typing import Sequence

from segapp.formats import yolo
from segapp.formats.id_maps import MAX_8BIT_ID, encode_palette_png
from segapp.service import exports
from segapp.service.image_session import ImageSession
from segapp.service.limits import DemoError

KINDS = ("instance_png", "coco_json", "overlay_png", "palette_png", "coco_polygons_json", "yolo_txt",
         "yolo_classes")
# What `ImageService.export` writes unless asked for more.
DEFAULT_KINDS = KINDS[:3]


def _id_map(session: ImageSession):
    objs = session.masked_objects
    return exports.instance_id_map([o.mask for o in objs], session.image.shape[:2], [o.obj_id for o in objs])


def instance_png(session: ImageSession) -> bytes:
    """PNG of the instance-id map: pixel value = object id, 0 = background."""
    return exports.id_map_to_png(_id_map(session))


def palette_png(session: ImageSession) -> bytes | None:
    """The id map as a palette PNG in the objects' colours; None beyond 255 ids."""
    objs = session.masked_objects
    if any(o.obj_id > MAX_8BIT_ID for o in objs):
        return None
    return encode_palette_png(_id_map(session), {o.obj_id: o.color for o in objs})


def coco_json(session: ImageSession, segmentation: str = "rle") -> str:
    """COCO JSON of the session's objects (one annotation per object with a mask; the
    categories are the objects' class labels, "object" for those without)."""
    objs = session.masked_objects
    return exports.coco_json_for_image(
        [o.mask for o in objs], session.image.shape[:2], file_name=session.image_name,
        names=[o.name for o in objs], scores=[o.scores[o.chosen] for o in objs], ids=[o.obj_id for o in objs],
        labels=[o.label for o in objs], segmentation=segmentation)


def overlay_png(session: ImageSession) -> bytes:
    """PNG of the image with every object's mask tinted and outlined (no prompts)."""
    from PIL import Image

    objs = session.masked_objects
    image = exports.overlay(session.image, [o.mask for o in objs], [o.color for o in objs])
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    return buf.getvalue()


def write_all(session: ImageSession, out_dir: str | Path, kinds: Sequence[str] = DEFAULT_KINDS) -> dict[str, Path]:
    """Write the downloads of `kinds` (see KINDS) into out_dir; returns {kind: path}."""
    unknown = [k for k in kinds if k not in KINDS]
    if unknown:
        raise DemoError(f"unknown download {unknown[0]!r}; choose from {', '.join(KINDS)}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = Path(session.image_name).stem or "image"
    objs = session.masked_objects
    makers = {
        "instance_png": (f"{stem}_instances.png", lambda: instance_png(session)),
        "coco_json": (f"{stem}_coco_rle.json", lambda: coco_json(session).encode()),
        "overlay_png": (f"{stem}_overlay.png", lambda: overlay_png(session)),
        "palette_png": (f"{stem}_palette.png", lambda: palette_png(session)),
        "coco_polygons_json": (f"{stem}_coco_polygons.json", lambda: coco_json(session, "polygons").encode()),
        "yolo_txt": (f"{stem}.txt", lambda: yolo.label_lines([o.mask for o in objs], [o.label for o in objs]).encode()),
        "yolo_classes": ("classes.txt", lambda: yolo.classes_text(yolo.class_list([o.label for o in objs])).encode()),
    }
    files = {}
    for kind in kinds:
        name, make = makers[kind]
        data = make()
        if data is not None:
            path = out_dir / name
            path.write_bytes(data)
            files[kind] = path
    return files
