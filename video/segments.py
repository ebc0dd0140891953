"""Decoding one time segment of a video with OpenCV: seek, grab, keep the frames at the target
times, and skip past damaged regions, recording each as a gap.

Segments let several decoders run at once (OpenCV releases the GIL while decoding): one
single-threaded decoder per segment uses the cores better than one multi-threaded decoder,
because frame threading waits on frames that depend on each other.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from video.probe import VideoInfo

SLACK_S = 0.001  # a frame counts for a target at or after it, give or take rounding
_PREROLL_S = 0.5
_RESUME_STEPS_S = (0.5, 1.0, 2.0, 4.0, 8.0, 16.0)


@dataclass(frozen=True)
class Segment:
    start_s: float
    end_s: float
    targets: list[float]
    last: bool


Encoder = Callable[[np.ndarray], tuple[bytes, int, int, bytes, np.ndarray | None]]


@dataclass
class Decoded:
    """A kept frame, encoded at once (so memory holds JPEGs, never full frames), with the
    small grey image that scene-change detection compares."""

    timestamp_s: float
    jpeg: bytes
    width: int
    height: int
    thumbnail: bytes
    scene: np.ndarray | None


@dataclass
class SegmentResult:
    frames: list[Decoded] = field(default_factory=list)
    gaps: list[tuple[float, float]] = field(default_factory=list)
    decoded: int = 0
    reached_s: float = 0.0


def plan_segments(info: VideoInfo, targets: list[float], workers: int, per_segment: int = 32) -> list[Segment]:
    """Split the target times into segments: about ``per_segment`` kept frames each, each at least
    ten seconds long (a seek costs up to a keyframe interval of decoding), one when ``workers`` is 1."""
    count = 1
    if workers > 1 and targets:
        count = max(1, min(math.ceil(len(targets) / per_segment), math.floor(info.duration_s / 10.0)))
    size = math.ceil(len(targets) / count) if targets else 1
    groups = [targets[i : i + size] for i in range(0, len(targets), size)] or [[]]
    segments = []
    for index, group in enumerate(groups):
        last = index == len(groups) - 1
        start = group[0] if group else 0.0  # a pass over part of the video seeks to its first frame
        end = info.duration_s if last else groups[index + 1][0]
        segments.append(Segment(start, end, group, last))
    return segments


class _Reader:
    """Grabs frames in order from a capture, reopening it past damaged regions."""

    def __init__(self, path: Path, info: VideoInfo, end_s: float, threads: int, result: SegmentResult) -> None:
        self._path = path
        self._info = info
        self._end_s = end_s
        self._threads = threads
        self._result = result
        self._capture = self._open()
        self._check_seek: float | None = None
        self.timestamp_s = -1.0

    def _open(self) -> cv2.VideoCapture:
        params = [cv2.CAP_PROP_N_THREADS, self._threads] if self._threads else []
        capture = cv2.VideoCapture(str(self._path), cv2.CAP_FFMPEG, params)
        if not capture.isOpened():
            raise ValueError("the video can no longer be opened")
        return capture

    def seek(self, start_s: float) -> None:
        """Position a little before ``start_s``; an overshooting seek falls back to the beginning."""
        self.timestamp_s = start_s
        self._capture.set(cv2.CAP_PROP_POS_MSEC, max(0.0, start_s - _PREROLL_S) * 1000)
        self._check_seek = start_s

    def close(self) -> None:
        self._capture.release()

    def grab(self) -> bool:
        """Advance one frame; False at the segment's real end (after trying to skip any damage)."""
        if self._capture.grab():
            self._advance()
            if self._check_seek is not None:
                start, self._check_seek = self._check_seek, None
                if self.timestamp_s > start + SLACK_S:
                    # Seeking by time is imprecise for some files: decode from the start instead.
                    self._capture.release()
                    self._capture = self._open()
                    return self.grab()
            return True
        tolerance = max(0.5, 2 * self._info.frame_interval_s)
        if self.timestamp_s + tolerance >= self._end_s:
            return False
        return self._resume_after_damage()

    def _advance(self) -> None:
        self.timestamp_s = self._capture.get(cv2.CAP_PROP_POS_MSEC) / 1000.0
        self._result.decoded += 1
        self._result.reached_s = max(self._result.reached_s, self.timestamp_s)

    def _resume_after_damage(self) -> bool:
        stopped_at = max(self.timestamp_s, 0.0)
        self._check_seek = None
        for step in _RESUME_STEPS_S:
            target = stopped_at + step
            if target >= self._end_s:
                break
            capture = self._open()
            capture.set(cv2.CAP_PROP_POS_FRAMES, math.floor(target * self._info.fps))
            if capture.grab():
                timestamp = capture.get(cv2.CAP_PROP_POS_MSEC) / 1000.0
                # A seek on a damaged file can silently return an earlier frame again.
                if timestamp > stopped_at + self._info.frame_interval_s / 2:
                    self._capture.release()
                    self._capture = capture
                    self._result.gaps.append((stopped_at, timestamp))
                    self._advance()
                    return True
            capture.release()
        self._result.gaps.append((stopped_at, self._end_s))
        return False

    def retrieve(self) -> np.ndarray | None:
        ok, frame = self._capture.retrieve()
        return frame if ok else None


def decode_segment(
    path: Path,
    info: VideoInfo,
    segment: Segment,
    encoder: Encoder,
    threads: int = 0,
    emit: Callable[[Decoded], None] | None = None,
) -> SegmentResult:
    """The first frame at or after each target time of ``segment``, with the segment's gaps.

    With ``emit``, each frame is handed over as soon as it is encoded instead of collected.
    """
    result = SegmentResult()
    reader = _Reader(path, info, segment.end_s, threads, result)
    try:
        if segment.start_s > 0:
            reader.seek(segment.start_s)
        targets, position = segment.targets, 0
        while position < len(targets) and reader.grab():
            timestamp = reader.timestamp_s
            if timestamp < segment.start_s - SLACK_S:
                continue
            if not segment.last and timestamp >= segment.end_s - SLACK_S:
                break
            if timestamp + SLACK_S < targets[position]:
                continue
            while position < len(targets) and targets[position] <= timestamp + SLACK_S:
                position += 1
            image = reader.retrieve()
            if image is None:
                continue
            jpeg, width, height, thumbnail, scene = encoder(image)
            decoded = Decoded(round(timestamp, 3), jpeg, width, height, thumbnail, scene)
            if emit is not None:
                emit(decoded)
            else:
                result.frames.append(decoded)
    finally:
        reader.close()
    return result
