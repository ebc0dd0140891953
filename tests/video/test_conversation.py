"""Conversations about a video: earlier turns, answers streamed as they are written, looking again
at the frames, and the OpenAI-compatible ``video/<session>`` models, directly and through the gateway."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import openai
import orjson
import pytest

from tests.conftest import GatewayFactory, UpstreamFactory
from tests.video.conftest import RunningService, ServiceFactory, Videos

pytestmark = [pytest.mark.service, pytest.mark.timeout(120)]
KEY_A, KEY_B = "sk-video-owner-a", "sk-video-owner-b"


async def _ready(service: RunningService, path: Path, key: str | None = None) -> str:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    with path.open("rb") as handle:
        uploaded = await service.http.post(
            "/upload", files={"file": (path.name, handle, "video/mp4")}, data={"fps": "1"}, headers=headers
        )
    assert uploaded.status_code == 200, uploaded.text
    session_id: str = uploaded.json()["session_id"]
    async with service.http.stream("GET", f"/sessions/{session_id}/events", headers=headers) as response:
        async for _ in response.aiter_lines():
            pass  # the stream ends when the job does
    return session_id


def _events(text: str) -> list[tuple[str, Any]]:
    events = []
    for block in text.strip().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)
        events.append((lines.get("event", ""), orjson.loads(lines["data"])))
    return events


async def test_history_is_sent_latest_turns_first_and_answers_stream(
    upstream: UpstreamFactory, video_service: ServiceFactory, videos: Videos
) -> None:
    gateway = await upstream("gateway", echo_prompt=True)
    service = await video_service(gateway_url=gateway.url, context_token_budget=1500)
    session_id = await _ready(service, videos.h264_mp4)

    history = [
        {"role": "user", "content": "What is on screen at 00:01?"},
        {"role": "assistant", "content": "A test pattern with a counter [00:01.0]."},
    ]
    body = {"session_id": session_id, "question": "And after that?", "history": history, "look": False}
    answer = (await service.http.post("/chat", json=body)).json()
    assert answer["history_turns_used"] == 2
    assert answer["looked"] is False
    sent = gateway.bodies[-1]["messages"]
    assert [m["role"] for m in sent] == ["system", "user", "assistant", "user"]
    assert sent[1]["content"] == history[0]["content"]
    assert sent[2]["content"] == history[1]["content"]
    assert sent[3]["content"].endswith("Question: And after that?")

    # A history longer than the context keeps the latest turns that fit, a question first.
    long = [{"role": "user" if n % 2 == 0 else "assistant", "content": f"turn {n} " + "words " * 40} for n in range(40)]
    answer = (await service.http.post("/chat", json={**body, "history": long})).json()
    used = answer["history_turns_used"]
    assert 0 < used < 40
    sent = gateway.bodies[-1]["messages"]
    assert sent[1]["role"] == "user"
    assert [m["content"] for m in sent[1:-1]] == [t["content"] for t in long[40 - used :]]

    # Streamed: the pieces as they are written, then the same fields as the JSON answer.
    streamed = await service.http.post("/chat", json={**body, "stream": True})
    assert streamed.headers["content-type"].startswith("text/event-stream")
    events = _events(streamed.text)
    assert [name for name, _ in events[:-1]] == ["answer.delta"] * (len(events) - 1)
    name, done = events[-1]
    assert name == "answer.done"
    assert "".join(data["text"] for _, data in events[:-1]).strip() == done["answer"]
    assert done["answer"].endswith("Question: And after that?")
    assert done["history_turns_used"] == 2
    assert done["session_id"] == session_id
    assert done["usage"]["completion_tokens"] > 0
    assert gateway.bodies[-1]["stream"] is True

    bad = await service.http.post("/chat", json={**body, "history": [{"role": "tool", "content": "x"}]})
    assert bad.status_code == 400
    assert bad.json()["error"]["param"] == "history.0.role"


async def test_looking_again_follows_its_settings(
    upstream: UpstreamFactory, video_service: ServiceFactory, videos: Videos
) -> None:
    gateway = await upstream("gateway", echo_prompt=True)
    off = await video_service(gateway_url=gateway.url, look_frames=0)
    session_id = await _ready(off, videos.h264_mp4)
    calls = len(gateway.bodies)
    answer = (await off.http.post("/chat", json={"session_id": session_id, "question": "What is at 00:03?"})).json()
    assert answer["looked"] is False
    assert answer["notes"] == []
    asked = {"session_id": session_id, "question": "What is at 00:03?", "look": True}
    answer = (await off.http.post("/chat", json=asked)).json()
    assert answer["notes"] == ["look was ignored: looking again is turned off (VIDEO_LOOK_FRAMES=0)"]
    assert [b["model"] for b in gateway.bodies[calls:]] == ["chat", "chat"]

    on = await video_service(gateway_url=gateway.url, look_frames=3)
    session_id = await _ready(on, videos.h264_mp4)
    calls = len(gateway.bodies)
    summary = (await on.http.post("/chat", json={"session_id": session_id, "question": "Summarise the video"})).json()
    assert summary["looked"] is False
    assert "without looking again" in summary["notes"][0]
    answer = (await on.http.post("/chat", json={"session_id": session_id, "question": "What is at 00:03?"})).json()
    assert answer["looked"] is True
    assert len(answer["looked_at"]) == 3
    assert 3.0 in [m["timestamp_s"] for m in answer["looked_at"]]
    assert [b["model"] for b in gateway.bodies[calls:]] == ["chat", "vision", "chat"]


async def test_one_model_that_sees_and_answers_gets_the_frames_in_the_answer_request(
    upstream: UpstreamFactory, video_service: ServiceFactory, videos: Videos
) -> None:
    gateway = await upstream("gateway", echo_prompt=True)
    service = await video_service(gateway_url=gateway.url, vision_model="vlm", chat_model="vlm", look_frames=4)
    session_id = await _ready(service, videos.h264_mp4)
    calls = len(gateway.bodies)
    answer = (await service.http.post("/chat", json={"session_id": session_id, "question": "What is at 00:02?"})).json()
    assert answer["looked"] is True
    sent = gateway.bodies[calls:]
    assert len(sent) == 1, "one call looks and answers"
    content = sent[0]["messages"][-1]["content"]
    assert content[0]["text"].endswith("Question: What is at 00:02?")
    assert sum(1 for part in content if part["type"] == "image_url") == len(answer["looked_at"]) == 4


async def test_video_models_through_the_gateway_belong_to_their_keys(
    upstream: UpstreamFactory, gateway: GatewayFactory, video_service: ServiceFactory, videos: Videos
) -> None:
    models = await upstream("models", echo_prompt=True)
    service = await video_service(gateway_url=models.url, client_keys=[KEY_A, KEY_B])
    session_id = await _ready(service, videos.h264_mp4, KEY_A)
    gw = await gateway(
        {
            "model_list": [
                {
                    "model_name": "video/*",
                    "litellm_params": {
                        "model": "openai/video/*",
                        "api_base": f"{service.url}/v1",
                        "forward_client_authorization": True,
                    },
                }
            ],
            "gateway_settings": {"api_keys": [{"key": KEY_A}, {"key": KEY_B}]},
        }
    )
    owner = openai.AsyncOpenAI(base_url=f"{gw.url}/v1", api_key=KEY_A, max_retries=0)
    other = openai.AsyncOpenAI(base_url=f"{gw.url}/v1", api_key=KEY_B, max_retries=0)
    model = f"video/{session_id}"
    messages: Any = [
        {"role": "user", "content": "What is on screen at 00:01?"},
        {"role": "assistant", "content": "A test pattern [00:01.0]."},
        {"role": "user", "content": "What is at 00:02?"},
    ]

    completion = await owner.chat.completions.create(model=model, messages=messages)
    text = completion.choices[0].message.content or ""
    assert "Question: What is at 00:02?" in text
    assert "[00:02.0]" in text
    video = (completion.model_extra or {})["video"]
    assert video["session_id"] == session_id
    assert video["history_turns_used"] == 2
    assert 2.0 in [c["timestamp_s"] for c in video["cited"]]
    assert completion.usage is not None
    assert completion.usage.total_tokens == video["usage"]["total_tokens"] > 0
    assert completion.model == model

    stream = await owner.chat.completions.create(
        model=model, messages=messages, stream=True, stream_options={"include_usage": True}
    )
    pieces, finals, usage = [], [], None
    async for chunk in stream:
        for choice in chunk.choices:
            pieces.append(choice.delta.content or "")
            if choice.finish_reason:
                finals.append((chunk.model_extra or {}).get("video"))
        usage = chunk.usage or usage
    assert "".join(pieces).strip().endswith("Question: What is at 00:02?")
    assert len(finals) == 1
    assert finals[0]["session_id"] == session_id
    assert usage is not None
    assert usage.completion_tokens > 0

    # Another key's session does not exist for it, through the gateway as directly.
    with pytest.raises(openai.NotFoundError) as denied:
        await other.chat.completions.create(model=model, messages=messages)
    assert denied.value.code == "model_not_found"
    with pytest.raises(openai.NotFoundError):
        await owner.chat.completions.create(model="video/no-such-session", messages=messages)
    with pytest.raises(openai.BadRequestError) as bad:
        await owner.chat.completions.create(model=model, messages=messages[:2])
    assert "the user's question" in bad.value.message
    with pytest.raises(openai.BadRequestError):
        await owner.chat.completions.create(model=model, messages=messages, tools=[_TOOL])

    direct = openai.AsyncOpenAI(base_url=f"{service.url}/v1", api_key=KEY_A, max_retries=0)
    assert [m.id async for m in direct.models.list()] == [model]
    direct_b = openai.AsyncOpenAI(base_url=f"{service.url}/v1", api_key=KEY_B, max_retries=0)
    assert [m.id async for m in direct_b.models.list()] == []
    async with openai.AsyncOpenAI(base_url=f"{service.url}/v1", api_key="sk-wrong-key", max_retries=0) as stranger:
        with pytest.raises(openai.AuthenticationError):
            await stranger.models.list()
    for client in (owner, other, direct, direct_b):
        await client.close()


_TOOL: Any = {"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {}}}}


async def test_an_answer_cut_midway_ends_its_stream_with_an_error(
    upstream: UpstreamFactory, video_service: ServiceFactory, videos: Videos, monkeypatch: pytest.MonkeyPatch
) -> None:
    from video.store import SQLiteStore, StoreUnavailable

    gateway = await upstream("gateway", echo_prompt=True)
    service = await video_service(gateway_url=gateway.url)
    session_id = await _ready(service, videos.h264_mp4)
    gateway.behaviour.drop_stream_after = 3
    body = {"session_id": session_id, "question": "What is at 00:01?", "look": False, "stream": True}
    events = _events((await service.http.post("/chat", json=body)).text)
    assert [name for name, _ in events] == ["answer.delta"] * 3 + ["error"]
    assert events[-1][1]["error"]["type"] == "upstream_error"

    direct = openai.AsyncOpenAI(base_url=f"{service.url}/v1", api_key="unused", max_retries=0)
    stream = await direct.chat.completions.create(
        model=f"video/{session_id}", messages=[{"role": "user", "content": "What is at 00:01?"}], stream=True
    )
    with pytest.raises(openai.APIError, match="stopped answering"):
        async for _ in stream:
            pass
    await direct.close()

    # The store gone once the answer is written: the stream still ends with an error, not a cut.
    gateway.behaviour.drop_stream_after = None

    def unavailable(*_: Any) -> Any:
        raise StoreUnavailable("the database cannot be reached")

    monkeypatch.setattr(SQLiteStore, "frames_at", unavailable)
    events = _events((await service.http.post("/chat", json=body)).text)
    assert events[-1][0] == "error"
    assert events[-1][1]["error"]["code"] == "store_unavailable"


@pytest.mark.unit
def test_what_looking_again_found_never_crowds_out_the_descriptions() -> None:
    from video.chat import ChatModel, Question, build_context
    from video.store import FrameRecord

    chat = ChatModel(client=Any, model="chat")  # type: ignore[arg-type]  # building messages sends nothing
    frames = [FrameRecord(i, float(i), f"frame {i}: a red ball rolls", None) for i in range(6)]
    observed = "Looked at again for this question, the frames at [00:01.0] show:\n" + "a long report " * 200
    question = Question("What colour is the ball?", "The video lasts 00:06.0.", observed=observed)
    used: list[Any] = []
    build = chat._answer_messages(
        question, lambda budget, tokens: build_context(frames, [], question.text, budget, 20, tokens), used
    )
    text = build(150)[-1]["content"]
    assert text.startswith("Looked at again for this question, the frames at [00:01.0] show:")
    assert "a red ball rolls" in text, "descriptions still fit beside the observation"
    assert text.endswith("Question: What colour is the ball?")
    assert chat.tokens.count(text) <= 150 + 4


async def test_looking_again_shows_fewer_frames_when_they_overflow_the_vision_model(
    upstream: UpstreamFactory, video_service: ServiceFactory, videos: Videos
) -> None:
    gateway = await upstream("gateway", echo_prompt=True, context_tokens=1000, image_tokens=150)
    service = await video_service(gateway_url=gateway.url, look_frames=8, clip_mode="images")
    session_id = await _ready(service, videos.h264_mp4)
    calls = len(gateway.bodies)
    answer = (await service.http.post("/chat", json={"session_id": session_id, "question": "What is at 00:02?"})).json()
    looks = [b for b in gateway.bodies[calls:] if b["model"] == "vision"]
    shown = [sum(p["type"] == "image_url" for p in b["messages"][0]["content"]) for b in looks]
    assert shown[0] == 5, "every frame of the 5 s video, the first time"
    assert shown == sorted(shown, reverse=True)
    assert shown[-1] * 150 < 1000
    assert answer["looked"] is True
    assert len(answer["looked_at"]) == shown[-1], "the answer names the frames actually looked at"


@pytest.mark.unit
def test_frames_looked_at_come_from_the_video_else_their_thumbnails(videos: Videos, tmp_path: Path) -> None:
    import cv2
    import numpy as np

    from video.look import decode_pictures
    from video.sampling import SamplingOptions
    from video.store import FrameRecord

    frames = [FrameRecord(i, float(i), "d", None) for i in range(3)]
    options = SamplingOptions(max_side=96)
    decoded = decode_pictures(videos.h264_mp4, frames, options, lambda _: None)
    assert [(p.index, p.width) for p in decoded] == [(0, 96), (1, 96), (2, 96)]
    thumb = bytes(cv2.imencode(".jpg", np.zeros((30, 40, 3), np.uint8))[1].tobytes())
    gone = decode_pictures(tmp_path / "deleted.mp4", frames, options, lambda i: thumb if i != 1 else None)
    assert [(p.index, p.width, p.height, p.jpeg) for p in gone] == [(0, 40, 30, thumb), (2, 40, 30, thumb)]
