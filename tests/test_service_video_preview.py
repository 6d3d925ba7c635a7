"""The video tab's playback of the tracked masks (issue 16): VideoService.preview writes a
small browser-playable MP4 of every frame with the masks found so far, no download needed, and
a propagation writes one of the frames tracked so far while it runs (LiveVideo)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from segapp.service import VideoService, exports, video_exports
from segapp.service.video_progress import LIVE_VIDEO_INTERVAL_S, LIVE_VIDEO_MAX_SHARE, LiveVideo
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


def test_a_run_plays_a_growing_preview_of_the_frames_tracked_so_far(video: VideoService, sid, tmp_path):  # noqa: F811
    """While a propagation runs, the tab's player gets an MP4 of the frames tracked so far (in
    frame order, with their masks), each replacing the last; a Stop keeps the frames done."""
    session = video.get_session(sid)
    plain = [session.state.frames.get(f) for f in range(6)]
    video.click(sid, 2, 30, 35)
    live = LiveVideo(tmp_path, interval=0.0)  # as often as the cost bound allows
    videos, done = [], []
    for step in video.propagate(sid, "both", start_frame=2, live=live):
        done.append(step.frame_idx)
        if step.video is not None:
            assert step.done < step.total  # the last one is the whole video's (VideoService.preview)
            codec, frames = decoded(step.video)
            assert codec == "h264" and len(frames) == step.done
            assert list(tmp_path.glob("*.mp4")) == [step.video]  # the earlier one was deleted
            for frame, f in zip(frames, sorted(done)):  # each tracked frame, tinted
                assert np.abs(frame.astype(int) - plain[f].astype(int)).mean() > 3, f
            videos.append(step.done)
    assert videos and videos[0] == 1 and videos == sorted(videos), videos

    video.click(sid, 0, 60, 60)
    steps = video.propagate(sid, "forward", start_frame=0, live=LiveVideo(tmp_path / "stopped", interval=0.0))
    first = next(steps)
    # read at once: a later step may write the next preview, which deletes this one
    assert first.video is not None and len(decoded(first.video)[1]) == 1
    next(steps)
    video.stop(sid)
    assert len(list(steps)) <= 1  # ends after the frame it is on
    assert sorted(session.results) == list(range(6))


def test_the_growing_preview_is_written_at_a_bounded_cost():
    """Written again from its first frame each time, it waits max(interval, time taken / max_share)
    after the last: writing it takes at most about max_share of the run."""
    live = LiveVideo(Path("unused"), interval=2.0, max_share=0.2)
    assert (live.interval, live.max_share) == (LIVE_VIDEO_INTERVAL_S, LIVE_VIDEO_MAX_SHARE)
    live.written_at, live.took = 100.0, 0.1
    assert not live.due(101.9) and live.due(102.0)
    live.took = 1.0  # a long video: 1 s per write, so one write per 5 s
    assert not live.due(104.9) and live.due(105.0)
