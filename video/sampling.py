"""Lazy frame sampling with OpenCV: ``(index, timestamp_s, jpeg)`` at a chosen rate.

Frames are decoded in order with ``grab()`` and only the kept ones are converted,
resized and JPEG-encoded, so memory stays bounded whatever the video's length.
Timestamps are the container's presentation times (``CAP_PROP_POS_MSEC`` after each
grab), correct for variable frame rate files; the frame count OpenCV reports is only
used as an estimate. OpenCV stops silently at the first damaged region of a file: the
sampler compares what it reached with the container's duration, tries to resume past
the damage, and reports every missing time range as a gap.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from video.probe import VideoInfo

SCENE_THUMB = (32, 32)
_RESUME_STEPS_S = (0.5, 1.0, 2.0, 4.0, 8.0, 16.0)


@dataclass(frozen=True)
class SamplingOptions:
    """How frames are chosen and encoded."""

    fps: float = 1.0
    max_frames: int | None = None
    max_side: int = 768
    jpeg_quality: int = 85
    scene_threshold: float | None = None  # mean absolute difference (0-255) that counts as a new scene
    thumbnail_side: int = 256


@dataclass(frozen=True)
class SampledFrame:
    index: int
    timestamp_s: float
    jpeg: bytes
    width: int
    height: int
    thumbnail: bytes = b""


@dataclass(frozen=True)
class Gap:
    """A time range the decoder could not read."""

    start_s: float
    end_s: float

    def describe(self) -> str:
        return f"{self.start_s:.2f}s-{self.end_s:.2f}s"


@dataclass
class SamplingReport:
    """What a sampling pass reached; filled in as frames are read."""

    gaps: list[Gap] = field(default_factory=list)
    decoded_frames: int = 0
    reached_s: float = 0.0

    @property
    def warnings(self) -> list[str]:
        if not self.gaps:
            return []
        ranges = ", ".join(gap.describe() for gap in self.gaps)
        return [f"the video is damaged: no frames could be decoded in {ranges}"]


def sample_times(info: VideoInfo, options: SamplingOptions) -> list[float]:
    """The target times: every ``1/fps`` seconds, or ``max_frames`` spread evenly."""
    count = max(1, math.ceil(info.duration_s * options.fps - 1e-9))
    if options.max_frames is not None and count > options.max_frames:
        count = options.max_frames
        step = info.duration_s / count
    else:
        step = 1.0 / options.fps
    return [round(i * step, 6) for i in range(count)]


def expected_frames(info: VideoInfo, options: SamplingOptions) -> int:
    """How many frames a pass will produce (an upper bound in scene-change mode)."""
    return len(sample_times(info, options))


def _fit(frame: np.ndarray, max_side: int) -> np.ndarray:
    height, width = frame.shape[:2]
    scale = max_side / max(height, width)
    if scale >= 1:
        return frame
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return cv2.resize(frame, size, interpolation=cv2.INTER_AREA)


def _jpeg(frame: np.ndarray, quality: int) -> bytes:
    ok, buffer = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ValueError("JPEG encoding failed")
    return bytes(buffer.tobytes())


def encode(frame: np.ndarray, options: SamplingOptions) -> tuple[bytes, int, int, bytes]:
    """The frame resized to ``max_side`` as JPEG, its size, and a small JPEG thumbnail."""
    fitted = _fit(frame, options.max_side)
    height, width = fitted.shape[:2]
    thumbnail = _jpeg(_fit(fitted, options.thumbnail_side), 70)
    return _jpeg(fitted, options.jpeg_quality), width, height, thumbnail


class _Reader:
    """Sequential grabs over a capture that can be reopened past a damaged region."""

    def __init__(self, path: Path, info: VideoInfo, report: SamplingReport) -> None:
        self._path = path
        self._info = info
        self._report = report
        self._capture = self._open()
        self.timestamp_s = -1.0

    def _open(self) -> cv2.VideoCapture:
        capture = cv2.VideoCapture(str(self._path), cv2.CAP_FFMPEG)
        if not capture.isOpened():
            raise ValueError("the video can no longer be opened")
        return capture

    def close(self) -> None:
        self._capture.release()

    def grab(self) -> bool:
        """Advance one frame; False at the real end (after trying to skip any damage)."""
        if self._capture.grab():
            self._advance()
            return True
        tolerance = max(0.5, 2 * self._info.frame_interval_s)
        if self.timestamp_s + tolerance >= self._info.duration_s:
            return False
        return self._resume_after_damage()

    def _advance(self) -> None:
        self.timestamp_s = self._capture.get(cv2.CAP_PROP_POS_MSEC) / 1000.0
        self._report.decoded_frames += 1
        self._report.reached_s = max(self._report.reached_s, self.timestamp_s)

    def _resume_after_damage(self) -> bool:
        stopped_at = max(self.timestamp_s, 0.0)
        for step in _RESUME_STEPS_S:
            target = stopped_at + step
            if target >= self._info.duration_s:
                break
            capture = self._open()
            capture.set(cv2.CAP_PROP_POS_FRAMES, math.floor(target * self._info.fps))
            if capture.grab():
                timestamp = capture.get(cv2.CAP_PROP_POS_MSEC) / 1000.0
                # A seek on a damaged file can silently return an earlier frame again.
                if timestamp > stopped_at + self._info.frame_interval_s / 2:
                    self._capture.release()
                    self._capture = capture
                    self._report.gaps.append(Gap(stopped_at, timestamp))
                    self._advance()
                    return True
            capture.release()
        self._report.gaps.append(Gap(stopped_at, self._info.duration_s))
        return False

    def retrieve(self) -> np.ndarray | None:
        ok, frame = self._capture.retrieve()
        return frame if ok else None


def sample(
    path: Path,
    info: VideoInfo,
    options: SamplingOptions,
    report: SamplingReport | None = None,
    skip: Callable[[int], bool] | None = None,
) -> Iterator[SampledFrame]:
    """Yield the sampled frames of ``path`` lazily.

    ``skip(index)`` True means the caller already has that frame: it is grabbed but not
    converted or encoded (used to resume an interrupted job cheaply).
    """
    report = report if report is not None else SamplingReport()
    targets = sample_times(info, options)
    # The first frame at or after each target time (a millisecond allows for rounding).
    slack = 0.001
    reader = _Reader(path, info, report)
    previous_thumb: np.ndarray | None = None
    index = 0
    try:
        position = 0
        while position < len(targets) and reader.grab():
            if reader.timestamp_s + slack < targets[position]:
                continue
            while position < len(targets) and targets[position] <= reader.timestamp_s + slack:
                position += 1
            if skip is not None and options.scene_threshold is None and skip(index):
                index += 1
                continue
            frame = reader.retrieve()
            if frame is None:
                continue
            if options.scene_threshold is not None:
                thumb = cv2.resize(cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY), SCENE_THUMB, interpolation=cv2.INTER_AREA)
                if (
                    previous_thumb is not None
                    and float(np.mean(cv2.absdiff(thumb, previous_thumb))) < options.scene_threshold
                ):
                    continue
                previous_thumb = thumb
                if skip is not None and skip(index):
                    index += 1
                    continue
            jpeg, width, height, thumbnail = encode(frame, options)
            yield SampledFrame(index, round(reader.timestamp_s, 3), jpeg, width, height, thumbnail)
            index += 1
    finally:
        reader.close()
