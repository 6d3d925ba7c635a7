"""The demo's video tab: upload, scrub, prompt objects with clicks or boxes on any frame, edit
them (undo/redo, delete, rename, class label, clear), propagate or track everything with
progress, a live frame, a Stop button and a playable MP4 of the frames tracked so far that
grows while the run goes on, play the tracked result, download.

Thin handlers over `VideoService` (Gradio only). Per browser, a gr.State holds the session
id and another the first corner of a half-drawn box (box mode: two clicks on one frame).
Clicks, right-clicks (negative), dragged boxes and Esc come from the page's script
(segapp.demo.assets) as commands through a hidden textbox and button (`on_command`), mapped to
the frame's pixels there (Gradio's select event, kept for a page without the script, maps them
as if the frame were never drawn larger).
Every handler returns the whole view (`view_outputs`), so which controls can act (the others
are disabled), the object list, the name and label boxes and the warning line never drift.
A propagation holds the session until it ends, so while it runs only Stop is enabled; Stop
calls `VideoService.stop`, which does not wait for the session: the run ends after the frame
it is on and the frames tracked so far keep their masks (the last preview plays them all).
Objects whose latest prompt gave a mask the model rates poor are flagged as on the image tab
(segapp.service.types.QualityFlag); the status shows a timing only while the session is at
the revision its step made (widgets.timing_text, as the image tab).
"""
from __future__ import annotations

import gradio as gr

from segapp.demo.widgets import (CLICK_MODE_CHOICES, OutputFiles, command_channel, guarded, parse_command,
                                 shortcuts_help, timing_text, warn)
from segapp.service import DemoError, VideoService
from segapp.service.cache import CacheJanitor
from segapp.service.video_progress import LiveVideo

# Live preview during propagation: at most one frame per this many seconds.
PREVIEW_INTERVAL_S = 0.4
BOX_PENDING = "box: now click the opposite corner on this frame (Esc, another mode or frame cancels it)"
RUN_STEPS = {"backward": "propagating backward", "both": "propagating both ways",
             "forward": "propagating forward", "everything": "tracking everything"}


def video_tab(video: VideoService, outputs: OutputFiles, janitor: CacheJanitor) -> None:
    """The video tab's components and events (call inside a gr.Tab of the app's Blocks)."""
    limits = video.limits
    private = dict(api_visibility="private")

    # ------------------------------------------------------------------ view
    def status_text(session, frame_idx: int, corner=None) -> str:
        known = sum(1 for f in session.results.values() if f)
        timing = timing_text(session)
        text = (f"Frame {frame_idx} of {session.num_frames - 1} · masks on {known} of {session.num_frames} frame(s)"
                + (f" · {timing}" if timing else ""))
        if corner is not None:
            text += f" · {BOX_PENDING}"
        return f"{text}  \nundo {len(session.undo_stack)} · redo {len(session.redo_stack)}"

    def controls(session, running: bool = False) -> list:
        """An update for each of `buttons`: enabled only where it can act (only Stop while a run
        holds the session)."""
        ready, sel, prompted = session.state is not None and not running, session.selected is not None, session.prompts
        can_act = {undo_btn: session.undo_stack, redo_btn: session.redo_stack, delete_btn: sel, rename_btn: sel,
                   label_btn: sel, clear_btn: session.objects or session.results, new_btn: True,
                   back_btn: prompted, both_btn: prompted, fwd_btn: prompted, track_all_btn: True,
                   export_btn: session.results, preview_btn: session.results}
        return [gr.Button(interactive=running, value="■ Stop") if b is stop_btn
                else gr.Button(interactive=ready and bool(can_act[b])) for b in buttons]

    def view(vsid, frame_idx, corner=None):
        """Every output of `view_outputs`, in its order."""
        session = video.get_session(vsid)
        frame_idx = int(frame_idx)
        if session.state is None:
            return (None, vsid, gr.skip(), gr.Radio(choices=[], value=None), "Upload a video.",
                    gr.Markdown("", visible=False), gr.Markdown("", visible=False),
                    gr.Textbox(value="", interactive=False),
                    gr.Dropdown(value=None, interactive=False), *controls(session))
        untracked = {o.obj_id for o in video.untracked_objects(vsid)}
        choices = [(f"{o.name}" + (f" [{o.label}]" if o.label else "") + f" (id {o.obj_id})"
                    + (" ⚠ not propagated" if o.obj_id in untracked else "")
                    + (" ⚠ low quality" if o.low_quality else ""), str(o.obj_id)) for o in session.objects]
        sel = next((o for o in session.objects if o.obj_id == session.selected), None)
        warning, hints = video.untracked_warning(vsid), session.quality_hints
        return (corner, vsid, video.frame(vsid, frame_idx, corner[1:] if corner is not None else None),
                gr.Radio(choices=choices, value=str(sel.obj_id) if sel is not None else None),
                status_text(session, frame_idx, corner),
                gr.Markdown(f"⚠ {warning}" if warning else "", visible=bool(warning)),
                gr.Markdown("  \n".join(f"⚠ {h}" for h in hints), visible=bool(hints)),
                gr.Textbox(value=sel.name if sel is not None else "", interactive=sel is not None),
                gr.Dropdown(choices=video.labels(vsid), value=sel.label if sel is not None and sel.label else None,
                            interactive=sel is not None),
                *controls(session))

    # ------------------------------------------------------------------ handlers
    # Each handler takes (session id, frame, half box, *its inputs) and returns view(...).
    def action(name: str, call):
        """A handler that runs call(sid, frame, *inputs), shows its warning, then the view
        (a half-drawn box is forgotten)."""
        def handler(vsid, frame_idx, corner, *args):
            vsid = video.ensure_session(vsid)
            warn(call(vsid, int(frame_idx), *args))
            return view(vsid, frame_idx)
        handler.__name__ = name
        return guarded(handler)

    def selected_id(vsid, what: str) -> int:
        selected = video.get_session(vsid).selected
        if selected is None:
            raise DemoError(f"select an object to {what} (click it in the Objects list)")
        return selected

    def delete(vsid, frame_idx):
        return video.delete_object(vsid)

    def rename(vsid, frame_idx, name):
        return video.rename_object(vsid, selected_id(vsid, "rename"), name or "")

    def set_label(vsid, frame_idx, label):
        return video.set_label(vsid, selected_id(vsid, "label"), label or "")

    on_frame = action("on_frame", lambda vsid, f: None)
    on_mode = action("on_mode", lambda vsid, f: None)
    on_new = action("on_new", lambda vsid, f: video.new_object(vsid))
    on_select = action("on_select", lambda vsid, f, v: video.select_object(vsid, int(v) if v else None))
    on_undo = action("on_undo", lambda vsid, f: video.undo(vsid))
    on_redo = action("on_redo", lambda vsid, f: video.redo(vsid))
    on_clear = action("on_clear", lambda vsid, f: video.clear(vsid))
    on_delete = action("on_delete", delete)
    on_rename = action("on_rename", rename)
    on_label = action("on_label", set_label)

    @guarded
    def on_upload(vsid, path):
        vsid = video.ensure_session(vsid)
        if path is not None and janitor.contains(path):  # Gradio's copy: goes with the session
            video.adopt_file(vsid, path)
        info = video.open_video(vsid, path)
        janitor.prune()
        # A slider needs minimum < maximum: a one-frame video gets a locked 0..1 slider.
        slider = gr.Slider(minimum=0, maximum=max(info["frames"] - 1, 1), value=0, step=1,
                           interactive=info["frames"] > 1)
        note = f"{info['frames']} frames, {info['width']}x{info['height']}, {info['fps']:.1f} fps"
        shown = list(view(vsid, 0))
        shown[4] = f"{note}. Click an object on any frame, then propagate.  \n{shown[4]}"
        return (*shown, slider, None)

    def click(vsid, frame_idx: int, corner, mode: str, x, y):
        """A click on the frame in `mode`: in box mode the first corner waits for the second."""
        if mode == "box":
            if corner is None or corner[0] != frame_idx:  # the first corner: wait for the second
                return view(vsid, frame_idx, [frame_idx, x, y])
            warn(video.set_box(vsid, frame_idx, (corner[1], corner[2], x, y)))
        else:
            warn(video.click(vsid, frame_idx, x, y, positive=(mode == "positive")))
        return view(vsid, frame_idx)

    @guarded
    def on_click(vsid, frame_idx, corner, mode, evt: gr.SelectData):
        """Gradio's own click (a page without the script; its mapping ignores scaling up)."""
        return click(video.ensure_session(vsid), int(frame_idx), corner, mode, *evt.index)

    @guarded
    def on_command(vsid, frame_idx, corner, mode, text):
        """A command from the page's script (clicks mapped to the frame's pixels there): a click
        (a right-click says "negative"), a dragged box, Esc, the Delete key."""
        vsid, frame_idx = video.ensure_session(vsid), int(frame_idx)
        cmd = parse_command(text)
        op = cmd.get("op")
        if op == "click":
            return click(vsid, frame_idx, corner, cmd.get("mode") or mode, cmd["x"], cmd["y"])
        if op == "box":
            warn(video.set_box(vsid, frame_idx, cmd["box"]))
            return view(vsid, frame_idx)
        if op == "cancel_box":  # the view without the half box
            return view(vsid, frame_idx)
        if op == "delete":  # the Delete key: says why when nothing is selected (a toast; the view stays)
            warn(video.delete_object(vsid, selected_id(vsid, "delete")))
            return view(vsid, frame_idx)
        raise DemoError(f"unknown command {op!r}")

    def run(vsid, frame_idx, direction: str, every, progress):
        """A propagation (or track everything): first every control but Stop is disabled;
        Stop is enabled once the run holds the session (it clears earlier stop requests when
        it starts); then a live preview; at the end the view, the preview video and the
        run's warning (e.g. stopped after N of M frames) as a toast. The tracked result's player
        gets an MP4 of the frames tracked so far now and then while it runs (LiveVideo: written
        at most every ~2 s, at most a fifth of the run's time), and the whole video's at the end."""
        vsid = video.ensure_session(vsid)
        start = int(frame_idx)
        session = video.get_session(vsid)
        keep = [gr.skip()] * len(view_outputs)
        keep[view_outputs.index(status)] = f"{RUN_STEPS[direction].capitalize()}…"
        keep[len(view_outputs) - len(buttons):] = controls(session, running=True)
        keep[view_outputs.index(stop_btn)] = gr.Button(interactive=False)
        yield (*keep, gr.Slider(interactive=False), gr.skip())
        live = LiveVideo(session_folder(vsid))
        try:
            if direction == "everything":
                steps = video.track_everything(vsid, every, preview_interval=PREVIEW_INTERVAL_S, live=live)
            else:
                steps = video.propagate(vsid, direction, start, PREVIEW_INTERVAL_S, live=live)
            for step in steps:
                progress((step.done, step.total), desc=RUN_STEPS[direction], unit="frames")
                if step.done == 1 or step.preview is not None or step.video is not None:
                    update = [gr.skip()] * (len(view_outputs) + 2)
                    update[view_outputs.index(stop_btn)] = gr.Button(interactive=True)
                    update[view_outputs.index(status)] = (f"{RUN_STEPS[direction].capitalize()}: {step.done} of "
                                                          f"{step.total} frames (showing frame {step.frame_idx})")
                    if step.preview is not None:
                        update[view_outputs.index(frame_view)] = step.preview
                    if step.video is not None:  # Gradio has its copy before the next step deletes it
                        update[-1] = str(step.video)
                    yield tuple(update)
        except DemoError as err:  # refused before it began (e.g. no prompts yet)
            gr.Warning(str(err))
            yield (*view(vsid, start), gr.Slider(interactive=session.num_frames > 1), gr.skip())
            return
        except Exception:  # a bug: give the controls back, then let Gradio report it
            yield (*view(vsid, start), gr.Slider(interactive=session.num_frames > 1), gr.skip())
            raise
        for timing in session.timings:
            warn(timing)  # e.g. stopped after N of M frames
        start = 0 if direction == "everything" else start
        if live.last is not None:  # served from Gradio's copy; the whole video's replaces it
            live.last.unlink(missing_ok=True)
        played = make_preview(vsid)
        yield (*view(vsid, start), gr.Slider(value=start, interactive=session.num_frames > 1),
               str(played) if played is not None else None)

    def on_propagate_backward(vsid, frame_idx, progress=gr.Progress()):
        yield from run(vsid, frame_idx, "backward", None, progress)

    def on_propagate_both(vsid, frame_idx, progress=gr.Progress()):
        yield from run(vsid, frame_idx, "both", None, progress)

    def on_propagate_forward(vsid, frame_idx, progress=gr.Progress()):
        yield from run(vsid, frame_idx, "forward", None, progress)

    def on_track_everything(vsid, every, progress=gr.Progress()):
        yield from run(vsid, 0, "everything", every, progress)

    @guarded
    def on_stop(vsid):
        """Ask the running propagation to end after its current frame (answers at once)."""
        if vsid is None:
            raise DemoError("nothing is running")
        video.stop(vsid)
        return gr.Button(interactive=False, value="Stopping…")

    def session_folder(vsid):
        """A fresh folder for files handed to the browser, deleted with the session."""
        folder = outputs.folder()
        video.adopt_file(vsid, folder)
        return folder

    def make_preview(vsid):
        """The tracked result's MP4 (None: no masks yet)."""
        played = video.preview(vsid, session_folder(vsid))
        janitor.prune()
        return played

    @guarded
    def on_preview(vsid):
        played = make_preview(video.ensure_session(vsid))
        if played is None:
            raise DemoError("nothing tracked yet: click on an object and propagate")
        return str(played)

    @guarded
    def on_export(vsid):
        vsid = video.ensure_session(vsid)
        files = video.export(vsid, session_folder(vsid))
        janitor.prune()
        untracked = video.untracked_warning(vsid)
        if untracked:  # the downloads have those objects only on the frames they were prompted on
            gr.Warning(f"Downloads made, but {untracked}")
        return [str(files["png_zip"]), str(files["coco_json"]), str(files["overlay_mp4"])]

    # ------------------------------------------------------------------ layout
    gr.Markdown(f"Limits: videos up to {limits.max_video_bytes / 2**20:.0f} MB, {limits.max_video_frames} frames "
                f"and {limits.max_video_side} px on the longest side (MP4, WebM, MOV, AVI, MKV); "
                f"{limits.max_points_per_object} clicks per object and frame.",
                elem_id="video_limits")
    vsid = gr.State(None, time_to_live=limits.idle_seconds,
                    delete_callback=lambda sid: sid and video.close_session(sid))
    corner_state = gr.State(None)  # [frame, x, y]: the first corner of a half-drawn box
    off = dict(interactive=False)
    with gr.Row(elem_id="video_row"):
        with gr.Column(scale=3, elem_id="video_canvas_column"):
            frame_view = gr.Image(type="numpy", format="jpeg", interactive=False, elem_id="video_frame", height=480,
                                  label="Frame: click to segment (drag for a box, right-click: negative)")
            slider = gr.Slider(0, 1, value=0, step=1, label="Frame", interactive=False,
                               elem_id="video_frame_slider")
            status = gr.Markdown("Upload a video.", elem_id="video_status")
            command_box, command_btn = command_channel("video_command")  # hidden: the script's channel
            warning = gr.Markdown("", visible=False, elem_id="video_warning")
            shortcuts_help("video_")
            with gr.Row(elem_id="video_run_row"):
                back_btn = gr.Button("◀ Propagate backward", elem_id="video_propagate_backward", **off)
                both_btn = gr.Button("Propagate both ways", variant="primary", elem_id="video_propagate_both", **off)
                fwd_btn = gr.Button("Propagate forward ▶", elem_id="video_propagate_forward", **off)
                stop_btn = gr.Button("■ Stop", variant="stop", elem_id="video_stop_button", **off)
            preview_video = gr.Video(label="Tracked result (grows while frames are tracked; Update after edits)",
                                     interactive=False, loop=True, elem_id="video_preview", height=320)
            preview_btn = gr.Button("Update tracked result", elem_id="video_preview_button", **off)
        with gr.Column(scale=2, elem_id="video_controls_column"):
            upload = gr.Video(sources=["upload"], label="Video", elem_id="video_input", height=200)
            mode = gr.Radio(CLICK_MODE_CHOICES, value="positive", label="Click mode", elem_id="video_click_mode")
            with gr.Row(elem_id="video_history_row"):
                undo_btn = gr.Button("↶ Undo", elem_id="video_undo_button", **off)
                redo_btn = gr.Button("↷ Redo", elem_id="video_redo_button", **off)
                clear_btn = gr.Button("Clear", variant="stop", elem_id="video_clear_button", **off)
            objects = gr.Radio([], label="Objects (select one to refine it)", elem_id="video_objects")
            quality = gr.Markdown("", visible=False, elem_id="video_quality")  # low-quality masks: add a click
            with gr.Row(elem_id="video_object_row"):
                new_btn = gr.Button("New object", elem_id="video_new_object_button", **off)
                delete_btn = gr.Button("Delete", elem_id="video_delete_button", **off)
            with gr.Row(elem_id="video_rename_row"):
                name_box = gr.Textbox(label="Name of the selected object", elem_id="video_name", scale=3, **off)
                rename_btn = gr.Button("Rename", elem_id="video_rename_button", scale=1, **off)
            with gr.Row(elem_id="video_label_row"):
                label_box = gr.Dropdown([], value=None, allow_custom_value=True, label="Class label (type or pick)",
                                        elem_id="video_label", scale=3, **off)
                label_btn = gr.Button("Set label", elem_id="video_label_button", scale=1, **off)
            with gr.Row(elem_id="video_track_everything_row"):
                track_all_btn = gr.Button("Track everything", elem_id="video_track_everything", **off)
                every = gr.Number(10, precision=0, minimum=1, label="segment everything every K frames",
                                  elem_id="video_track_every")
            export_btn = gr.Button("Prepare downloads", elem_id="video_export_button", **off)
            downloads = gr.File(label="Downloads: PNG per frame (zip), COCO RLE JSON, overlay MP4",
                                file_count="multiple", interactive=False, height=140, elem_id="video_downloads")

    buttons = [undo_btn, redo_btn, delete_btn, rename_btn, label_btn, clear_btn, new_btn,
               back_btn, both_btn, fwd_btn, track_all_btn, stop_btn, export_btn, preview_btn]
    view_outputs = [corner_state, vsid, frame_view, objects, status, warning, quality, name_box, label_box, *buttons]
    run_outputs = [*view_outputs, slider, preview_video]
    look = [vsid, slider, corner_state]
    upload.upload(on_upload, [vsid, upload], run_outputs, **private)
    slider.input(on_frame, look, view_outputs, trigger_mode="always_last", **private)
    mode.input(on_mode, look, view_outputs, **private)
    frame_view.select(on_click, [*look, mode], view_outputs, **private)
    command_btn.click(on_command, [*look, mode, command_box], view_outputs, **private)
    for button, handler in ((new_btn, on_new), (undo_btn, on_undo), (redo_btn, on_redo), (clear_btn, on_clear),
                            (delete_btn, on_delete)):
        button.click(handler, look, view_outputs, **private)
    objects.input(on_select, [*look, objects], view_outputs, **private)
    rename_btn.click(on_rename, [*look, name_box], view_outputs, **private)
    label_btn.click(on_label, [*look, label_box], view_outputs, **private)
    for button, handler in ((back_btn, on_propagate_backward), (both_btn, on_propagate_both),
                            (fwd_btn, on_propagate_forward)):
        # The progress bar covers the slider, not the frame, so the live preview stays visible.
        button.click(handler, [vsid, slider], run_outputs, show_progress_on=[slider], **private)
    track_all_btn.click(on_track_everything, [vsid, every], run_outputs, show_progress_on=[slider], **private)
    stop_btn.click(on_stop, [vsid], [stop_btn], show_progress="hidden", **private)
    preview_btn.click(on_preview, [vsid], [preview_video], **private)
    export_btn.click(on_export, [vsid], [downloads], **private)
