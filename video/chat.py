"""Answers about a video from its timestamped descriptions, within the chat model's context.

Long videos are summarised in batches (map); a question is answered from the batch
summaries plus the frame descriptions most related to it (reduce). Every prompt is cut to
fit the chat model's real context (see ``video.context_window``); when the model still
reports an overflow, the prompt is rebuilt smaller and sent again.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

import openai
from openai import AsyncOpenAI

from video.context_window import TEMPLATE_TOKENS, ContextTooSmall, TokenEstimate, overflow_of
from video.fanout import timestamp_label
from video.store import FrameRecord, Summary

log = logging.getLogger("video.chat")

SUMMARY_PROMPT = (
    "Summarise what happens in this part of a video, from its timestamped frame descriptions. "
    "Keep the timestamps of the key moments. Be concise."
)
ANSWER_PROMPT = (
    "You answer questions about a video using only its timestamped frame descriptions and summaries. "
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

__all__ = ["ChatModel", "Context", "ContextTooSmall", "build_context", "frame_line", "summary_line"]


def frame_line(frame: FrameRecord) -> str:
    return f"[{timestamp_label(frame.timestamp_s)}] {frame.description}"


def summary_line(summary: Summary) -> str:
    return f"[{timestamp_label(summary.start_s)}-{timestamp_label(summary.end_s)}] {summary.summary}"


OVERVIEW_SHARE = 0.4  # of the budget, at most, for summaries when not every description fits
SUMMARIES_HEADER = "Summaries of the video, part by part:\n"
FRAMES_HEADER = "Frame descriptions most related to the question:\n"


@dataclass(frozen=True)
class Context:
    text: str
    batches_used: int
    frames_used: int
    moments: tuple[int, ...] = ()  # the frames it holds
    summary_level: int | None = None  # 0: batch summaries; n: summaries of level n-1 ones


def spread(items: list[T], fits: Callable[[list[T]], bool]) -> list[T]:
    """As many of ``items`` as fit, evenly spread over them (the whole video, not its start)."""
    if fits(items):
        return items
    low, high = 0, len(items)
    while low < high:
        middle = (low + high + 1) // 2
        if fits(_evenly(items, middle)):
            low = middle
        else:
            high = middle - 1
    return _evenly(items, low)


def _evenly(items: list[T], count: int) -> list[T]:
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
) -> Context:
    """Every description when they fit. Otherwise: an overview (the finest level of summaries
    that fits a share of the budget), then the descriptions of the time the question names,
    then those ``ranked`` best for it (BM25 and embeddings), as many as fit, in time order."""
    tokens = tokens or TokenEstimate()
    described = [f for f in frames if f.description]
    lines = [frame_line(f) for f in described]
    if tokens.count("\n".join(lines)) <= budget_tokens:
        batches = len({f.index // batch_size for f in described})
        indices = tuple(f.index for f in described)
        return Context("Frame descriptions:\n" + "\n".join(lines), batches, len(described), indices)
    levels: dict[int, list[Summary]] = {0: summaries} if summaries else {}
    for node in overviews or []:
        levels.setdefault(node.level, []).append(node)
    headers = tokens.count(SUMMARIES_HEADER) + tokens.count(FRAMES_HEADER) + 2
    summary_lines, level = overview(levels, int(budget_tokens * OVERVIEW_SHARE) - headers, tokens)
    remaining = budget_tokens - headers - (tokens.count("\n".join(summary_lines)) if summary_lines else 0)
    chosen = _pick_frames(described, remaining, tokens, ranked, window)
    if not chosen and not summary_lines and described and remaining > 0:
        # A context too small for any whole description (a tiny model): the best one, cut short.
        best = next((f for f in described if ranked and f.index == ranked[0]), described[len(described) // 2])
        cut = frame_line(best)[: tokens.chars_for(remaining - 1)]
        if cut:
            return Context(FRAMES_HEADER + cut, 0, 1, (best.index,), None)
    parts = []
    if summary_lines:
        parts.append(SUMMARIES_HEADER + "\n".join(summary_lines))
    if chosen:
        parts.append(FRAMES_HEADER + "\n".join(frame_line(f) for f in chosen))
    return Context("\n\n".join(parts), len(summary_lines), len(chosen), tuple(f.index for f in chosen), level)


def _pick_frames(
    described: list[FrameRecord],
    budget: int,
    tokens: TokenEstimate,
    ranked: list[int] | None,
    window: tuple[float, float] | None,
) -> list[FrameRecord]:
    by_index = {f.index: f for f in described}
    candidates: list[FrameRecord] = []
    if window is not None:
        inside = [f for f in described if window[0] <= f.timestamp_s <= window[1]]
        share = budget if not ranked else budget * 2 // 3
        candidates += _evenly_fitting(inside, share, tokens)
    if ranked:
        candidates += [by_index[i] for i in ranked if i in by_index]
    # Whatever room is left goes to descriptions spread over the whole video, so a question
    # with no telling word ("what happens?") still sees all of it.
    candidates += _evenly_fitting(described, budget, tokens)
    chosen: dict[int, FrameRecord] = {}
    for frame in candidates:
        if frame.index in chosen:
            continue
        cost = tokens.count(frame_line(frame)) + 1
        if cost > budget:
            continue
        chosen[frame.index] = frame
        budget -= cost
    return sorted(chosen.values(), key=lambda f: f.index)


def _evenly_fitting(frames: list[FrameRecord], budget: int, tokens: TokenEstimate) -> list[FrameRecord]:
    costs = {f.index: tokens.count(frame_line(f)) + 1 for f in frames}
    return spread(frames, lambda chosen: sum(costs[f.index] for f in chosen) <= budget)


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

    async def _complete(self, system: str, build: Callable[[int | None], str]) -> str:
        """Send ``build(budget)``: the user message cut to ``budget`` tokens (None: no known limit)."""
        for attempt in range(_ATTEMPTS):
            window = await self.window()
            max_tokens = self.max_tokens if window is None else min(self.max_tokens, max(16, window // 4))
            budget = self.budget_tokens
            if window is not None:
                room = window - max_tokens - self.tokens.count(system) - TEMPLATE_TOKENS
                if room <= 0:
                    raise ContextTooSmall(
                        f"the chat model's context of {window} tokens is too small for its instructions"
                    )
                budget = room if budget is None else min(budget, room)
            user = build(budget)
            try:
                response = await self.client.chat.completions.create(
                    model=self.model,
                    messages=[{"role": "system", "content": system}, {"role": "user", "content": user}],
                    max_tokens=max_tokens,
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
                self.tokens.learn(len(system) + len(user), overflow.prompt_tokens or 0)
                continue
            return (response.choices[0].message.content or "").strip()
        raise ContextTooSmall(f"the prompt still overflows the chat model's context after {_ATTEMPTS} tries")

    async def summarise(self, frames: list[FrameRecord]) -> str:
        return await self._summarise_lines(SUMMARY_PROMPT, [frame_line(f) for f in frames if f.description])

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

        return await self._complete(prompt, build)

    async def answer(
        self, question: str, coverage: str, make_context: Callable[[int, TokenEstimate], Context]
    ) -> tuple[str, Context]:
        """The answer, and the context it was given (built by ``make_context(budget, tokens)``)."""
        used: list[Context] = []
        tail = f"\n\n{coverage}\n\nQuestion: {question}"

        def build(budget: int | None) -> str:
            room = (budget if budget is not None else 10**9) - self.tokens.count(tail)
            if room <= 0:
                window = self.context_tokens
                raise ContextTooSmall(
                    f"the question is too long for the chat model's context of {window} tokens; shorten it"
                    if window
                    else "the question is too long for the chat model's context; shorten it"
                )
            context = make_context(room, self.tokens)
            if not context.text:
                raise ContextTooSmall("no description of the video fits beside the question; shorten it")
            used.append(context)
            return context.text + tail

        answer = await self._complete(ANSWER_PROMPT, build)
        return answer, used[-1]

    async def insights(self, description: str) -> str:
        return await self._complete(INSIGHTS_PROMPT, lambda budget: description)
