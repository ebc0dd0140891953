"""Looking again: for a question, the vision model is shown the frames of the moments retrieval
picked, with what was described and said there, and reports what it sees that bears on it.

Descriptions are written before any question is known; whatever the describer did not write down
(the colour of a mug, a number on a screen) is only in the pixels. The frames are decoded again
from the stored video at the service's frame size (the thumbnails when the file cannot be read),
and sent as one video item when the vision group takes video, else as pictures.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import openai
from openai import AsyncOpenAI
from openai.types.chat import ChatCompletion

from common.headers import SESSION_HEADER
from video.chat import Usage, evenly
from video.context_window import ContextTooSmall, overflow_of
from video.fanout import image_part, timestamp_label, video_part
from video.sampling import SampledFrame, SamplingOptions, encode
from video.store import FrameRecord

_LOOK_ATTEMPTS = 6  # 16 frames halve to 1 in five overflows, then the notes go
FRAMES_PER_MOMENT = 4  # a moment is its best frame and its neighbours (or its clip's frames)
PATCH_PX = 28  # Qwen2.5-VL: one visual token per 28x28 pixels; a video shares one grid per two frames
LOOK_PROMPT = (
    "You are shown frames of a video at the times listed, with notes on what was seen and said around them. "
    "Look closely at the frames and report what they show that bears on the question: objects, colours, counts, "
    "text on screen, people and what they do, each with its time (mm:ss). Say plainly what the frames do not "
    "show. Do not answer beyond what is visible or said."
)
_WHOLE_VIDEO = re.compile(
    r"\b(summar(?:y|ise|ize|ising|izing)|overview|recap|gist|outline|"
    r"(?:whole|entire|full) (?:video|clip|recording|film)|what is (?:the|this) video about)\b",
    re.IGNORECASE,
)


def about_whole_video(question: str) -> bool:
    """Whether the question asks for the video as a whole (a summary): summaries answer it, and no
    few moments would."""
    return _WHOLE_VIDEO.search(question) is not None


def choose_frames(
    described: Sequence[FrameRecord], ranked: Sequence[int], window: tuple[float, float] | None, limit: int
) -> list[FrameRecord]:
    """At most ``limit`` frames, in time order: the moments the question names (its time range),
    then those retrieval ranked best, each with its neighbours or its clip's frames; with neither,
    frames spread over the whole video."""
    if limit <= 0 or not described:
        return []
    frames = sorted(described, key=lambda f: f.index)
    position = {f.index: n for n, f in enumerate(frames)}
    seeds: list[int] = []
    if window is not None:
        inside = [n for n, f in enumerate(frames) if window[0] <= f.timestamp_s <= window[1]]
        seeds += evenly(inside, max(1, math.ceil(limit / FRAMES_PER_MOMENT)))
    seeds += [position[i] for i in ranked if i in position]
    if not seeds:
        seeds = evenly(list(range(len(frames))), limit)
    chosen: dict[int, FrameRecord] = {}
    for seed in seeds:
        for n in _moment(frames, seed):
            if len(chosen) >= limit:
                break
            chosen.setdefault(n, frames[n])
        if len(chosen) >= limit:
            break
    return [chosen[n] for n in sorted(chosen)]


def _moment(frames: Sequence[FrameRecord], seed: int) -> list[int]:
    """The seed first, then up to ``FRAMES_PER_MOMENT - 1`` frames around it (within its clip when it has one)."""
    clip = frames[seed].clip
    if clip is not None:
        members = [n for n in range(len(frames)) if frames[n].clip == clip]
        around = sorted(members, key=lambda n: abs(n - seed))
    else:
        around = sorted(range(max(0, seed - 2), min(len(frames), seed + 3)), key=lambda n: (abs(n - seed), -n))
    return around[:FRAMES_PER_MOMENT]


def decode_pictures(
    video_path: Path, frames: Sequence[FrameRecord], options: SamplingOptions, thumbnail: Callable[[int], bytes | None]
) -> list[SampledFrame]:
    """The frames decoded again from the video at their times (blocking); a frame that cannot be
    read falls back to its stored thumbnail, and one with neither is left out."""
    pictures: list[SampledFrame] = []
    capture = cv2.VideoCapture(str(video_path)) if video_path.is_file() else None
    try:
        for frame in frames:
            image = None
            if capture is not None and capture.isOpened():
                capture.set(cv2.CAP_PROP_POS_MSEC, frame.timestamp_s * 1000)
                ok, image = capture.read()
                image = image if ok else None
            if image is not None:
                jpeg, width, height, _ = encode(image, options)
                pictures.append(SampledFrame(frame.index, frame.timestamp_s, jpeg, width, height))
                continue
            small = thumbnail(frame.index)
            if small:
                decoded = cv2.imdecode(np.frombuffer(small, dtype=np.uint8), cv2.IMREAD_COLOR)
                height, width = decoded.shape[:2] if decoded is not None else (0, 0)
                pictures.append(SampledFrame(frame.index, frame.timestamp_s, small, width, height))
    finally:
        if capture is not None:
            capture.release()
    return pictures


def picture_parts(pictures: Sequence[SampledFrame], as_video: bool) -> list[dict[str, Any]]:
    """Message parts showing the pictures: one frame-list video item (vLLM's
    ``data:video/jpeg;base64,<frame>,...``) or one labelled picture each."""
    if as_video:
        stamps = ", ".join(timestamp_label(p.timestamp_s) for p in pictures)
        return [
            {"type": "text", "text": f"The video item holds the frames at {stamps}, in that order."},
            video_part(pictures),
        ]
    parts: list[dict[str, Any]] = []
    for picture in pictures:
        parts.append({"type": "text", "text": f"Frame at [{timestamp_label(picture.timestamp_s)}]:"})
        parts.append(image_part(picture))
    return parts


def picture_tokens(pictures: Sequence[SampledFrame], as_video: bool) -> int:
    """About how many tokens the pictures cost a Qwen2.5-VL-like model (a video item half as many)."""
    each = [math.ceil(p.width / PATCH_PX) * math.ceil(p.height / PATCH_PX) + 8 for p in pictures]
    return sum(each) // 2 + 16 if as_video else sum(each) + 8 * len(pictures)


@dataclass
class Looker:
    """Asks the vision group what the chosen frames show about a question."""

    client: AsyncOpenAI
    model: str
    max_tokens: int = 400

    async def look(
        self,
        question: str,
        notes: str,
        pictures: Sequence[SampledFrame],
        as_video: bool,
        usage: Usage | None = None,
        session: str | None = None,
    ) -> tuple[str, list[SampledFrame]]:
        """What the vision model sees in ``pictures`` that bears on ``question``, and the pictures it
        was shown: when the request overflows the model's context, every other picture is dropped
        (then the notes) and it is sent again. Raises openai errors."""
        shown = list(pictures)
        for _ in range(_LOOK_ATTEMPTS):
            text = (
                f"{LOOK_PROMPT}\n\nNotes:\n{notes}\n\nQuestion: {question}" if notes else f"{LOOK_PROMPT}\n\n{question}"
            )
            content = [{"type": "text", "text": text}, *picture_parts(shown, as_video and len(shown) > 1)]
            try:
                response: ChatCompletion = await self.client.chat.completions.create(
                    model=self.model,
                    messages=[{"role": "user", "content": content}],  # type: ignore[list-item,misc]
                    max_tokens=self.max_tokens,
                    extra_headers={SESSION_HEADER: session} if session else None,
                )
            except openai.APIStatusError as exc:
                if overflow_of(exc) is None or (len(shown) == 1 and not notes):
                    raise
                if len(shown) > 1:
                    shown = shown[::2]
                else:
                    notes = ""
                continue
            if usage is not None:
                usage.add(response.usage)
            return (response.choices[0].message.content or "").strip(), shown
        raise ContextTooSmall("the frames do not fit the vision model's context")


def observed_section(pictures: Sequence[SampledFrame], observation: str) -> str:
    """The chat model's view of what looking again found, with the times looked at."""
    stamps = ", ".join(f"[{timestamp_label(p.timestamp_s)}]" for p in pictures)
    return f"Looked at again for this question, the frames at {stamps} show:\n{observation}"
