"""The demo's image tab: layout and thin handlers over `DemoService` (Gradio only).

Every handler only translates between Gradio values and a service call; the session id
lives in a gr.State per browser."""
from __future__ import annotations

from pathlib import Path

import gradio as gr

from segapp.demo import examples as demo_examples
from segapp.demo import exports
from segapp.demo.cache import CacheJanitor
from segapp.demo.service import DemoError, DemoService
from segapp.demo.widgets import CLICK_MODE_CHOICES, OutputFiles, guarded, legend_html, thumb


def image_tab(service: DemoService, outputs: OutputFiles, janitor: CacheJanitor) -> None:
    """The image tab's components and events (call inside a gr.Tab of the app's Blocks)."""
    limits = service.limits
    private = dict(api_visibility="private")

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
            small = thumb(session.image)  # overlays drawn small: a click stays cheap on big images
            for i, (mask, score) in enumerate(zip(sel.candidates, sel.scores)):
                caption = f"#{i + 1}  IoU {score:.3f}"
                gallery.append((exports.overlay(small, [thumb(mask, nearest=True)], [sel.color]), caption))
                cand_choices.append((caption, str(i)))
            cand_value = str(sel.chosen)
        status = " · ".join(str(t) for t in session.timings) or "Ready."
        if session.pending_corner is not None:
            status += " · box: now click the opposite corner"
        hist = f"undo {len(session.undo_stack)} · redo {len(session.redo_stack)}"
        return (sid, canvas, objects, legend_html(session.objects, session.state.selected), gallery,
                gr.Radio(choices=cand_choices, value=cand_value), f"{status}  \n{hist}")

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

    # ------------------------------------------------------------------ layout
    limits_text = (f"Limits: files up to {limits.max_upload_bytes / 2**20:.0f} MB, images up to "
                   f"{limits.max_image_side} px on the longest side, {limits.max_points_per_object} clicks "
                   f"per object; idle sessions are closed after {limits.idle_seconds / 60:.0f} min.")
    sid_state = gr.State(None, time_to_live=limits.idle_seconds,
                         delete_callback=lambda sid: sid and service.close_session(sid))
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
            legend = gr.HTML(legend_html(), elem_id="objects_legend")
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
