"""Simulated vLLM pods for the routing benchmark: where routing matters, each behaves as vLLM's
engine does.

- **KV cache with prefix caching.** A prompt is cut into blocks of 16 tokens (a token is 4 bytes
  of text, an image 405 tokens keyed by its URL's digest), hashed in a chain as vLLM hashes
  blocks, in a cache of ``cache_tokens``. Running requests hold their blocks; blocks no request
  holds stay cached and are evicted least recently used first. A request's leading cached blocks
  are not prefilled again, and a request waits while its blocks do not fit.
- **Scheduling.** Requests wait in a FCFS queue and run up to ``max_num_seqs`` at once. Each
  engine step spends ``max_batched_tokens`` on one decode token per running request first, then
  on the running requests' prefill (chunked: a long prompt takes several steps), then on
  waiting requests, which start only while that budget lasts and look their prefix up then:
  a repeat of a prompt still being prefilled waits, and then reuses its blocks. A step lasts
  ``step_s + prefill tokens * prefill_s_per_token + running * decode_s_per_seq``.
- **Metrics** in vLLM's names: ``vllm:num_requests_running``, ``vllm:num_requests_waiting``,
  ``vllm:kv_cache_usage_perc``, ``vllm:prefix_cache_queries_total``,
  ``vllm:prefix_cache_hits_total`` (tokens), at ``/metrics``.

Chat completions stream one event per token (OpenAI's shape, usage in the last event).

Run: ``python -m bench.sim_vllm --ports 9001,9002,9003,9004`` (one process, one pod per port).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import time
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

BLOCK_TOKENS = 16
BYTES_PER_TOKEN = 4
IMAGE_TOKENS = 405  # a 768x432 frame for Qwen2.5-VL


@dataclass(frozen=True)
class PodSpec:
    cache_tokens: int = 64_000
    max_num_seqs: int = 64
    max_batched_tokens: int = 4096
    step_s: float = 0.010
    prefill_s_per_token: float = 1 / 7_000
    decode_s_per_seq: float = 0.0001


def prompt_blocks(messages: list[dict[str, Any]]) -> tuple[list[bytes], int]:
    """The chained block hashes of a chat prompt, and its length in tokens."""
    pieces: list[bytes] = []
    for message in messages:
        pieces.append(f"<|{message.get('role', 'user')}|>".encode())
        content = message.get("content")
        if isinstance(content, str):
            pieces.append(content.encode())
        elif isinstance(content, list):
            for part in content:
                if part.get("type") == "text":
                    pieces.append(str(part.get("text", "")).encode())
                elif part.get("type") in ("image_url", "video_url"):
                    url = str((part.get(part["type"]) or {}).get("url", ""))
                    digest = hashlib.blake2b(url.encode(), digest_size=16).hexdigest()
                    pieces.append(
                        (digest * (IMAGE_TOKENS * BYTES_PER_TOKEN // 32 + 1))[: IMAGE_TOKENS * BYTES_PER_TOKEN].encode()
                    )
    text = b"".join(pieces)
    tokens = max(1, len(text) // BYTES_PER_TOKEN)
    size = BLOCK_TOKENS * BYTES_PER_TOKEN
    chain = hashlib.blake2b(digest_size=16)
    blocks = []
    for start in range(0, len(text) - size + 1, size):  # only full blocks are cached
        chain.update(text[start : start + size])
        blocks.append(chain.copy().digest())
    return blocks, tokens


@dataclass(eq=False)
class SimRequest:
    blocks: list[bytes]
    prompt_tokens: int
    max_tokens: int
    to_prefill: int = 0
    cached_tokens: int = 0
    computed_blocks: int = 0  # leading blocks whose KV is computed (cached ones included)
    generated: int = 0
    tokens: asyncio.Queue[int | None] = field(default_factory=asyncio.Queue)


@dataclass
class _Block:
    users: int = 0  # running requests holding it (it cannot be evicted meanwhile)
    ready: bool = False  # its KV is computed: later requests may reuse it


class SimEngine:
    """One pod's engine: queue, running batch, KV blocks with prefix caching, counters.

    As in vLLM, a running request holds its prompt's blocks (shared with other requests of the
    same prefix); blocks nobody holds stay cached until space is needed (LRU); a request waits
    while the blocks it needs cannot be found."""

    def __init__(self, spec: PodSpec) -> None:
        self.spec = spec
        self.blocks: OrderedDict[bytes, _Block] = OrderedDict()
        self.held = 0  # blocks some running request holds
        self.waiting: deque[SimRequest] = deque()
        self.running: list[SimRequest] = []
        self.prefix_queries = 0
        self.prefix_hits = 0
        self._wake = asyncio.Event()

    @property
    def capacity_blocks(self) -> int:
        return self.spec.cache_tokens // BLOCK_TOKENS

    def kv_usage(self) -> float:
        return min(1.0, self.held / self.capacity_blocks)

    def submit(self, request: SimRequest) -> None:
        self.waiting.append(request)
        self._wake.set()

    def _admit(self, request: SimRequest) -> bool:
        """Start ``request`` when its blocks fit; False (it keeps waiting) when they do not."""
        cached = 0
        for digest in request.blocks:
            block = self.blocks.get(digest)
            if block is None or not block.ready:
                break
            cached += 1
        new = [d for d in request.blocks if d not in self.blocks]
        free = self.capacity_blocks - len(self.blocks)
        if free < len(new):
            evictable = [d for d, b in self.blocks.items() if not b.users and d not in request.blocks]
            if free + len(evictable) < len(new):
                return False
            for digest in evictable[: len(new) - free]:
                del self.blocks[digest]
        for digest in request.blocks:
            block = self.blocks.setdefault(digest, _Block())
            self.blocks.move_to_end(digest)
            if not block.users:
                self.held += 1
            block.users += 1
        request.cached_tokens = min(cached * BLOCK_TOKENS, request.prompt_tokens - 1)
        request.to_prefill = request.prompt_tokens - request.cached_tokens
        request.computed_blocks = cached
        self.prefix_queries += request.prompt_tokens
        self.prefix_hits += request.cached_tokens
        self.running.append(request)
        return True

    def _schedule(self, request: SimRequest, budget: int, prefilled: list[tuple[SimRequest, int]]) -> int:
        """Give ``request`` this step's next prefill chunk; the tokens it takes from ``budget``."""
        chunk = min(request.to_prefill, budget)
        prefilled.append((request, chunk))
        request.to_prefill -= chunk
        self._computed(request)
        return chunk

    def _computed(self, request: SimRequest) -> None:
        """Blocks of the prompt scheduled so far become reusable (as vLLM caches each full block
        once a step is given its tokens, so a request scheduled after it in the same step reuses it)."""
        done = (request.prompt_tokens - request.to_prefill) // BLOCK_TOKENS
        for digest in request.blocks[request.computed_blocks : done]:
            self.blocks[digest].ready = True
        request.computed_blocks = max(request.computed_blocks, min(done, len(request.blocks)))

    def _finished(self, request: SimRequest) -> None:
        for digest in request.blocks:
            block = self.blocks[digest]
            block.users -= 1
            if not block.users:
                self.held -= 1

    async def run(self) -> None:
        spec = self.spec
        while True:
            if not self.running and not self.waiting:
                self._wake.clear()
                await self._wake.wait()
            budget = spec.max_batched_tokens
            decoding = [r for r in self.running if r.to_prefill == 0]
            budget -= len(decoding)
            prefilled: list[tuple[SimRequest, int]] = []
            for request in self.running:
                if request.to_prefill and budget > 0:
                    budget -= self._schedule(request, budget, prefilled)
            # As vLLM's scheduler: waiting requests start only while this step's token budget lasts
            # after the running ones, and look their prefix up in the cache as it is then (so a
            # repeat of a prompt still being prefilled waits, then reuses its blocks).
            while (
                self.waiting and budget > 0 and len(self.running) < spec.max_num_seqs and self._admit(self.waiting[0])
            ):
                budget -= self._schedule(self.waiting.popleft(), budget, prefilled)
            if not self.running:  # nothing fits: the head request is larger than the whole cache
                request = self.waiting.popleft()
                request.tokens.put_nowait(None)
                continue
            prefill_tokens = sum(chunk for _, chunk in prefilled)
            await asyncio.sleep(
                spec.step_s + prefill_tokens * spec.prefill_s_per_token + len(self.running) * spec.decode_s_per_seq
            )
            for request in decoding:
                request.generated += 1
                request.tokens.put_nowait(request.generated)
            for request, _ in prefilled:
                if request.to_prefill == 0:  # the prompt is in: its first token comes with this step
                    request.generated += 1
                    request.tokens.put_nowait(request.generated)
            for request in [r for r in self.running if r.generated >= r.max_tokens]:
                self.running.remove(request)
                self._finished(request)
                request.tokens.put_nowait(None)

    def metrics(self) -> str:
        labels = '{engine="0",model_name="sim"}'
        return (
            "# TYPE vllm:num_requests_running gauge\n"
            f"vllm:num_requests_running{labels} {len(self.running)}\n"
            "# TYPE vllm:num_requests_waiting gauge\n"
            f"vllm:num_requests_waiting{labels} {len(self.waiting)}\n"
            "# TYPE vllm:kv_cache_usage_perc gauge\n"
            f"vllm:kv_cache_usage_perc{labels} {self.kv_usage():.4f}\n"
            "# TYPE vllm:prefix_cache_queries counter\n"
            f"vllm:prefix_cache_queries_total{labels} {self.prefix_queries}\n"
            "# TYPE vllm:prefix_cache_hits counter\n"
            f"vllm:prefix_cache_hits_total{labels} {self.prefix_hits}\n"
        )


def _chunk(created: int, text: str | None, usage: dict[str, int] | None = None) -> bytes:
    choices = [] if text is None else [{"index": 0, "delta": {"content": text}, "finish_reason": None}]
    event: dict[str, Any] = {"id": "sim", "object": "chat.completion.chunk", "created": created, "model": "sim"}
    event["choices"] = choices
    if usage is not None:
        event["usage"] = usage
    return b"data: " + orjson.dumps(event) + b"\n\n"


def pod_app(engine: SimEngine) -> web.Application:
    async def chat(request: web.Request) -> web.StreamResponse:
        body = orjson.loads(await request.read())
        blocks, tokens = prompt_blocks(body.get("messages") or [])
        sim = SimRequest(blocks, tokens, max(1, int(body.get("max_tokens") or 16)))
        engine.submit(sim)
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        created = int(time.time())
        while (token := await sim.tokens.get()) is not None:
            await response.write(_chunk(created, f" t{token}"))
        usage = {"prompt_tokens": tokens, "completion_tokens": sim.generated, "total_tokens": tokens + sim.generated}
        usage["prompt_tokens_details"] = {"cached_tokens": sim.cached_tokens}  # type: ignore[assignment]
        await response.write(_chunk(created, None, usage) + b"data: [DONE]\n\n")
        return response

    async def metrics(_: web.Request) -> web.Response:
        return web.Response(text=engine.metrics(), content_type="text/plain")

    async def models(_: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": "sim", "object": "model", "max_model_len": 32768}]})

    async def health(_: web.Request) -> web.Response:
        return web.Response()

    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_post("/v1/chat/completions", chat)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/v1/models", models)
    app.router.add_get("/health", health)
    return app


async def serve(ports: list[int], spec: PodSpec) -> None:
    runners = []
    tasks = []
    for port in ports:
        engine = SimEngine(spec)
        tasks.append(asyncio.create_task(engine.run()))
        runner = web.AppRunner(pod_app(engine), access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        runners.append(runner)
    try:
        await asyncio.Event().wait()
    finally:
        for task in tasks:
            task.cancel()
        for runner in runners:
            await runner.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--ports", required=True, help="comma-separated, one pod each")
    parser.add_argument("--cache-tokens", type=int, default=PodSpec.cache_tokens)
    args = parser.parse_args()
    ports = [int(p) for p in args.ports.split(",")]
    asyncio.run(serve(ports, PodSpec(cache_tokens=args.cache_tokens)))


if __name__ == "__main__":
    main()
