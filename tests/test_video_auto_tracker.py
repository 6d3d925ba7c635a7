"""Track everything (VideoAutoTracker): the bookkeeping as pure functions on given masks, the
tracker on a scripted scene (a fake segment-everything and a fake frame tracker), and on the
tiny model."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from segapp.video.auto_tracker import (VideoAutoTracker, coverage, duplicates, mask_iou, select_new,
                                       update_absence, vanished)
from tiny_models import tracking_model

H, W = 48, 64


def box_mask(y0, y1, x0, x1, h=H, w=W) -> torch.Tensor:
    m = torch.zeros(h, w, dtype=torch.bool)
    m[y0:y1, x0:x1] = True
    return m


# ---------------------------------------------------------------------------- pure functions
def test_mask_iou_and_coverage():
    a, b = box_mask(0, 10, 0, 10), box_mask(0, 10, 5, 15)
    iou = mask_iou(torch.stack([a, b]), torch.stack([a, b, torch.zeros_like(a)]))
    assert iou[0, 0] == 1 and abs(float(iou[0, 1]) - 50 / 150) < 1e-6 and iou[0, 2] == 0
    cov = coverage(torch.stack([b, a]), torch.stack([a]))
    assert cov.tolist() == [0.5, 1.0]
    assert coverage(torch.stack([a]), torch.zeros(0, H, W, dtype=torch.bool)).tolist() == [0.0]


def test_select_new_adds_uncovered_and_one_of_two_proposals_of_one_object():
    tracked = torch.stack([box_mask(0, 10, 0, 10)])
    candidates = torch.stack([
        box_mask(0, 10, 0, 10),      # the tracked object again: covered
        box_mask(20, 30, 20, 40),    # a new object
        box_mask(21, 30, 21, 40),    # the same new object, proposed twice: covered by the one before
        box_mask(0, 10, 8, 20),      # 2/12 of it covered: new
        box_mask(40, 41, 0, 3),      # 3 pixels: below min_area
    ])
    assert select_new(candidates, tracked, max_coverage=0.3, min_area=4) == [1, 3]
    assert select_new(candidates, torch.zeros(0, H, W, dtype=torch.bool), 0.3, 4) == [0, 1, 3]


def test_duplicates_drop_the_younger_object():
    a = box_mask(0, 10, 0, 10)
    near_a = box_mask(0, 10, 0, 11)
    b = box_mask(20, 30, 20, 30)
    masks = torch.stack([a, b, near_a, near_a])
    assert duplicates(masks, [3, 5, 8, 9], merge_iou=0.7) == [8, 9]
    assert duplicates(masks, [3, 5, 8, 9], merge_iou=0.95) == [9]  # 8 is not a duplicate of 3 at 0.95
    assert duplicates(masks[:1], [3], 0.7) == []


def test_absence_counting_and_vanished():
    absent = update_absence({}, [1, 2], [True, False])
    assert absent == {1: 0, 2: 1}
    absent = update_absence(absent, [1, 2, 4], [False, False, True])
    assert absent == {1: 1, 2: 2, 4: 0}
    absent = update_absence(absent, [2, 4], [True, False])  # 1 no longer tracked: forgotten
    assert absent == {2: 0, 4: 1}
    assert vanished({1: 3, 2: 5, 3: 6}, drop_after=5) == [2, 3]


# ---------------------------------------------------------------------------- a scripted scene
A = box_mask(5, 20, 5, 20)        # 225 px, frames 0..39
C = box_mask(30, 40, 2, 22)       # 200 px, frames 0..9, then gone
B = box_mask(25, 40, 35, 55)      # 300 px, enters at frame 20


def scene(t: int) -> list[torch.Tensor]:
    objects = [A]
    if t < 10:
        objects.append(C)
    if t >= 20:
        objects.append(B)
    return objects


class FakeGenerator:
    """Segment everything that returns the scene's objects, and a second, slightly smaller
    proposal of A (two detections of one object)."""

    def __init__(self):
        self.calls = []

    def generate(self, image):
        t = int(image[0, 0, 0])  # the frame number is written into the frame
        self.calls.append(t)
        records = [{"segmentation": m.numpy()} for m in scene(t)]
        records.append({"segmentation": box_mask(6, 19, 6, 19).numpy()})
        return records


class FakeStreamTracker:
    """Tracks each object to the scene object it overlaps most (empty when none)."""

    def __init__(self):
        self.prompts: dict = {}
        self.t = -1

    def _masks(self):
        ids = list(self.prompts)
        out = []
        for obj_id in ids:
            best = torch.zeros(H, W, dtype=torch.bool)
            for m in scene(self.t):
                if (m & self.prompts[obj_id]).sum() > 0.5 * self.prompts[obj_id].sum():
                    best = m
            out.append(best)
        logits = (torch.stack(out).float() * 20 - 10)[:, None] if out else torch.zeros(0, 1, H, W)
        return self.t, ids, logits

    def start(self, frame, prompts):
        self.t, self.prompts = 0, {}
        return self._masks()

    def step(self, frame):
        self.t += 1
        return self._masks()

    def add_object(self, obj_id, mask):
        self.prompts[obj_id] = torch.as_tensor(mask)

    def remove_object(self, obj_id):
        del self.prompts[obj_id]

    def current(self):
        return self._masks()

    def close(self):
        pass


def frames(n: int) -> list[np.ndarray]:
    out = []
    for t in range(n):
        img = np.zeros((H, W, 3), np.uint8)
        img[0, 0, 0] = t
        out.append(img)
    return out


def test_scripted_scene_ids_are_stable_new_objects_added_vanished_dropped():
    generator = FakeGenerator()
    auto = VideoAutoTracker(generator=generator, stream_tracker=FakeStreamTracker(), every=5, drop_after=5,
                            min_area=4)
    results = {t: (ids, logits[:, 0] > 0) for t, ids, logits in auto.track(frames(40))}
    assert generator.calls == list(range(0, 40, 5))
    # frame 0: A (largest) is 1, C is 2; the second proposal of A is covered by 1: no object
    assert results[0][0] == [1, 2]
    assert torch.equal(results[0][1][0], A) and torch.equal(results[0][1][1], C)
    # C leaves at frame 10: absent on frames 10..14, dropped on the 5th absent frame
    for t in range(1, 14):
        assert results[t][0] == [1, 2]
    assert all(results[t][0][0] == 1 and torch.equal(results[t][1][0], A) for t in range(40))
    assert auto.stats.vanished == [(14, 2)]
    assert all(results[t][0] == [1] for t in range(14, 20))
    # B enters at frame 20 (a segment-everything frame): a new id, never used before, kept
    assert auto.stats.added == [(0, 1), (0, 2), (20, 3)]
    for t in range(20, 40):
        ids, masks = results[t]
        assert ids == [1, 3] and torch.equal(masks[1], B)
    assert auto.stats.merged == []


def test_tracked_objects_that_become_one_are_merged_the_older_keeps_its_id():
    class Converging(FakeStreamTracker):
        """From frame 3 on, object 2's mask is object 1's."""

        def _masks(self):
            t, ids, logits = super()._masks()
            if t >= 3 and 2 in ids:
                logits[ids.index(2)] = logits[ids.index(1)]
            return t, ids, logits

    class TwoObjects:
        def generate(self, image):
            return [{"segmentation": A.numpy()}, {"segmentation": C.numpy()}]

    auto = VideoAutoTracker(generator=TwoObjects(), stream_tracker=Converging(), every=100, drop_after=50)
    ids = [ids for _, ids, _ in auto.track(frames(6))]
    assert ids == [[1, 2], [1, 2], [1, 2], [1], [1], [1]]
    assert auto.stats.merged == [(3, 2)]


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="every must be at least 1"):
        VideoAutoTracker(generator=FakeGenerator(), stream_tracker=FakeStreamTracker(), every=0)
    with pytest.raises(ValueError, match="merge_iou"):
        VideoAutoTracker(generator=FakeGenerator(), stream_tracker=FakeStreamTracker(), merge_iou=0)
    with pytest.raises(ValueError, match="new_object_coverage"):
        VideoAutoTracker(generator=FakeGenerator(), stream_tracker=FakeStreamTracker(), new_object_coverage=1.5)


# ---------------------------------------------------------------------------- the tiny model
def test_tiny_model_with_fake_proposals():
    """The real tracker (tiny random model): every frame comes out, ids start at 1, grow in
    order of appearance, are never reused, and the added objects are prompted with their mask."""
    from segapp.video.predictor import VideoPredictor

    model = tracking_model(fill=5.0)  # objects predicted present
    generator = FakeGenerator()
    auto = VideoAutoTracker(VideoPredictor(model), generator=generator, every=4, drop_after=3, min_area=4)
    out = list(auto.track(frames(9)))
    assert [t for t, _, _ in out] == list(range(9))
    assert out[0][1] == [1, 2]
    masks0 = out[0][2][:, 0] > 0  # a mask prompt is the output on its frame (up to low-res edges)
    assert (masks0[0] == A).float().mean() > 0.97 and (masks0[1] == C).float().mean() > 0.97
    seen: list = []
    for _, ids, logits in out:
        assert ids == sorted(ids) and logits.shape == (len(ids), 1, H, W)
        for obj_id in ids:
            if obj_id not in seen:
                seen.append(obj_id)
    dropped = {obj_id for _, obj_id in auto.stats.vanished + auto.stats.merged}
    for (t, obj_id) in auto.stats.vanished + auto.stats.merged:
        assert all(obj_id not in ids for f, ids, _ in out if f >= t)  # never back
    assert [obj_id for _, obj_id in auto.stats.added] == list(range(1, len(auto.stats.added) + 1))
    assert set(seen) | dropped <= {obj_id for _, obj_id in auto.stats.added}
