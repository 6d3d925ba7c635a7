"""The video predictor's API on the tiny model: input forms, prompts, objects, errors, bounded state."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

import segapp
from segapp.video.frames import FolderFrames, VideoReadError
from segapp.video.predictor import SkippedFrameError, VideoPredictor
from tiny_models import tracking_model

H, W = 48, 64


def make_frames(n: int, h: int = H, w: int = W, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    frames = []
    for t in range(n):
        img = rng.integers(0, 60, (h, w, 3), dtype=np.uint8)
        img[10:30, 5 + t % 20: 25 + t % 20] = (220, 40, 40)
        frames.append(img)
    return frames


@pytest.fixture(scope="module")
def predictor():
    return VideoPredictor(tracking_model(fill=5.0))  # objects present: tracking has masks to carry


def track(predictor, state, **kwargs):
    return [(f, list(ids), m) for f, ids, m in predictor.propagate_in_video(state, **kwargs)]


def test_exports():
    assert segapp.SAM2VideoPredictor is segapp.VideoPredictor
    assert callable(segapp.build_video_predictor)


def test_build_video_predictor():
    torch.manual_seed(0)
    pred = segapp.build_video_predictor("test_tiny", device="cpu")
    assert isinstance(pred, VideoPredictor) and pred.image_size == 128


def test_list_of_frames_two_objects(predictor):
    state = predictor.init_state(make_frames(6))
    assert (state.num_frames, state.video_height, state.video_width) == (6, H, W)
    f, ids, masks = predictor.add_new_points_or_box(state, 0, 1, points=[[15, 20]], labels=[1])
    assert (f, ids, masks.shape) == (0, [1], (1, 1, H, W))
    f, ids, masks = predictor.add_new_points_or_box(state, 0, "car", box=[5, 5, 40, 40])
    assert ids == [1, "car"] and masks.shape == (2, 1, H, W)
    out = track(predictor, state)
    assert [o[0] for o in out] == list(range(6))
    assert all(o[1] == [1, "car"] and o[2].shape == (2, 1, H, W) for o in out)
    assert all(torch.isfinite(o[2]).all() for o in out)
    rev = track(predictor, state, start_frame_idx=5, reverse=True)
    assert [o[0] for o in rev] == list(range(5, -1, -1))


def test_folder_natural_order_and_png(predictor, tmp_path):
    frames = make_frames(11)
    for t, img in enumerate(frames):  # "f2" must come before "f10"
        Image.fromarray(img).save(tmp_path / f"f{t}.png")
    source = FolderFrames(tmp_path)
    assert [p.name for p in source.paths][:3] == ["f0.png", "f1.png", "f2.png"]
    assert source.paths[-1].name == "f10.png"
    np.testing.assert_array_equal(source.get(10), frames[10])
    state = predictor.init_state(str(tmp_path))
    predictor.add_new_points_or_box(state, 0, 1, points=[[15, 20]], labels=[1])
    assert len(track(predictor, state, max_frame_num_to_track=3)) == 4


def test_video_file(predictor, tmp_path):
    import cv2

    path = tmp_path / "clip.mp4"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10, (W, H))
    for img in make_frames(30):
        writer.write(img[..., ::-1])
    writer.release()
    state = predictor.init_state(str(path))
    assert (state.num_frames, state.video_height, state.video_width) == (30, H, W)
    # Random access in any order (reverse tracking walks back; seeks must land on the right frame).
    sequential = [state.frames.get(i) for i in range(30)]
    for i in [29, 28, 3, 17, 16, 15, 0, 29]:
        np.testing.assert_array_equal(state.frames.get(i), sequential[i])
    predictor.add_new_points_or_box(state, 10, 1, points=[[15, 20]], labels=[1])
    assert [o[0] for o in track(predictor, state, reverse=True)] == list(range(10, -1, -1))
    state.frames.close()


def test_init_state_is_lazy(predictor, tmp_path, monkeypatch):
    for t, img in enumerate(make_frames(12)):
        Image.fromarray(img).save(tmp_path / f"{t:05d}.jpg")
    reads = []
    original = FolderFrames._read
    monkeypatch.setattr(FolderFrames, "_read", lambda self, i: reads.append(i) or original(self, i))
    state = predictor.init_state(str(tmp_path))
    assert reads == [0]  # only the first frame, for the video size
    predictor.add_new_points_or_box(state, 0, 1, points=[[15, 20]], labels=[1])
    track(predictor, state, max_frame_num_to_track=2)
    assert max(reads) == 2


def test_add_object_after_tracking_began(predictor):
    state = predictor.init_state(make_frames(8))
    predictor.add_new_points_or_box(state, 0, 1, points=[[15, 20]], labels=[1])
    first = track(predictor, state, max_frame_num_to_track=3)
    assert [o[1] for o in first] == [[1]] * 4
    _, ids, masks = predictor.add_new_points_or_box(state, 5, 2, points=[[40, 30]], labels=[1])
    assert ids == [1, 2] and masks.shape[0] == 2
    out = track(predictor, state)
    assert [o[0] for o in out] == list(range(8)) and all(o[2].shape[0] == 2 for o in out)


def test_mask_prompt_and_correction(predictor):
    state = predictor.init_state(make_frames(6))
    mask = np.zeros((H, W), bool)
    mask[10:30, 5:25] = True
    _, _, masks = predictor.add_new_mask(state, 0, 1, mask)
    # A mask prompt is taken as the output itself (up to the low-res round trip at the edges).
    assert ((masks[0, 0] > 0) == torch.from_numpy(mask)).float().mean() > 0.97
    track(predictor, state)
    # A click on a tracked frame corrects it, without becoming a conditioning frame.
    _, _, masks = predictor.add_new_points_or_box(state, 3, 1, points=[[40, 40]], labels=[0],
                                                  clear_old_points=False)
    assert masks.shape == (1, 1, H, W)
    obj = state.objects[0]
    assert 3 in obj.pending_non_cond and 3 not in obj.pending_cond
    track(predictor, state)
    assert 3 in obj.non_cond and sorted(obj.cond) == [0]


def test_session_state_changes_only_through_its_methods(predictor):
    state = predictor.init_state(make_frames(4))
    predictor.add_new_points_or_box(state, 0, 1, points=[[15, 20]], labels=[1])
    obj = state.track(1)
    # The stores are read-only views: a caller cannot put an output where the session's
    # pruning and commit rules would not see it.
    for view in (obj.points, obj.masks, obj.cond, obj.non_cond, obj.pending_cond, obj.pending_non_cond,
                 obj.tracked):
        with pytest.raises(TypeError):
            view[9] = None
    assert list(obj.pending_cond) == [0] and not obj.cond
    # The latest output of a frame: the pending prompt output until commit, then the memory.
    pending = obj.latest_output(0, is_cond=True)
    assert pending is not None and pending.maskmem_features is None
    predictor.commit_prompts(state)
    assert not obj.pending_cond and obj.latest_output(0, is_cond=True).maskmem_features is not None
    with pytest.raises(KeyError, match="known ids: \\[1\\]"):
        state.track(2)


def test_offload_video_to_cpu_is_accepted_and_changes_nothing(predictor):
    results = []
    for offload in (False, True):
        state = predictor.init_state(make_frames(4), offload_video_to_cpu=offload)
        predictor.add_new_points_or_box(state, 0, 1, points=[[15, 20]], labels=[1])
        results.append(torch.stack([m for _, _, m in track(predictor, state)]))
    assert torch.equal(results[0], results[1])


def test_clear_prompts_remove_object_and_reset(predictor):
    state = predictor.init_state(make_frames(6))
    predictor.add_new_points_or_box(state, 0, 1, points=[[15, 20]], labels=[1])
    predictor.add_new_points_or_box(state, 2, 2, points=[[40, 30]], labels=[1])
    track(predictor, state)
    f, ids, masks = predictor.clear_all_prompts_in_frame(state, 2, 2)
    assert (f, ids, masks.shape) == (2, [1, 2], (2, 1, H, W))
    assert 2 not in state.objects[1].cond and 2 in state.objects[1].non_cond
    predictor.add_new_points_or_box(state, 2, 2, points=[[40, 30]], labels=[1])
    ids, updated = predictor.remove_object(state, 2)
    assert ids == [1] and [u[0] for u in updated] == [2] and updated[0][1].shape == (1, 1, H, W)
    assert [o[1] for o in track(predictor, state)] == [[1]] * 6
    assert predictor.remove_object(state, "missing") == ([1], [])
    with pytest.raises(KeyError, match="missing"):
        predictor.remove_object(state, "missing", strict=True)
    predictor.reset_state(state)
    assert state.obj_ids == [] and state.stored_outputs() == 0
    with pytest.raises(RuntimeError, match="add prompts first"):
        next(predictor.propagate_in_video(state))
    predictor.add_new_points_or_box(state, 1, 7, points=[[15, 20]], labels=[1])
    assert [o[0] for o in track(predictor, state)] == list(range(1, 6))


def test_bad_prompts(predictor):
    state = predictor.init_state(make_frames(4))
    with pytest.raises(IndexError, match="outside the video"):
        predictor.add_new_points_or_box(state, 4, 1, points=[[1, 1]], labels=[1])
    with pytest.raises(IndexError, match="outside the video"):
        predictor.add_new_mask(state, -1, 1, np.ones((H, W), bool))
    with pytest.raises(ValueError, match="mask must be 2-D"):
        predictor.add_new_mask(state, 0, 1, np.ones((H + 1, W), bool))
    with pytest.raises(ValueError, match="together"):
        predictor.add_new_points_or_box(state, 0, 1, points=[[1, 1]])
    with pytest.raises(ValueError, match=r"\[N, 2\]"):
        predictor.add_new_points_or_box(state, 0, 1, points=[[1, 1, 1]], labels=[1])
    with pytest.raises(ValueError, match="box"):
        predictor.add_new_points_or_box(state, 0, 1, box=[1, 2, 3])
    with pytest.raises(KeyError, match="unknown object"):
        predictor.clear_all_prompts_in_frame(state, 0, 99)
    predictor.add_new_points_or_box(state, 0, 1, points=[[1, 1]], labels=[1])
    with pytest.raises(IndexError, match="outside the video"):
        next(predictor.propagate_in_video(state, start_frame_idx=9))


def test_prompts_are_checked_as_the_image_predictor_checks_them(predictor):
    # Label 2, reversed boxes, points outside the frame and obj_id None or a list used to be
    # accepted and tracked; each is now refused with a message naming the problem, and nothing
    # is added to the session.
    state = predictor.init_state(make_frames(3))
    cases = [
        (dict(obj_id=1, points=[[10, 10]], labels=[2]), "labels must be 1 .*2 and 3 mark box corners"),
        (dict(obj_id=1, points=[[10, 10]], labels=[3]), "pass the box as `box`"),
        (dict(obj_id=1, points=[[10, 10]], labels=[7]), r"labels must be 1 \(foreground\)"),
        (dict(obj_id=1, box=[40, 30, 10, 5]), r"x1 < x0 or y1 < y0"),
        (dict(obj_id=1, points=[[W + 1, 10]], labels=[1]), r"points has a point \[65.0, 10.0\] outside the image"),
        (dict(obj_id=1, points=[[-1, 10]], labels=[1]), "outside the image"),
        (dict(obj_id=1, box=[0, 0, W, H + 5]), "box has a point .* outside the image"),
        (dict(obj_id=1, points=[[0.5, 1.2]], labels=[1], normalize_coords=False), r"outside the image \(0..1 x 0..1\)"),
        (dict(obj_id=1, points=[[np.nan, 10]], labels=[1]), "NaN"),
        (dict(obj_id=1, points=[[[1, 1]], [[2, 2]]], labels=[[1], [1]]), "one object"),
        (dict(obj_id=1, box=[[0, 0, 5, 5], [1, 1, 6, 6]]), "one box per object"),
        (dict(obj_id=None, points=[[10, 10]], labels=[1]), "obj_id must be an int or a str, got None"),
        (dict(obj_id=[1, 2], points=[[10, 10]], labels=[1]), r"obj_id must be an int or a str, got \[1, 2\]"),
        (dict(obj_id=1.5, points=[[10, 10]], labels=[1]), "obj_id must be an int or a str"),
        (dict(obj_id=True, points=[[10, 10]], labels=[1]), "obj_id must be an int or a str"),
    ]
    for kwargs, message in cases:
        with pytest.raises(ValueError, match=message):
            predictor.add_new_points_or_box(state, 0, **kwargs)
    with pytest.raises(ValueError, match="obj_id must be an int or a str"):
        predictor.add_new_mask(state, 0, None, np.ones((H, W), bool))
    assert state.obj_ids == []
    # Still accepted: points on the frame's edge, -1 padding, a zero-size box, NumPy ids.
    f, ids, masks = predictor.add_new_points_or_box(state, 0, np.int64(3), points=[[W, H], [5, 5]],
                                                    labels=[1, -1])
    assert ids == [3] and type(ids[0]) is int and masks.shape == (1, 1, H, W)
    _, ids, _ = predictor.add_new_points_or_box(state, 0, "car", box=[5, 5, 5, 5])
    assert ids == [3, "car"]


def test_bad_videos(predictor, tmp_path):
    with pytest.raises(VideoReadError, match="zero frames"):
        predictor.init_state([])
    with pytest.raises(VideoReadError, match="zero frames"):
        predictor.init_state(str(tmp_path))  # empty folder
    with pytest.raises(VideoReadError, match="one size"):
        predictor.init_state(make_frames(2) + make_frames(1, h=H + 2))
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    Image.fromarray(make_frames(1)[0]).save(mixed / "0.jpg")
    Image.fromarray(make_frames(1, w=W + 4)[0]).save(mixed / "1.jpg")
    with pytest.raises(VideoReadError, match="different sizes.*1.jpg"):
        predictor.init_state(str(mixed))
    garbage = tmp_path / "broken.mp4"
    garbage.write_bytes(b"\x00not a video" * 100)
    with pytest.raises(VideoReadError, match="broken.mp4"):
        predictor.init_state(str(garbage))
    with pytest.raises(VideoReadError, match="not found"):
        predictor.init_state(str(tmp_path / "nothing.mp4"))
    with pytest.raises(TypeError, match="unsupported video"):
        predictor.init_state(42)


def test_truncated_video_file(predictor, tmp_path):
    import cv2

    path = tmp_path / "cut.mp4"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10, (W, H))
    for img in make_frames(40):
        writer.write(img[..., ::-1])
    writer.release()
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(VideoReadError, match="cut.mp4"):
        state = predictor.init_state(str(path))
        predictor.add_new_points_or_box(state, 0, 1, points=[[15, 20]], labels=[1])
        track(predictor, state)


def test_corrupt_frames_are_skipped_and_reported(predictor, tmp_path, caplog):
    for t, img in enumerate(make_frames(8)):
        Image.fromarray(img).save(tmp_path / f"{t:05d}.jpg")
    (tmp_path / "00003.jpg").write_bytes(b"garbage, not a JPEG")
    good = (tmp_path / "00005.jpg").read_bytes()
    (tmp_path / "00005.jpg").write_bytes(good[: len(good) // 3])  # truncated JPEG data
    state = predictor.init_state(str(tmp_path))
    predictor.add_new_points_or_box(state, 0, 1, points=[[15, 20]], labels=[1])
    with caplog.at_level("WARNING"):
        out = track(predictor, state)
    assert [o[0] for o in out] == [0, 1, 2, 4, 6, 7]
    assert state.skipped_frames == [3, 5]
    assert "00003.jpg" in caplog.text
    with pytest.raises(SkippedFrameError, match="frame 3"):
        predictor.add_new_points_or_box(state, 3, 1, points=[[15, 20]], labels=[1])


def test_state_stays_bounded(predictor):
    n = 80
    state = predictor.init_state(make_frames(n))
    predictor.add_new_points_or_box(state, 0, 1, points=[[15, 20]], labels=[1])
    predictor.add_new_points_or_box(state, 0, 2, points=[[40, 30]], labels=[1])
    sizes = []
    for frame_idx, _, _ in predictor.propagate_in_video(state):
        sizes.append(state.stored_outputs())
        assert len(state._features) <= state.feature_cache_size
    window = state.window
    # per object: the conditioning frame, the frames near it, and the frames near the cursor
    bound = 2 * (1 + window + window + 1)
    assert max(sizes) <= bound < 2 * n  # an unbounded store would hold 2 * n outputs
    assert sizes[-1] == sizes[window * 3]  # flat once the window is full


def test_bf16_memory_option(predictor):
    frames = make_frames(6)
    results = {}
    for dtype in (torch.float32, torch.bfloat16):
        pred = VideoPredictor(predictor.model, memory_dtype=dtype)
        state = pred.init_state(frames)
        pred.add_new_points_or_box(state, 0, 1, points=[[15, 20]], labels=[1])
        results[dtype] = torch.cat([m for _, _, m in pred.propagate_in_video(state)])
        assert state.objects[0].non_cond[5].maskmem_features.dtype == dtype
    a, b = (results[d] > 0 for d in (torch.float32, torch.bfloat16))
    assert (a == b).float().mean() > 0.95


def test_attention_dtype_option(predictor):
    """bf16 memory-attention kernels: the tracked masks stay those of fp32 (the parity against
    the reference is in test_video_parity); an unsupported dtype is refused by name."""
    frames = make_frames(6)
    results = {}
    for dtype in (torch.float32, torch.bfloat16):
        pred = VideoPredictor(predictor.model, attention_dtype=dtype)
        assert pred.tracker.attention_dtype == dtype
        state = pred.init_state(frames)
        pred.add_new_points_or_box(state, 0, 1, points=[[15, 20]], labels=[1])
        results[dtype] = torch.cat([m for _, _, m in pred.propagate_in_video(state)])
    assert results[torch.float32].dtype == results[torch.bfloat16].dtype == torch.float32
    a, b = (results[d] > 0 for d in (torch.float32, torch.bfloat16))
    assert (a == b).float().mean() > 0.99
    with pytest.raises(ValueError, match="attention_dtype"):
        VideoPredictor(predictor.model, attention_dtype=torch.int8)


def test_fill_holes():
    from segapp.video.tracker import HOLE_FILL_LOGIT, fill_holes

    m = torch.full((1, 1, 12, 12), -5.0)
    m[0, 0, 2:10, 2:10] = 5.0
    m[0, 0, 5, 5] = -3.0  # a one-pixel hole
    m[0, 0, 4:7, 7:9] = -3.0  # a six-pixel hole, above the limit of 4
    out = fill_holes(m, 4)
    assert out[0, 0, 5, 5] == HOLE_FILL_LOGIT
    assert (out[0, 0, 4:7, 7:9] == -3.0).all() and (out[0, 0, 0] == -5.0).all()
