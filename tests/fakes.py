"""A fake OpenAI-compatible deployment served over real HTTP on loopback.

Its behaviour is set per test: answer normally, fail with a status, hang, answer
slowly, or drop a stream midway. It records every request body it received.
"""

from __future__ import annotations

import asyncio
import email.policy
import io
import re
import signal
import socket
import subprocess
import time
import wave
import zlib
from dataclasses import dataclass, field
from email.parser import BytesParser
from typing import Any

import numpy as np
import orjson
import uvicorn
from aiohttp import web


@dataclass
class Behaviour:
    """What the fake does with the next requests."""

    fail_status: int | None = None
    fail_times: int = -1  # how many requests fail; -1 means all of them
    fail_every: int | None = None  # with fail_status: every n-th request fails (n=10: 10% of them)
    fail_body: bytes = b'{"error": {"message": "internal details: /srv/model.py line 3, key sk-secret"}}'
    retry_after: str | None = None
    hang: bool = False
    delay_s: float = 0.0
    chunk_delay_s: float = 0.0
    drop_stream_after: int | None = None  # chunks sent before the connection is cut
    omit_done: bool = False
    content: str = "Hello from the fake"
    echo_prompt: bool = False  # answer with the text of the last user message (which names the frame)
    context_tokens: int | None = None  # refuse longer prompts as vLLM does (two characters a token)
    image_tokens: int = 0  # with context_tokens: what a picture costs (a video item's frame: half)
    report_context: bool = False  # list max_model_len in /v1/models, as vLLM does
    unterminated_stream_bytes: int = 0  # stream this many bytes of one event that never ends
    embedding_dimensions: int | None = None  # pad each vector to this many numbers (4096: a large model's)
    tool_call: tuple[str, str] | None = None  # with tools in the request: call this (name, JSON arguments)
    engine_metrics: str | None = None  # what GET /metrics (at the root, as vLLM serves it) answers; None: 404
    heard: str | None = None  # transcriptions: each loud stretch of a WAV upload is a segment saying this
    # (several texts separated by "|": the stretches say them in turn)


# Words the fake embedding model treats as meaning the same (what dense retrieval adds to BM25).
SYNONYMS = {"bike": "bicycle", "bikes": "bicycle", "bicycles": "bicycle", "cat": "feline", "kitten": "feline"}
EMBEDDING_DIMENSIONS = 64
# Like a real embedding model, the fake gives function words no weight.
FUNCTION_WORDS = frozenset("a an and at by for from in into is it of on onto or the there to when where with".split())  # noqa: SIM905


async def _form(request: web.Request) -> tuple[dict[str, str], bytes, str | None]:
    """A multipart form's text fields, its ``file`` part and that part's file name, parsed from the
    whole body with the standard library (no spooled files left to close, no stream re-reads)."""
    raw = await request.read()
    head = f"Content-Type: {request.headers.get('Content-Type', '')}\r\n\r\n".encode()
    message = BytesParser(policy=email.policy.HTTP).parsebytes(head + raw)
    fields: dict[str, str] = {}
    audio, filename = b"", None
    for part in message.iter_parts() if message.is_multipart() else ():
        name = part.get_param("name", header="content-disposition")
        payload = part.get_payload(decode=True)
        content = payload if isinstance(payload, bytes) else b""
        if name == "file":
            audio, filename = content, part.get_filename()
        elif isinstance(name, str):
            fields[name] = content.decode("utf-8", "replace")
    return fields, audio, filename


def loud_stretches(wav: bytes, frame_s: float = 0.05, quiet: float = 0.01) -> tuple[float, list[tuple[float, float]]]:
    """A 16-bit mono WAV's duration and its stretches louder than ``quiet`` (a recogniser's segments:
    where someone speaks), gaps under 0.3 s bridged."""
    with wave.open(io.BytesIO(wav)) as reader:
        rate = reader.getframerate()
        samples = np.frombuffer(reader.readframes(reader.getnframes()), dtype="<i2").astype(np.float32) / 32768
    frame = int(frame_s * rate)
    count = len(samples) // frame
    loud = np.sqrt(np.mean(samples[: count * frame].reshape(count, frame) ** 2, axis=1)) > quiet
    stretches: list[tuple[float, float]] = []
    for n in np.flatnonzero(loud):
        start, end = n * frame_s, (n + 1) * frame_s
        if stretches and start - stretches[-1][1] < 0.3:
            stretches[-1] = (stretches[-1][0], end)
        else:
            stretches.append((start, end))
    return len(samples) / rate, [(round(a, 2), round(b, 2)) for a, b in stretches]


def embedding_of(text: str) -> list[float]:
    """A deterministic bag-of-words vector: texts sharing (synonymous) words point the same way."""
    vector = [0.0] * EMBEDDING_DIMENSIONS
    for word in re.findall(r"[a-z0-9]+", text.lower()):
        if word in FUNCTION_WORDS:
            continue
        word = SYNONYMS.get(word, word)
        vector[zlib.crc32(word.encode()) % EMBEDDING_DIMENSIONS] += 1.0
    return vector


@dataclass
class Served:
    """An ASGI app served by uvicorn on a loopback socket, inside the running event loop."""

    url: str
    server: uvicorn.Server
    task: asyncio.Task[None]

    async def stop(self) -> None:
        self.server.should_exit = True
        await self.task


def serve(app: Any, **options: Any) -> Served:
    """Serve ``app`` on a free port; the socket already listens, so clients may connect at once
    (uvicorn accepts them once the app's startup finished)."""
    sock = free_socket()
    options = {"log_config": None, "access_log": False, **options}
    server = uvicorn.Server(uvicorn.Config(app, lifespan="on", **options))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    host, port = sock.getsockname()[:2]
    return Served(f"http://{host}:{port}", server, task)


def free_port() -> int:
    """A loopback port nothing listens on now (for a server started in another process)."""
    sock = free_socket()
    port = int(sock.getsockname()[1])
    sock.close()
    return port


def stop_gracefully(process: subprocess.Popen[bytes], timeout_s: float = 30) -> None:
    """SIGTERM, wait ``timeout_s``, then SIGKILL."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def free_socket(host: str = "127.0.0.1", port: int = 0) -> socket.socket:
    """A listening TCP socket on ``host`` (loopback) with a free port, or ``port``."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(1024)
    sock.setblocking(False)
    return sock


async def serve_aiohttp(app: web.Application, host: str = "127.0.0.1", port: int = 0) -> tuple[web.AppRunner, str]:
    """Serve an aiohttp app on a loopback socket; the runner (to clean up) and ``http://host:port``."""
    runner = web.AppRunner(app, shutdown_timeout=0.1, handle_signals=False, access_log=None)
    await runner.setup()
    sock = free_socket(host, port)
    await web.SockSite(runner, sock).start()
    bound_host, bound_port = sock.getsockname()[:2]
    return runner, f"http://{bound_host}:{bound_port}"


@dataclass
class FakeUpstream:
    """An OpenAI-compatible server; ``url`` ends in ``/v1``."""

    name: str
    behaviour: Behaviour = field(default_factory=Behaviour)
    bodies: list[dict[str, Any]] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)
    url: str = ""
    in_flight: int = 0
    max_in_flight: int = 0
    paths: list[str] = field(default_factory=list)
    responses: dict[str, dict[str, Any]] = field(default_factory=dict)
    engine_scrapes: int = 0  # GET /metrics received
    _runner: web.AppRunner | None = None
    _failed: int = 0
    _seen: int = 0

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> FakeUpstream:
        """Listen on ``host:port`` (a free port by default; any 127.0.0.x address is loopback)."""
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_post("/openai/deployments/{deployment}/chat/completions", self._chat)  # Azure OpenAI
        app.router.add_post("/openai/deployments/{deployment}/embeddings", self._embeddings)
        app.router.add_post("/v1/completions", self._completions)
        app.router.add_post("/v1/embeddings", self._embeddings)
        app.router.add_get("/v1/models", self._models)
        app.router.add_get("/metrics", self._engine_metrics)
        app.router.add_post("/v1/audio/transcriptions", self._transcription)
        app.router.add_post("/v1/audio/translations", self._transcription)
        app.router.add_post("/v1/audio/speech", self._speech)
        app.router.add_post("/openai/deployments/{deployment}/audio/speech", self._speech)  # Azure OpenAI
        app.router.add_post("/v1/responses", self._responses)
        app.router.add_get("/v1/responses/{id}", self._response)
        app.router.add_post("/v1/rerank", self._rerank)
        app.router.add_post("/v1/score", self._score)
        self._runner, origin = await serve_aiohttp(app, host, port)
        self.url = f"{origin}/v1"
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _misbehave(self) -> web.Response | None:
        b = self.behaviour
        if b.hang:
            await asyncio.Event().wait()
        if b.delay_s:
            await asyncio.sleep(b.delay_s)
        self._seen += 1
        if b.fail_every is not None:
            failing = b.fail_status is not None and self._seen % b.fail_every == 0
        else:
            failing = b.fail_status is not None and (b.fail_times < 0 or self._failed < b.fail_times)
        if failing:
            self._failed += 1
            headers = {"Retry-After": b.retry_after} if b.retry_after else {}
            return web.Response(
                status=b.fail_status, body=b.fail_body, content_type="application/json", headers=headers
            )
        return None

    async def _record(self, request: web.Request) -> dict[str, Any]:
        body: dict[str, Any] = orjson.loads(await request.read())
        self.bodies.append(body)
        self.headers.append(dict(request.headers))
        return body

    def _overflow(self, body: dict[str, Any]) -> web.Response | None:
        """vLLM's answer to a prompt longer than the context, with its real token count."""
        window = self.behaviour.context_tokens
        if window is None:
            return None
        chars = 0
        for message in body.get("messages", []):
            content = message.get("content")
            parts = content if isinstance(content, list) else [{"type": "text", "text": content or ""}]
            chars += sum(len(part.get("text", "")) for part in parts if part.get("type") == "text")
            pictures = sum(part.get("type") == "image_url" for part in parts)
            frames = sum(part["video_url"]["url"].count(",") for part in parts if part.get("type") == "video_url")
            chars += 2 * self.behaviour.image_tokens * pictures + self.behaviour.image_tokens * frames
        prompt_tokens = chars // 2 + 8
        if prompt_tokens <= window:
            return None
        message = (
            f"This model's maximum context length is {window} tokens. However, your prompt contains "
            f"{prompt_tokens} input tokens, which exceeds this limit even without any output tokens. "
            "Please reduce the length of the input prompt."
        )
        error = {"error": {"message": message, "type": "BadRequestError", "param": "input_tokens", "code": 400}}
        return web.json_response(error, status=400)

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        body = await self._record(request)
        overflow = self._overflow(body)
        if overflow is not None:
            return overflow
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            failure = await self._misbehave()
            if failure is not None:
                return failure
            if body.get("stream"):
                return await self._stream(request, body)
            return web.json_response(self._completion(body), dumps=lambda o: orjson.dumps(o).decode())
        finally:
            self.in_flight -= 1

    def _answer(self, body: dict[str, Any]) -> str:
        if self.behaviour.echo_prompt:
            content = body["messages"][-1]["content"]
            if isinstance(content, list):
                content = " ".join(part.get("text", "") for part in content if part.get("type") == "text")
            return f"{self.name} saw: {content}"
        return f"{self.behaviour.content} ({self.name})"

    def _completion(self, body: dict[str, Any]) -> dict[str, Any]:
        message: dict[str, Any] = {"role": "assistant", "content": self._answer(body)}
        finish = "length" if body.get("max_tokens") == 1 else "stop"
        if self.behaviour.tool_call and body.get("tools"):
            name, arguments = self.behaviour.tool_call
            message = {"role": "assistant", "content": None, "tool_calls": [_tool_call(name, arguments)]}
            finish = "tool_calls"
        return {
            "id": "chatcmpl-fake",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body["model"],
            "choices": [{"index": 0, "message": message, "finish_reason": finish}],
            "usage": {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18},
        }

    async def _stream(self, request: web.Request, body: dict[str, Any]) -> web.StreamResponse:
        b = self.behaviour
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        if b.unterminated_stream_bytes:
            await response.write(b"data: {")
            piece = b"x" * 65536
            for _ in range(b.unterminated_stream_bytes // len(piece)):
                await response.write(piece)
            await response.write_eof()
            return response
        words = self._answer(body).split(" ")
        finish = "stop"
        if b.tool_call and body.get("tools"):
            words, finish = [], "tool_calls"
            name, arguments = b.tool_call
            half = len(arguments) // 2
            for index, piece in enumerate((arguments[:half], arguments[half:])):
                call = _tool_call(name, piece) if index == 0 else {"index": 0, "function": {"arguments": piece}}
                call["index"] = 0
                chunk = {"id": "chatcmpl-fake", "object": "chat.completion.chunk", "model": body["model"]}
                chunk["choices"] = [{"index": 0, "delta": {"tool_calls": [call]}}]
                await response.write(b"data: " + orjson.dumps(chunk) + b"\n\n")
        for index, word in enumerate(words):
            if b.drop_stream_after is not None and index >= b.drop_stream_after:
                assert request.transport is not None
                request.transport.abort()
                return response
            chunk = {
                "id": "chatcmpl-fake",
                "object": "chat.completion.chunk",
                "created": 0,
                "model": body["model"],
                "choices": [{"index": 0, "delta": {"content": word if index == 0 else " " + word}}],
            }
            await response.write(b"data: " + orjson.dumps(chunk) + b"\n\n")
            if b.chunk_delay_s:
                await asyncio.sleep(b.chunk_delay_s)
        final_choice = {"index": 0, "delta": {}, "finish_reason": finish}
        end = {"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": 0, "model": body["model"]}
        await response.write(b"data: " + orjson.dumps({**end, "choices": [final_choice]}) + b"\n\n")
        if (body.get("stream_options") or {}).get("include_usage"):
            usage = {"prompt_tokens": 11, "completion_tokens": len(words), "total_tokens": 11 + len(words)}
            final = {"id": "chatcmpl-fake", "object": "chat.completion.chunk", "model": body["model"], "choices": []}
            await response.write(b"data: " + orjson.dumps({**final, "usage": usage}) + b"\n\n")
        if not b.omit_done:
            await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response

    async def _transcription(self, request: web.Request) -> web.StreamResponse:
        """vLLM's transcription answers: json, text, srt, vtt, verbose_json, or a stream."""
        fields, audio, filename = await _form(request)
        self.bodies.append({**fields, "file_bytes": len(audio), "filename": filename})
        self.headers.append(dict(request.headers))
        failure = await self._misbehave()
        if failure is not None:
            return failure
        text = f"{len(audio)} bytes heard by {self.name}"
        kind = fields.get("response_format", "json")
        if fields.get("stream") == "true":
            response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
            await response.prepare(request)
            for word in text.split(" "):
                chunk = {"id": "trsc-fake", "object": "transcription.chunk", "model": fields["model"]}
                chunk["choices"] = [{"delta": {"content": word + " "}}]
                await response.write(b"data: " + orjson.dumps(chunk) + b"\n\n")
            usage = {"prompt_tokens": 3, "completion_tokens": 6, "total_tokens": 9}
            final = {"id": "trsc-fake", "object": "transcription.chunk", "model": fields["model"], "usage": usage}
            await response.write(b"data: " + orjson.dumps(final) + b"\n\n")
            await response.write(b"data: [DONE]\n\n")
            await response.write_eof()
            return response
        segment = {"id": 0, "seek": 0, "start": 0.0, "end": 1.5, "text": text, "tokens": [1, 2]}
        segment.update(temperature=0.0, avg_logprob=-0.1, compression_ratio=1.0, no_speech_prob=0.0)
        if kind == "text":
            return web.Response(text=text, content_type="text/plain")
        if kind == "srt":
            return web.Response(text=f"1\n00:00:00,000 --> 00:00:01,500\n{text}\n\n", content_type="text/plain")
        if kind == "vtt":
            return web.Response(text=f"WEBVTT\n\n00:00:00.000 --> 00:00:01.500\n{text}\n\n", content_type="text/plain")
        if kind == "verbose_json":
            segments = [segment]
            duration = 1.5
            if self.behaviour.heard is not None:
                duration, stretches = loud_stretches(audio)
                said = self.behaviour.heard.split("|")
                segments = [
                    {**segment, "id": n, "start": start, "end": end, "text": f" {said[n % len(said)]}"}
                    for n, (start, end) in enumerate(stretches)
                ]
                text = " ".join(s["text"].strip() for s in segments)
            verbose = {"task": "transcribe", "language": "en", "duration": duration, "text": text, "segments": segments}
            return web.json_response(verbose)
        return web.json_response({"text": text, "usage": {"type": "duration", "seconds": 2}})

    async def _speech(self, request: web.Request) -> web.StreamResponse:
        body = await self._record(request)
        failure = await self._misbehave()
        if failure is not None:
            return failure
        response = web.StreamResponse(headers={"Content-Type": "audio/wav"})
        await response.prepare(request)
        await response.write(b"RIFF" + len(str(body["input"])).to_bytes(4, "little") + b"WAVE")
        for _ in range(4):
            await response.write(b"\x00\x01" * 4096)
        await response.write_eof()
        return response

    async def _responses(self, request: web.Request) -> web.Response:
        """vLLM's Responses API, not streamed: a text answer kept under its id."""
        body = await self._record(request)
        self.paths.append(request.path)
        previous = body.get("previous_response_id")
        if previous is not None and previous not in self.responses:
            error = {"message": f"Response with id '{previous}' not found.", "type": "invalid_request_error"}
            return web.json_response({"error": {**error, "param": "previous_response_id", "code": 404}}, status=404)
        response_id = f"resp_{self.name.replace('-', '')}{len(self.responses)}"
        text = {"type": "output_text", "text": self._answer({"messages": []}), "annotations": []}
        item = {"id": "msg_1", "type": "message", "role": "assistant", "status": "completed", "content": [text]}
        response = {"id": response_id, "object": "response", "created_at": 0, "model": body["model"]}
        response.update(status="completed", output=[item], previous_response_id=previous)
        response["usage"] = {"input_tokens": 5, "output_tokens": 3, "total_tokens": 8}
        self.responses[response_id] = response
        return web.json_response(response)

    async def _response(self, request: web.Request) -> web.Response:
        self.paths.append(request.path)
        found = self.responses.get(request.match_info["id"])
        if found is None:
            return web.json_response({"error": {"message": "not found", "code": 404}}, status=404)
        return web.json_response(found)

    async def _rerank(self, request: web.Request) -> web.Response:
        """vLLM's rerank answer (Jina's shape): documents by relevance to the query."""
        body = await self._record(request)
        failure = await self._misbehave()
        if failure is not None:
            return failure
        query = set(str(body["query"]).lower().split())
        documents = [str(d) for d in body["documents"]]
        scores = [len(query & set(d.lower().split())) / (1 + len(query)) for d in documents]
        order = sorted(range(len(documents)), key=lambda i: -scores[i])[: body.get("top_n") or len(documents)]
        results = [{"index": i, "document": {"text": documents[i]}, "relevance_score": scores[i]} for i in order]
        usage = {"prompt_tokens": 5 * len(documents), "total_tokens": 5 * len(documents)}
        return web.json_response({"id": "rerank-fake", "model": body["model"], "usage": usage, "results": results})

    async def _score(self, request: web.Request) -> web.Response:
        body = await self._record(request)
        right = body.get("text_2") or body.get("documents")
        pairs = right if isinstance(right, list) else [right]
        data = [{"index": i, "object": "score", "score": 0.5} for i in range(len(pairs))]
        usage = {"prompt_tokens": 4 * len(pairs), "total_tokens": 4 * len(pairs)}
        payload = {"id": "score-fake", "object": "list", "created": 0, "model": body["model"], "data": data}
        return web.json_response({**payload, "usage": usage})

    async def _completions(self, request: web.Request) -> web.Response:
        body = await self._record(request)
        payload = {
            "id": "cmpl-fake",
            "object": "text_completion",
            "model": body["model"],
            "choices": [{"index": 0, "text": "fake", "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 2, "completion_tokens": 1, "total_tokens": 3},
        }
        return web.json_response(payload)

    async def _embeddings(self, request: web.Request) -> web.Response:
        body = await self._record(request)
        failure = await self._misbehave()
        if failure is not None:
            return failure
        inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
        data = [
            {"object": "embedding", "index": i, "embedding": embedding_of(str(text))} for i, text in enumerate(inputs)
        ]
        dimensions = self.behaviour.embedding_dimensions
        if dimensions:
            for item in data:
                vector = item["embedding"]
                item["embedding"] = [*vector, *(0.123456789 for _ in range(dimensions - len(vector)))]
        payload = {"object": "list", "model": body["model"], "data": data, "usage": {"prompt_tokens": 3}}
        return web.json_response(payload)

    async def _engine_metrics(self, request: web.Request) -> web.Response:
        self.engine_scrapes += 1
        if self.behaviour.hang:
            await asyncio.Event().wait()
        if self.behaviour.engine_metrics is None:
            return web.Response(status=404, text="404: Not Found")
        return web.Response(text=self.behaviour.engine_metrics, content_type="text/plain")

    async def _models(self, request: web.Request) -> web.Response:
        failure = await self._misbehave()
        if failure is not None:
            return failure
        card: dict[str, Any] = {"id": self.name, "object": "model"}
        if self.behaviour.report_context and self.behaviour.context_tokens:
            card["max_model_len"] = self.behaviour.context_tokens
        return web.json_response({"object": "list", "data": [card]})


def _tool_call(name: str, arguments: str) -> dict[str, Any]:
    return {"id": "call_fake", "type": "function", "function": {"name": name, "arguments": arguments}}
