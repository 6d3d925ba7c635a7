"""The video tab's playback of the tracked masks (issue 16): VideoService.preview writes a
small browser-playable MP4 of every frame with the masks found so far, no download needed."""
from __future__ import annotations

import numpy as np
import pytest

from segapp.service import VideoService, exports, video_exports
from test_service_video_edits import clip, sid, video  # noqa: F401  (the fixtures)

av = pytest.importorskip("av")


def decoded(path):
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        codec = stream.codec_context.name
        return codec, [f.to_ndarray(format="rgb24") for f in container.decode(stream)]


def test_preview_plays_every_frame_with_the_masks_found_so_far(video: VideoService, sid, tmp_path):  # noqa: F811
    assert video.preview(sid, tmp_path) is None  # nothing tracked yet: nothing to play
    session = video.get_session(sid)
    video.click(sid, 0, 30, 35)
    steps = video.propagate(sid, "forward", start_frame=0)
    next(steps), next(steps)
    video.stop(sid)
    list(steps)
    assert sorted(session.results) == [0, 1]
    path = video.preview(sid, tmp_path)
    assert path.parent == tmp_path and path.suffix == ".mp4"
    codec, frames = decoded(path)
    assert codec == "h264" and len(frames) == session.num_frames == 6  # every frame, tracked or not
    assert frames[0].shape == (96, 96, 3)
    plain = [session.state.frames.get(f) for f in range(6)]
    diff = [np.abs(f.astype(int) - p.astype(int)).mean() for f, p in zip(frames, plain)]
    assert min(diff[:2]) > 2 * max(diff[2:]), diff  # the tracked frames carry the tint, the rest do not
    list(video.propagate(sid, "forward", start_frame=0))
    again = video.preview(sid, tmp_path)
    assert again != path  # a new revision, a new file (the browser does not play a stale one)


def test_preview_is_scaled_down_to_its_long_side(video: VideoService, sid, tmp_path):  # noqa: F811
    assert video_exports.PREVIEW_MAX_SIDE >= 96  # the test clip keeps its size by default
    video.click(sid, 0, 30, 35)
    list(video.propagate(sid, "forward", start_frame=0))
    _, frames = decoded(video.preview(sid, tmp_path, max_side=48))
    assert len(frames) == 6 and frames[0].shape == (48, 48, 3)


def test_a_half_drawn_box_corner_is_marked_on_the_frame(video: VideoService, sid):  # noqa: F811
    plain = video.frame(sid, 2)
    marked = video.frame(sid, 2, pending_corner=(40, 50))
    assert tuple(marked[50, 40]) == exports.BOX_COLOR and tuple(plain[50, 40]) != exports.BOX_COLOR
    changed = np.argwhere((marked != plain).any(axis=2))
    assert np.abs(changed - (50, 40)).max() <= 20  # a marker there, nothing drawn elsewhere
