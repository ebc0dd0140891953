"""Finding the moments a question is about: BM25 over the store's full-text index, dense
vectors when the gateway has an embeddings group (fused by reciprocal rank), and time
expressions ("around 20:30", "in the first minute", "at the end") read as time ranges."""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import openai
from openai import AsyncOpenAI

from video.store import Moment, SpeechSegment, SpokenMoment, Store

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


def nearest(query: np.ndarray, candidates: list[tuple[str, int, bytes]], limit: int) -> list[tuple[str, int]]:
    """The (session, frame) pairs whose vectors are closest to ``query`` (cosine), best first."""
    usable = [(s, i, v) for s, i, v in candidates if len(v) == query.nbytes]
    if not usable:
        return []
    matrix = np.frombuffer(b"".join(v for _, _, v in usable), dtype=np.float32).reshape(len(usable), -1)
    scores = matrix @ query
    order = np.argsort(-scores)[:limit]
    return [(usable[i][0], usable[i][1]) for i in order]


@dataclass
class Retriever:
    """Ranks a session's frames (or the moments of several sessions) for a question."""

    store: Store
    embedder: Embedder | None = None

    async def rank(self, session_id: str, question: str, limit: int = 400) -> list[int]:
        """Frame indices, best first: BM25, fused with dense similarity when embeddings exist."""
        lexical = await asyncio.to_thread(self.store.rank_frames, session_id, query_terms(question), limit)
        dense = [index for _, index in await self._dense([session_id], question, limit)]
        return fuse([lexical, dense])[:limit] if dense else lexical

    async def rank_speech(self, session_id: str, question: str, limit: int = 100) -> list[SpeechSegment]:
        """What was said in the session that best matches the question (BM25), best first."""
        return await asyncio.to_thread(self.store.rank_speech, session_id, query_terms(question), limit)

    async def search(
        self, owner: str | None, sessions: list[str], question: str, limit: int
    ) -> list[Moment | SpokenMoment]:
        """The best moments across ``sessions`` (all of them ``owner``'s): what was seen (one hit a
        clip) and what was said, fused by rank."""
        seen = _one_a_clip(await self._seen(owner, sessions, question, limit * 2))
        said = await asyncio.to_thread(self.store.search_speech, owner, query_terms(question), limit)
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

    async def _dense(self, sessions: list[str], question: str, limit: int) -> list[tuple[str, int]]:
        if self.embedder is None or not sessions:
            return []
        candidates = await asyncio.to_thread(self.store.embeddings, sessions, self.embedder.model)
        if not candidates:
            return []
        try:
            (query,) = await self.embedder.embed([question])
        except openai.APIError as exc:
            log.warning("the question could not be embedded; ranking by words only", extra={"error": str(exc)})
            return []
        return nearest(query, candidates, limit)
