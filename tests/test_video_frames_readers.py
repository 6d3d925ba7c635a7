"""A video file's frame source read by several threads at once (the tracker's prefetch thread,
the tracking thread, segment's overlay writer): every reader gets its frames, none waits forever."""
from __future__ import annotations

import threading

import numpy as np
import pytest

from segapp.video.frames import VideoFileFrames

N = 40


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    import cv2

    path = tmp_path_factory.mktemp("frames") / "clip.mp4"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10, (64, 48))
    for t in range(N):
        frame = np.full((48, 64, 3), 20, np.uint8)
        frame[:, t:t + 8] = 250
        writer.write(frame)
    writer.release()
    return path


def test_concurrent_readers_in_different_orders_all_finish_with_the_right_frames(clip):
    alone = VideoFileFrames(clip)
    expected = [alone.get(i).copy() for i in range(N)]
    alone.close()
    orders = [list(range(N - 1, -1, -1)), list(range(N)),
              list(range(10, -1, -1)) + list(range(10, N))]  # segment's backward-then-forward walk
    for trial in range(5):  # the lost request showed in about one run of ten
        source = VideoFileFrames(clip)
        got: list[list[tuple[int, np.ndarray]]] = [[] for _ in orders]

        def read(order, out):
            for i in order:
                out.append((i, source.get(i)))

        threads = [threading.Thread(target=read, args=(order, out), daemon=True) for order, out in zip(orders, got)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        assert not any(t.is_alive() for t in threads), f"a reader waits forever (trial {trial})"
        source.close()
        for order, out in zip(orders, got):
            assert [i for i, _ in out] == order
            for i, frame in out:
                np.testing.assert_array_equal(frame, expected[i])
