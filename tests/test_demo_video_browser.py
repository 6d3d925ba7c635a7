"""The video tab driven as an annotator would, in Debian's chromium (Playwright), issue 16:
the shortcuts' help panel, Delete with nothing selected (a warning toast, no error badges),
clicks, a right-click (negative), a dragged box, Esc forgetting a half box, a two-click box, the
low-quality flag, rename and class label, the warning for objects not propagated, a preview
that plays the frames tracked so far while a propagation runs, Stop (the frames done keep their
masks), playback of the tracked result without downloading, delete / undo / redo / clear (no
stale timing in the status), and the downloads' content. One page load drives every step (the browser
costs CPU). A screenshot of the tab is kept in test-artifacts/demo_video_tab.png (demo/README.md).
"""
from __future__ import annotations

import io
import json
import time
import zipfile

import numpy as np
import pytest
import torch
from PIL import Image

from segapp.service import DemoService, examples, exports
from browser import ARTIFACTS, chromium, chromium_page, content_position, served  # noqa: F401
from tiny_models import tracking_model

pytest.importorskip("gradio")
pytest.importorskip("playwright")
av = pytest.importorskip("av")

FRAMES, SIDE = 8, 96
# Seconds each tracked frame takes while `slow` is on: long enough to press Stop mid-run.
SLOW_FRAME_S = 0.8


@pytest.fixture(scope="module")
def video_server():
    """The demo on a test model whose object-score head says "object present" (random weights
    otherwise find no object on any frame) and whose IoU head rates every mask poor (about 0.3:
    each object gets the low-quality flag); `slow["on"]` makes each tracked frame take SLOW_FRAME_S."""
    model = tracking_model(add=20.0)
    with torch.no_grad():
        model.mask_decoder.iou_prediction_head.layers[-1].bias -= 1.0  # before its sigmoid: 0.53 -> 0.29
    service = DemoService(model)
    predictor = service.runtime.video_predictor
    walk, slow = predictor.propagate_in_video, {"on": False}

    def paced(*args, **kwargs):
        for step in walk(*args, **kwargs):
            if slow["on"]:
                time.sleep(SLOW_FRAME_S)
            yield step

    predictor.propagate_in_video = paced
    with served(service) as (url, _):
        yield url, slow


def download(page, name_part: str, target):
    link = page.locator("#video_downloads tr", has_text=name_part).locator("a").first
    with page.expect_download() as info:
        link.click()
    info.value.save_as(target)
    return target


@pytest.mark.slow
def test_video_tab_edits_stop_and_playback_in_chromium(chromium, video_server, tmp_path):
    from playwright.sync_api import expect

    url, slow = video_server
    clip = tmp_path / "clip.mp4"
    exports.write_mp4([np.roll(examples.synthetic_image(SIDE), 4 * i, axis=1) for i in range(FRAMES)], clip, fps=8)
    ARTIFACTS.mkdir(exist_ok=True)
    with chromium_page(chromium, height=1100) as page:
        page.goto(url, wait_until="load")
        page.click("#video_tab-button")
        status, objects, warning = page.locator("#video_status"), page.locator("#video_objects"), \
            page.locator("#video_warning")
        button = lambda name: page.locator(f"#video_{name}")  # noqa: E731

        # The shortcuts' help panel is on this tab too.
        help_panel = page.locator("#video_shortcuts_help")
        expect(help_panel).to_be_visible()
        help_panel.get_by_text("Keyboard and mouse shortcuts").click()
        for keys in ("Ctrl+Shift+Z", "Shift+N", "Right-click", "Esc", "Delete or Backspace"):
            expect(page.locator("#video_shortcuts_table")).to_contain_text(keys)
        help_panel.get_by_text("Keyboard and mouse shortcuts").click()
        expect(page.locator("#video_shortcuts_table")).to_be_hidden()

        page.set_input_files("#video_input input[type=file]", str(clip))
        expect(status).to_contain_text(f"{FRAMES} frames, {SIDE}x{SIDE}")
        page.wait_for_function("() => { const e = document.querySelector('#video_frame img');"
                               f" return e && e.complete && e.naturalWidth === {SIDE}; }}")
        # Controls that cannot act yet are disabled.
        for name in ("undo_button", "redo_button", "delete_button", "clear_button", "propagate_both",
                     "stop_button", "export_button", "preview_button", "rename_button"):
            expect(button(name)).to_be_disabled()
        expect(button("new_object_button")).to_be_enabled()
        frame = page.locator("#video_frame img").first

        # The Delete key with nothing selected: a warning toast; no error badges, the frame stays.
        page.evaluate("() => document.activeElement && document.activeElement.blur()")
        page.keyboard.press("Delete")
        toast = page.locator("[data-testid=toast-body].warning")
        expect(toast.first).to_contain_text("select an object to delete")
        assert page.locator(".error").count() == 0
        expect(frame).to_be_visible()
        expect(status).to_contain_text(f"{FRAMES} frames, {SIDE}x{SIDE}")

        # A click starts object 1, which is flagged as not propagated.
        frame.click(position=content_position(frame, 30, 35))
        expect(status).to_contain_text("click on frame 0")
        expect(objects).to_contain_text("object 1 (id 1) ⚠ not propagated")
        expect(warning).to_contain_text("not propagated since their last prompts: object 1")
        expect(button("undo_button")).to_be_enabled()
        expect(page.locator("#video_name textarea, #video_name input").first).to_have_value("object 1")
        # Its mask is rated poor by the model: flagged, with the hint to add a click.
        expect(objects).to_contain_text("object 1 (id 1) ⚠ not propagated ⚠ low quality")
        quality = page.locator("#video_quality")
        expect(quality).to_contain_text("object 1 on frame 0: predicted IoU 0.")
        expect(quality).to_contain_text("is low; add a click: positive on a part it misses")

        # A right-click is a negative click (in positive mode), on the pixel under the pointer.
        steps = undo_steps(status)
        shown = frame_pixels(page)
        frame.click(position=content_position(frame, 70, 75), button="right")
        expect(status).to_contain_text(f"undo {steps + 1} ·")
        shown = frame_pixels(page, shown)
        assert near(shown[75, 70], exports.NEGATIVE_COLOR), shown[75, 70]
        assert near(shown[35, 30], exports.POSITIVE_COLOR), shown[35, 30]

        # A drag draws a box for a new object: its box is drawn, its mask tints the frame.
        button("new_object_button").click()
        expect(objects).to_contain_text("object 2 (id 2)")
        steps, before = undo_steps(status), frame_pixels(page)
        drag(page, frame, (50, 5), (92, 45))
        expect(status).to_contain_text(f"undo {steps + 1} ·")
        expect(status).to_contain_text("box on frame 0")
        shown = frame_pixels(page, before)
        for x, y in ((71, 5), (71, 45), (50, 25), (92, 25)):  # the box's edges
            assert near(shown[y, x], exports.BOX_COLOR), (x, y, shown[y, x])
        tinted = np.abs(shown - before).sum(axis=2) > 60
        tinted[3:8, :] = tinted[43:48, :] = tinted[:, 48:53] = tinted[:, 90:95] = False  # not the box's lines
        assert tinted.sum() > 50, tinted.sum()

        # Box mode: one corner, then Esc forgets it; then a box of two clicks replaces the dragged one.
        page.locator("#video_click_mode label", has_text="Box").click()
        frame.click(position=content_position(frame, 20, 60))
        expect(status).to_contain_text("now click the opposite corner")
        page.keyboard.press("Escape")
        expect(status).not_to_contain_text("opposite corner")
        steps = undo_steps(status)
        frame.click(position=content_position(frame, 55, 8))
        expect(status).to_contain_text("now click the opposite corner")
        frame.click(position=content_position(frame, 90, 40))
        expect(status).to_contain_text(f"undo {steps + 1} ·")
        expect(status).to_contain_text("box on frame 0")
        expect(status).not_to_contain_text("opposite corner")

        # Rename and label it (a label typed in, offered again afterwards).
        name = page.locator("#video_name textarea, #video_name input").first
        name.fill("crate")
        button("rename_button").click()
        expect(objects).to_contain_text("crate (id 2)")
        label = page.locator("#video_label input").first
        label.fill("car")
        label.press("Enter")
        button("label_button").click()
        expect(objects).to_contain_text("crate [car] (id 2) ⚠ not propagated")

        # During a slow propagation the player gets the frames tracked so far; Stop: the frames
        # done keep their masks, the status says how many.
        slow["on"] = True
        button("propagate_both").click()
        expect(button("stop_button")).to_be_enabled()
        expect(button("undo_button")).to_be_disabled()  # nothing else acts while it runs
        growing = wait_playable(page)  # before the run ends (at ~2 s; the run takes 8 x 0.8 s)
        expect(button("stop_button")).to_be_enabled()
        button("stop_button").click()
        expect(status).to_contain_text("stopped: the other frames keep the masks they had")
        slow["on"] = False
        so_far = decode(page.request.get(growing["src"]).body())
        assert 1 <= len(so_far) < FRAMES and growing["width"] == SIDE, (len(so_far), growing)
        text = status.inner_text()
        done = int(text.split("propagate both (")[1].split(" of ")[0])
        assert 1 <= done < FRAMES, text
        assert f"of {FRAMES} frames)" in text and f"masks on {done} of {FRAMES} frame(s)" in text, text
        expect(warning).to_contain_text("not propagated since their last prompts: object 1, crate")
        expect(button("stop_button")).to_be_disabled()
        button("export_button").click()
        expect(page.get_by_text("Downloads made, but not propagated").first).to_be_visible()
        with zipfile.ZipFile(download(page, "masks", tmp_path / "stopped.zip")) as zf:
            assert sorted(zf.namelist()) == [f"frames/{f:05d}.png" for f in range(done)]

        # The tracked result plays in the page without downloading: every frame, tinted where
        # tracked (the frames done, more than the growing preview had).
        page.wait_for_function("(src) => { const v = document.querySelector('#video_preview video');"
                               " return v && v.src && v.src !== src; }", arg=growing["src"])
        played = wait_playable(page)
        assert played["duration"] > 0 and played["width"] == SIDE, played
        frames = decode(page.request.get(played["src"]).body())
        assert len(frames) == FRAMES and done >= len(so_far)
        for f in range(len(so_far)):  # the frames of the growing preview, the same again
            assert np.abs(frames[f].astype(int) - so_far[f].astype(int)).mean() < 8, f

        # A complete propagation tracks both objects on every frame; the warning goes.
        button("propagate_both").click()
        expect(status).to_contain_text(f"propagate both ({FRAMES} frames)")
        expect(status).to_contain_text(f"masks on {FRAMES} of {FRAMES} frame(s)")
        expect(warning).to_be_hidden()
        expect(objects).not_to_contain_text("not propagated")
        page.wait_for_function("(src) => { const v = document.querySelector('#video_preview video');"
                               " return v && v.src && v.src !== src; }", arg=played["src"])
        wait_playable(page)

        # Delete the selected object, undo brings it back, redo deletes it again, undo again.
        button("delete_button").click()
        expect(objects).not_to_contain_text("crate")
        expect(objects).to_contain_text("object 1")
        expect(button("delete_button")).to_be_disabled()  # nothing selected now
        button("undo_button").click()
        expect(objects).to_contain_text("crate [car] (id 2)")
        expect(status).not_to_contain_text("propagate both")  # the timing is not this step's
        button("redo_button").click()
        expect(objects).not_to_contain_text("crate")
        button("undo_button").click()
        expect(objects).to_contain_text("crate [car] (id 2)")

        # Clear, then undo it.
        button("clear_button").click()
        expect(objects).not_to_contain_text("object 1")
        expect(status).to_contain_text(f"masks on 0 of {FRAMES} frame(s)")
        expect(button("clear_button")).to_be_disabled()
        button("undo_button").click()
        expect(objects).to_contain_text("crate [car] (id 2)")
        expect(status).to_contain_text(f"masks on {FRAMES} of {FRAMES} frame(s)")
        src = wait_playable(page)["src"]
        button("preview_button").click()  # the tracked result again, after the edits
        page.wait_for_function("(src) => { const v = document.querySelector('#video_preview video');"
                               " return v && v.src && v.src !== src; }", arg=src)
        wait_playable(page)

        assert page.locator(".error").count() == 0  # warnings are toasts, never error badges
        button("export_button").click()
        expect(page.locator("#video_downloads tr", has_text="coco")).to_be_visible()
        coco = json.loads(download(page, "coco", tmp_path / "coco.json").read_text())
        with zipfile.ZipFile(download(page, "masks", tmp_path / "masks.zip")) as zf:
            names = sorted(zf.namelist())
            last = np.asarray(Image.open(io.BytesIO(zf.read(names[-1]))))
        dismiss_toasts(page)  # not over the screenshot
        page.locator("#video_tab").screenshot(path=str(ARTIFACTS / "demo_video_tab.png"))

        # Track everything replaces the objects (segment everything on frame 0 here), undoably.
        button("track_everything").click()
        expect(status).to_contain_text(f"track everything ({FRAMES} frames")
        expect(objects).not_to_contain_text("crate")
        button("undo_button").click()
        expect(objects).to_contain_text("crate [car] (id 2)")
    assert names == [f"frames/{f:05d}.png" for f in range(FRAMES)]
    assert set(np.unique(last)) <= {0, 1, 2} and (last == 2).any(), np.unique(last)
    assert {c["name"] for c in coco["categories"]} == {"object", "car"}
    car = next(c["id"] for c in coco["categories"] if c["name"] == "car")
    crates = [a for a in coco["annotations"] if a["object_id"] == 2]
    assert len(crates) == FRAMES and {a["category_id"] for a in crates} == {car}
    assert {a["name"] for a in crates} == {"crate"}


def dismiss_toasts(page) -> None:
    """Close the toasts shown (Gradio groups them; each close button closes a group)."""
    from playwright.sync_api import expect

    closes = page.locator("[data-testid=toast-close]")
    for _ in range(10):
        if not closes.count():
            break
        closes.first.click()
        page.wait_for_timeout(300)
    expect(page.locator("[data-testid=toast-body]")).to_have_count(0)


def undo_steps(status) -> int:
    """The undo count the status line shows ("undo N · redo M")."""
    return int(status.inner_text().split("undo ")[-1].split(" ")[0])


def frame_pixels(page, old: np.ndarray | None = None) -> np.ndarray:
    """The frame the tab shows, decoded as served ([H, W, 3] int); with old, once it differs from old."""
    for _ in range(100):
        src = page.locator("#video_frame img").first.get_attribute("src")
        pixels = np.asarray(Image.open(io.BytesIO(page.request.get(src).body())).convert("RGB")).astype(int)
        if old is None or pixels.shape != old.shape or np.abs(pixels - old).max() > 40:
            return pixels
        page.wait_for_timeout(100)
    raise AssertionError("the frame did not change")


def near(pixel, color, tolerance: int = 60) -> bool:
    """pixel is color, give or take JPEG's blur."""
    return int(np.abs(np.asarray(pixel, dtype=int) - np.asarray(color)).sum()) <= tolerance


def drag(page, img, start, end) -> None:
    """Press the mouse on pixel start of img, move to pixel end in steps, release."""
    box = img.bounding_box()
    a, b = content_position(img, *start), content_position(img, *end)
    page.mouse.move(box["x"] + a["x"], box["y"] + a["y"])
    page.mouse.down()
    page.mouse.move(box["x"] + b["x"], box["y"] + b["y"], steps=6)
    page.mouse.up()


def wait_playable(page) -> dict:
    """Wait until the preview <video> has loaded its metadata (Chromium can decode it);
    its src, duration and width."""
    page.wait_for_function("() => { const v = document.querySelector('#video_preview video');"
                           " return v && v.src && v.readyState >= 1 && v.duration > 0; }")
    return page.evaluate("() => { const v = document.querySelector('#video_preview video');"
                         " return {src: v.src, duration: v.duration, width: v.videoWidth}; }")


def decode(data: bytes) -> list[np.ndarray]:
    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264"
        return [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
