"""Issue 16: eight sessions driven at once through the service stay isolated (objects, class
labels, revisions, quality hints, segment everything, downloads); one session's memory stays
flat over 30 uploads; the malloc setting that keeps the server's RSS flat (segapp.service.memory).
The server's RSS over 30 uploads in a real browser: tests/test_demo_memory.py."""
from __future__ import annotations

import hashlib
import json
import threading

import numpy as np
import pytest

from segapp.service import ImageService, examples
from segapp.service.memory import pin_mmap_threshold
from tiny_models import tiny_model

PERMISSIVE_AMG = {"pred_iou_thresh": 0.0, "stability_score_thresh": 0.0}
SESSIONS = 8


@pytest.fixture(scope="module")
def model():
    return tiny_model()


def session_image(k: int) -> np.ndarray:
    return np.ascontiguousarray(np.roll(examples.synthetic_image(160, seed=k), shift=12 * k, axis=1))


def annotate(service: ImageService, sid: str, k: int, out) -> dict:
    """What user k does: upload, click, label, a second object, segment everything, undo;
    returns everything the user sees of the session."""
    service.set_image(sid, session_image(k), name=f"user{k}.png")
    service.click(sid, 20 + 15 * k, 30 + 10 * k, "positive")
    first = service.get_session(sid).selected.obj_id
    service.set_label(sid, first, f"class{k}")
    service.new_object(sid, name=f"thing{k}")
    service.click(sid, 140 - 10 * k, 120, "positive")
    service.click(sid, 10, 10, "negative")
    service.undo(sid)  # the negative click goes
    service.segment_everything(sid, points_per_side=2 + k % 3)
    files = service.downloads(sid, out).files
    session = service.get_session(sid)
    coco = json.loads(files["coco_json"].read_text())
    return {
        "objects": [(o.obj_id, o.name, o.label, o.points, o.labels) for o in session.objects],
        "masks": [hashlib.sha256(np.packbits(o.mask)).hexdigest() for o in session.masked_objects],
        "revision": session.revision, "labels": service.labels(sid), "hints": session.quality_hints,
        "image": hashlib.sha256(session.image).hexdigest(),
        "categories": sorted(c["name"] for c in coco["categories"]),
        "files": sorted(p.name for p in files.values()), "folders": {p.parent for p in files.values()},
    }


def test_eight_sessions_driven_concurrently_stay_isolated(model, tmp_path):
    serial = ImageService(model, amg_options=PERMISSIVE_AMG)
    expected = [annotate(serial, serial.create_session(), k, tmp_path / f"serial{k}") for k in range(SESSIONS)]

    service = ImageService(model, amg_options=PERMISSIVE_AMG)
    sids = [service.create_session() for _ in range(SESSIONS)]
    barrier, results, errors = threading.Barrier(SESSIONS), [None] * SESSIONS, []

    def user(k: int) -> None:
        try:
            barrier.wait(timeout=60)
            results[k] = annotate(service, sids[k], k, tmp_path / f"user{k}")
        except Exception as err:  # reported below with the user's index
            errors.append((k, err))

    threads = [threading.Thread(target=user, args=(k,)) for k in range(SESSIONS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not errors, errors
    for k, (got, want) in enumerate(zip(results, expected)):
        assert got["folders"] == {tmp_path / f"user{k}"}, k
        del got["folders"], want["folders"]
        assert got == want, f"session {k} differs from the same steps run alone"
        assert got["labels"] == [f"class{k}"] and f"class{k}" in got["categories"]
        assert not any(f"class{j}" in got["categories"] for j in range(SESSIONS) if j != k)
        assert all(n.startswith((f"user{k}_", f"user{k}.")) for n in got["files"] if n != "classes.txt"), got["files"]
        assert len(got["objects"]) > 2  # segment everything added objects to the two made by hand
    assert len({r["image"] for r in results}) == SESSIONS and len({tuple(r["masks"]) for r in results}) == SESSIONS


def test_thirty_uploads_keep_one_session_at_one_image(model):
    """A new upload drops the previous image, its objects and its undo history; the session
    keeps one embedding (its predictor's, reused)."""
    service = ImageService(model)
    sid = service.create_session()
    rng = np.random.default_rng(0)
    sizes = {}
    for k in range(1, 31):
        service.set_image(sid, rng.integers(0, 255, (120, 160, 3), dtype=np.uint8))
        session = service.get_session(sid)
        assert session.objects == () and not session.undo_stack and not session.redo_stack
        service.click(sid, 50, 60, "positive")
        service.click(sid, 90, 30, "negative")
        sizes[k] = session.nbytes()
        predictor = session.predictor if k == 1 else predictor
        assert session.predictor is predictor
    assert sizes[30] == sizes[5]


def test_pin_mmap_threshold_is_skipped_when_the_user_set_it(monkeypatch):
    monkeypatch.setenv("MALLOC_MMAP_THRESHOLD_", "131072")
    assert pin_mmap_threshold() is False
    monkeypatch.delenv("MALLOC_MMAP_THRESHOLD_")
    import platform

    if platform.system() == "Linux" and platform.libc_ver()[0] == "glibc":
        assert pin_mmap_threshold() is True
