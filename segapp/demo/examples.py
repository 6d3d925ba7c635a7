"""Moved to segapp.service.examples (Gradio-free). This name stays only until every module of
segapp.demo imports segapp.service.examples; then it goes."""
from segapp.service.examples import *  # noqa: F401,F403
