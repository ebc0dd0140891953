"""Chat context over long videos: BM25 and embeddings find the moment, time questions select by
time, summaries of summaries fit any budget, and search spans the caller's sessions only."""

from __future__ import annotations

from pathlib import Path

import pytest
from openai import AsyncOpenAI

from bench.kitchen import EVENTS, footage
from tests.conftest import UpstreamFactory
from tests.video.conftest import ServiceFactory, Videos
from tests.video.test_api import _events_until_done, _upload
from video.chat import ChatModel, build_context
from video.context_window import TokenEstimate
from video.jobs import Summariser
from video.retrieval import Embedder, Retriever, fuse, query_terms
from video.store import Session, SQLiteStore, Store
from video.store.sqlite import match_expression
from video.time_ranges import time_range

BUDGET = 6000


def _store(tmp_path: Path, hours: float) -> tuple[Store, list]:
    data = footage(hours)
    store = SQLiteStore(tmp_path / "video.db")
    store.create_session(
        Session("s", None, "kitchen.mp4", "", "completed", {}, None, data.duration_s, len(data.frames))
    )
    for frame in data.frames:
        store.save_frame("s", frame.index, frame.timestamp_s, frame.description)
    for summary in data.summaries:
        store.save_summary("s", summary)
    return store, [data]


@pytest.mark.unit
@pytest.mark.parametrize(
    ("question", "expected"),
    [
        ("What happens around 20:30?", (1194.0, 1266.0)),
        ("what is on the table at 1:00:00", (3564.0, 3600.0)),
        ("What happens in the first minute?", (0.0, 60.0)),
        ("and in the last 5 minutes?", (3300.0, 3600.0)),
        ("What happens at the end?", (3420.0, 3600.0)),
        ("at the beginning of the video", (0.0, 180.0)),
        ("between 10:00 and 12:30", (600.0, 750.0)),
        ("When is there a bicycle in the kitchen?", None),
    ],
)
def test_time_questions_become_time_ranges(question: str, expected: tuple[float, float] | None) -> None:
    assert time_range(question, 3600.0) == expected


@pytest.mark.unit
def test_queries_keep_the_words_that_matter_and_no_operators() -> None:
    assert query_terms("When is there a bicycle in the kitchen?") == ["bicycle", "kitchen"]
    assert match_expression(query_terms('"NOT" AND (cat*) NEAR')) == '"not" OR "cat" OR "near"'
    assert query_terms("what is it?") == []
    assert fuse([[1, 2, 3], [3, 4]])[:2] == [3, 1]


@pytest.mark.service
async def test_bm25_brings_every_rare_event_into_an_hour_long_context(tmp_path: Path) -> None:
    store, (data,) = _store(tmp_path, 1)
    retriever = Retriever(store)
    for number, event in enumerate(EVENTS):
        ranked = await retriever.rank("s", event.question)
        assert set(ranked[:10]) & set(data.events[number]), event.question
        context = build_context(data.frames, data.summaries, event.question, BUDGET, 20, ranked=ranked)
        assert set(context.moments) & set(data.events[number])
        assert TokenEstimate().count(context.text) <= BUDGET
    store.close()


@pytest.mark.service
async def test_a_time_question_selects_that_time(tmp_path: Path) -> None:
    store, (data,) = _store(tmp_path, 1)
    question = "What happens around 20:30?"
    ranked = await Retriever(store).rank("s", question)
    window = time_range(question, data.duration_s)
    context = build_context(data.frames, data.summaries, question, BUDGET, 20, ranked=ranked, window=window)
    assert set(range(1200, 1261)) <= set(context.moments)
    assert "[20:30.0]" in context.text
    store.close()


@pytest.mark.service
async def test_summaries_of_summaries_fit_any_budget_for_four_hours(tmp_path: Path, upstream: UpstreamFactory) -> None:
    store, (data,) = _store(tmp_path, 4)  # 14,400 frames, 720 batch summaries
    fake = await upstream("chat")
    async with AsyncOpenAI(base_url=fake.url, api_key="k", max_retries=0) as client:
        await Summariser(store, ChatModel(client, "chat"), 20).roll_up("s", final=True)
    levels = [o.level for o in store.overviews("s")]
    assert levels.count(1) == 90
    assert max(levels) == 3
    assert levels.count(3) == 2  # the top: at most eight parts
    tokens = TokenEstimate()
    for budget in (6000, 1500, 300):
        context = build_context(
            data.frames, data.summaries, "What happens?", budget, 20, tokens, overviews=store.overviews("s")
        )
        assert tokens.count(context.text) <= budget
        assert context.batches_used > 0
    store.close()


@pytest.mark.service
async def test_embeddings_find_what_words_miss(tmp_path: Path, upstream: UpstreamFactory) -> None:
    store, (data,) = _store(tmp_path, 0.25)  # 900 frames
    fake = await upstream("embed")
    async with AsyncOpenAI(base_url=fake.url, api_key="k", max_retries=0) as client:
        embedder = Embedder(client, "embed")
        await Summariser(store, None, 20, embedder).embed_missing("s")  # type: ignore[arg-type]
        assert len(store.embeddings(["s"], "embed")) == 900
        assert all(len(body["input"]) > 1 for body in fake.bodies), "descriptions are embedded in batches"
        question = "Where is the bike?"  # the descriptions say "bicycle": no word in common
        assert await Retriever(store).rank("s", question) == []
        fused = await Retriever(store, embedder).rank("s", question)
    assert set(fused[:5]) & set(data.events[0])
    store.close()


@pytest.mark.service
async def test_jobs_embed_their_descriptions_when_an_embeddings_group_is_set(
    upstream: UpstreamFactory, video_service: ServiceFactory, videos: Videos
) -> None:
    gateway = await upstream("gateway", echo_prompt=True)
    service = await video_service(gateway_url=gateway.url, embedding_model="embed")
    session_id = (await _upload(service, videos.h264_mp4)).json()["session_id"]
    await _events_until_done(service, session_id)
    embedded = [b for b in gateway.bodies if b["model"] == "embed"]
    assert sum(len(b["input"]) for b in embedded) == 5
    found = (await service.http.get("/search", params={"q": "frame 00:03"})).json()["results"]
    assert found
    assert found[0]["session_id"] == session_id
    chat = (await service.http.post("/chat", json={"session_id": session_id, "question": "What is at 00:03?"})).json()
    assert {"index", "timestamp_s", "timestamp"} <= set(chat["retrieved"][0])


@pytest.mark.service
async def test_search_spans_the_callers_sessions_only(
    upstream: UpstreamFactory, video_service: ServiceFactory, videos: Videos
) -> None:
    gateway = await upstream("gateway")
    service = await video_service(gateway_url=gateway.url, client_keys=["key-alice-123", "key-bob-456"])
    alice = {"Authorization": "Bearer key-alice-123"}
    bob = {"Authorization": "Bearer key-bob-456"}
    first = (await _upload(service, videos.short_mp4, alice)).json()["session_id"]
    second = (await _upload(service, videos.h264_mp4, alice)).json()["session_id"]
    for session_id in (first, second):
        await _events_until_done(service, session_id, alice)
    results = (await service.http.get("/search", params={"q": "hello fake"}, headers=alice)).json()["results"]
    assert {r["session_id"] for r in results} == {first, second}
    thumbnail = await service.http.get(results[0]["thumbnail_url"], headers=alice)
    assert thumbnail.status_code == 200
    assert (await service.http.get("/search", params={"q": "hello fake"}, headers=bob)).json()["results"] == []
    assert (await service.http.get("/search", params={"q": "hello"})).status_code == 401
    bad = await service.http.get("/search", params={"q": "x", "limit": "0"}, headers=alice)
    assert bad.status_code == 400


@pytest.mark.service
async def test_a_question_without_telling_words_sees_the_whole_video(tmp_path: Path) -> None:
    store, (data,) = _store(tmp_path, 1)
    question = "What happens in the video?"
    ranked = await Retriever(store).rank("s", question)
    assert ranked == []
    context = build_context(data.frames, data.summaries, question, BUDGET, 20, ranked=ranked)
    moments = sorted(context.moments)
    assert len(moments) > 50
    assert moments[0] < 200
    assert moments[-1] > 3400, "the frames are spread over the whole hour"
    store.close()
