"""The image view's options: mask opacity and objects hidden from the view (not the exports)."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from segapp.service import DemoError, ImageService, examples
from tiny_models import tiny_model


@pytest.fixture(scope="module")
def service():
    return ImageService(tiny_model())


def test_render_opacity_and_hidden_objects(service):
    image = examples.synthetic_image(160)
    sid = service.create_session()
    service.set_image(sid, image)
    service.set_box(sid, (20, 20, 120, 120))
    (obj,) = service.get_session(sid).objects
    service.select_object(sid, None)  # no prompts drawn over the mask
    inside = cv2.erode(obj.mask.astype(np.uint8), np.ones((5, 5), np.uint8),
                       borderType=cv2.BORDER_CONSTANT, borderValue=0).astype(bool)  # not the outline
    assert inside.any()
    half = service.render(sid).astype(int)
    opaque = service.render(sid, alpha=1.0).astype(int)
    clear = service.render(sid, alpha=0.0).astype(int)
    np.testing.assert_array_equal(opaque[inside], np.broadcast_to(obj.color, opaque[inside].shape))
    np.testing.assert_array_equal(clear[inside], image[inside])
    assert np.abs(half[inside] - image[inside]).max() > 0
    hidden = service.render(sid, hidden={obj.obj_id})
    np.testing.assert_array_equal(hidden, image)
    assert len(service.get_session(sid).objects) == 1  # hiding is the view's only
    with pytest.raises(DemoError, match="opacity must be between 0 and 1"):
        service.render(sid, alpha=1.5)


def test_legend_flags_low_quality_masks_and_shows_labels():
    from segapp.demo.widgets import legend_html
    from segapp.service import ObjectState

    masks = np.zeros((2, 8, 8), bool)
    poor = ObjectState(obj_id=1, name="cup", color=(255, 0, 0), candidates=masks, scores=(0.08, 0.9), label="kitchen")
    good = ObjectState(obj_id=2, name="plate", color=(0, 255, 0), candidates=masks, scores=(0.93,))
    html = legend_html([poor, good], selected=2)
    first, second = html.split("</li>")[:2]
    assert "cup [kitchen]" in first and "predicted IoU 0.08 is low" in first and "add a click" in first
    assert "plate" in second and "(selected)" in second and "low" not in second


def test_every_shortcut_is_in_the_readme_table():
    from pathlib import Path

    from segapp.demo.assets import SHORTCUTS, shortcuts_markdown

    readme = (Path(__file__).resolve().parents[1] / "demo" / "README.md").read_text()
    table = shortcuts_markdown()
    for keys, _ in SHORTCUTS:
        assert f"| {keys} |" in readme, keys
        assert f"| {keys} |" in table, keys


def test_a_command_from_the_page_is_parsed_or_refused_by_name():
    from segapp.demo.widgets import parse_command

    assert parse_command('{"op": "box", "box": [1, 2, 3, 4]}') == {"op": "box", "box": [1, 2, 3, 4]}
    for bad in ("oops", "[1, 2]"):
        with pytest.raises(DemoError, match="not a command"):
            parse_command(bad)
