"""The segapp web demo (Gradio Blocks): thin handlers over `segapp.service`.

Every handler only translates between Gradio values and an ImageService call; all state
lives in the service, keyed by the session id that each browser holds in a gr.State.
Two endpoints are public and documented for `gradio_client`:

  /segment_image(image, prompts_json) -> (mask PNG, scores JSON)
  /segment_everything(image, points_per_side) -> (instance-id PNG, records JSON)

Every other event is private (not callable by client libraries).
"""
from __future__ import annotations

import atexit
import json
import os
import shutil
import tempfile
from pathlib import Path

import gradio as gr

from segapp.demo import DEFAULT_HOST, DEFAULT_PORT
from segapp.demo import assets
from segapp.demo.image_tab import image_tab
from segapp.demo.video_tab import video_tab
from segapp.demo.widgets import CACHE_PREFIX, OutputFiles, api_guarded
from segapp.service import ImageService, VideoService, exports
from segapp.service.cache import CacheJanitor

PROMPTS_EXAMPLE = '{"points": [[100, 100]], "labels": [1]}'


def build_app(service: ImageService, *, title: str = "segapp demo", model_note: str = "",
              outputs: OutputFiles | None = None, video: bool = True,
              cache_dirs: tuple[str | Path, ...] = ()):
    """The Gradio Blocks of the demo over `service` (not launched); video: add the video tab.

    cache_dirs: folders owned by this app only (`launch` passes its private Gradio cache),
    pruned with the downloads folder by age and size (Limits.max_cache_bytes); uploads and
    downloads found there are the session's and go when it closes (segapp.service.cache)."""
    from segapp.bundled import ImageOnlyModelError

    video_service, video_off = None, "The video tab is switched off in this app."
    if video:
        try:
            video_service = VideoService(service)
        except ImageOnlyModelError as err:  # weights whose video memory was never trained
            video_off = str(err)
    outputs = outputs or OutputFiles()
    limits = service.limits
    janitor = CacheJanitor([outputs.root, *cache_dirs], max_bytes=limits.max_cache_bytes,
                           max_age_s=limits.idle_seconds,
                           held=video_service.held_files if video_service is not None else tuple)

    @api_guarded
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

    @api_guarded
    def segment_everything(image: str, points_per_side: float):
        """Segment everything with a points_per_side x points_per_side grid of prompts.
        Returns the instance-id PNG (pixel = record id, 0 = background; 16-bit when over
        255 masks) and a JSON list of records (id, COCO RLE segmentation, area, bbox, scores)."""
        id_map, records = service.segment_everything_image(image, int(points_per_side))
        path = outputs.folder() / "instances.png"
        path.write_bytes(exports.id_map_to_png(id_map))
        janitor.prune()
        return str(path), json.dumps(records)

    with gr.Blocks(title=title, analytics_enabled=False) as demo:
        gr.Markdown(f"# {title}\n{model_note}", elem_id="title")
        with gr.Tabs(elem_id="tabs"):
            with gr.Tab("Image", id="image_tab", elem_id="image_tab"):
                image_tab(service, outputs, janitor)

            with gr.Tab("Video", id="video_tab", elem_id="video_tab"):
                if video_service is None:
                    gr.Markdown(video_off, elem_id="video_unavailable")
                else:
                    video_tab(video_service, outputs, janitor)

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

        api_seg_btn.click(segment_image, [api_image, api_prompts], [api_mask, api_json],
                          api_name="segment_image", api_description=segment_image.__doc__)
        api_all_btn.click(segment_everything, [api_image, api_pps], [api_mask, api_json],
                          api_name="segment_everything", api_description=segment_everything.__doc__)
    return demo


def launch(service: ImageService, *, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, share: bool = False,
           model_note: str = "", block: bool = True, concurrency: int = 8, **build_kwargs):
    """Build and launch the demo; returns the Blocks (already serving when block=False).

    The app gets a private cache folder (see private_cache_root): Gradio's copies of uploads
    and rendered views and the downloads live there, are pruned while the app runs
    (segapp.service.cache) and are deleted when the process exits."""
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
                footer_links=["api"], ssr_mode=False, css=assets.CSS, head=assets.HEAD)
    return demo


def private_cache_root() -> Path:
    """A new folder for one app's files, CACHE_PREFIX + random, beside Gradio's usual cache
    (in $GRADIO_TEMP_DIR as the user set it, else the system's temporary folder). Only this
    app writes there, so pruning it never touches another app's files."""
    current = os.environ.get("GRADIO_TEMP_DIR")
    if current and Path(current).name == "gradio" and Path(current).parent.name.startswith(CACHE_PREFIX):
        current = str(Path(current).parent.parent)  # set by an earlier launch in this process
    return Path(tempfile.mkdtemp(prefix=CACHE_PREFIX, dir=current or None))
