"""Clips: consecutive sampled frames sent to a video model as one video item.

A job's frames are grouped by time into clips of ``chunk_seconds`` (shorter when the sampling rate
would put more than ``max_clip_frames`` frames in one: at most ``MAX_CLIP_FRAMES``, as vLLM reads at
most 32 frames of a video item unless told otherwise). A clip's description is stored on each of its
frames together with the clip's start and end, so every per-frame view keeps working and a clip is
one moment in chat.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from video.sampling import SampledFrame

MAX_CLIP_FRAMES = 32
ClipMode = Literal["video", "images"]


@dataclass(frozen=True)
class ClipPlan:
    """How a job's frames become clips: ``seconds`` long, from 0 to ``duration_s``."""

    seconds: float
    duration_s: float
    max_frames: int = MAX_CLIP_FRAMES

    @classmethod
    def for_job(
        cls, chunk_seconds: float, fps: float, duration_s: float, max_frames: int = MAX_CLIP_FRAMES
    ) -> ClipPlan:
        """Clips of ``chunk_seconds``, shorter when ``fps`` would put more than ``max_frames`` in one."""
        max_frames = max(1, min(max_frames, MAX_CLIP_FRAMES))
        seconds = min(chunk_seconds, max_frames / fps) if fps > 0 else chunk_seconds
        return cls(max(seconds, 1e-3), duration_s, max_frames)

    def key(self, frame: SampledFrame) -> int:
        """The clip a frame belongs to."""
        return math.floor(frame.timestamp_s / self.seconds + 1e-9)

    def span(self, clip: int) -> tuple[float, float]:
        """The clip's start and end (the video's end for the last one)."""
        start = clip * self.seconds
        return round(start, 3), round(min(start + self.seconds, max(self.duration_s, start)), 3)


def clip_of(plan: ClipPlan | None, batch: list[SampledFrame]) -> tuple[float, float] | None:
    """The span a request's frames cover as a clip; None for per-image requests."""
    if plan is None or not batch:
        return None
    return plan.span(plan.key(batch[0]))
