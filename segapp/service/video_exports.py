"""The video tab's downloads: a zip of instance-id PNGs (one per tracked frame), a COCO RLE
document (one image entry per frame, segapp.formats.coco records) and an overlay MP4; and the
tab's playback of the masks found so far (a small preview MP4, no download needed)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable

from segapp.formats import coco
from segapp.service import exports
from segapp.service.video_session import VideoUserSession

# Long side of the preview video, pixels (smaller videos keep their size): the preview is
# written while frames are tracked and after every propagation, so it stays cheap to encode
# and to send.
PREVIEW_MAX_SIDE = 480


def coco_document(session: VideoUserSession) -> dict:
    """The COCO document of every tracked frame: image id frame + 1, one annotation per object
    with a mask on that frame (with its object id and name); the categories are the objects'
    class labels ("object" for those without), the same ids on every frame."""
    objects = {o.obj_id: o for o in session.objects}
    categories = coco.categories_from_labels(o.label for o in session.objects) or None
    images, anns = [], []
    for frame_idx in sorted(session.results):
        images.append(coco.image_record(frame_idx + 1, session.hw, f"{frame_idx:05d}.png", frame_index=frame_idx))
        ids = session.ids_on(frame_idx)
        anns += coco.annotations([session.mask(frame_idx, o) for o in ids], image_id=frame_idx + 1, ids=ids,
                                 names=[objects[o].name for o in ids], start_id=len(anns) + 1,
                                 labels=[objects[o].label for o in ids], categories=categories)
    return coco.document(images, anns, exports.DESCRIPTION, categories=categories)


def write_all(session: VideoUserSession, out_dir: str | Path) -> dict[str, Path]:
    """Write {"png_zip": instance-id PNG per frame (zip), "coco_json": COCO RLE JSON,
    "overlay_mp4": H.264 overlay video} into out_dir."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = session.path.stem or "video"

    def id_maps():
        for frame_idx in sorted(session.results):
            ids = session.ids_on(frame_idx)
            yield frame_idx, exports.instance_id_map([session.mask(frame_idx, o) for o in ids], session.hw, ids)

    png_zip = exports.write_png_zip(id_maps(), out_dir / f"{stem}_masks.zip")
    coco_path = out_dir / f"{stem}_coco_rle.json"
    coco_path.write_text(json.dumps(coco_document(session)))
    frames = (session.render(f, prompts=False) for f in range(session.num_frames)
              if session.state.frames.get(f) is not None)
    mp4 = exports.write_mp4(frames, out_dir / f"{stem}_overlay.mp4", session.fps)
    return {"png_zip": png_zip, "coco_json": coco_path, "overlay_mp4": mp4}


def write_preview(session: VideoUserSession, path: str | Path, max_side: int = PREVIEW_MAX_SIDE,
                  frames: Iterable[int] | None = None) -> Path:
    """An H.264 MP4 of every frame (or of `frames`, in that order) with the masks known on it
    (frames not tracked yet are plain), scaled down to at most max_side pixels on the long side,
    at the video's frame rate."""
    h, w = session.hw
    scale = min(1.0, max_side / max(h, w))
    size = (max(2, round(w * scale)), max(2, round(h * scale)))
    order = range(session.num_frames) if frames is None else frames
    frames = (session.render(f, prompts=False, size=size) for f in order if session.state.frames.get(f) is not None)
    return exports.write_mp4(frames, path, session.fps)
