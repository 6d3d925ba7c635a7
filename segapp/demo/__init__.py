"""The segapp web demo: `segapp demo` (Gradio UI) over the Gradio-free service layer
segapp.service.

    from segapp.service import ImageService       # image sessions: objects, undo/redo, exports
    from segapp.service import VideoService       # video sessions: clicks, propagation, exports
    from segapp.demo.app import build_app         # the Gradio Blocks over an ImageService
"""

# Where the demo listens unless told otherwise: this machine only.
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 7860
