"""The demo's video tab: upload, scrub, click, propagate with progress and a live preview,
download; thin handlers over `VideoService` (Gradio only)."""
from __future__ import annotations

import gradio as gr

from segapp.service.cache import CacheJanitor
from segapp.service import VideoService
from segapp.demo.widgets import CLICK_MODE_CHOICES, OutputFiles, guarded

# Live preview during propagation: at most one frame per this many seconds.
PREVIEW_INTERVAL_S = 0.4


def video_tab(video: VideoService, outputs: OutputFiles, janitor: CacheJanitor) -> None:
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

    @guarded
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

    @guarded
    def on_frame(vsid, frame_idx):
        vsid = video.ensure_session(vsid)
        return view(vsid, int(frame_idx))

    @guarded
    def on_click(vsid, frame_idx, mode, evt: gr.SelectData):
        vsid = video.ensure_session(vsid)
        x, y = evt.index
        video.click(vsid, int(frame_idx), x, y, positive=(mode == "positive"))
        return view(vsid, int(frame_idx))

    @guarded
    def on_new(vsid, frame_idx):
        vsid = video.ensure_session(vsid)
        video.new_object(vsid)
        return view(vsid, int(frame_idx))

    @guarded
    def on_select(vsid, frame_idx, value):
        vsid = video.ensure_session(vsid)
        video.select_object(vsid, int(value) if value else None)
        return view(vsid, int(frame_idx))

    def make_propagate(direction: str):
        @guarded
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

    @guarded
    def on_track_everything(vsid, every, progress=gr.Progress()):
        vsid = video.ensure_session(vsid)
        for shown, done, total, preview in video.track_everything(vsid, every, preview_interval=PREVIEW_INTERVAL_S):
            progress((done, total), desc="tracking everything", unit="frames")
            if preview is not None:
                yield preview, shown, objects_radio(video.get_session(vsid)), \
                    f"Tracking everything: {done}/{total} frames (showing frame {shown})"
        session = video.get_session(vsid)
        yield video.frame(vsid, 0), 0, objects_radio(session), status_text(session, 0)

    @guarded
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
