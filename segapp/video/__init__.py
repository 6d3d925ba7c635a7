"""Video segmentation with SAM 2 memory: lazy frames, a typed bounded session, the tracker,
frame-by-frame streams and track-everything."""
from segapp.video.frames import FrameSource, VideoReadError, open_frames
from segapp.video.predictor import SAM2VideoPredictor, VideoPredictor, build_video_predictor
from segapp.video.session import VideoSession
from segapp.video.stream import StreamFrames, StreamTracker
from segapp.video.auto_tracker import VideoAutoTracker

__all__ = ["FrameSource", "VideoReadError", "open_frames", "SAM2VideoPredictor", "VideoPredictor",
           "build_video_predictor", "VideoSession", "StreamFrames", "StreamTracker", "VideoAutoTracker"]
