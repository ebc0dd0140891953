"""Retrieval benchmark: does the moment a question is about reach the chat model's context?

Run: ``python -m bench.retrieval``. Generated kitchen footage (``bench.kitchen``: one and four
hours at 1 frame/s, every description repeating the scene's words, five rare events) is
stored as the service stores it; for each event's question the chat context is built within
the default budget (6000 tokens), by the earlier word-overlap ranking and by the service's
retrieval (BM25 over the store's full-text index, time ranges, summaries of summaries), in
the same run. Recall is the share of events with a frame in the context. No model is needed.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import time
from pathlib import Path
from typing import Any

from bench.kitchen import EVENTS, Footage, footage
from video.chat import build_context, frame_line, summary_line
from video.jobs import Summariser
from video.retrieval import Retriever
from video.store import FrameRecord, Session, SQLiteStore, Store, Summary
from video.time_ranges import time_range

BUDGET_TOKENS = 6000
BATCH_SIZE = 20
_WORD = re.compile(r"[a-z0-9]{3,}")


def word_overlap_context(frames: list[FrameRecord], summaries: list[Summary], question: str, budget: int) -> set[int]:
    """The frames the earlier ranking put in the context: all batch summaries, then descriptions
    sharing the most words with the question (ties to the start), four characters a token."""

    def tokens(text: str) -> int:
        return len(text) // 4 + 1

    lines = [frame_line(f) for f in frames]
    if tokens("\n".join(lines)) <= budget:
        return {f.index for f in frames}
    remaining = budget - tokens("\n".join(summary_line(s) for s in summaries))
    words = set(_WORD.findall(question.lower()))
    scored = sorted(frames, key=lambda f: (-len(words & set(_WORD.findall((f.description or "").lower()))), f.index))
    chosen: set[int] = set()
    for frame in scored:
        cost = tokens(frame_line(frame)) + 1
        if cost <= remaining:
            chosen.add(frame.index)
            remaining -= cost
    return chosen


class _Overviews:
    """Stands in for the chat model when the overview tree is built: a fixed summary per node."""

    async def summarise_summaries(self, parts: list[Summary]) -> str:
        return f"{len(parts)} parts of kitchen work: cooking, cleaning and moving between stove, sink and table."


async def stored(data: Footage, directory: Path) -> tuple[Store, str]:
    """The footage in a store, as a finished job leaves it (descriptions, summaries, overview tree)."""
    store = SQLiteStore(directory / "bench.db")
    session = Session("bench", None, "kitchen.mp4", "", "completed", {}, None, data.duration_s, len(data.frames))
    store.create_session(session)
    for frame in data.frames:
        store.save_frame(session.id, frame.index, frame.timestamp_s, frame.description)
    for summary in data.summaries:
        store.save_summary(session.id, summary)
    await Summariser(store, _Overviews(), BATCH_SIZE).roll_up(session.id, final=True)  # type: ignore[arg-type]
    return store, session.id


async def measure(hours: float, directory: Path) -> dict[str, Any]:
    data = footage(hours, BATCH_SIZE)
    store, session_id = await stored(data, directory)
    retriever = Retriever(store)
    overviews = store.overviews(session_id)
    old_hits = new_hits = old_frames = new_frames = 0
    level: int | None = None
    started = time.perf_counter()
    for number, event in enumerate(EVENTS):
        wanted = set(data.events[number])
        old = word_overlap_context(data.frames, data.summaries, event.question, BUDGET_TOKENS)
        ranked = await retriever.rank(session_id, event.question)
        context = build_context(
            data.frames,
            data.summaries,
            event.question,
            BUDGET_TOKENS,
            BATCH_SIZE,
            ranked=ranked,
            window=time_range(event.question, data.duration_s),
            overviews=overviews,
        )
        old_hits += bool(old & wanted)
        new_hits += bool(set(context.moments) & wanted)
        old_frames += len(old)
        new_frames += len(context.moments)
        level = context.summary_level
    elapsed_ms = (time.perf_counter() - started) * 1000 / len(EVENTS)
    store.close()
    return {
        "footage": f"{hours:g} h, {len(data.frames)} frames",
        "old": old_hits / len(EVENTS),
        "new": new_hits / len(EVENTS),
        "old_frames": old_frames / len(EVENTS),
        "new_frames": new_frames / len(EVENTS),
        "level": level,
        "ms": elapsed_ms,
        "overview_nodes": len(overviews),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--hours", type=float, nargs="+", default=[1.0, 4.0])
    args = parser.parse_args()
    import tempfile

    print(f"recall of the event's frame in the chat context (budget {BUDGET_TOKENS} tokens, {len(EVENTS)} questions)")
    print("| footage | word overlap (before) | BM25 + overview tree (now) | frames in context before / now "
          "| summary level used | overview nodes | ms per question (now) |")  # fmt: skip
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for hours in args.hours:
        with tempfile.TemporaryDirectory() as directory:
            row = asyncio.run(measure(hours, Path(directory)))
        print(
            f"| {row['footage']} | {row['old']:.1f} | {row['new']:.1f} "
            f"| {row['old_frames']:.0f} / {row['new_frames']:.0f} | {row['level']} | {row['overview_nodes']} "
            f"| {row['ms']:.0f} |"
        )


if __name__ == "__main__":
    main()
