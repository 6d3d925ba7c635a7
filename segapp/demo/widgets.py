"""Widgets and helpers shared by the demo's tabs (Gradio only; state lives in the service).

`guarded` turns a refused input (DemoError) into a message in the page: for the UI's own
events a warning toast on the action that leaves every panel as it was, for the public API
endpoints an error the client receives."""
from __future__ import annotations

import atexit
import functools
import html
import inspect
import json
import logging
import secrets
import shutil
import tempfile
import time
from pathlib import Path

import gradio as gr
import numpy as np

from segapp.demo import assets
from segapp.service import DemoError

logger = logging.getLogger(__name__)

# Files this app writes for download are deleted after this many seconds.
OUTPUT_MAX_AGE_S = 3600
# `launch` gives each app a private cache folder named so, holding Gradio's cache ("gradio")
# and the downloads ("outputs"); it is pruned while the app runs and deleted at exit.
CACHE_PREFIX = "segapp-demo-"
# Long side of the candidate thumbnails, pixels.
THUMB_SIDE = 256
CLICK_MODE_CHOICES = [("+ Positive click", "positive"), ("- Negative click", "negative"),
                      ("Box: click two corners", "box")]


class OutputFiles:
    """A private temporary folder for the files handed to Gradio (which copies them into its
    own cache before serving). Each request gets a fresh unguessable subfolder; old ones are pruned."""

    def __init__(self, root: str | Path | None = None) -> None:
        if root is None:  # a folder of our own: deleted when the process exits
            root = tempfile.mkdtemp(prefix=CACHE_PREFIX)
            atexit.register(shutil.rmtree, root, ignore_errors=True)
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def folder(self) -> Path:
        self.prune()
        path = self.root / secrets.token_hex(8)
        path.mkdir()
        return path

    def prune(self, max_age_s: float = OUTPUT_MAX_AGE_S) -> None:
        now = time.time()
        for child in self.root.iterdir():
            if child.is_dir() and now - child.stat().st_mtime > max_age_s:
                shutil.rmtree(child, ignore_errors=True)


def thumb(array: np.ndarray, nearest: bool = False) -> np.ndarray:
    """Downscale to THUMB_SIDE on the long side (masks with nearest-neighbour)."""
    import cv2

    h, w = array.shape[:2]
    scale = THUMB_SIDE / max(h, w)
    if scale >= 1:
        return array
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    if nearest:
        return cv2.resize(array.astype(np.uint8), size, interpolation=cv2.INTER_NEAREST).astype(bool)
    return cv2.resize(array, size, interpolation=cv2.INTER_AREA)


def legend_html(objects=(), selected: int | None = None) -> str:
    """The objects with their colours and class labels, as HTML; a low-quality mask (the
    model's own predicted IoU is low) gets its hint: add a click."""
    if not objects:
        return "<p id='objects_empty'>No objects yet: click on the image.</p>"
    rows = []
    for obj in objects:
        color = "#%02x%02x%02x" % obj.color
        mark = " (selected)" if selected == obj.obj_id else ""
        area = int(obj.mask.sum()) if obj.mask is not None else 0
        label = f" [{html.escape(obj.label)}]" if obj.label else ""
        hint = f"<br><small class='quality_hint'>⚠ {html.escape(obj.quality_hint)}</small>" if obj.low_quality else ""
        rows.append(f"<li><span style='display:inline-block;width:0.9em;height:0.9em;background:{color};"
                    f"border:1px solid #333;margin-right:0.4em'></span>{html.escape(obj.name)}{label} "
                    f"(id {obj.obj_id}, {area} px){mark}{hint}</li>")
    return "<ul style='list-style:none;padding-left:0'>" + "".join(rows) + "</ul>"


def shortcuts_help(prefix: str = "") -> gr.Accordion:
    """The keyboard and mouse shortcuts' help panel (closed until opened), the same on every tab;
    prefix: the tab's id prefix (assets.TABS), e.g. "video_" gives #video_shortcuts_help."""
    with gr.Accordion("Keyboard and mouse shortcuts", open=False, elem_id=f"{prefix}shortcuts_help") as panel:
        gr.Markdown(assets.shortcuts_markdown(), elem_id=f"{prefix}shortcuts_table")
    return panel


def timing_text(session) -> str:
    """The timings of the step that made the session's current revision, joined; "" after any
    edit since (undo, delete, rename, ...), whose status would otherwise tell of an earlier step.
    session: an image or video session (its `timings` and `revision`)."""
    return " · ".join(str(t) for t in session.timings if t.revision == session.revision)


def command_channel(elem_id: str) -> tuple[gr.Textbox, gr.Button]:
    """The hidden textbox and button through which the page's script sends a tab its mouse
    and key commands (segapp.demo.assets.TABS names them; the CSS hides the row)."""
    with gr.Row(elem_id=f"{elem_id}_row"):
        box = gr.Textbox(elem_id=elem_id, show_label=False, container=False)
        button = gr.Button("command", elem_id=f"{elem_id}_button")
    return box, button


def parse_command(text: str | None) -> dict:
    """A command from the page's script: {"op": ..., ...} (a DemoError when it is not one)."""
    try:
        command = json.loads(text or "{}")
        command.get("op")
    except (ValueError, AttributeError) as err:
        raise DemoError(f"not a command: {text!r}") from err
    return command


def warn(result) -> None:
    """Show a service response's warning (an action that found nothing to do, a propagation
    stopped early, ...) as a toast on the action; nothing when it has none."""
    message = getattr(result, "warning", "")
    if message:
        gr.Warning(message)


def guarded(fn):
    """Wrap a UI handler: a DemoError (the user's input was refused, e.g. Delete with nothing
    selected) becomes a warning toast on the action and one line in the server log; every
    output keeps what it shows (gr.skip), so no panel gets an error badge and the image stays.
    Other exceptions are bugs: Gradio logs them whole."""
    if inspect.isgeneratorfunction(fn):
        @functools.wraps(fn)
        def gen_handler(*args):
            try:
                yield from fn(*args)
            except DemoError as err:
                gr.Warning(_refused(fn, err))
                yield gr.skip()
        return gen_handler

    @functools.wraps(fn)  # keeps the signature: Gradio injects gr.SelectData by annotation
    def handler(*args):
        try:
            return fn(*args)
        except DemoError as err:
            gr.Warning(_refused(fn, err))
            return gr.skip()
    return handler


def api_guarded(fn):
    """Wrap a public API handler: a DemoError becomes a gr.Error, which `gradio_client`
    raises with the message (AppError); one line in the server log, not a traceback."""
    @functools.wraps(fn)
    def handler(*args):
        try:
            return fn(*args)
        except DemoError as err:
            raise gr.Error(_refused(fn, err), print_exception=False) from err
    return handler


def _refused(fn, err: DemoError) -> str:
    """Log a refused input in one line; the message shown to the user."""
    logger.info("%s: input refused: %s", fn.__name__, err)
    return str(err)
