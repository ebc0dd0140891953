"""Fakes of non-OpenAI providers, each speaking its own wire format on loopback:
Anthropic Messages (``POST /v1/messages``, its SSE event types) and Gemini
(``/v1beta/models/{m}:generateContent`` and ``:streamGenerateContent?alt=sse``). Azure OpenAI
is the OpenAI fake's deployment path (``tests.fakes``). Each records what it received."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

from tests.fakes import Behaviour, serve_aiohttp

WEATHER_TOOL = "get_weather"


def _tools_requested(body: dict[str, Any]) -> bool:
    return bool(body.get("tools"))


@dataclass
class ProviderFake:
    """``kind`` is ``anthropic`` or ``gemini``; ``url`` is what a LiteLLM ``api_base`` names."""

    kind: str
    behaviour: Behaviour = field(default_factory=Behaviour)
    bodies: list[dict[str, Any]] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)
    paths: list[str] = field(default_factory=list)
    url: str = ""
    error_message: str | None = None  # the message of its error answers (default: "fake <kind>")
    streams_cut: int = 0  # streams the client (the gateway) hung up on before their end
    _runner: web.AppRunner | None = None
    _failed: int = 0

    async def start(self) -> ProviderFake:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        if self.kind == "anthropic":
            app.router.add_post("/v1/messages", self._anthropic)
        else:
            app.router.add_post("/v1beta/models/{action}", self._gemini)
        self._runner, origin = await serve_aiohttp(app)
        self.url = origin + ("/v1beta" if self.kind == "gemini" else "")
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _record(self, request: web.Request) -> dict[str, Any]:
        body: dict[str, Any] = orjson.loads(await request.read())
        self.bodies.append(body)
        self.headers.append(dict(request.headers))
        self.paths.append(request.path_qs)
        return body

    async def _failure(self, error: dict[str, Any]) -> web.Response | None:
        b = self.behaviour
        if b.hang:
            await asyncio.Event().wait()
        if b.delay_s:
            await asyncio.sleep(b.delay_s)
        if b.fail_status is not None and (b.fail_times < 0 or self._failed < b.fail_times):
            self._failed += 1
            headers = {"retry-after": b.retry_after} if b.retry_after else {}
            return web.json_response(error, status=b.fail_status, headers=headers)
        return None

    # ---- Anthropic Messages ------------------------------------------------------------------
    async def _anthropic(self, request: web.Request) -> web.StreamResponse:
        body = await self._record(request)
        kind = {429: "rate_limit_error", 529: "overloaded_error", 400: "invalid_request_error"}.get(
            self.behaviour.fail_status or 0, "api_error"
        )
        failure = await self._failure(
            {"type": "error", "error": {"type": kind, "message": self.error_message or f"fake {kind}"}}
        )
        if failure is not None:
            return failure
        if _tools_requested(body):
            content = [{"type": "tool_use", "id": "toolu_1", "name": WEATHER_TOOL, "input": {"city": "Paris"}}]
            stop = "tool_use"
        else:
            content = [{"type": "text", "text": self.behaviour.content}]
            stop = "end_turn"
        usage = {"input_tokens": 11, "output_tokens": 7}
        if not body.get("stream"):
            message = {"id": "msg_fake", "type": "message", "role": "assistant", "model": body["model"]}
            message.update(content=content, stop_reason=stop, stop_sequence=None, usage=usage)
            return web.json_response(message)
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)

        async def event(name: str, data: dict[str, Any]) -> None:
            await response.write(f"event: {name}\ndata: ".encode() + orjson.dumps({"type": name, **data}) + b"\n\n")

        start = {"id": "msg_fake", "type": "message", "role": "assistant", "model": body["model"], "content": []}
        await event("message_start", {"message": {**start, "usage": {"input_tokens": 11, "output_tokens": 0}}})
        block = content[0]
        if block["type"] == "text":
            await event("content_block_start", {"index": 0, "content_block": {"type": "text", "text": ""}})
            try:
                for word in str(block["text"]).split(" "):
                    delta = {"type": "text_delta", "text": word + " "}
                    await event("content_block_delta", {"index": 0, "delta": delta})
                    if self.behaviour.chunk_delay_s:
                        await asyncio.sleep(self.behaviour.chunk_delay_s)
            except (ConnectionError, asyncio.CancelledError):
                self.streams_cut += 1
                raise
        else:
            await event("content_block_start", {"index": 0, "content_block": {**block, "input": {}}})
            delta = {"type": "input_json_delta", "partial_json": orjson.dumps(block["input"]).decode()}
            await event("content_block_delta", {"index": 0, "delta": delta})
        await event("content_block_stop", {"index": 0})
        await event(
            "message_delta", {"delta": {"stop_reason": stop, "stop_sequence": None}, "usage": {"output_tokens": 7}}
        )
        await event("message_stop", {})
        await response.write_eof()
        return response

    # ---- Gemini ------------------------------------------------------------------------------
    async def _gemini(self, request: web.Request) -> web.StreamResponse:
        body = await self._record(request)
        status = {429: "RESOURCE_EXHAUSTED", 400: "INVALID_ARGUMENT"}.get(self.behaviour.fail_status or 0, "INTERNAL")
        failure = await self._failure(
            {"error": {"code": self.behaviour.fail_status, "message": f"fake {status}", "status": status}}
        )
        if failure is not None:
            return failure
        if _tools_requested(body):
            parts: list[dict[str, Any]] = [{"functionCall": {"name": WEATHER_TOOL, "args": {"city": "Paris"}}}]
        else:
            parts = [{"text": self.behaviour.content}]
        usage = {"promptTokenCount": 11, "candidatesTokenCount": 7, "totalTokenCount": 18}
        answer = {
            "candidates": [{"content": {"role": "model", "parts": parts}, "finishReason": "STOP", "index": 0}],
            "usageMetadata": usage,
            "modelVersion": "gemini-fake",
        }
        if request.match_info["action"].endswith(":generateContent"):
            return web.json_response(answer)
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        if "text" in parts[0]:
            words = str(parts[0]["text"]).split(" ")
            for index, word in enumerate(words):
                chunk_parts = [{"text": word + ("" if index == len(words) - 1 else " ")}]
                chunk: dict[str, Any] = {
                    "candidates": [{"content": {"role": "model", "parts": chunk_parts}, "index": 0}]
                }
                if index == len(words) - 1:
                    chunk["candidates"][0]["finishReason"] = "STOP"
                    chunk["usageMetadata"] = usage
                await response.write(b"data: " + orjson.dumps(chunk) + b"\r\n\r\n")
        else:
            await response.write(b"data: " + orjson.dumps(answer) + b"\r\n\r\n")
        await response.write_eof()
        return response
