"""Checks a video before any work: readable, decodable, within limits; and what it holds."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2


class VideoRejected(Exception):
    """The file cannot be processed; the message tells the user why."""


@dataclass(frozen=True)
class VideoInfo:
    duration_s: float
    fps: float
    frame_count_estimate: int
    width: int
    height: int
    codec: str

    @property
    def frame_interval_s(self) -> float:
        return 1.0 / self.fps if self.fps > 0 else 0.04


def _fourcc(value: float) -> str:
    code = int(value)
    text = "".join(chr((code >> (8 * i)) & 0xFF) for i in range(4))
    return text.strip("\x00 ") if text.isprintable() else f"0x{code:08x}"


def probe(
    path: Path, max_bytes: int | None = None, max_duration_s: float | None = None, max_pixels: int | None = None
) -> VideoInfo:
    """Open ``path`` and decode its first frame; raise VideoRejected with the reason."""
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise VideoRejected(f"cannot read the file: {exc.strerror}") from None
    if size == 0:
        raise VideoRejected("the file is empty")
    if max_bytes is not None and size > max_bytes:
        raise VideoRejected(f"the file is {size} bytes; the limit is {max_bytes}")
    capture = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG)
    try:
        if not capture.isOpened():
            raise VideoRejected(
                "the file cannot be opened as a video: it is not a video, is truncated, or its container is unsupported"
            )
        fps = capture.get(cv2.CAP_PROP_FPS)
        count = capture.get(cv2.CAP_PROP_FRAME_COUNT)
        codec = _fourcc(capture.get(cv2.CAP_PROP_FOURCC))
        declared = int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)) * int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT))
        if max_pixels is not None and declared > max_pixels:
            raise VideoRejected(_too_many_pixels(capture, max_pixels))
        if not capture.grab():
            raise VideoRejected(f"no frame could be decoded (codec {codec or 'unknown'}): unsupported or damaged")
        ok, frame = capture.retrieve()
        if not ok or frame is None:
            raise VideoRejected(f"no frame could be decoded (codec {codec or 'unknown'}): unsupported or damaged")
        height, width = frame.shape[:2]
        if max_pixels is not None and width * height > max_pixels:
            raise VideoRejected(_too_many_pixels(capture, max_pixels))
    finally:
        capture.release()
    if fps <= 0 or fps > 1000:
        fps = 25.0
    count = int(count) if count > 0 else 1
    duration = count / fps
    if max_duration_s is not None and duration > max_duration_s:
        raise VideoRejected(f"the video lasts {duration:.0f}s; the limit is {max_duration_s:.0f}s")
    return VideoInfo(duration, fps, count, width, height, codec)


def _too_many_pixels(capture: cv2.VideoCapture, max_pixels: int) -> str:
    width, height = int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)), int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT))
    return f"the video's frames are {width}x{height}; the limit is {max_pixels} pixels a frame"
