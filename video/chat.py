"""Answers about a video from its timestamped descriptions, within the chat model's context.

Long videos are summarised in batches (map); a question is answered from the batch
summaries plus the frame descriptions most related to it (reduce). Every prompt is cut to
fit the chat model's real context (see ``video.context_window``); when the model still
reports an overflow, the prompt is rebuilt smaller and sent again.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field, replace
from itertools import zip_longest
from typing import Any, Literal, TypeVar

import openai
from openai import AsyncOpenAI, AsyncStream
from openai.types import CompletionUsage
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from common.headers import SESSION_HEADER
from video.context_window import TEMPLATE_TOKENS, ContextTooSmall, TokenEstimate, overflow_of
from video.fanout import timestamp_label
from video.store import FrameRecord, SpeechSegment, Summary

log = logging.getLogger("video.chat")

SUMMARY_PROMPT = (
    "Summarise what happens in this part of a video, from its timestamped descriptions and what is said "
    "in it (lines marked (said)). "
    "Keep the timestamps of the key moments. Be concise."
)
ANSWER_PROMPT = (
    "You answer questions about a video using only its timestamped descriptions, summaries and what is said "
    "in it (lines marked (said), from its soundtrack). "
    "Cite the timestamps you rely on in square brackets, like [01:15.0]. If the descriptions do not contain "
    "the answer, say so."
)
OVERVIEW_PROMPT = (
    "Summarise these consecutive parts of a video, from their timestamped summaries, into one summary. "
    "Keep the time ranges of the key moments. Be concise."
)
INSIGHTS_PROMPT = "Given this description of an image, list the key insights: what matters, what is notable."
T = TypeVar("T")
_ATTEMPTS = 3

__all__ = [
    "ChatModel",
    "Context",
    "ContextTooSmall",
    "Question",
    "Turn",
    "Usage",
    "build_context",
    "fit_history",
    "frame_line",
    "speech_line",
    "summary_line",
]


def frame_line(frame: FrameRecord) -> str:
    """A description with its time: a frame's moment, or a clip's range."""
    clip = frame.clip
    if clip is not None:
        return f"[{timestamp_label(clip[0])}-{timestamp_label(clip[1])}] {frame.description}"
    return f"[{timestamp_label(frame.timestamp_s)}] {frame.description}"


def speech_line(segment: SpeechSegment) -> str:
    return f"[{timestamp_label(segment.start_s)}] (said) {segment.text}"


def summary_line(summary: Summary) -> str:
    return f"[{timestamp_label(summary.start_s)}-{timestamp_label(summary.end_s)}] {summary.summary}"


OVERVIEW_SHARE = 0.4  # of the budget, at most, for summaries when not every description fits
SUMMARIES_HEADER = "Summaries of the video, part by part:\n"
FRAMES_HEADER = "Frame descriptions most related to the question:\n"
ALL_FRAMES_HEADER = "Frame descriptions:\n"
ALL_MOMENTS_HEADER = "What the video shows and what is said in it, in time order:\n"
MOMENTS_HEADER = "What the video shows and what is said, most related to the question:\n"


@dataclass(frozen=True)
class Line:
    """One timestamped line of context: a description (of a frame, or of a clip: its first frame
    stands for it) or something said."""

    start_s: float
    end_s: float
    text: str
    frame: int | None = None
    frames: int = 0  # the frames it describes
    said: bool = False

    @property
    def key(self) -> tuple[str, float, int]:
        return ("said", self.start_s, hash(self.text)) if self.said else ("seen", 0.0, self.frame or 0)


def seen_lines(described: list[FrameRecord]) -> tuple[list[Line], dict[int, int]]:
    """One line a frame, or a clip (its frames share one description): the lines, and for each
    frame index the index of the frame whose line stands for it."""
    lines: list[Line] = []
    stands_for: dict[int, int] = {}
    last: FrameRecord | None = None
    for frame in described:
        if (
            last is not None
            and frame.clip is not None
            and frame.clip == last.clip
            and frame.description == last.description
        ):
            stands_for[frame.index] = last.index
            previous = lines[-1]
            lines[-1] = Line(previous.start_s, previous.end_s, previous.text, previous.frame, previous.frames + 1)
            continue
        clip = frame.clip
        start, end = clip if clip is not None else (frame.timestamp_s, frame.timestamp_s)
        lines.append(Line(start, end, frame_line(frame), frame.index, 1))
        stands_for[frame.index] = frame.index
        last = frame
    return lines, stands_for


def said_lines(speech: list[SpeechSegment]) -> list[Line]:
    return [Line(s.start_s, s.end_s, speech_line(s), said=True) for s in speech]


@dataclass(frozen=True)
class Context:
    text: str
    batches_used: int
    frames_used: int
    moments: tuple[int, ...] = ()  # the frames it holds
    summary_level: int | None = None  # 0: batch summaries; n: summaries of level n-1 ones
    speech_used: int = 0  # speech segments it holds
    history_turns: int = 0  # earlier turns of the conversation sent with it


def spread(items: list[T], fits: Callable[[list[T]], bool]) -> list[T]:
    """As many of ``items`` as fit, evenly spread over them (the whole video, not its start)."""
    if fits(items):
        return items
    low, high = 0, len(items)
    while low < high:
        middle = (low + high + 1) // 2
        if fits(evenly(items, middle)):
            low = middle
        else:
            high = middle - 1
    return evenly(items, low)


def evenly(items: list[T], count: int) -> list[T]:
    """``count`` of ``items`` (all of them at most), spread evenly, the first and last included."""
    count = min(count, len(items))
    if count <= 0:
        return []
    if count == 1:
        return [items[len(items) // 2]]
    return [items[round(i * (len(items) - 1) / (count - 1))] for i in range(count)]


def overview(
    levels: dict[int, list[Summary]], budget_tokens: int, tokens: TokenEstimate
) -> tuple[list[str], int | None]:
    """The finest level of summaries that fits ``budget_tokens`` whole; the coarsest one spread if none does."""
    for level in sorted(levels):
        lines = [summary_line(s) for s in levels[level]]
        if lines and tokens.count("\n".join(lines)) <= budget_tokens:
            return lines, level
    if not levels:
        return [], None
    top = max(levels)
    lines = spread([summary_line(s) for s in levels[top]], lambda c: tokens.count("\n".join(c)) <= budget_tokens)
    return lines, top if lines else None


def _context(lines: list[Line], header: str, batches: int, batch_size: int, level: int | None = None) -> Context:
    seen = [line for line in lines if not line.said]
    return Context(
        header + "\n".join(line.text for line in lines),
        batches,
        sum(line.frames for line in seen),
        tuple(line.frame for line in seen if line.frame is not None),
        level,
        len(lines) - len(seen),
    )


def build_context(
    frames: list[FrameRecord],
    summaries: list[Summary],
    question: str,
    budget_tokens: int,
    batch_size: int,
    tokens: TokenEstimate | None = None,
    *,
    ranked: list[int] | None = None,
    window: tuple[float, float] | None = None,
    overviews: list[Summary] | None = None,
    speech: list[SpeechSegment] | None = None,
    ranked_speech: list[SpeechSegment] | None = None,
) -> Context:
    """Every description (and everything said) when they fit, in time order. Otherwise: an overview
    (the finest level of summaries that fits a share of the budget), then the lines of the time the
    question names, then those ``ranked`` best for it (BM25 and embeddings; descriptions and speech
    in turn), as many as fit, in time order. A clip's frames share one line."""
    tokens = tokens or TokenEstimate()
    described = [f for f in frames if f.description]
    seen, stands_for = seen_lines(described)
    said = said_lines(speech or [])
    everything = sorted(seen + said, key=lambda line: (line.start_s, line.said))
    if tokens.count("\n".join(line.text for line in everything)) <= budget_tokens:
        batches = len({f.index // batch_size for f in described})
        return _context(everything, ALL_MOMENTS_HEADER if said else ALL_FRAMES_HEADER, batches, batch_size)
    levels: dict[int, list[Summary]] = {0: summaries} if summaries else {}
    for node in overviews or []:
        levels.setdefault(node.level, []).append(node)
    header = MOMENTS_HEADER if said else FRAMES_HEADER
    headers = tokens.count(SUMMARIES_HEADER) + tokens.count(header) + 2
    summary_lines, level = overview(levels, int(budget_tokens * OVERVIEW_SHARE) - headers, tokens)
    remaining = budget_tokens - headers - (tokens.count("\n".join(summary_lines)) if summary_lines else 0)
    by_frame = {line.frame: line for line in seen}
    ranked_seen = [by_frame[stands_for[i]] for i in ranked or [] if i in stands_for]
    ranked_said = said_lines(ranked_speech or [])
    best = [line for pair in zip_longest(ranked_seen, ranked_said) for line in pair if line is not None]
    chosen = _pick(everything, remaining, tokens, best, window)
    if not chosen and not summary_lines and everything and remaining > 0:
        # A context too small for any whole line (a tiny model): the best one, cut short.
        first = best[0] if best else everything[len(everything) // 2]
        cut = first.text[: tokens.chars_for(remaining - 1)]
        if cut:
            return _context(
                [Line(first.start_s, first.end_s, cut, first.frame, first.frames, first.said)], header, 0, batch_size
            )
    parts = []
    if summary_lines:
        parts.append(SUMMARIES_HEADER + "\n".join(summary_lines))
    if chosen:
        parts.append(header + "\n".join(line.text for line in chosen))
    picked = _context(chosen, "", len(summary_lines), batch_size, level)
    return Context(
        "\n\n".join(parts), picked.batches_used, picked.frames_used, picked.moments, level, picked.speech_used
    )


def _pick(
    lines: list[Line],
    budget: int,
    tokens: TokenEstimate,
    best: list[Line],
    window: tuple[float, float] | None,
) -> list[Line]:
    candidates: list[Line] = []
    if window is not None:
        inside = [line for line in lines if line.start_s <= window[1] and window[0] <= line.end_s]
        share = budget if not best else budget * 2 // 3
        candidates += _evenly_fitting(inside, share, tokens)
    candidates += best
    # Whatever room is left goes to lines spread over the whole video, so a question with no
    # telling word ("what happens?") still sees all of it.
    candidates += _evenly_fitting(lines, budget, tokens)
    chosen: dict[tuple[str, float, int], Line] = {}
    for line in candidates:
        if line.key in chosen:
            continue
        cost = tokens.count(line.text) + 1
        if cost > budget:
            continue
        chosen[line.key] = line
        budget -= cost
    return sorted(chosen.values(), key=lambda line: (line.start_s, line.said))


def _evenly_fitting(lines: list[Line], budget: int, tokens: TokenEstimate) -> list[Line]:
    costs = [tokens.count(line.text) + 1 for line in lines]
    position = {id(line): i for i, line in enumerate(lines)}
    return spread(lines, lambda chosen: sum(costs[position[id(line)]] for line in chosen) <= budget)


@dataclass(frozen=True)
class Turn:
    """An earlier turn of a conversation about the video."""

    role: Literal["user", "assistant"]
    content: str


HISTORY_SHARE = 0.3  # of the budget, at most, for earlier turns
OBSERVED_SHARE = 0.5  # of the budget, at most, for what looking again found
_MIN_OBSERVED_CHARS = 24  # less of what looking again saw than this says nothing: left out


def fit_history(history: Sequence[Turn], budget: int, tokens: TokenEstimate) -> list[Turn]:
    """The latest turns whose text fits ``budget`` tokens, oldest dropped first; a kept answer
    keeps the question it answered, so the model never sees an answer without its question."""
    kept: list[Turn] = []
    for turn in reversed(history):
        cost = tokens.count(turn.content) + 4
        if cost > budget:
            break
        kept.append(turn)
        budget -= cost
    kept.reverse()
    while kept and kept[0].role == "assistant":
        kept.pop(0)
    return kept


@dataclass
class Usage:
    """Tokens spent on one answer, over every call it made."""

    prompt_tokens: int = 0
    completion_tokens: int = 0

    def add(self, usage: CompletionUsage | None) -> None:
        if usage is not None:
            self.prompt_tokens += usage.prompt_tokens
            self.completion_tokens += usage.completion_tokens

    def as_dict(self) -> dict[str, int]:
        total = self.prompt_tokens + self.completion_tokens
        return {"prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens, "total_tokens": total}


Messages = list[dict[str, Any]]


@dataclass(frozen=True)
class Question:
    """A question with what surrounds it: the coverage note, earlier turns, what was seen when
    looking again at the frames (``observed``), and the frames themselves when the chat model
    looks at them in the same call (``pictures``: message parts, ``picture_tokens`` their cost)."""

    text: str
    coverage: str
    history: tuple[Turn, ...] = ()
    observed: str = ""
    pictures: tuple[dict[str, Any], ...] = ()
    picture_tokens: int = 0


@dataclass
class ChatModel:
    """The stronger (cloud) model that summarises and answers, within its context length."""

    client: AsyncOpenAI
    model: str
    max_tokens: int = 600
    context_tokens: int | None = None  # a setting; else learned from /v1/models or an overflow error
    budget_tokens: int | None = None  # the most context to send even when the model takes more
    tokens: TokenEstimate = field(default_factory=TokenEstimate)
    _looked_up: bool = False

    async def window(self) -> int | None:
        """The chat model's context length, when it is known."""
        if self.context_tokens is None and not self._looked_up:
            self._looked_up = True
            try:
                async for card in self.client.models.list():
                    if card.id == self.model:
                        reported = (card.model_extra or {}).get("max_model_len")
                        self.context_tokens = int(reported) if isinstance(reported, int) and reported > 0 else None
            except openai.APIError as exc:
                log.info("the model list is unavailable (%s); the context length is learned on overflow", exc)
        return self.context_tokens

    async def _open(
        self,
        system: str,
        build: Callable[[int | None], Messages],
        session: str | None = None,
        *,
        stream: bool = False,
        max_tokens: int | None = None,
    ) -> ChatCompletion | AsyncStream[ChatCompletionChunk]:
        """Send ``build(budget)``: the messages after the system one, cut to ``budget`` tokens
        (None: no known limit); an overflow the model reports shrinks the budget and sends again.

        ``session`` goes as ``x-session-id``: the gateway's engine-aware routing keeps a session's
        questions on the vLLM pod that already holds its context in the prefix cache."""
        for attempt in range(_ATTEMPTS):
            window = await self.window()
            most = min(self.max_tokens, max_tokens or self.max_tokens)
            answer_tokens = most if window is None else min(most, max(16, window // 4))
            budget = self.budget_tokens
            if window is not None:
                room = window - answer_tokens - self.tokens.count(system) - TEMPLATE_TOKENS
                if room <= 0:
                    raise ContextTooSmall(
                        f"the chat model's context of {window} tokens is too small for its instructions"
                    )
                budget = room if budget is None else min(budget, room)
            messages = build(budget)
            sent: Any = [{"role": "system", "content": system}, *messages]
            try:
                if stream:
                    return await self.client.chat.completions.create(
                        model=self.model,
                        messages=sent,
                        max_tokens=answer_tokens,
                        extra_headers={SESSION_HEADER: session} if session else None,
                        stream=True,
                        stream_options={"include_usage": True},
                    )
                return await self.client.chat.completions.create(
                    model=self.model,
                    messages=sent,
                    max_tokens=answer_tokens,
                    extra_headers={SESSION_HEADER: session} if session else None,
                )
            except openai.APIStatusError as exc:
                overflow = overflow_of(exc)
                if overflow is None:
                    raise
                log.info("the chat model's context overflowed; sending less", extra={"attempt": attempt + 1})
                if overflow.window is not None and (
                    self.context_tokens is None or overflow.window < self.context_tokens
                ):
                    self.context_tokens = overflow.window
                self.tokens.learn(len(system) + sum(len(_text_of(m)) for m in messages), overflow.prompt_tokens or 0)
                continue
        raise ContextTooSmall(f"the prompt still overflows the chat model's context after {_ATTEMPTS} tries")

    async def _complete(
        self,
        system: str,
        build: Callable[[int | None], Messages],
        session: str | None = None,
        usage: Usage | None = None,
        max_tokens: int | None = None,
    ) -> str:
        """The model's whole answer to ``build(budget)`` (see ``_open``), its tokens added to ``usage``."""
        response = await self._open(system, build, session, max_tokens=max_tokens)
        assert isinstance(response, ChatCompletion)
        if usage is not None:
            usage.add(response.usage)
        return (response.choices[0].message.content or "").strip()

    async def summarise(self, frames: list[FrameRecord], speech: list[SpeechSegment] | None = None) -> str:
        """A summary of consecutive descriptions (a clip's once) and what is said meanwhile."""
        seen, _ = seen_lines([f for f in frames if f.description])
        lines = sorted(seen + said_lines(speech or []), key=lambda line: (line.start_s, line.said))
        return await self._summarise_lines(SUMMARY_PROMPT, [line.text for line in lines])

    async def summarise_summaries(self, parts: list[Summary]) -> str:
        """One summary of consecutive parts' summaries (a node of the overview tree)."""
        return await self._summarise_lines(OVERVIEW_PROMPT, [summary_line(s) for s in parts])

    async def _summarise_lines(self, prompt: str, lines: list[str]) -> str:
        def build(budget: int | None) -> str:
            if budget is None:
                return "\n".join(lines)
            kept = spread(lines, lambda chosen: self.tokens.count("\n".join(chosen)) <= budget)
            if not kept:
                raise ContextTooSmall("not even one frame description fits the chat model's context")
            return "\n".join(kept)

        return await self._complete(prompt, _as_user(build))

    def _answer_messages(
        self, question: Question, make_context: Callable[[int, TokenEstimate], Context], used: list[Context]
    ) -> Callable[[int | None], Messages]:
        tail = f"\n\n{question.coverage}\n\nQuestion: {question.text}"
        observed = f"{question.observed}\n\n" if question.observed else ""

        def build(budget: int | None) -> Messages:
            total = budget if budget is not None else 10**9
            room = total - self.tokens.count(tail) - question.picture_tokens
            if room <= 0:
                window = self.context_tokens
                raise ContextTooSmall(
                    f"the question is too long for the chat model's context of {window} tokens; shorten it"
                    if window
                    else "the question is too long for the chat model's context; shorten it"
                )
            seen = observed
            if seen and self.tokens.count(seen) > room * OBSERVED_SHARE:
                # What looking again found shares the room with the descriptions, never crowds them out.
                kept = seen[: self.tokens.chars_for(int(room * OBSERVED_SHARE) - 2)].rstrip()
                said = kept.partition("\n")[2]  # what it saw, after the line naming the frames
                seen = kept + "…\n\n" if len(said) >= _MIN_OBSERVED_CHARS else ""
            room -= self.tokens.count(seen) if seen else 0
            turns = fit_history(question.history, int(room * HISTORY_SHARE), self.tokens)
            room -= sum(self.tokens.count(t.content) + 4 for t in turns)
            context = make_context(room, self.tokens) if room > 0 else Context("", 0, 0)
            if not context.text and not seen:
                raise ContextTooSmall("no description of the video fits beside the question; shorten it")
            # With no room for a description, what looking again found (about this very question) answers.
            used.append(replace(context, history_turns=len(turns)))
            text = seen + context.text + tail
            content: str | list[dict[str, Any]] = (
                [{"type": "text", "text": text}, *question.pictures] if question.pictures else text
            )
            return [*({"role": t.role, "content": t.content} for t in turns), {"role": "user", "content": content}]

        return build

    async def answer(
        self,
        question: Question,
        make_context: Callable[[int, TokenEstimate], Context],
        session: str | None = None,
        usage: Usage | None = None,
        max_tokens: int | None = None,
    ) -> tuple[str, Context]:
        """The answer, and the context it was given (built by ``make_context(budget, tokens)``);
        ``session`` names the video's session to the gateway (see ``_open``)."""
        used: list[Context] = []
        build = self._answer_messages(question, make_context, used)
        return await self._complete(ANSWER_PROMPT, build, session, usage, max_tokens), used[-1]

    async def answer_stream(
        self,
        question: Question,
        make_context: Callable[[int, TokenEstimate], Context],
        session: str | None = None,
        usage: Usage | None = None,
        max_tokens: int | None = None,
    ) -> tuple[Context, AsyncIterator[str]]:
        """The context the answer is given, and the answer's text as the model writes it."""
        used: list[Context] = []
        build = self._answer_messages(question, make_context, used)
        stream = await self._open(ANSWER_PROMPT, build, session, stream=True, max_tokens=max_tokens)
        assert isinstance(stream, AsyncStream)

        async def pieces() -> AsyncIterator[str]:
            async with stream:
                async for chunk in stream:
                    if usage is not None and chunk.usage is not None:
                        usage.add(chunk.usage)
                    for choice in chunk.choices:
                        if choice.delta.content:
                            yield choice.delta.content

        return used[-1], pieces()

    async def insights(self, description: str) -> str:
        return await self._complete(INSIGHTS_PROMPT, _as_user(lambda budget: description))


def _as_user(build: Callable[[int | None], str]) -> Callable[[int | None], Messages]:
    """A builder of one user message from a builder of its text."""
    return lambda budget: [{"role": "user", "content": build(budget)}]


def _text_of(message: dict[str, Any]) -> str:
    content = message.get("content")
    if isinstance(content, list):
        return " ".join(str(part.get("text", "")) for part in content if isinstance(part, dict))
    return str(content or "")
