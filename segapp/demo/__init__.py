"""The segapp web demo: `segapp demo` (Gradio UI) over a Gradio-free service layer.

    from segapp.demo.service import DemoService   # image sessions: objects, undo/redo, exports
    from segapp.demo.service import VideoService  # video sessions: clicks, propagation, exports
    from segapp.demo.app import build_app         # the Gradio Blocks over a DemoService
"""

# Where the demo listens unless told otherwise: this machine only.
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 7860
