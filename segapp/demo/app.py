"""The segapp web demo (Gradio Blocks): thin handlers over `segapp.demo.service`.

Every handler only translates between Gradio values and a DemoService call; all state
lives in the service, keyed by the session id that each browser holds in a gr.State.
Two endpoints are public and documented for `gradio_client`:

  /segment_image(image, prompts_json) -> (mask PNG, scores JSON)
  /segment_everything(image, points_per_side) -> (instance-id PNG, records JSON)

Every other event is private (not callable by client libraries).
"""
from __future__ import annotations

import atexit
import functools
import html
import inspect
import json
import logging
import os
import secrets
import shutil
import tempfile
import time
from pathlib import Path

import gradio as gr
import numpy as np

from segapp.demo import DEFAULT_HOST, DEFAULT_PORT
from segapp.demo import examples as demo_examples
from segapp.demo import exports
from segapp.demo.cache import CacheJanitor
from segapp.demo.service import DemoError, DemoService, VideoService

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
PROMPTS_EXAMPLE = '{"points": [[100, 100]], "labels": [1]}'


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


def _thumb(array: np.ndarray, nearest: bool = False) -> np.ndarray:
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


def _legend_html(objects=(), selected: int | None = None) -> str:
    """The objects with their colours, as HTML."""
    if not objects:
        return "<p id='objects_empty'>No objects yet: click on the image.</p>"
    rows = []
    for obj in objects:
        color = "#%02x%02x%02x" % obj.color
        mark = " (selected)" if selected == obj.obj_id else ""
        area = int(obj.mask.sum()) if obj.mask is not None else 0
        rows.append(f"<li><span style='display:inline-block;width:0.9em;height:0.9em;background:{color};"
                    f"border:1px solid #333;margin-right:0.4em'></span>{html.escape(obj.name)} "
                    f"(id {obj.obj_id}, {area} px){mark}</li>")
    return "<ul style='list-style:none;padding-left:0'>" + "".join(rows) + "</ul>"


def build_app(service: DemoService, *, title: str = "segapp demo", model_note: str = "",
              outputs: OutputFiles | None = None, video: bool = True,
              cache_dirs: tuple[str | Path, ...] = ()):
    """The Gradio Blocks of the demo over `service` (not launched); video: add the video tab.

    cache_dirs: folders owned by this app only (`launch` passes its private Gradio cache),
    pruned with the downloads folder by age and size (Limits.max_cache_bytes); uploads and
    downloads found there are the session's and go when it closes (segapp.demo.cache)."""
    from segapp.bundled import ImageOnlyModelError

    video_service, video_off = None, "The video tab is switched off in this app."
    if video:
        try:
            video_service = VideoService(service)
        except ImageOnlyModelError as err:  # e.g. the bundled segapp_small: images only
            video_off = str(err)
    outputs = outputs or OutputFiles()
    limits = service.limits
    janitor = CacheJanitor([outputs.root, *cache_dirs], max_bytes=limits.max_cache_bytes,
                           max_age_s=limits.idle_seconds,
                           held=video_service.held_files if video_service is not None else tuple)

    # ------------------------------------------------------------------ view
    def view(sid: str):
        """(sid, canvas, objects radio, legend, candidate gallery, candidate radio, status)."""
        session = service.get_session(sid)
        canvas = service.render(sid)
        objects = gr.Radio(choices=[(f"{o.name} (id {o.obj_id})", str(o.obj_id)) for o in session.objects],
                           value=str(session.state.selected) if session.state.selected is not None else None)
        sel = session.selected
        gallery, cand_choices, cand_value = [], [], None
        if sel is not None and sel.candidates is not None:
            small = _thumb(session.image)  # overlays drawn small: a click stays cheap on big images
            for i, (mask, score) in enumerate(zip(sel.candidates, sel.scores)):
                caption = f"#{i + 1}  IoU {score:.3f}"
                gallery.append((exports.overlay(small, [_thumb(mask, nearest=True)], [sel.color]), caption))
                cand_choices.append((caption, str(i)))
            cand_value = str(sel.chosen)
        status = " · ".join(str(t) for t in session.timings) or "Ready."
        if session.pending_corner is not None:
            status += " · box: now click the opposite corner"
        hist = f"undo {len(session.undo_stack)} · redo {len(session.redo_stack)}"
        return (sid, canvas, objects, _legend_html(session.objects, session.state.selected), gallery,
                gr.Radio(choices=cand_choices, value=cand_value), f"{status}  \n{hist}")

    guarded = _guarded

    # ------------------------------------------------------------------ handlers
    @guarded
    def on_upload(sid, path):
        sid = service.ensure_session(sid)
        if path is None:
            return view(sid)
        if janitor.contains(path):  # Gradio's copy: goes with the session
            service.adopt_file(sid, path)
        service.set_image(sid, path, name=Path(path).name)
        janitor.prune()
        return view(sid)

    @guarded
    def on_example(sid, name):
        sid = service.ensure_session(sid)
        if not name:
            raise DemoError("pick an example first")
        service.set_image(sid, demo_examples.load(name), name=f"{name}.png")
        return view(sid)

    @guarded
    def on_click(sid, mode, evt: gr.SelectData):
        sid = service.ensure_session(sid)
        x, y = evt.index
        service.click(sid, x, y, mode)
        return view(sid)

    @guarded
    def on_select_object(sid, value):
        sid = service.ensure_session(sid)
        service.select_object(sid, int(value) if value else None)
        return view(sid)

    @guarded
    def on_new_object(sid):
        sid = service.ensure_session(sid)
        service.new_object(sid)
        return view(sid)

    @guarded
    def on_rename(sid, name):
        sid = service.ensure_session(sid)
        sel = service.get_session(sid).selected
        if sel is None:
            raise DemoError("select an object to rename")
        service.rename_object(sid, sel.obj_id, name)
        return view(sid)

    @guarded
    def on_delete(sid):
        sid = service.ensure_session(sid)
        sel = service.get_session(sid).selected
        if sel is None:
            raise DemoError("select an object to delete")
        service.delete_object(sid, sel.obj_id)
        return view(sid)

    @guarded
    def on_candidate(sid, value):
        sid = service.ensure_session(sid)
        if value is not None:
            service.choose_candidate(sid, int(value))
        return view(sid)

    @guarded
    def on_gallery_select(sid, evt: gr.SelectData):
        sid = service.ensure_session(sid)
        service.choose_candidate(sid, int(evt.index))
        return view(sid)

    @guarded
    def on_undo(sid):
        sid = service.ensure_session(sid)
        service.undo(sid)
        return view(sid)

    @guarded
    def on_redo(sid):
        sid = service.ensure_session(sid)
        service.redo(sid)
        return view(sid)

    @guarded
    def on_clear(sid):
        sid = service.ensure_session(sid)
        service.clear(sid)
        return view(sid)

    @guarded
    def on_everything(sid, pps):
        sid = service.ensure_session(sid)
        service.segment_everything(sid, int(pps))
        return view(sid)

    @guarded
    def on_export(sid):
        sid = service.ensure_session(sid)
        folder = outputs.folder()
        service.adopt_file(sid, folder)
        files = service.export(sid, folder)
        janitor.prune()
        return [str(files["instance_png"]), str(files["coco_json"]), str(files["overlay_png"])]

    @guarded
    def segment_image(image: str, prompts: str):
        """Segment one object. image: the picture; prompts: JSON {"points": [[x, y], ...],
        "labels": [1, 0, ...], "box": [x0, y0, x1, y1]} with any of the keys (labels default
        to 1; at most Limits.max_points_per_object points, 64 by default). Returns the best
        mask as a PNG (255 inside) and a JSON of the candidates' scores, the chosen index, the
        mask area and the timings."""
        mask, info = service.segment_image(image, prompts)
        path = outputs.folder() / "mask.png"
        path.write_bytes(exports.mask_to_png(mask))
        janitor.prune()
        return str(path), json.dumps(info, indent=1)

    @guarded
    def segment_everything(image: str, points_per_side: float):
        """Segment everything with a points_per_side x points_per_side grid of prompts.
        Returns the instance-id PNG (pixel = record id, 0 = background; 16-bit when over
        255 masks) and a JSON list of records (id, COCO RLE segmentation, area, bbox, scores)."""
        id_map, records = service.segment_everything_image(image, int(points_per_side))
        path = outputs.folder() / "instances.png"
        path.write_bytes(exports.id_map_to_png(id_map))
        janitor.prune()
        return str(path), json.dumps(records)

    # ------------------------------------------------------------------ layout
    limits_text = (f"Limits: files up to {limits.max_upload_bytes / 2**20:.0f} MB, images up to "
                   f"{limits.max_image_side} px on the longest side, {limits.max_points_per_object} clicks "
                   f"per object; idle sessions are closed after {limits.idle_seconds / 60:.0f} min.")
    private = dict(api_visibility="private")

    with gr.Blocks(title=title, analytics_enabled=False) as demo:
        sid_state = gr.State(None, time_to_live=limits.idle_seconds,
                             delete_callback=lambda sid: sid and service.close_session(sid))
        gr.Markdown(f"# {title}\n{model_note}", elem_id="title")
        with gr.Tabs(elem_id="tabs"):
            with gr.Tab("Image", id="image_tab", elem_id="image_tab"):
                with gr.Row(elem_id="image_row"):
                    with gr.Column(scale=3, elem_id="canvas_column"):
                        canvas = gr.Image(type="filepath", format="jpeg", sources=["upload", "clipboard"],
                                          label="Image: upload, then click to segment", interactive=True,
                                          elem_id="image_canvas", height=560)
                        status = gr.Markdown("Upload an image or load an example.", elem_id="status")
                        gr.Markdown(limits_text, elem_id="image_limits")
                    with gr.Column(scale=2, elem_id="controls_column"):
                        with gr.Row(elem_id="example_row"):
                            example = gr.Dropdown(choices=demo_examples.names(), value=demo_examples.names()[0],
                                                  label="Example image", elem_id="example_picker", scale=3)
                            example_btn = gr.Button("Load example", elem_id="load_example_button", scale=1)
                        mode = gr.Radio(CLICK_MODE_CHOICES, value="positive", label="Click mode",
                                        elem_id="click_mode")
                        with gr.Row(elem_id="history_row"):
                            undo_btn = gr.Button("↶ Undo", elem_id="undo_button")
                            redo_btn = gr.Button("↷ Redo", elem_id="redo_button")
                            clear_btn = gr.Button("Clear", elem_id="clear_button", variant="stop")
                        objects = gr.Radio([], label="Objects (select one to refine it)", elem_id="objects_list")
                        legend = gr.HTML(_legend_html(), elem_id="objects_legend")
                        with gr.Row(elem_id="object_row"):
                            new_btn = gr.Button("New object", elem_id="new_object_button")
                            delete_btn = gr.Button("Delete", elem_id="delete_object_button")
                        with gr.Row(elem_id="rename_row"):
                            rename_box = gr.Textbox(label="Rename selected", elem_id="rename_text", scale=3)
                            rename_btn = gr.Button("Rename", elem_id="rename_button", scale=1)
                        candidates = gr.Radio([], label="Mask candidates (predicted IoU)", elem_id="candidate_choice")
                        gallery = gr.Gallery(label="Candidates", columns=3, height=160, allow_preview=False,
                                             interactive=False, elem_id="candidates_gallery")
                        with gr.Row(elem_id="everything_row"):
                            pps = gr.Slider(4, limits.max_points_per_side, value=16, step=1,
                                            label="Points per side", elem_id="points_per_side")
                            everything_btn = gr.Button("Segment everything", elem_id="segment_everything_button")
                        export_btn = gr.Button("Prepare downloads", variant="primary", elem_id="export_button")
                        downloads = gr.File(label="Downloads: instance-id PNG, COCO RLE JSON, overlay",
                                            file_count="multiple", interactive=False, height=140,
                                            elem_id="download_files")

            with gr.Tab("Video", id="video_tab", elem_id="video_tab"):
                if video_service is None:
                    gr.Markdown(video_off, elem_id="video_unavailable")
                else:
                    _video_tab(video_service, outputs, janitor)

            with gr.Tab("API", id="api_tab", elem_id="api_tab"):
                gr.Markdown(
                    "These two endpoints are also callable with `gradio_client` "
                    "(see *Use via API* at the bottom of the page):\n\n"
                    "```python\nfrom gradio_client import Client, handle_file\n"
                    "client = Client(\"http://127.0.0.1:7860/\")\n"
                    "mask_png, scores = client.predict(handle_file(\"photo.jpg\"), "
                    f"'{PROMPTS_EXAMPLE}', api_name=\"/segment_image\")\n"
                    "ids_png, records = client.predict(handle_file(\"photo.jpg\"), 16, "
                    "api_name=\"/segment_everything\")\n```", elem_id="api_help")
                with gr.Row(elem_id="api_row"):
                    with gr.Column(elem_id="api_inputs"):
                        api_image = gr.Image(type="filepath", sources=["upload", "clipboard"], label="Image", elem_id="api_image")
                        api_prompts = gr.Textbox(PROMPTS_EXAMPLE, label="Prompts (JSON)", elem_id="api_prompts")
                        api_pps = gr.Slider(1, limits.max_points_per_side, value=16, step=1,
                                            label="Points per side", elem_id="api_points_per_side")
                        api_seg_btn = gr.Button("segment_image", elem_id="api_segment_image_button")
                        api_all_btn = gr.Button("segment_everything", elem_id="api_segment_everything_button")
                    with gr.Column(elem_id="api_outputs"):
                        api_mask = gr.Image(type="filepath", format="png", label="Mask / instance-id PNG",
                                            elem_id="api_mask", interactive=False)
                        api_json = gr.Code(language="json", label="Scores / records (JSON)", elem_id="api_json")

        view_outputs = [sid_state, canvas, objects, legend, gallery, candidates, status]
        canvas.upload(on_upload, [sid_state, canvas], view_outputs, **private)
        canvas.select(on_click, [sid_state, mode], view_outputs, **private)
        example_btn.click(on_example, [sid_state, example], view_outputs, **private)
        objects.input(on_select_object, [sid_state, objects], view_outputs, **private)
        new_btn.click(on_new_object, [sid_state], view_outputs, **private)
        rename_btn.click(on_rename, [sid_state, rename_box], view_outputs, **private)
        delete_btn.click(on_delete, [sid_state], view_outputs, **private)
        candidates.input(on_candidate, [sid_state, candidates], view_outputs, **private)
        gallery.select(on_gallery_select, [sid_state], view_outputs, **private)
        undo_btn.click(on_undo, [sid_state], view_outputs, **private)
        redo_btn.click(on_redo, [sid_state], view_outputs, **private)
        clear_btn.click(on_clear, [sid_state], view_outputs, **private)
        everything_btn.click(on_everything, [sid_state, pps], view_outputs, **private)
        export_btn.click(on_export, [sid_state], [downloads], **private)
        api_seg_btn.click(segment_image, [api_image, api_prompts], [api_mask, api_json],
                          api_name="segment_image", api_description=segment_image.__doc__)
        api_all_btn.click(segment_everything, [api_image, api_pps], [api_mask, api_json],
                          api_name="segment_everything", api_description=segment_everything.__doc__)
    return demo


def _guarded(fn):
    """Wrap a handler: DemoError (the user's input was refused) -> a message in the page and one
    line in the server log, not a traceback. Other exceptions are bugs: Gradio logs them whole."""
    if inspect.isgeneratorfunction(fn):
        @functools.wraps(fn)
        def gen_handler(*args):
            try:
                yield from fn(*args)
            except DemoError as err:
                raise _refused(fn, err) from err
        return gen_handler

    @functools.wraps(fn)  # keeps the signature: Gradio injects gr.SelectData by annotation
    def handler(*args):
        try:
            return fn(*args)
        except DemoError as err:
            raise _refused(fn, err) from err
    return handler


def _refused(fn, err: DemoError) -> gr.Error:
    """Log a refused input in one line; the gr.Error that shows it to the user, untraced."""
    logger.info("%s: input refused: %s", fn.__name__, err)
    return gr.Error(str(err), print_exception=False)


# Live preview during propagation: at most one frame per this many seconds.
PREVIEW_INTERVAL_S = 0.4


def _video_tab(video: VideoService, outputs: OutputFiles, janitor: CacheJanitor) -> None:
    """The video tab: upload, scrub, click, propagate with progress and preview, download."""
    limits = video.limits
    private = dict(api_visibility="private")

    def objects_radio(session):
        return gr.Radio(choices=[(f"{o.name} (id {o.obj_id})", str(o.obj_id)) for o in session.objects],
                        value=str(session.selected) if session.selected is not None else None)

    def status_text(session, frame_idx: int) -> str:
        known = sum(1 for f in session.results.values() if f)
        timing = " · ".join(str(t) for t in session.timings)
        return (f"Frame {frame_idx} of {session.num_frames - 1} · masks on {known} frame(s)"
                + (f" · {timing}" if timing else ""))

    def view(vsid, frame_idx):
        session = video.get_session(vsid)
        image = video.frame(vsid, frame_idx)
        return vsid, image, objects_radio(session), status_text(session, frame_idx)

    @_guarded
    def on_upload(vsid, path):
        vsid = video.ensure_session(vsid)
        if path is not None and janitor.contains(path):  # Gradio's copy: goes with the session
            video.adopt_file(vsid, path)
        info = video.open_video(vsid, path)
        janitor.prune()
        session = video.get_session(vsid)
        # A slider needs minimum < maximum: a one-frame video gets a locked 0..1 slider.
        slider = gr.Slider(minimum=0, maximum=max(info["frames"] - 1, 1), value=0, step=1,
                           interactive=info["frames"] > 1)
        note = f"{info['frames']} frames, {info['width']}x{info['height']}, {info['fps']:.1f} fps"
        return (vsid, video.frame(vsid, 0), slider, objects_radio(session),
                f"{note}. Click an object on any frame, then propagate.")

    @_guarded
    def on_frame(vsid, frame_idx):
        vsid = video.ensure_session(vsid)
        return view(vsid, int(frame_idx))

    @_guarded
    def on_click(vsid, frame_idx, mode, evt: gr.SelectData):
        vsid = video.ensure_session(vsid)
        x, y = evt.index
        video.click(vsid, int(frame_idx), x, y, positive=(mode == "positive"))
        return view(vsid, int(frame_idx))

    @_guarded
    def on_new(vsid, frame_idx):
        vsid = video.ensure_session(vsid)
        video.new_object(vsid)
        return view(vsid, int(frame_idx))

    @_guarded
    def on_select(vsid, frame_idx, value):
        vsid = video.ensure_session(vsid)
        video.select_object(vsid, int(value) if value else None)
        return view(vsid, int(frame_idx))

    def make_propagate(direction: str):
        @_guarded
        def on_propagate(vsid, frame_idx, progress=gr.Progress()):
            vsid = video.ensure_session(vsid)
            start = int(frame_idx)
            for shown, done, total, preview in video.propagate(vsid, direction, start, PREVIEW_INTERVAL_S):
                progress((done, total), desc=f"propagating {direction}", unit="frames")
                if preview is not None:
                    yield preview, shown, f"Propagating {direction}: {done}/{total} frames (showing frame {shown})"
            session = video.get_session(vsid)
            yield video.frame(vsid, start), start, status_text(session, start)
        on_propagate.__name__ = f"on_propagate_{direction}"
        return on_propagate

    @_guarded
    def on_track_everything(vsid, every, progress=gr.Progress()):
        vsid = video.ensure_session(vsid)
        for shown, done, total, preview in video.track_everything(vsid, every, preview_interval=PREVIEW_INTERVAL_S):
            progress((done, total), desc="tracking everything", unit="frames")
            if preview is not None:
                yield preview, shown, objects_radio(video.get_session(vsid)), \
                    f"Tracking everything: {done}/{total} frames (showing frame {shown})"
        session = video.get_session(vsid)
        yield video.frame(vsid, 0), 0, objects_radio(session), status_text(session, 0)

    @_guarded
    def on_export(vsid):
        vsid = video.ensure_session(vsid)
        folder = outputs.folder()
        video.adopt_file(vsid, folder)
        files = video.export(vsid, folder)
        janitor.prune()
        paths = [str(files["png_zip"]), str(files["coco_json"]), str(files["overlay_mp4"])]
        return paths, str(files["overlay_mp4"])

    gr.Markdown(f"Limits: videos up to {limits.max_video_bytes / 2**20:.0f} MB, {limits.max_video_frames} frames "
                f"and {limits.max_video_side} px on the longest side (MP4, WebM, MOV, AVI, MKV); "
                f"{limits.max_points_per_object} clicks per object and frame.",
                elem_id="video_limits")
    vsid = gr.State(None, time_to_live=limits.idle_seconds,
                    delete_callback=lambda sid: sid and video.close_session(sid))
    with gr.Row(elem_id="video_row"):
        with gr.Column(scale=3, elem_id="video_canvas_column"):
            frame_view = gr.Image(type="numpy", format="jpeg", interactive=False, label="Frame: click to segment",
                                  elem_id="video_frame", height=480)
            slider = gr.Slider(0, 1, value=0, step=1, label="Frame", interactive=False,
                               elem_id="video_frame_slider")
            status = gr.Markdown("Upload a video.", elem_id="video_status")
        with gr.Column(scale=2, elem_id="video_controls_column"):
            upload = gr.Video(sources=["upload"], label="Video", elem_id="video_input", height=200)
            mode = gr.Radio(CLICK_MODE_CHOICES[:2], value="positive", label="Click mode", elem_id="video_click_mode")
            objects = gr.Radio([], label="Objects (select one to refine it)", elem_id="video_objects")
            new_btn = gr.Button("New object", elem_id="video_new_object_button")
            with gr.Row(elem_id="video_propagate_row"):
                back_btn = gr.Button("◀ Propagate backward", elem_id="video_propagate_backward")
                both_btn = gr.Button("Propagate both ways", variant="primary", elem_id="video_propagate_both")
                fwd_btn = gr.Button("Propagate forward ▶", elem_id="video_propagate_forward")
            with gr.Row(elem_id="video_track_everything_row"):
                track_all_btn = gr.Button("Track everything", elem_id="video_track_everything")
                every = gr.Number(10, precision=0, minimum=1, label="segment everything every K frames",
                                  elem_id="video_track_every")
            export_btn = gr.Button("Prepare downloads", elem_id="video_export_button")
            downloads = gr.File(label="Downloads: PNG per frame (zip), COCO RLE JSON, overlay MP4",
                                file_count="multiple", interactive=False, height=140, elem_id="video_downloads")
            overlay = gr.Video(label="Overlay", interactive=False, elem_id="video_overlay", height=200)

    view_outputs = [vsid, frame_view, objects, status]
    upload.upload(on_upload, [vsid, upload], [vsid, frame_view, slider, objects, status], **private)
    slider.input(on_frame, [vsid, slider], view_outputs, trigger_mode="always_last", **private)
    frame_view.select(on_click, [vsid, slider, mode], view_outputs, **private)
    new_btn.click(on_new, [vsid, slider], view_outputs, **private)
    objects.input(on_select, [vsid, slider, objects], view_outputs, **private)
    for button, direction in ((back_btn, "backward"), (both_btn, "both"), (fwd_btn, "forward")):
        # The progress bar covers the slider, not the frame, so the live preview stays visible.
        button.click(make_propagate(direction), [vsid, slider], [frame_view, slider, status],
                     show_progress_on=[slider], **private)
    track_all_btn.click(on_track_everything, [vsid, every], [frame_view, slider, objects, status],
                        show_progress_on=[slider], **private)
    export_btn.click(on_export, [vsid], [downloads, overlay], **private)


def launch(service: DemoService, *, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, share: bool = False,
           model_note: str = "", block: bool = True, concurrency: int = 8, **build_kwargs):
    """Build and launch the demo; returns the Blocks (already serving when block=False).

    The app gets a private cache folder (see private_cache_root): Gradio's copies of uploads
    and rendered views and the downloads live there, are pruned while the app runs
    (segapp.demo.cache) and are deleted when the process exits."""
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
    root = private_cache_root()
    # Gradio reads its cache folder from the environment when components and the server are
    # made, and when it checks which paths it may serve: set before building, kept while serving.
    os.environ["GRADIO_TEMP_DIR"] = str(root / "gradio")
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    build_kwargs.setdefault("outputs", OutputFiles(root / "outputs"))
    demo = build_app(service, model_note=model_note, cache_dirs=(root / "gradio",), **build_kwargs)
    demo.queue(default_concurrency_limit=concurrency)
    demo.launch(server_name=host, server_port=port, share=share, prevent_thread_lock=not block,
                show_error=True, quiet=not block,
                # Gradio refuses larger uploads before they reach the service (which checks again).
                max_file_size=max(service.limits.max_upload_bytes, service.limits.max_video_bytes),
                footer_links=["api"], ssr_mode=False)
    return demo


def private_cache_root() -> Path:
    """A new folder for one app's files, CACHE_PREFIX + random, beside Gradio's usual cache
    (in $GRADIO_TEMP_DIR as the user set it, else the system's temporary folder). Only this
    app writes there, so pruning it never touches another app's files."""
    current = os.environ.get("GRADIO_TEMP_DIR")
    if current and Path(current).name == "gradio" and Path(current).parent.name.startswith(CACHE_PREFIX):
        current = str(Path(current).parent.parent)  # set by an earlier launch in this process
    return Path(tempfile.mkdtemp(prefix=CACHE_PREFIX, dir=current or None))
