"""Moved to segapp.service (Gradio-free: Runtime, ImageService, VideoService, SessionTable,
Limits, ...). This name stays only until every module of segapp.demo imports segapp.service;
then it goes."""
from segapp.service import *  # noqa: F401,F403
from segapp.service import __all__  # noqa: F401
