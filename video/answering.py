"""Answering a question about a video: retrieval picks the moments, the vision group looks at
them again (``video.look``), and the chat model writes the answer from the descriptions, the
transcript, what was seen and the conversation so far; whole or as it is written.

``POST /chat`` (``video.api``) and ``POST /v1/chat/completions`` (``video.openai_api``) both ask
through ``prepare`` and then ``answer`` or ``answer_stream``.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import openai

from common.errors import ApiError, InvalidRequest, ServiceUnavailable, UpstreamFailed
from video.chat import Context, ContextTooSmall, Question, Turn, Usage, build_context
from video.context_window import TokenEstimate
from video.fanout import gateway_error, timestamp_label
from video.look import (
    about_whole_video,
    choose_frames,
    decode_pictures,
    observed_section,
    picture_parts,
    picture_tokens,
)
from video.sampling import SampledFrame, SamplingOptions
from video.state import ServiceState, session_or_404
from video.store import FrameRecord, Session, SpeechSegment, StoreUnavailable
from video.time_ranges import time_range
from video.transcription import joined

log = logging.getLogger("video.answering")
_CITATION = re.compile(r"\[(\d{1,3}):(\d{2}(?:\.\d+)?)")


@dataclass(frozen=True)
class Ask:
    """A question, as ``/chat`` or ``/v1/chat/completions`` received it."""

    session_id: str
    question: str
    history: tuple[Turn, ...] = ()
    look: bool | None = None  # None: look again when the service is set to (VIDEO_LOOK_FRAMES > 0)
    max_tokens: int | None = None


@dataclass
class Prepared:
    """Everything the answer needs, gathered before the chat model is called."""

    session: Session
    ask: Ask
    progress: dict[str, Any]
    reached_s: float
    window: tuple[float, float] | None
    question: Question
    build: Callable[[int, TokenEstimate], Context]  # the context that fits a budget
    looked_at: list[SampledFrame] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    usage: Usage = field(default_factory=Usage)


async def prepare(state: ServiceState, ask: Ask, owner: str | None) -> Prepared:
    """Find the session (404 when it is not the caller's), retrieve, and look again when asked."""
    session = await asyncio.to_thread(session_or_404, state, ask.session_id, owner)
    progress = await asyncio.to_thread(state.jobs.progress, session.id)
    frames = await asyncio.to_thread(state.store.frames, session.id)
    described = [f for f in frames if f.description]
    if not described:
        raise InvalidRequest(
            "no frame of this video has been described yet; try again shortly", param="session_id", code="not_ready"
        )
    summaries = await asyncio.to_thread(state.store.summaries, session.id)
    reached = max(f.timestamp_s for f in described)
    coverage = (
        f"The video lasts {timestamp_label(session.duration_s)}; descriptions cover it up to "
        f"{timestamp_label(reached)} ({progress['progress_percentage']}% of the frames are processed)."
    )
    # A follow-up ("and after that?") is about what the previous question was about.
    earlier = next((t.content for t in reversed(ask.history) if t.role == "user"), "")
    query = f"{earlier}\n{ask.question}" if earlier else ask.question
    ranked = await state.retriever.rank(session.id, query)
    ranked_speech = await state.retriever.rank_speech(session.id, query)
    speech = joined(await asyncio.to_thread(state.store.speech, session.id))
    window = time_range(ask.question, session.duration_s)
    overviews = await asyncio.to_thread(state.store.overviews, session.id)

    def build(budget: int, tokens: TokenEstimate) -> Context:
        return build_context(
            frames,
            summaries,
            ask.question,
            budget,
            state.settings.summary_batch_size,
            tokens,
            ranked=ranked,
            window=window,
            overviews=overviews,
            speech=speech,
            ranked_speech=ranked_speech,
        )

    prepared = Prepared(session, ask, progress, reached, window, Question(ask.question, coverage, ask.history), build)
    await _look_again(state, prepared, described, ranked, speech)
    return prepared


async def _look_again(
    state: ServiceState,
    prepared: Prepared,
    described: list[FrameRecord],
    ranked: list[int],
    speech: list[SpeechSegment],
) -> None:
    settings = state.settings
    ask = prepared.ask
    wanted = ask.look if ask.look is not None else settings.look_frames > 0
    if not wanted:
        return
    if settings.look_frames == 0:
        prepared.notes.append("look was ignored: looking again is turned off (VIDEO_LOOK_FRAMES=0)")
        return
    if about_whole_video(ask.question):
        prepared.notes.append("a question about the whole video is answered from its summaries, without looking again")
        return
    chosen = choose_frames(described, ranked, prepared.window, settings.look_frames)
    options = SamplingOptions(max_side=settings.max_side, jpeg_quality=settings.jpeg_quality)
    session_id = prepared.session.id
    pictures = await asyncio.to_thread(
        decode_pictures,
        Path(prepared.session.video_path),
        chosen,
        options,
        lambda index: state.store.thumbnail(session_id, index),
    )
    if not pictures:
        prepared.notes.append("look was ignored: the frames of the moments could not be read again")
        return
    as_video = len(pictures) > 1 and await state.video_support.takes_video()
    if settings.vision_model == settings.chat_model:
        # One model sees and answers: the frames go with the answer's own request.
        prepared.question = replace(
            prepared.question,
            pictures=tuple(picture_parts(pictures, as_video)),
            picture_tokens=picture_tokens(pictures, as_video),
        )
        prepared.looked_at = pictures
        return
    by_index = {f.index: f for f in described}
    notes = "\n".join(
        f"[{timestamp_label(p.timestamp_s)}] {by_index[p.index].description}" for p in pictures if p.index in by_index
    )
    said = [s for s in speech if _near(s.start_s, s.end_s, pictures)]
    notes += "".join(f"\n[{timestamp_label(s.start_s)}] (said) {s.text}" for s in said)
    try:
        observation, pictures = await state.looker.look(
            ask.question, notes, pictures, as_video, prepared.usage, session=session_id
        )
    except ContextTooSmall:
        prepared.notes.append("look was ignored: not even one frame fits the vision model's context")
        return
    except openai.APIError as exc:
        # The answer still comes, from the descriptions; the note says why it did not look.
        log.warning("looking again failed: %s", gateway_error(exc))
        prepared.notes.append(f"look was ignored: the vision group could not look again ({gateway_error(exc)})")
        return
    if observation:
        prepared.question = replace(prepared.question, observed=observed_section(pictures, observation))
        prepared.looked_at = pictures


def _near(start_s: float, end_s: float, pictures: Sequence[SampledFrame], margin_s: float = 3.0) -> bool:
    return any(start_s - margin_s <= p.timestamp_s <= end_s + margin_s for p in pictures)


@contextmanager
def _chat_errors() -> Iterator[None]:
    """The chat model's failures as the client sees them: a prompt that cannot fit is a 400, the
    gateway or the model failing a 502; anything else is a bug, a 500 with its traceback logged."""
    try:
        yield
    except ContextTooSmall as exc:
        raise InvalidRequest(str(exc), param="question", code="context_length_exceeded") from None
    except openai.APIError as exc:
        log.warning("chat failed: %s", type(exc).__name__)
        raise UpstreamFailed("the chat model could not answer; try again") from None


async def answer(state: ServiceState, prepared: Prepared) -> dict[str, Any]:
    """The whole answer and its fields (``POST /chat``'s response)."""
    with _chat_errors():
        text, context = await state.chat.answer(
            prepared.question, prepared.build, prepared.session.id, prepared.usage, prepared.ask.max_tokens
        )
    return await fields(state, prepared, text, context)


async def answer_stream(state: ServiceState, prepared: Prepared) -> tuple[Context, AsyncIterator[str]]:
    """The context, and the answer's text as it is written; errors before the first piece raise
    as ``answer``'s do (the caller has not started its response yet)."""
    with _chat_errors():
        return await state.chat.answer_stream(
            prepared.question, prepared.build, prepared.session.id, prepared.usage, prepared.ask.max_tokens
        )


async def written(
    state: ServiceState, prepared: Prepared, context: Context, pieces: AsyncIterator[str]
) -> AsyncIterator[str | dict[str, Any] | ApiError]:
    """A streamed answer for a client: its pieces (``str``) as they are written, then its fields
    (``POST /chat``'s response), or the error (OpenAI's envelope) that ended it midway."""
    text: list[str] = []
    try:
        async for piece in pieces:
            text.append(piece)
            yield piece
    except openai.APIError as exc:
        log.warning("chat stream failed: %s", type(exc).__name__)
        yield UpstreamFailed("the chat model stopped answering; try again")
        return
    try:
        yield await fields(state, prepared, "".join(text).strip(), context)
    except StoreUnavailable as exc:
        yield ServiceUnavailable(f"{exc}; try again shortly", code="store_unavailable")


def cited_times(text: str) -> list[float]:
    """The times an answer cites (``[01:15.0]``, ``[01:15.0-01:20.0]``'s start), in order, each once."""
    seen = dict.fromkeys(round(int(m) * 60 + float(s), 1) for m, s in _CITATION.findall(text))
    return list(seen)


async def fields(state: ServiceState, prepared: Prepared, text: str, context: Context) -> dict[str, Any]:
    """``POST /chat``'s response for an answer written from ``context``."""
    session = prepared.session
    retrieved = await asyncio.to_thread(state.store.frames_at, session.id, list(context.moments))
    cited = []
    for seconds in cited_times(text):
        index = await asyncio.to_thread(state.store.frame_at_time, session.id, seconds)
        cited.append(
            {
                "timestamp_s": seconds,
                "timestamp": timestamp_label(seconds),
                "index": index,
                "thumbnail_url": f"/sessions/{session.id}/frames/{index}.jpg" if index is not None else None,
            }
        )
    return {
        "session_id": session.id,
        "question": prepared.ask.question,
        "answer": text,
        "context_batches_used": context.batches_used,
        "total_frames_in_context": context.frames_used,
        "summary_level": context.summary_level,
        "time_range_s": list(prepared.window) if prepared.window else None,
        "retrieved": [
            {"index": f.index, "timestamp_s": f.timestamp_s, "timestamp": timestamp_label(f.timestamp_s)}
            for f in retrieved
        ],
        "speech_segments_in_context": context.speech_used,
        "looked": bool(prepared.looked_at),
        "looked_at": [
            {"index": p.index, "timestamp_s": p.timestamp_s, "timestamp": timestamp_label(p.timestamp_s)}
            for p in prepared.looked_at
        ],
        "cited": cited,
        "history_turns_used": context.history_turns,
        "notes": prepared.notes,
        "usage": prepared.usage.as_dict(),
        "progress_percentage": prepared.progress["progress_percentage"],
        "status": prepared.progress["status"],
        "covered_until_s": prepared.reached_s,
    }
