"""The web demo's service layer, with no Gradio: what a UI (the Gradio demo, a test, another
front end) calls. The Gradio app in segapp.demo only translates between widgets and these calls.

    runtime     Runtime: the model, its one lock, the limits, the clock (one per server)
    image_service / video_service
                ImageService and VideoService: sessions keyed by id, clicks, objects,
                undo/redo, segment everything, propagation, downloads
    types, image_session, video_session
                the typed values: Timing, ObjectState, Snapshot, the sessions
    sessions    SessionTable: sessions by unguessable id, evicted when idle or surplus
    limits      Limits and the errors a user can fix (DemoError, SessionNotFound)
    api         the stateless API endpoints (one image and its prompts in, masks out)
    uploads     upload checks and decoding; exports, image_exports, video_exports: downloads
    video_progress
                a video run's steps and its growing preview MP4 (LiveVideo)
    cache       the demo's bounded on-disk cache; examples: example images

    from segapp.service import ImageService, Runtime, VideoService
    runtime = Runtime(segapp.build_model("test_tiny"))
    images, videos = ImageService(runtime), VideoService(runtime)
"""
from segapp.service.api import parse_prompts
from segapp.service.image_service import ImageService
from segapp.service.image_session import ImageSession
from segapp.service.limits import CLICK_MODES, MAX_POINTS_PER_OBJECT, DemoError, Limits, SessionNotFound
from segapp.service.runtime import Runtime
from segapp.service.sessions import SessionTable
from segapp.service.types import ObjectState, Snapshot, Timing
from segapp.service.video_service import VideoService
from segapp.service.video_session import VideoObject, VideoUserSession

# The name the demo's UI and tests have used for the image service.
DemoService = ImageService

__all__ = ["CLICK_MODES", "MAX_POINTS_PER_OBJECT", "DemoError", "DemoService", "ImageService", "ImageSession",
           "Limits", "ObjectState", "Runtime", "SessionNotFound", "SessionTable", "Snapshot", "Timing",
           "VideoObject", "VideoService", "VideoUserSession", "parse_prompts"]
