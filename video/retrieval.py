"""Finding the moments a question is about: BM25 over the store's full-text index, dense
vectors when the gateway has an embeddings group (fused by reciprocal rank), and time
expressions ("around 20:30", "in the first minute", "at the end") read as time ranges."""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
import openai
from openai import AsyncOpenAI

from video.store import Moment, Session, SpeechSegment, SpokenMoment, Store

log = logging.getLogger("video.retrieval")

# Words that say what kind of question it is, not what it is about.
_STOP_WORD_TEXT = (
    "a an and any are as at be been by can could did do does for from had has have he her his how i if "
    "in into is it its me my of on or our she so than that the their them then there these they this "
    "those to was we were what when where which while who whom why will with would you your video happen "
    "happens happened show shown see seen moment time"
)
STOP_WORDS = frozenset(_STOP_WORD_TEXT.split())
_TERM = re.compile(r"[^\W_]+", re.UNICODE)
RRF_K = 60
K = TypeVar("K", int, tuple[int, int])


def query_terms(text: str) -> list[str]:
    """The text's meaningful words, lower-cased, each once, in order (what full-text search matches)."""
    return [t for t in dict.fromkeys(_TERM.findall(text.lower())) if t not in STOP_WORDS]


def fuse(rankings: Sequence[Sequence[int]], k: int = RRF_K) -> list[int]:
    """Reciprocal rank fusion: items ranked well by any ranking come first."""
    scores: dict[int, float] = {}
    for ranking in rankings:
        for rank, item in enumerate(ranking):
            scores[item] = scores.get(item, 0.0) + 1.0 / (k + rank + 1)
    return sorted(scores, key=lambda item: -scores[item])


def _one_a_clip(moments: list[Moment]) -> list[Moment]:
    """The moments without repeats of one description in a session (a clip's frames share one)."""
    seen: set[tuple[str, str]] = set()
    kept = []
    for moment in moments:
        key = (moment.session_id, moment.description)
        if key not in seen:
            seen.add(key)
            kept.append(moment)
    return kept


@dataclass
class Embedder:
    """Embeds texts through the gateway's ``/v1/embeddings``."""

    client: AsyncOpenAI
    model: str
    batch_size: int = 64

    async def embed(self, texts: list[str]) -> list[np.ndarray]:
        """Unit-length float32 vectors, one per text."""
        vectors: list[np.ndarray] = []
        for start in range(0, len(texts), self.batch_size):
            response = await self.client.embeddings.create(
                model=self.model, input=texts[start : start + self.batch_size]
            )
            for item in sorted(response.data, key=lambda d: d.index):
                vector = np.asarray(item.embedding, dtype=np.float32)
                norm = float(np.linalg.norm(vector))
                vectors.append(vector / norm if norm else vector)
        return vectors


def nearest(query: np.ndarray, candidates: list[tuple[str, K, bytes]], limit: int) -> list[tuple[str, K]]:
    """The (session, key) pairs (a frame, a speech segment) whose vectors are closest to ``query``
    (cosine), best first."""
    usable = [(s, i, v) for s, i, v in candidates if len(v) == query.nbytes]
    if not usable:
        return []
    matrix = np.frombuffer(b"".join(v for _, _, v in usable), dtype=np.float32).reshape(len(usable), -1)
    scores = matrix @ query
    order = np.argsort(-scores)[:limit]
    # Nothing in common (a cosine of zero or less) is no match, however few candidates there are.
    return [(usable[i][0], usable[i][1]) for i in order if scores[i] > 0]


@dataclass
class Retriever:
    """Ranks a session's frames (or the moments of several sessions) for a question."""

    store: Store
    embedder: Embedder | None = None
    _last_query: tuple[str, np.ndarray] | None = None

    async def rank(self, session_id: str, question: str, limit: int = 400) -> list[int]:
        """Frame indices, best first: BM25, fused with dense similarity when embeddings exist."""
        lexical = await asyncio.to_thread(self.store.rank_frames, session_id, query_terms(question), limit)
        dense = [index for _, index in await self._dense([session_id], question, limit)]
        return fuse([lexical, dense])[:limit] if dense else lexical

    async def rank_speech(self, session_id: str, question: str, limit: int = 100) -> list[SpeechSegment]:
        """What was said in the session that best matches the question, best first: BM25, fused with
        dense similarity when speech embeddings exist."""
        lexical = await asyncio.to_thread(self.store.rank_speech, session_id, query_terms(question), limit)
        dense = await self._dense_speech([session_id], question, limit)
        if not dense:
            return lexical
        close = await asyncio.to_thread(self.store.speech_at, session_id, [key for _, key in dense])
        both = list(dict.fromkeys([*lexical, *close]))
        position = {segment: n for n, segment in enumerate(both)}
        order = fuse([[position[s] for s in lexical], [position[s] for s in close]])
        return [both[n] for n in order[:limit]]

    async def search(
        self, owner: str | None, sessions: list[str], question: str, limit: int
    ) -> list[Moment | SpokenMoment]:
        """The best moments across ``sessions`` (all of them ``owner``'s): what was seen (one hit a
        clip) and what was said, fused by rank."""
        seen = _one_a_clip(await self._seen(owner, sessions, question, limit * 2))
        said = await asyncio.to_thread(self.store.search_speech, owner, query_terms(question), limit)
        said = await self._with_dense_speech(sessions, question, said, limit)
        if not said:
            return list(seen[:limit])
        both: list[Moment | SpokenMoment] = [*seen, *said]
        order = fuse([list(range(len(seen))), list(range(len(seen), len(both)))])
        return [both[i] for i in order[:limit]]

    async def _seen(self, owner: str | None, sessions: list[str], question: str, limit: int) -> list[Moment]:
        lexical = await asyncio.to_thread(self.store.search, owner, query_terms(question), limit * 4)
        dense = await self._dense(sessions, question, limit * 4)
        if not dense:
            return lexical[:limit]
        known = {(m.session_id, m.index): m for m in lexical}
        keys = list(dict.fromkeys([(m.session_id, m.index) for m in lexical] + dense))
        numbered = {key: number for number, key in enumerate(keys)}
        order = fuse([[numbered[(m.session_id, m.index)] for m in lexical], [numbered[k] for k in dense]])
        moments: list[Moment] = []
        for number in order[: limit * 2]:
            session_id, index = keys[number]
            moment = known.get((session_id, index)) or await asyncio.to_thread(self._moment, session_id, index)
            if moment is not None:
                moments.append(moment)
        return moments[:limit]

    def _moment(self, session_id: str, index: int) -> Moment | None:
        """A frame found by its vector, with its session's file name."""
        session = self.store.get_session(session_id)
        frames = self.store.frames_at(session_id, [index])
        if session is None or not frames or not frames[0].description:
            return None
        return Moment(session_id, session.filename, index, frames[0].timestamp_s, frames[0].description)

    async def _with_dense_speech(
        self, sessions: list[str], question: str, lexical: list[SpokenMoment], limit: int
    ) -> list[SpokenMoment]:
        dense = await self._dense_speech(sessions, question, limit)
        if not dense:
            return lexical
        names = {s.id: s.filename for s in await asyncio.to_thread(self._sessions, sessions)}
        close = []
        for session_id, key in dense:
            for found in await asyncio.to_thread(self.store.speech_at, session_id, [key]):
                close.append(
                    SpokenMoment(session_id, names.get(session_id, ""), found.start_s, found.end_s, found.text)
                )
        both = list(dict.fromkeys([*lexical, *close]))
        position = {moment: n for n, moment in enumerate(both)}
        order = fuse([[position[m] for m in lexical], [position[m] for m in close]])
        return [both[n] for n in order[:limit]]

    def _sessions(self, session_ids: list[str]) -> list[Session]:
        return [s for s in (self.store.get_session(i) for i in session_ids) if s is not None]

    async def _dense_speech(self, sessions: list[str], question: str, limit: int) -> list[tuple[str, tuple[int, int]]]:
        if self.embedder is None or not sessions:
            return []
        candidates = await asyncio.to_thread(self.store.speech_embeddings, sessions, self.embedder.model)
        if not candidates:
            return []
        query = await self._query_vector(question)
        return [] if query is None else nearest(query, candidates, limit)

    async def _query_vector(self, question: str) -> np.ndarray | None:
        """The question's vector; the last one is remembered (frames and speech rank the same question)."""
        assert self.embedder is not None
        if self._last_query is not None and self._last_query[0] == question:
            return self._last_query[1]
        try:
            (query,) = await self.embedder.embed([question])
        except openai.APIError as exc:
            log.warning("the question could not be embedded; ranking by words only", extra={"error": str(exc)})
            return None
        self._last_query = (question, query)
        return query

    async def _dense(self, sessions: list[str], question: str, limit: int) -> list[tuple[str, int]]:
        if self.embedder is None or not sessions:
            return []
        candidates = await asyncio.to_thread(self.store.embeddings, sessions, self.embedder.model)
        if not candidates:
            return []
        query = await self._query_vector(question)
        return [] if query is None else nearest(query, candidates, limit)
