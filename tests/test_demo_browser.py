"""The demo in a real browser: Debian's chromium driven by Playwright (no browser download).

Load the page, upload an image, click on it, see the mask overlay appear, undo and redo it,
download the instance-id PNG. A screenshot is kept in test-artifacts/ (git-ignored).
"""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from segapp.service import examples
from segapp.service import DemoService
from browser import ARTIFACTS, chromium, chromium_page, content_position, served, shot  # noqa: F401
from tiny_models import tiny_model

pytest.importorskip("gradio")
pytest.importorskip("playwright")

@pytest.fixture(scope="module")
def server():
    service = DemoService(tiny_model())
    with served(service) as (url, _):
        yield url, service


@pytest.mark.slow
def test_click_overlay_undo_and_download_in_chromium(chromium, server, tmp_path):
    from playwright.sync_api import expect

    url, service = server
    image_path = tmp_path / "shapes.png"
    Image.fromarray(examples.synthetic_image(256)).save(image_path)
    ARTIFACTS.mkdir(exist_ok=True)

    with chromium_page(chromium) as page:
        page.goto(url, wait_until="load")  # "networkidle" never settles: Gradio keeps a connection
        page.wait_for_selector("#image_canvas input[type=file]", state="attached")

        page.set_input_files("#image_canvas input[type=file]", str(image_path))
        img = page.locator("#image_canvas img").first
        expect(img).to_be_visible()
        expect(page.locator("#status")).to_contain_text("image embedding")
        before = shot(img)

        img.click(position=content_position(img, 80, 90))
        legend = page.locator("#objects_legend")
        expect(legend).to_contain_text("object 1")
        expect(page.locator("#status")).to_contain_text("decoder (click)")
        expect(page.locator("#candidate_choice")).to_contain_text("IoU")
        page.wait_for_timeout(500)  # the new image has loaded once its pixels differ
        after = shot(img)
        assert after.shape == before.shape
        changed = np.abs(after - before).sum(axis=2) > 30
        assert changed.mean() > 0.01, "no mask overlay appeared after the click"
        page.screenshot(path=str(ARTIFACTS / "demo_browser_click.png"), full_page=True)

        sessions = [service.get_session(s) for s in service.session_ids()]
        session = next(s for s in sessions if s.image is not None)
        assert len(session.objects) == 1
        (x, y), = session.objects[0].points
        assert abs(x - 80) <= 2 and abs(y - 90) <= 2, (x, y)  # Gradio maps clicks to image pixels

        page.click("#undo_button")
        expect(legend).to_contain_text("No objects yet")
        page.wait_for_timeout(500)
        undone = shot(img)
        assert (np.abs(undone - before).sum(axis=2) > 30).mean() < changed.mean() / 4
        assert session.objects == ()

        page.click("#redo_button")
        expect(legend).to_contain_text("object 1")
        page.click("#export_button")
        link = page.locator("#download_files tr", has_text="instances").locator("a").first
        expect(link).to_be_visible()
        with page.expect_download() as download_info:
            link.click()
        target = tmp_path / "downloaded.png"
        download_info.value.save_as(target)
        page.screenshot(path=str(ARTIFACTS / "demo_browser.png"), full_page=True)

    ids = np.asarray(Image.open(target))
    assert ids.shape == (256, 256)
    mask = session.objects[0].mask
    np.testing.assert_array_equal(ids == 1, mask)
    assert set(np.unique(ids)) <= {0, 1}


@pytest.mark.slow
def test_video_tab_and_separate_sessions_in_chromium(chromium, server, tmp_path):
    """Upload a video, scrub, click, propagate both ways, download the PNG zip; a second
    browser context (another user) loads an image meanwhile and sees none of the first's state."""
    import zipfile

    from playwright.sync_api import expect

    from segapp.service import exports

    url, service = server
    clip = tmp_path / "clip.mp4"
    exports.write_mp4([np.roll(examples.synthetic_image(96), 5 * i, axis=1) for i in range(5)], clip, fps=5)
    ARTIFACTS.mkdir(exist_ok=True)
    with chromium_page(chromium) as page:
        page.goto(url, wait_until="load")
        page.click("#video_tab-button")
        page.set_input_files("#video_input input[type=file]", str(clip))
        status = page.locator("#video_status")
        expect(status).to_contain_text("5 frames, 96x96")
        frame = page.locator("#video_frame img").first
        page.wait_for_function("() => { const e = document.querySelector('#video_frame img');"
                               " return e && e.complete && e.naturalWidth === 96; }")
        frame.click(position=content_position(frame, 40, 50))
        expect(status).to_contain_text("click on frame 0")
        expect(page.locator("#video_objects")).to_contain_text("object 1")

        other = page.context.browser.new_context().new_page()  # a second user
        other.goto(url, wait_until="load")
        other.click("#load_example_button")
        expect(other.locator("#status")).to_contain_text("image embedding")
        expect(other.locator("#objects_legend")).to_contain_text("No objects yet")

        page.click("#video_propagate_both")
        expect(status).to_contain_text("masks on 5 of 5 frame")
        expect(status).to_contain_text("propagate both (5 frames)")
        page.click("#video_export_button")
        link = page.locator("#video_downloads tr", has_text="masks").locator("a").first
        with page.expect_download() as download_info:
            link.click()
        target = tmp_path / "masks.zip"
        download_info.value.save_as(target)
        expect(page.locator("#video_preview video")).to_be_attached()  # the tracked result plays in the tab
        page.screenshot(path=str(ARTIFACTS / "demo_browser_video.png"), full_page=True)
    with zipfile.ZipFile(target) as zf:
        assert sorted(zf.namelist()) == [f"frames/{f:05d}.png" for f in range(5)]
