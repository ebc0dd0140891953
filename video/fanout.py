"""Sends sampled frames to the gateway's vision model, a bounded number at a time."""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import openai
from openai import AsyncOpenAI

from video.bounded import run_bounded
from video.clips import ClipPlan, clip_of
from video.sampling import SampledFrame

DEFAULT_PROMPT = (
    "Describe this video frame: the objects and people in it, what they are doing, and any text on screen. "
    "Be concise and factual; do not guess what is not visible."
)
CLIP_PROMPT = (
    "These are consecutive frames of one video, at the timestamps given. Describe what happens across them: "
    "objects, people, their actions and movement, and any text on screen. Be concise and factual."
)
VIDEO_PROMPT = (
    "This is a clip of a video, from {start} to {end} ({count} frames). Describe what happens in it, in order: "
    "the people and objects, their actions and movements, and any text on screen, with the time (mm:ss) of each "
    "event. Be concise and factual; do not guess what is not visible."
)

# (the request's frames, the clip they form or None, the description, the error)
OnResult = Callable[[list[SampledFrame], tuple[float, float] | None, str | None, str | None], Awaitable[None]]


def timestamp_label(seconds: float) -> str:
    """``75.5`` -> ``"01:15.5"``."""
    minutes, rest = divmod(seconds, 60)
    return f"{int(minutes):02d}:{rest:04.1f}"


def image_part(frame: SampledFrame) -> dict[str, Any]:
    """A message part showing ``frame`` as a picture (an inline JPEG)."""
    return {
        "type": "image_url",
        "image_url": {"url": f"data:image/jpeg;base64,{base64.b64encode(frame.jpeg).decode()}"},
    }


def video_part(frames: Sequence[SampledFrame]) -> dict[str, Any]:
    """A message part showing ``frames`` as one video item: vLLM's frame list
    (``data:video/jpeg;base64,<frame>,<frame>,...``), in order."""
    data = ",".join(base64.b64encode(f.jpeg).decode() for f in frames)
    return {"type": "video_url", "video_url": {"url": f"data:video/jpeg;base64,{data}"}}


@dataclass
class Describer:
    """Asks the vision model for a description of one frame or a short clip."""

    client: AsyncOpenAI
    model: str
    prompt: str = DEFAULT_PROMPT
    max_tokens: int = 300

    async def describe(self, frames: list[SampledFrame], clip: tuple[float, float] | None = None) -> str:
        """The model's description of one frame, several as pictures, or (``clip``) a clip as one
        video item; raises openai errors once the SDK's retries are spent."""
        return await self._ask(self.content(frames, clip))

    def content(self, frames: list[SampledFrame], clip: tuple[float, float] | None = None) -> list[dict[str, object]]:
        """The user message's parts for one frame, several as pictures, or a clip as one video item."""
        if clip is not None:
            return self._clip_content(frames, clip)
        if len(frames) == 1:
            text = f"{self.prompt}\nTimestamp: {timestamp_label(frames[0].timestamp_s)}."
        else:
            stamps = ", ".join(timestamp_label(f.timestamp_s) for f in frames)
            text = f"{CLIP_PROMPT if self.prompt == DEFAULT_PROMPT else self.prompt}\nTimestamps: {stamps}."
        return [{"type": "text", "text": text}, *(image_part(frame) for frame in frames)]

    def _clip_content(self, frames: list[SampledFrame], clip: tuple[float, float]) -> list[dict[str, object]]:
        """The clip as vLLM's frame-list video item (``data:video/jpeg;base64,<frame>,<frame>,...``),
        with its times in the text: the model sees the frames in order, the text says when they are."""
        start, end = timestamp_label(clip[0]), timestamp_label(clip[1])
        if self.prompt == DEFAULT_PROMPT:
            text = VIDEO_PROMPT.format(start=start, end=end, count=len(frames))
        else:
            text = f"{self.prompt}\nThis clip runs from {start} to {end}."
        stamps = ", ".join(timestamp_label(f.timestamp_s) for f in frames)
        return [{"type": "text", "text": f"{text}\nFrame times: {stamps}."}, video_part(frames)]

    async def _ask(self, content: list[dict[str, object]]) -> str:
        response = await self.client.chat.completions.create(
            model=self.model,
            messages=[{"role": "user", "content": content}],  # type: ignore[list-item,misc]
            max_tokens=self.max_tokens,
        )
        return (response.choices[0].message.content or "").strip()


class _Batches:
    """The frames of one request at a time: ``size`` consecutive frames, or with a clip plan the
    frames of one clip (the first frame of the next clip waits for the next call)."""

    def __init__(self, frames: Iterator[SampledFrame], size: int, plan: ClipPlan | None) -> None:
        self._frames = frames
        self._size = plan.max_frames if plan is not None else size
        self._plan = plan
        self._pending: SampledFrame | None = None

    def next(self) -> list[SampledFrame]:
        batch: list[SampledFrame] = [self._pending] if self._pending is not None else []
        self._pending = None
        for frame in self._frames:
            if self._plan is not None and batch and self._plan.key(frame) != self._plan.key(batch[0]):
                self._pending = frame
                break
            batch.append(frame)
            if len(batch) == self._size:
                break
        return batch


async def fan_out(
    frames: Iterator[SampledFrame],
    describer: Describer,
    on_result: OnResult,
    max_concurrency: int = 16,
    frames_per_request: int = 1,
    latency: Callable[[float], None] | None = None,
    slots: asyncio.Semaphore | None = None,
    clips: ClipPlan | None = None,
) -> None:
    """Describe every frame, ``max_concurrency`` requests at a time, reporting each result at once.

    A slot is taken before a frame is read, so no more than ``max_concurrency`` requests'
    frames are ever in memory. Jobs that share ``slots`` share that bound instead. Sampling
    (CPU-bound OpenCV) runs in a worker thread while requests are in flight. When ``on_result``
    raises (a result cannot be stored), no further request starts, the ones in flight are
    cancelled, and the error is raised. With ``clips``, each request is one clip, sent as a video item.
    """
    slots = slots if slots is not None else asyncio.Semaphore(max_concurrency)
    batches = _Batches(frames, frames_per_request, clips)

    async def work(batch: list[SampledFrame]) -> None:
        clip = clip_of(clips, batch)
        started = time.perf_counter()
        try:
            description: str | None = await describer.describe(batch, clip)
            error = None
            if latency is not None:
                latency(time.perf_counter() - started)
        except openai.APIError as exc:
            description, error = None, gateway_error(exc)
        await on_result(batch, clip, description, error)

    await run_bounded(lambda: batches.next() or None, work, slots)


def gateway_error(exc: openai.APIError) -> str:
    """What went wrong with a request to the gateway, in one line for the user."""
    if isinstance(exc, openai.APIStatusError):
        body = exc.body if isinstance(exc.body, dict) else {}
        message = body.get("message") if isinstance(body.get("message"), str) else exc.message
        return f"the gateway answered {exc.status_code}: {message}"[:500]
    if isinstance(exc, openai.APITimeoutError):
        return "the gateway did not answer in time"
    return f"the gateway could not be reached: {exc.message}"[:500]
