"""The image tab driven as an annotator would, in Debian's chromium (Playwright): keyboard
shortcuts, right-click, a dragged box, Esc, the help panel, disabled controls, warnings
instead of error badges, mask opacity and show/hide, a canvas larger than a small image
that keeps its aspect ratio, and "Segment everything" (adds after the objects, undo steps back,
on no mask a warning saying why; the status shows its own timing). One page load drives every
step (the browser costs CPU).
A screenshot of the tab is kept in test-artifacts/demo_image_tab.png (demo/README.md).
"""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from segapp.service import examples
from browser import ARTIFACTS, chromium, chromium_page, content_position, shot  # noqa: F401
from test_demo_browser import server  # noqa: F401 (the demo on the tiny model, in this process)

pytest.importorskip("gradio")
pytest.importorskip("playwright")

# The picture is wider than tall and small, so the canvas has to scale it up evenly.
WIDTH, HEIGHT = 320, 200


def image_session(service):
    return next(s for s in (service.get_session(i) for i in service.session_ids()) if s.image is not None)


def error_badges(page) -> int:
    """Gradio's "Error" status on a component (or an error toast)."""
    return page.locator(".error").count()


@pytest.mark.slow
def test_image_tab_shortcuts_and_view_in_chromium(chromium, server, tmp_path):
    from playwright.sync_api import expect

    url, service = server
    image_path = tmp_path / "wide.png"
    Image.fromarray(examples.synthetic_image(WIDTH)[:HEIGHT]).save(image_path)
    ARTIFACTS.mkdir(exist_ok=True)

    with chromium_page(chromium) as page:
        page.goto(url, wait_until="load")
        page.wait_for_selector("#image_canvas input[type=file]", state="attached")
        status, legend = page.locator("#status"), page.locator("#objects_legend")

        # The help panel lists the shortcuts.
        page.locator("#shortcuts_help").get_by_text("Keyboard and mouse shortcuts").click()
        table = page.locator("#shortcuts_table")
        for keys in ("Ctrl+Shift+Z", "Shift+N", "Right-click", "Esc", "Delete"):
            expect(table).to_contain_text(keys)

        # Controls that cannot act are disabled.
        for button in ("#undo_button", "#redo_button", "#delete_object_button", "#export_button"):
            expect(page.locator(button)).to_be_disabled()

        page.set_input_files("#image_canvas input[type=file]", str(image_path))
        img = page.locator("#image_canvas img").first
        expect(status).to_contain_text("image embedding")
        page.wait_for_function("() => { const e = document.querySelector('#image_canvas img');"
                               f" return e && e.complete && e.naturalWidth === {WIDTH}; }}")
        expect(page.locator("#new_object_button")).to_be_enabled()
        for button in ("#undo_button", "#export_button", "#label_button"):
            expect(page.locator(button)).to_be_disabled()

        # A larger canvas: the picture is drawn bigger than its pixels, evenly (aspect kept).
        box = img.bounding_box()
        fit = img.evaluate("e => getComputedStyle(e).objectFit")
        scale = min(box["width"] / WIDTH, box["height"] / HEIGHT)
        assert fit == "contain" and scale > 2, (box, fit)
        before = shot(img)

        # Delete with nothing selected: a warning on the action; no error badges, image kept.
        page.keyboard.press("Delete")
        toast = page.locator("[data-testid=toast-body].warning")
        expect(toast.first).to_contain_text("select an object to delete")
        assert error_badges(page) == 0
        expect(img).to_be_visible()
        expect(status).to_contain_text("image embedding")

        # P / N / B switch the click mode.
        checked = "() => document.querySelector('#click_mode input:checked').value"
        for key, mode in (("n", "negative"), ("b", "box"), ("p", "positive")):
            page.keyboard.press(key)
            assert page.evaluate(checked) == mode

        # A click, then a right-click (negative, whatever the mode).
        img.click(position=content_position(img, 80, 90))
        expect(legend).to_contain_text("object 1")
        expect(page.locator("#undo_button")).to_be_enabled()
        img.click(position=content_position(img, 250, 40), button="right")
        expect(status).to_contain_text("undo 2")
        obj = image_session(service).objects[0]
        assert obj.labels == (1, 0)
        assert abs(obj.points[1][0] - 250) <= 2 and abs(obj.points[1][1] - 40) <= 2, obj.points

        # Ctrl+Z / Ctrl+Shift+Z.
        page.keyboard.press("Control+z")
        expect(status).to_contain_text("redo 1")
        expect(status).not_to_contain_text("decoder")  # the undone click's timing is not shown
        assert image_session(service).objects[0].labels == (1,)
        expect(page.locator("#redo_button")).to_be_enabled()
        page.keyboard.press("Control+Shift+z")
        expect(status).to_contain_text("redo 0")
        assert image_session(service).objects[0].labels == (1, 0)

        # The candidate gallery's highlight follows the radio, also after an undo.
        chosen = "() => document.querySelector('#candidate_choice input:checked').value"
        highlighted = page.locator("#candidates_gallery button.thumbnail-item.selected")
        other = str((int(page.evaluate(chosen)) + 1) % 3)
        page.locator(f"#candidate_choice input[value='{other}']").check()
        expect(highlighted).to_have_attribute("aria-label", f"Thumbnail {int(other) + 1} of 3")
        expect(status).to_contain_text("undo 3 · redo 0")  # the server took the choice (a step)
        page.keyboard.press("Control+z")
        expect(status).to_contain_text("undo 2 · redo 1")
        page.wait_for_timeout(300)
        expect(highlighted).to_have_attribute("aria-label", f"Thumbnail {int(page.evaluate(chosen)) + 1} of 3")
        page.keyboard.press("Control+Shift+z")
        expect(status).to_contain_text("redo 0")

        # A class label for object 1, then downloads, which follow later edits.
        page.locator("#label_picker input").fill("cup")
        page.locator("#label_picker input").press("Enter")
        page.click("#label_button")
        expect(legend).to_contain_text("object 1 [cup]")
        page.click("#export_button")
        files = page.locator("#download_files")
        for name in ("wide_instances", "wide_coco_rle", "wide_palette", "wide_coco_polygons", "classes"):
            expect(files).to_contain_text(name)

        # Shift+N: a new object; a drag draws its box.
        page.keyboard.press("Shift+N")
        expect(page.locator("#objects_list")).to_contain_text("object 2")
        expect(page.locator("#rename_text textarea")).to_have_value("object 2")  # the selected name
        page.evaluate("() => window.scrollTo(0, 0)")  # the export click scrolled the canvas away
        box = img.bounding_box()
        start, end = content_position(img, 40, 30), content_position(img, 200, 150)
        page.mouse.move(box["x"] + start["x"], box["y"] + start["y"])
        page.mouse.down()
        page.mouse.move(box["x"] + end["x"], box["y"] + end["y"], steps=6)
        page.mouse.up()
        expect(status).to_contain_text("decoder (box)")
        second = image_session(service).objects[1]
        assert second.points == () and second.box is not None
        assert np.allclose(second.box, (40, 30, 200, 150), atol=2), second.box

        # Box mode: one corner, then Esc forgets it.
        page.keyboard.press("b")
        img.click(position=content_position(img, 20, 20))
        expect(status).to_contain_text("opposite corner")
        page.keyboard.press("Escape")
        expect(status).not_to_contain_text("opposite corner")
        assert image_session(service).pending_corner is None
        page.keyboard.press("p")

        # Mask opacity: 0 shows the picture (but outlines and marks), 1 the colours.
        def set_opacity(value: str) -> np.ndarray:
            old = img.get_attribute("src")
            page.locator("#mask_opacity input[type=number]").fill(value)
            page.locator("#mask_opacity input[type=number]").press("Enter")
            page.wait_for_function("old => document.querySelector('#image_canvas img').src !== old", arg=old)
            page.wait_for_timeout(300)
            return shot(img)

        def differ(a: np.ndarray, b: np.ndarray) -> float:  # mean colour change
            return float(np.abs(a - b).mean())

        opaque, clear, half = set_opacity("1"), set_opacity("0"), set_opacity("0.5")
        span = differ(opaque, clear)  # the outlines and marks are the same in all three
        assert span > 5, span
        assert differ(half, clear) < span and differ(half, opaque) < span
        assert differ(half, clear) > span / 4 and differ(half, opaque) > span / 4

        # Show/hide per object: untick both, the masks go from the view, not the session.
        shown = page.locator("#shown_objects")
        for name in ("object 1", "object 2"):
            old = img.get_attribute("src")
            shown.get_by_label(name, exact=False).uncheck()
            page.wait_for_function("old => document.querySelector('#image_canvas img').src !== old", arg=old)
        page.wait_for_timeout(300)
        assert differ(shot(img), before) < differ(half, before) / 2  # only the prompts' marks stay
        assert len(image_session(service).objects) == 2
        shown.get_by_label("object 1", exact=False).check()
        expect(page.locator("#shown_objects input:checked")).to_have_count(1)
        page.screenshot(path=str(ARTIFACTS / "demo_image_tab.png"), full_page=True)

        # Delete deletes the selected object (object 2).
        page.keyboard.press("Delete")
        expect(page.locator("#objects_list")).not_to_contain_text("object 2")
        assert [o.name for o in image_session(service).objects] == ["object 1"]
        assert error_badges(page) == 0
        expect(status).not_to_contain_text("decoder (box)")  # the box's timing went with the edit
        link = files.locator("tr", has_text="coco_rle").locator("a").first
        with page.expect_download() as download_info:
            link.click()
        target = tmp_path / "coco.json"
        download_info.value.save_as(target)

        # Segment everything adds its masks after the objects made so far (same names, first);
        # Undo brings back exactly those. The status shows its timing, not the last click's.
        # The test model's weights are random: its scores pass only filters lowered to 0.
        def object_names() -> list[str]:
            return [t.rsplit(" (id ", 1)[0] for t in page.locator("#objects_list label").all_inner_texts()]

        earlier = object_names()
        assert earlier == ["object 1"], earlier
        page.locator("#points_per_side input[type=number]").fill("4")
        page.locator("#points_per_side input[type=number]").press("Enter")
        assert page.locator("#points_per_side input[type=number]").input_value() == "4"
        server_filters = dict(service.amg_options)
        service.amg_options.update(pred_iou_thresh=0.0, stability_score_thresh=0.0)
        try:
            page.click("#segment_everything_button")
            expect(status).to_contain_text("segment everything (")
        finally:
            service.amg_options.clear()
            service.amg_options.update(server_filters)
        expect(status).not_to_contain_text("decoder")
        names = object_names()
        assert len(names) > len(earlier) and names[:len(earlier)] == earlier, names
        assert all(n.startswith("auto ") for n in names[len(earlier):]), names
        assert [o.name for o in image_session(service).objects] == names
        expect(legend).to_contain_text(names[-1])
        assert error_badges(page) == 0
        page.click("#undo_button")
        expect(page.locator("#objects_list label")).to_have_count(len(earlier))
        assert object_names() == earlier
        assert [o.name for o in image_session(service).objects] == earlier

        # The canvas's × removes the picture and its objects: nothing is left behind.
        page.evaluate("() => window.scrollTo(0, 0)")
        page.locator("#image_canvas button[aria-label='Remove Image']").click()
        expect(status).to_contain_text("Upload an image")
        expect(legend).to_contain_text("No objects yet")
        for button in ("#undo_button", "#delete_object_button", "#export_button"):
            expect(page.locator(button)).to_be_disabled()
        expect(page.locator("#download_files")).not_to_contain_text("wide_coco_rle")
        assert all(service.get_session(i).image is None for i in service.session_ids())  # closed

        # Segment everything on a flat grey picture (the server's filters): nothing found, a
        # warning that names the model and the filters, in a toast and the status; no error badge.
        grey_path = tmp_path / "grey.png"
        Image.new("RGB", (WIDTH, HEIGHT), (128, 128, 128)).save(grey_path)
        page.set_input_files("#image_canvas input[type=file]", str(grey_path))
        expect(status).to_contain_text("image embedding")
        expect(page.locator("#segment_everything_button")).to_be_enabled()
        page.click("#segment_everything_button")
        expect(status).to_contain_text("segment everything (0 masks)")
        expect(status).not_to_contain_text("image embedding")
        note = "No masks found by test_tiny: none passed the quality filters (predicted IoU > 0.8, stability >= 0.95)"
        expect(status).to_contain_text(note)
        toast = page.locator("[data-testid=toast-body].warning", has_text="No masks found")
        expect(toast.first).to_contain_text(note)
        assert error_badges(page) == 0
        expect(legend).to_contain_text("No objects yet")
        expect(page.locator("#undo_button")).to_be_disabled()  # nothing was added: no step to undo

        # The keys also switch the video tab's click mode (and press its buttons).
        page.click("#video_tab-button")
        expect(page.locator("#image_canvas")).to_be_hidden()  # the keys go to the tab shown
        expect(page.locator("#video_frame")).to_be_visible()
        expect(page.locator("#video_click_mode input:checked")).to_have_count(1)
        page.wait_for_timeout(500)  # the tab's first render settles (it reset an early choice)
        for key, mode in (("b", "box"), ("p", "positive"), ("n", "negative")):
            page.keyboard.press(key)
            expect(page.locator(f"#video_click_mode input[value='{mode}']")).to_be_checked()
        assert page.evaluate(checked) == "positive"  # the image tab's mode is left alone
    coco = json.loads(target.read_text())  # the downloads followed the Delete: one object left
    assert [a["name"] for a in coco["annotations"]] == ["object 1"]
    assert [c["name"] for c in coco["categories"]] == ["cup"]
