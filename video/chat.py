"""Answers about a video from its timestamped descriptions, within a token budget.

Long videos are summarised in batches (map); a question is answered from the batch
summaries plus the frame descriptions most related to it (reduce).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from openai import AsyncOpenAI

from video.fanout import timestamp_label
from video.store import FrameRecord, Summary

SUMMARY_PROMPT = (
    "Summarise what happens in this part of a video, from its timestamped frame descriptions. "
    "Keep the timestamps of the key moments. Be concise."
)
ANSWER_PROMPT = (
    "You answer questions about a video using only its timestamped frame descriptions and summaries. "
    "Cite the timestamps you rely on in square brackets, like [01:15.0]. If the descriptions do not contain "
    "the answer, say so."
)
_WORD = re.compile(r"[a-z0-9]{3,}")


def estimate_tokens(text: str) -> int:
    """A rough count (four characters a token) that errs on the side of more tokens."""
    return len(text) // 4 + 1


def frame_line(frame: FrameRecord) -> str:
    return f"[{timestamp_label(frame.timestamp_s)}] {frame.description}"


def summary_line(summary: Summary) -> str:
    return f"[{timestamp_label(summary.start_s)}-{timestamp_label(summary.end_s)}] {summary.summary}"


@dataclass(frozen=True)
class Context:
    text: str
    batches_used: int
    frames_used: int


def build_context(
    frames: list[FrameRecord], summaries: list[Summary], question: str, budget_tokens: int, batch_size: int
) -> Context:
    """Every description when they fit; else the summaries and the descriptions nearest the question."""
    described = [f for f in frames if f.description]
    lines = [frame_line(f) for f in described]
    if estimate_tokens("\n".join(lines)) <= budget_tokens:
        batches = len({f.index // batch_size for f in described})
        return Context("Frame descriptions:\n" + "\n".join(lines), batches, len(described))
    summary_text = "\n".join(summary_line(s) for s in summaries)
    remaining = budget_tokens - estimate_tokens(summary_text)
    words = set(_WORD.findall(question.lower()))
    scored = sorted(
        described,
        key=lambda f: (-len(words & set(_WORD.findall((f.description or "").lower()))), f.index),
    )
    chosen: list[FrameRecord] = []
    for frame in scored:
        cost = estimate_tokens(frame_line(frame)) + 1
        if cost > remaining:
            continue
        chosen.append(frame)
        remaining -= cost
    chosen.sort(key=lambda f: f.index)
    text = "Summaries of the video, part by part:\n" + summary_text
    if chosen:
        text += "\n\nFrame descriptions most related to the question:\n" + "\n".join(frame_line(f) for f in chosen)
    return Context(text, len(summaries), len(chosen))


@dataclass
class ChatModel:
    """The stronger (cloud) model that summarises and answers."""

    client: AsyncOpenAI
    model: str
    max_tokens: int = 600

    async def _complete(self, system: str, user: str) -> str:
        response = await self.client.chat.completions.create(
            model=self.model,
            messages=[{"role": "system", "content": system}, {"role": "user", "content": user}],
            max_tokens=self.max_tokens,
        )
        return (response.choices[0].message.content or "").strip()

    async def summarise(self, frames: list[FrameRecord]) -> str:
        return await self._complete(SUMMARY_PROMPT, "\n".join(frame_line(f) for f in frames if f.description))

    async def answer(self, question: str, context: Context, coverage: str) -> str:
        user = f"{context.text}\n\n{coverage}\n\nQuestion: {question}"
        return await self._complete(ANSWER_PROMPT, user)

    async def insights(self, description: str) -> str:
        prompt = "Given this description of an image, list the key insights: what matters, what is notable."
        return await self._complete(prompt, description)
