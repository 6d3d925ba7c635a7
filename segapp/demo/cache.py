"""Moved to segapp.service.cache (Gradio-free). This name stays only until every module of
segapp.demo imports segapp.service.cache; then it goes."""
from segapp.service.cache import *  # noqa: F401,F403
