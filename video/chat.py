"""Answers about a video from its timestamped descriptions, within the chat model's context.

Long videos are summarised in batches (map); a question is answered from the batch
summaries plus the frame descriptions most related to it (reduce). Every prompt is cut to
fit the chat model's real context (see ``video.context_window``); when the model still
reports an overflow, the prompt is rebuilt smaller and sent again.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field

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
INSIGHTS_PROMPT = "Given this description of an image, list the key insights: what matters, what is notable."
_WORD = re.compile(r"[a-z0-9]{3,}")
_ATTEMPTS = 3

__all__ = ["ChatModel", "Context", "ContextTooSmall", "build_context", "frame_line", "summary_line"]


def frame_line(frame: FrameRecord) -> str:
    return f"[{timestamp_label(frame.timestamp_s)}] {frame.description}"


def summary_line(summary: Summary) -> str:
    return f"[{timestamp_label(summary.start_s)}-{timestamp_label(summary.end_s)}] {summary.summary}"


@dataclass(frozen=True)
class Context:
    text: str
    batches_used: int
    frames_used: int


def spread(items: list[str], fits: Callable[[list[str]], bool]) -> list[str]:
    """As many of ``items`` as fit, evenly spread over them (the whole video, not its start)."""
    if fits(items):
        return items
    low, high = 0, len(items)
    while low < high:
        middle = (low + high + 1) // 2
        chosen = [items[round(i * (len(items) - 1) / max(1, middle - 1))] for i in range(middle)]
        if fits(chosen):
            low = middle
        else:
            high = middle - 1
    return [items[round(i * (len(items) - 1) / max(1, low - 1))] for i in range(low)] if low else []


def build_context(
    frames: list[FrameRecord],
    summaries: list[Summary],
    question: str,
    budget_tokens: int,
    batch_size: int,
    tokens: TokenEstimate | None = None,
) -> Context:
    """Every description when they fit; else the summaries (as many as fit) and the descriptions
    nearest the question."""
    tokens = tokens or TokenEstimate()
    described = [f for f in frames if f.description]
    lines = [frame_line(f) for f in described]
    if tokens.count("\n".join(lines)) <= budget_tokens:
        batches = len({f.index // batch_size for f in described})
        return Context("Frame descriptions:\n" + "\n".join(lines), batches, len(described))
    kept = spread([summary_line(s) for s in summaries], lambda c: tokens.count("\n".join(c)) <= budget_tokens)
    summary_text = "\n".join(kept)
    remaining = budget_tokens - tokens.count(summary_text)
    words = set(_WORD.findall(question.lower()))
    scored = sorted(
        described,
        key=lambda f: (-len(words & set(_WORD.findall((f.description or "").lower()))), f.index),
    )
    chosen: list[FrameRecord] = []
    for frame in scored:
        cost = tokens.count(frame_line(frame)) + 1
        if cost > remaining:
            continue
        chosen.append(frame)
        remaining -= cost
    chosen.sort(key=lambda f: f.index)
    parts = []
    if kept:
        parts.append("Summaries of the video, part by part:\n" + summary_text)
    if chosen:
        parts.append("Frame descriptions most related to the question:\n" + "\n".join(frame_line(f) for f in chosen))
    return Context("\n\n".join(parts), len(kept), len(chosen))


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
        lines = [frame_line(f) for f in frames if f.description]

        def build(budget: int | None) -> str:
            if budget is None:
                return "\n".join(lines)
            kept = spread(lines, lambda chosen: self.tokens.count("\n".join(chosen)) <= budget)
            if not kept:
                raise ContextTooSmall("not even one frame description fits the chat model's context")
            return "\n".join(kept)

        return await self._complete(SUMMARY_PROMPT, build)

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
