"""segapp.service, the demo's service layer: importable without Gradio, one runtime (model,
model lock, limits, clock) shared by the image and the video service."""
from __future__ import annotations

import subprocess
import sys

import pytest

from segapp.service import DemoService, ImageService, Limits, Runtime, VideoService
from tiny_models import tiny_model


def test_the_service_package_imports_without_gradio():
    code = ("import sys; sys.modules['gradio'] = None\n"  # any `import gradio` now fails
            "import segapp.service, segapp.service.api, segapp.service.cache, segapp.service.examples\n"
            "print('gradio' in sys.modules and sys.modules['gradio'] is not None)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


@pytest.fixture(scope="module")
def model():
    return tiny_model()


def test_image_and_video_services_share_one_runtime(model):
    runtime = Runtime(model, limits=Limits(max_sessions=3), clock=lambda: 0.0)
    images, videos = ImageService(runtime), VideoService(runtime)
    assert images.runtime is runtime and videos.runtime is runtime
    assert images.limits.max_sessions == 3 and videos.limits is images.limits
    # Built from an image service, the video service takes that service's runtime (same lock).
    assert VideoService(images).runtime.model_lock is runtime.model_lock
    # A model alone makes a runtime of its own; limits go to the runtime, not beside it.
    alone = DemoService(model, limits=Limits(max_sessions=2))
    assert alone.runtime is not runtime and alone.limits.max_sessions == 2
    with pytest.raises(TypeError, match="Runtime"):
        ImageService(runtime, limits=Limits())
