"""Moved to segapp.service.exports (Gradio-free). This name stays only until every module of
segapp.demo imports segapp.service.exports; then it goes."""
from segapp.service.exports import *  # noqa: F401,F403
