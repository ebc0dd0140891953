"""What a job does besides describing frames: batch summaries, summaries of summaries, embeddings,
and the final status. Both engines use it; every write is idempotent."""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from dataclasses import dataclass, field

import openai

from video.chat import ChatModel
from video.context_window import ContextTooSmall
from video.jobs.speech import heard_until
from video.retrieval import Embedder
from video.store import FrameRecord, Store, Summary
from video.store.queries import LAST_TIME_S
from video.transcription import joined

log = logging.getLogger("video.jobs")
FAN_IN = 8  # summaries per summary one level up
EMBED_BATCH = 32  # descriptions embedded together


@dataclass
class Summariser:
    store: Store
    chat: ChatModel
    batch_size: int
    embedder: Embedder | None = None
    _roll_up_locks: dict[str, asyncio.Lock] = field(default_factory=dict)

    async def batch_frames(self, session_id: str, batch_index: int) -> list[FrameRecord]:
        size = self.batch_size
        return await asyncio.to_thread(self.store.frames, session_id, batch_index * size, (batch_index + 1) * size - 1)

    async def batch_complete(self, session_id: str, batch_index: int) -> bool:
        return len(await self.batch_frames(session_id, batch_index)) == self.batch_size

    async def summarise(self, session_id: str, batch_index: int, roll_up: bool = True, force: bool = False) -> bool:
        """Summarise one batch of described frames with what is said meanwhile; False when there was
        nothing to summarise, it failed, or (unless ``force``) the soundtrack of its time is still
        being transcribed (the job's end summarises it then)."""
        described = [f for f in await self.batch_frames(session_id, batch_index) if f.description]
        if not described:
            return False
        start_s = 0.0 if batch_index == 0 else described[0].timestamp_s
        following = await asyncio.to_thread(
            self.store.frames, session_id, (batch_index + 1) * self.batch_size, (batch_index + 1) * self.batch_size
        )
        end_s = following[0].timestamp_s if following else LAST_TIME_S
        if not force and await self._speech_pending(session_id, end_s):
            return False
        speech = await asyncio.to_thread(self.store.speech, session_id, start_s, end_s)
        try:
            text = await self.chat.summarise(described, joined(speech))
        except (openai.APIError, ContextTooSmall) as exc:
            log.warning("summary failed", extra={"session_id": session_id, "batch": batch_index, "error": str(exc)})
            return False
        summary = Summary(batch_index, described[0].timestamp_s, described[-1].timestamp_s, len(described), text)
        await asyncio.to_thread(self.store.save_summary, session_id, summary)
        if roll_up:
            await self.roll_up(session_id, final=False)
        return True

    async def roll_up(self, session_id: str, final: bool) -> None:
        """Summarise every full group of ``FAN_IN`` summaries into one a level up, so the overview of
        any length of video fits any budget; ``final`` also summarises partial groups. A level of at
        most ``FAN_IN`` summaries is the top."""
        lock = self._roll_up_locks.setdefault(session_id, asyncio.Lock())
        async with lock:
            level = 0
            while True:
                nodes = await (self._summaries(session_id) if level == 0 else self._level(session_id, level))
                if len(nodes) <= FAN_IN:
                    return  # a level this small is its own overview
                done = {n.batch_index for n in await self._level(session_id, level + 1)}
                groups: dict[int, list[Summary]] = defaultdict(list)
                for node in nodes:
                    groups[node.batch_index // FAN_IN].append(node)
                for parent, children in sorted(groups.items()):
                    if parent in done or (len(children) < FAN_IN and not final):
                        continue
                    if not await self._summarise_group(session_id, level + 1, parent, children):
                        return
                if len(groups) <= 1:
                    return
                level += 1

    async def _speech_pending(self, session_id: str, until_s: float) -> bool:
        session = await asyncio.to_thread(self.store.get_session, session_id)
        if session is None or session.audio != "transcribing":
            return False
        windows = await asyncio.to_thread(self.store.speech_windows, session_id)
        return heard_until(windows) < min(until_s, session.duration_s) - 0.5

    def forget(self, session_id: str) -> None:
        self._roll_up_locks.pop(session_id, None)

    async def _summaries(self, session_id: str) -> list[Summary]:
        return await asyncio.to_thread(self.store.summaries, session_id)

    async def _level(self, session_id: str, level: int) -> list[Summary]:
        return [s for s in await asyncio.to_thread(self.store.overviews, session_id) if s.level == level]

    async def _summarise_group(self, session_id: str, level: int, index: int, children: list[Summary]) -> bool:
        try:
            text = await self.chat.summarise_summaries(children)
        except (openai.APIError, ContextTooSmall) as exc:
            log.warning("overview failed", extra={"session_id": session_id, "level": level, "error": str(exc)})
            return False
        frames = sum(c.frame_count for c in children)
        summary = Summary(index, children[0].start_s, children[-1].end_s, frames, text, level)
        await asyncio.to_thread(self.store.save_summary, session_id, summary)
        return True

    async def embed_missing(self, session_id: str) -> None:
        """Embed the session's described frames (a clip's description once) and speech segments that
        have no vector yet (also after a resume)."""
        if self.embedder is None:
            return
        await self._embed_frames(session_id)
        await self._embed_speech(session_id)

    async def _embed_speech(self, session_id: str) -> None:
        assert self.embedder is not None
        model = self.embedder.model
        while segments := await asyncio.to_thread(
            self.store.speech_without_embedding, session_id, model, EMBED_BATCH * 2
        ):
            try:
                vectors = await self.embedder.embed([s.segment.text for s in segments])
            except openai.APIError as exc:
                log.warning("embedding speech failed", extra={"session_id": session_id, "error": str(exc)})
                return
            stored = {(s.window_index, s.segment_index): v.tobytes() for s, v in zip(segments, vectors, strict=True)}
            await asyncio.to_thread(self.store.save_speech_embeddings, session_id, model, stored)

    async def _embed_frames(self, session_id: str) -> None:
        assert self.embedder is not None
        model = self.embedder.model
        while frames := await asyncio.to_thread(
            self.store.frames_without_embedding, session_id, model, EMBED_BATCH * 2
        ):
            # A clip's frames share one description: it is embedded once.
            texts = list(dict.fromkeys(f.description or "" for f in frames))
            try:
                embedded = dict(zip(texts, await self.embedder.embed(texts), strict=True))
            except openai.APIError as exc:
                log.warning(
                    "embedding failed; search uses words only", extra={"session_id": session_id, "error": str(exc)}
                )
                return
            stored = {f.index: embedded[f.description or ""].tobytes() for f in frames}
            await asyncio.to_thread(self.store.save_embeddings, session_id, model, stored)

    async def finish(self, session_id: str, produced: int, sampling_warnings: list[str]) -> str:
        """Summarise what is left, roll up, embed, and set the final status ('completed' or 'failed')."""
        summarised = {s.batch_index for s in await self._summaries(session_id)}
        last_batch = (produced - 1) // self.batch_size if produced else -1
        for batch_index in range(last_batch + 1):
            if batch_index not in summarised:
                await self.summarise(session_id, batch_index, roll_up=False, force=True)
        await self.roll_up(session_id, final=True)
        await self.embed_missing(session_id)
        described, failed = await asyncio.to_thread(self.store.counts, session_id)
        warnings = list(sampling_warnings)
        if failed:
            warnings.append(f"{failed} frame(s) could not be described; see GET /sessions/{session_id}/frames")
        if described == 0 and produced > 0:
            await asyncio.to_thread(
                self.store.update_session,
                session_id,
                status="failed",
                total_frames=produced,
                warnings=warnings,
                error="no frame could be described: is the gateway reachable?",
            )
            return "failed"
        await asyncio.to_thread(
            self.store.update_session, session_id, status="completed", total_frames=produced, warnings=warnings
        )
        return "completed"
