"""The gateway in front of a real vLLM server (CPU, tiny random model), driven with the openai SDK.

Weights are random, so only structure, usage and counts are checked, never text content.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
import struct
import urllib.request
import zlib
from typing import Any

import pytest

from tests.conftest import GatewayFactory, RunningGateway
from tests.system.conftest import SERVED_NAME, VllmServer

pytestmark = [pytest.mark.system, pytest.mark.timeout(900)]


def _png(width: int, height: int) -> bytes:
    rows = b"".join(b"\x00" + bytes((x * 7 + y * 3) % 256 for x in range(width * 3)) for y in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


async def _gateway(gateway: GatewayFactory, vllm: VllmServer) -> RunningGateway:
    entry = {
        "model_name": "vision",
        "litellm_params": {"model": f"hosted_vllm/{SERVED_NAME}", "api_base": f"{vllm.url}/v1", "timeout": 120},
        "model_info": {"supports_vision": True},
    }
    return await gateway({"model_list": [entry]})


def _engine_steps(vllm: VllmServer) -> tuple[float, float]:
    """(engine steps, tokens processed by them) so far, from vLLM's iteration histogram."""
    with urllib.request.urlopen(f"{vllm.url}/metrics", timeout=10) as response:  # noqa: S310 - loopback
        text = response.read().decode()
    values = []
    for part in ("count", "sum"):
        match = re.search(rf"^vllm:iteration_tokens_total_{part}\{{[^}}]*\}} ([0-9.e+]+)$", text, re.MULTILINE)
        assert match, "vLLM exports vllm:iteration_tokens_total"
        values.append(float(match.group(1)))
    return values[0], values[1]


async def test_text_chat(gateway: GatewayFactory, vllm_server: VllmServer) -> None:
    gw = await _gateway(gateway, vllm_server)
    answer = await gw.openai().chat.completions.create(
        model="vision", messages=[{"role": "user", "content": "Describe a red car."}], max_tokens=8
    )
    assert answer.model == "vision"
    assert isinstance(answer.choices[0].message.content, str)
    assert answer.choices[0].finish_reason in ("stop", "length")
    assert answer.usage is not None
    assert answer.usage.prompt_tokens > 0
    assert 0 < answer.usage.completion_tokens <= 8


async def test_streamed_chat_with_usage(gateway: GatewayFactory, vllm_server: VllmServer) -> None:
    gw = await _gateway(gateway, vllm_server)
    stream = await gw.openai().chat.completions.create(
        model="vision",
        messages=[{"role": "user", "content": "Count to five."}],
        max_tokens=6,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks, usage, finish = 0, None, None
    async for chunk in stream:
        assert chunk.model == "vision"
        if chunk.choices:
            chunks += 1
            finish = chunk.choices[0].finish_reason or finish
        if chunk.usage:
            usage = chunk.usage
    assert chunks >= 1
    assert finish in ("stop", "length")
    assert usage is not None
    assert 0 < usage.completion_tokens <= 6


async def test_chat_with_base64_png_image(gateway: GatewayFactory, vllm_server: VllmServer) -> None:
    gw = await _gateway(gateway, vllm_server)
    client = gw.openai()
    text_only = [{"type": "text", "text": "What is in this picture?"}]
    image = {
        "type": "image_url",
        "image_url": {"url": "data:image/png;base64," + base64.b64encode(_png(64, 48)).decode()},
    }
    without = await client.chat.completions.create(
        model="vision", messages=[{"role": "user", "content": text_only}], max_tokens=4
    )
    with_image = await client.chat.completions.create(
        model="vision", messages=[{"role": "user", "content": [*text_only, image]}], max_tokens=4
    )
    assert without.usage is not None
    assert with_image.usage is not None
    # The image became vision tokens in the prompt (one per merged 28x28 patch, plus markers).
    assert with_image.usage.prompt_tokens > without.usage.prompt_tokens + 2


async def test_json_schema_response_format(gateway: GatewayFactory, vllm_server: VllmServer) -> None:
    gw = await _gateway(gateway, vllm_server)
    schema: dict[str, Any] = {
        "type": "object",
        "properties": {
            "description": {"type": "string", "maxLength": 24},
            "count": {"type": "integer", "minimum": 0, "maximum": 999},
            "moving": {"type": "boolean"},
        },
        "required": ["description", "count", "moving"],
        "additionalProperties": False,
    }
    for _ in range(5):
        answer = await gw.openai().chat.completions.create(
            model="vision",
            messages=[{"role": "user", "content": "Describe the frame as JSON."}],
            max_tokens=300,
            response_format={"type": "json_schema", "json_schema": {"name": "frame", "schema": schema, "strict": True}},
        )
        content = answer.choices[0].message.content
        assert content is not None
        assert answer.choices[0].finish_reason == "stop", content
        data = json.loads(content)
        assert set(data) == {"description", "count", "moving"}
        assert isinstance(data["description"], str)
        assert len(data["description"]) <= 24
        assert isinstance(data["count"], int)
        assert 0 <= data["count"] <= 999
        assert isinstance(data["moving"], bool)


async def test_concurrent_requests_are_batched(gateway: GatewayFactory, vllm_server: VllmServer) -> None:
    gw = await _gateway(gateway, vllm_server)
    client = gw.openai()
    steps_before, tokens_before = _engine_steps(vllm_server)
    answers = await asyncio.gather(
        *(
            client.chat.completions.create(
                model="vision",
                messages=[{"role": "user", "content": f"Request {i}: say something."}],
                max_tokens=8,
                extra_body={"ignore_eos": True},
            )
            for i in range(32)
        )
    )
    steps_after, tokens_after = _engine_steps(vllm_server)
    steps, tokens = steps_after - steps_before, tokens_after - tokens_before
    generated = sum(a.usage.completion_tokens for a in answers if a.usage)
    prompts = sum(a.usage.prompt_tokens for a in answers if a.usage)
    assert len(answers) == 32
    assert all(a.choices[0].finish_reason == "length" for a in answers)
    assert generated == 32 * 8
    # One request at a time needs a step per generated token and averages a few tokens a step
    # (its prompt, then one token at a time); batched steps carry many sequences each.
    sequential_average = (prompts + generated) / generated
    assert steps < generated, f"{steps} engine steps for {generated} generated tokens: not batched"
    assert tokens / steps > 2 * sequential_average, f"{tokens} tokens in {steps} steps: not batched"


async def test_the_engine_s_own_metrics_are_scraped_from_a_real_vllm(
    gateway: GatewayFactory, vllm_server: VllmServer
) -> None:
    gw = await _gateway(gateway, vllm_server)  # the default interval: once a second
    client = gw.openai()
    prompt = "the same long instruction about describing a video frame " * 8
    for _ in range(3):  # a repeated prompt: vLLM's prefix cache finds it the second time
        await client.chat.completions.create(
            model="vision", messages=[{"role": "user", "content": prompt}], max_tokens=2
        )
    for _ in range(100):
        engines = (await gw.http.get("/health/groups")).json()["model_groups"]["vision"].get("engines", {})
        engine = engines.get("vision/0", {})
        if engine.get("prefix_cache_hits", 0) > 0:
            break
        await asyncio.sleep(0.1)
    assert engine["waiting"] == 0.0
    assert engine["running"] == 0.0
    assert 0.0 <= engine["kv_cache_usage"] <= 1.0
    assert engine["prefix_cache_queries"] >= engine["prefix_cache_hits"] > 0
