"""The demo's image tab: layout and thin handlers over `ImageService` (Gradio only).

Every handler only translates between Gradio values and a service call; the session id
lives in a gr.State per browser, and so does the view (mask opacity, hidden objects), which
only changes what is drawn. The keyboard and mouse shortcuts (segapp.demo.assets) press this
tab's buttons or send a command through a hidden textbox and button (`on_command`); clicks on
the canvas go that way too, because Gradio's own select event maps a click to image pixels as
if the picture were never drawn larger than its size, and this canvas scales small pictures up
(`canvas.select` stays wired for a page without the script).
"""
from __future__ import annotations

from pathlib import Path

import gradio as gr

from segapp.demo.widgets import (CLICK_MODE_CHOICES, OutputFiles, command_channel, guarded, legend_html,
                                 parse_command, shortcuts_help, thumb, timing_text, warn)
from segapp.service import DemoError, ImageService
from segapp.service import examples as demo_examples
from segapp.service import exports
from segapp.service.cache import CacheJanitor

# The masks' opacity in the view when a page opens.
DEFAULT_OPACITY = 0.5
CANVAS_HEIGHT = "78vh"


def image_tab(service: ImageService, outputs: OutputFiles, janitor: CacheJanitor) -> None:
    """The image tab's components and events (call inside a gr.Tab of the app's Blocks)."""
    limits = service.limits
    private = dict(api_visibility="private")

    # ------------------------------------------------------------------ view
    def view(sid: str, alpha: float, hidden):
        """Every output of `view_outputs`, in its order: the canvas, the object lists, the
        candidates, the status, and which controls can act now (the others are disabled)."""
        session = service.get_session(sid)
        hidden = set(hidden or ())
        canvas = service.render(sid, alpha=float(alpha), hidden=hidden)
        objs, sel = session.objects, session.selected
        selected = session.state.selected
        choices = [(f"{o.name} (id {o.obj_id})", str(o.obj_id)) for o in objs]
        objects = gr.Radio(choices=choices, value=str(selected) if selected is not None else None)
        shown = gr.CheckboxGroup(choices=choices, value=[str(o.obj_id) for o in objs if o.obj_id not in hidden])
        gallery, cand_choices, cand_value = [], [], None
        if sel is not None and sel.candidates is not None:
            small = thumb(session.image)  # overlays drawn small: a click stays cheap on big images
            for i, (mask, score) in enumerate(zip(sel.candidates, sel.scores)):
                caption = f"#{i + 1}  IoU {score:.3f}"
                gallery.append((exports.overlay(small, [thumb(mask, nearest=True)], [sel.color]), caption))
                cand_choices.append((caption, str(i)))
            cand_value = str(sel.chosen)
        status = timing_text(session) or "Ready."
        if session.pending_corner is not None:
            status += " · box: now click the opposite corner (Esc cancels)"
        hist = f"undo {len(session.undo_stack)} · redo {len(session.redo_stack)}"
        has_image = session.image is not None
        can = lambda ok: gr.Button(interactive=bool(ok))  # noqa: E731
        return (sid, canvas, objects, legend_html(objs, selected), fresh_downloads(sid),
                gr.Dropdown(choices=service.labels(sid), value=sel.label if sel is not None else None,
                            interactive=sel is not None),
                gr.Gallery(value=gallery, selected_index=sel.chosen if gallery else None),
                gr.Radio(choices=cand_choices, value=cand_value, interactive=bool(cand_choices)),
                f"{status}  \n{hist}", shown,
                gr.Textbox(value=sel.name if sel is not None else "", interactive=sel is not None),
                can(session.undo_stack), can(session.redo_stack), can(sel is not None),
                can(sel is not None), can(sel is not None), can(has_image), can(objs), can(has_image),
                can(session.masked_objects))

    def fresh_downloads(sid: str):
        """Once the user asked for downloads, they follow every change (the service writes them
        again only when the objects changed); None (an empty panel) before."""
        last = service.get_session(sid).downloads
        if last is None or last.folder is None:
            return None
        return [str(p) for p in service.downloads(sid, last.folder).files.values()] or None

    # ------------------------------------------------------------------ handlers
    # Each handler takes (sid, opacity, hidden ids, *its inputs) and returns view(...).
    def action(name: str, call):
        """A handler that runs call(sid, *inputs) and shows the result (with its warning)."""
        def handler(sid, alpha, hidden, *args):
            sid = service.ensure_session(sid)
            warn(call(sid, *args))
            return view(sid, alpha, hidden)
        handler.__name__ = name
        return guarded(handler)

    def upload(sid, path):
        if path is None:
            return None
        if janitor.contains(path):  # Gradio's copy: goes with the session
            service.adopt_file(sid, path)
        result = service.set_image(sid, path, name=Path(path).name)
        janitor.prune()
        return result

    def example(sid, name):
        if not name:
            raise DemoError("pick an example first")
        return service.set_image(sid, demo_examples.load(name), name=f"{name}.png")

    def selected_id(sid, what: str) -> int:
        sel = service.get_session(sid).selected
        if sel is None:
            raise DemoError(f"select an object to {what} (click it in the Objects list)")
        return sel.obj_id

    def rename(sid, name):
        return service.rename_object(sid, selected_id(sid, "rename"), name)

    def delete(sid):
        return service.delete_object(sid, selected_id(sid, "delete"))

    def set_label(sid, label):
        return service.set_label(sid, selected_id(sid, "label"), label or "")

    def candidate(sid, value):
        return None if value is None else service.choose_candidate(sid, int(value))

    def command(sid, mode, text):
        """A command from the page's script: a right-click, a dragged box, Delete or Esc."""
        cmd = parse_command(text)
        op = cmd.get("op")
        if op == "click":  # a left click carries no mode (the radio's), a right-click "negative"
            return service.click(sid, cmd["x"], cmd["y"], cmd.get("mode") or mode)
        if op == "box":
            return service.set_box(sid, cmd["box"])
        if op == "delete":
            return delete(sid)
        if op == "cancel_box":
            session = service.get_session(sid)
            if session.pending_corner is not None:  # selecting again forgets the first corner
                service.select_object(sid, session.state.selected)
            return None
        raise DemoError(f"unknown command {op!r}")

    on_upload = action("on_upload", upload)
    on_example = action("on_example", example)
    on_select_object = action("on_select_object", lambda sid, v: service.select_object(sid, int(v) if v else None))
    on_new_object = action("on_new_object", lambda sid: service.new_object(sid))
    on_rename = action("on_rename", rename)
    on_label = action("on_label", set_label)
    on_delete = action("on_delete", delete)
    on_candidate = action("on_candidate", candidate)
    on_undo = action("on_undo", lambda sid: service.undo(sid))
    on_redo = action("on_redo", lambda sid: service.redo(sid))
    on_clear = action("on_clear", lambda sid: service.clear(sid))
    on_everything = action("on_everything", lambda sid, pps: service.segment_everything(sid, int(pps)))
    on_command = action("on_command", command)
    on_look = action("on_look", lambda sid: None)

    @guarded
    def on_remove_image(sid, alpha):
        """The canvas's × removes the picture: the session (objects, history) goes with it, so
        nothing is left behind that the next image would inherit; nothing is hidden any more."""
        if sid is not None and service.has_session(sid):
            service.close_session(sid)
        out = list(view(service.create_session(), alpha, []))
        out[view_outputs.index(status)] = "Upload an image or load an example."
        return ([], *out)

    @guarded
    def on_click(sid, alpha, hidden, mode, evt: gr.SelectData):
        sid = service.ensure_session(sid)
        x, y = evt.index
        warn(service.click(sid, x, y, mode))
        return view(sid, alpha, hidden)

    @guarded
    def on_gallery_select(sid, alpha, hidden, evt: gr.SelectData):
        sid = service.ensure_session(sid)
        service.choose_candidate(sid, int(evt.index))
        return view(sid, alpha, hidden)

    @guarded
    def on_shown(sid, alpha, shown):
        """The objects ticked in "Shown objects" are drawn; the others are hidden (view only)."""
        sid = service.ensure_session(sid)
        hidden = sorted({o.obj_id for o in service.get_session(sid).objects} - {int(v) for v in shown or ()})
        return (hidden, *view(sid, alpha, hidden))

    def prepare_downloads(sid):
        if not service.get_session(sid).masked_objects:
            raise DemoError("nothing to download yet: segment an object first")
        folder = outputs.folder()
        service.adopt_file(sid, folder)
        service.downloads(sid, folder)  # every kind; view() keeps them fresh from now on
        janitor.prune()

    on_export = action("on_export", prepare_downloads)

    # ------------------------------------------------------------------ layout
    limits_text = (f"Limits: files up to {limits.max_upload_bytes / 2**20:.0f} MB, images up to "
                   f"{limits.max_image_side} px on the longest side, {limits.max_points_per_object} clicks "
                   f"per object; idle sessions are closed after {limits.idle_seconds / 60:.0f} min.")
    sid_state = gr.State(None, time_to_live=limits.idle_seconds,
                         delete_callback=lambda sid: sid and service.close_session(sid))
    hidden_state = gr.State([])
    with gr.Row(elem_id="image_row"):
        with gr.Column(scale=7, elem_id="canvas_column"):
            canvas = gr.Image(type="filepath", format="jpeg", sources=["upload", "clipboard"],
                              label="Image: upload, then click to segment (drag for a box, right-click: negative)",
                              interactive=True, elem_id="image_canvas", height=CANVAS_HEIGHT)
            status = gr.Markdown("Upload an image or load an example.", elem_id="status")
            shortcuts_help()
            gr.Markdown(limits_text, elem_id="image_limits")
            command_box, command_btn = command_channel("image_command")  # hidden: the script's channel
        with gr.Column(scale=4, elem_id="controls_column"):
            with gr.Row(elem_id="example_row"):
                example_pick = gr.Dropdown(choices=demo_examples.names(), value=demo_examples.names()[0],
                                           label="Example image", elem_id="example_picker", scale=3)
                example_btn = gr.Button("Load example", elem_id="load_example_button", scale=1)
            mode = gr.Radio(CLICK_MODE_CHOICES, value="positive", label="Click mode (P / N / B)",
                            elem_id="click_mode")
            with gr.Row(elem_id="history_row"):
                undo_btn = gr.Button("↶ Undo", elem_id="undo_button", interactive=False)
                redo_btn = gr.Button("↷ Redo", elem_id="redo_button", interactive=False)
                clear_btn = gr.Button("Clear", elem_id="clear_button", variant="stop", interactive=False)
            objects = gr.Radio([], label="Objects (select one to refine it)", elem_id="objects_list")
            legend = gr.HTML(legend_html(), elem_id="objects_legend")
            with gr.Row(elem_id="object_row"):
                new_btn = gr.Button("New object", elem_id="new_object_button", interactive=False)
                delete_btn = gr.Button("Delete", elem_id="delete_object_button", interactive=False)
            with gr.Row(elem_id="rename_row"):
                rename_box = gr.Textbox(label="Rename selected", elem_id="rename_text", scale=3, interactive=False)
                rename_btn = gr.Button("Rename", elem_id="rename_button", scale=1, interactive=False)
            with gr.Row(elem_id="label_row"):
                label_pick = gr.Dropdown([], label="Class label (type one or pick one used before)",
                                         allow_custom_value=True, elem_id="label_picker", scale=3,
                                         interactive=False)
                label_btn = gr.Button("Set label", elem_id="label_button", scale=1, interactive=False)
            with gr.Row(elem_id="look_row"):
                opacity = gr.Slider(0, 1, value=DEFAULT_OPACITY, step=0.05, label="Mask opacity",
                                    elem_id="mask_opacity")
                shown = gr.CheckboxGroup([], label="Shown objects", elem_id="shown_objects")
            candidates = gr.Radio([], label="Mask candidates (predicted IoU)", elem_id="candidate_choice")
            gallery = gr.Gallery(label="Candidates", columns=3, height=160, allow_preview=False,
                                 interactive=False, elem_id="candidates_gallery")
            with gr.Row(elem_id="everything_row"):
                pps = gr.Slider(4, limits.max_points_per_side, value=16, step=1,
                                label="Points per side", elem_id="points_per_side")
                everything_btn = gr.Button("Segment everything", elem_id="segment_everything_button",
                                           interactive=False)
            export_btn = gr.Button("Prepare downloads", variant="primary", elem_id="export_button",
                                   interactive=False)
            downloads = gr.File(label="Downloads (kept up to date after each change): instance-id PNG, "
                                      "COCO RLE and polygon JSON, overlay, palette PNG, YOLO-seg labels",
                                file_count="multiple", interactive=False, height=140,
                                elem_id="download_files")

    view_outputs = [sid_state, canvas, objects, legend, downloads, label_pick, gallery, candidates, status, shown, rename_box,
                    undo_btn, redo_btn, delete_btn, rename_btn, label_btn, new_btn, clear_btn, everything_btn,
                    export_btn]
    look = [sid_state, opacity, hidden_state]
    canvas.upload(on_upload, [*look, canvas], view_outputs, **private)
    canvas.select(on_click, [*look, mode], view_outputs, **private)
    canvas.clear(on_remove_image, [sid_state, opacity], [hidden_state, *view_outputs], **private)
    example_btn.click(on_example, [*look, example_pick], view_outputs, **private)
    objects.input(on_select_object, [*look, objects], view_outputs, **private)
    new_btn.click(on_new_object, look, view_outputs, **private)
    rename_btn.click(on_rename, [*look, rename_box], view_outputs, **private)
    delete_btn.click(on_delete, look, view_outputs, **private)
    candidates.input(on_candidate, [*look, candidates], view_outputs, **private)
    gallery.select(on_gallery_select, look, view_outputs, **private)
    undo_btn.click(on_undo, look, view_outputs, **private)
    redo_btn.click(on_redo, look, view_outputs, **private)
    clear_btn.click(on_clear, look, view_outputs, **private)
    everything_btn.click(on_everything, [*look, pps], view_outputs, **private)
    command_btn.click(on_command, [*look, mode, command_box], view_outputs, **private)
    opacity.change(on_look, look, view_outputs, trigger_mode="always_last", **private)
    shown.input(on_shown, [sid_state, opacity, shown], [hidden_state, *view_outputs], **private)
    label_btn.click(on_label, [*look, label_pick], view_outputs, **private)
    export_btn.click(on_export, look, view_outputs, **private)
