"""Routing benchmark: LiteLLM's strategies and ``engine-aware`` side by side on a simulated fleet
of vLLM pods (bench.sim_vllm), behind two gateway replicas, with the same arrivals for each.

Workloads (Poisson arrivals, seeded):
  (a) chat over videos: 40 sessions starting over 12 s, each a 4,000-6,000-token context asked
      5-10 questions about 1 s apart, with the session key the video service sends
      (``x-session-id``). At this load, prefilling every prompt in full needs 2.7 times the
      fleet's prefill capacity over the arrivals, prefilling each context once 0.4 times;
  (b) frame descriptions: one shared instruction and a unique image per request;
  (c) no reuse: unique prompts.

Each request streams; time to first token is measured by the client. Throughput is output
tokens over the time from the first arrival to the last answer. The prefix-cache hit rate is the
pods' own ``vllm:prefix_cache_hits_total / vllm:prefix_cache_queries_total``.

Run: ``python -m bench.routing [--pods 4] [--replicas 2] [--scale 1.0]`` (about six minutes).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import tempfile
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import orjson
import yaml
from prometheus_client.parser import text_string_to_metric_families

from bench.load import KEY, free_port, verdict, wait_until_up
from bench.peers import started

STRATEGIES = ("simple-shuffle", "least-busy", "latency-based-routing", "engine-aware")
WORDS = [
    "person",
    "walks",
    "desk",
    "mug",
    "red",
    "door",
    "opens",
    "speaks",
    "screen",
    "shows",
    "chart",
    "table",
    "window",
    "light",
    "car",
    "street",
]
SYSTEM = "You answer questions about a video from its timestamped descriptions and transcript."


@dataclass(frozen=True)
class Flow:
    """Requests of one session (or a lone request): the first at ``start_s``, each next one
    ``gaps_s`` later, whether or not the previous one was answered (open loop: the offered load
    is the same for every strategy)."""

    start_s: float
    bodies: tuple[bytes, ...]
    gaps_s: tuple[float, ...] = ()
    session: str | None = None


@dataclass
class Outcome:
    ttft_s: list[float] = field(default_factory=list)
    tokens: int = 0
    done: int = 0
    errors: int = 0
    first_s: float = 0.0
    last_s: float = 0.0


def _text(rng: random.Random, tokens: int) -> str:
    words: list[str] = []
    size = 0
    while size < tokens * 4:
        word = rng.choice(WORDS)
        words.append(word)
        size += len(word) + 1
    return " ".join(words)


def _chat(system: str, user: str | list[dict[str, object]], max_tokens: int) -> bytes:
    messages = [{"role": "system", "content": system}, {"role": "user", "content": user}]
    return orjson.dumps({"messages": messages, "model": "sim", "max_tokens": max_tokens, "stream": True})


def _poisson(rng: random.Random, count: int, rate: float) -> list[float]:
    times, now = [], 0.0
    for _ in range(count):
        now += rng.expovariate(rate)
        times.append(now)
    return times


def video_chat(rng: random.Random, sessions: int = 40, starts_s: float = 8.0, gap_s: float = 1.0) -> list[Flow]:
    """Sessions start as a Poisson process over about ``starts_s``; each asks its 5-10 questions
    about its own 4,000-6,000-token context at Poisson times ``gap_s`` apart on average."""
    flows = []
    for session, start in enumerate(_poisson(rng, sessions, sessions / starts_s)):
        context = _text(rng, rng.randint(4000, 6000))
        count = rng.randint(5, 10)
        bodies = tuple(
            _chat(SYSTEM, f"Descriptions:\n{context}\n\nQuestion {asked}: {_text(rng, 20)}?", 32)
            for asked in range(1, count + 1)
        )
        gaps = tuple(rng.expovariate(1 / gap_s) for _ in range(count - 1))
        flows.append(Flow(start, bodies, gaps, f"video-session-{session}"))
    return flows


def frame_descriptions(rng: random.Random, rate: float, count: int) -> list[Flow]:
    instruction = "Describe this frame of a video: " + _text(rng, 300)
    flows = []
    for at in _poisson(rng, count, rate):
        image = rng.randbytes(6000).hex()
        parts: list[dict[str, object]] = [
            {"type": "text", "text": instruction},
            {"type": "image_url", "image_url": {"url": f"data:image/jpeg;base64,{image}"}},
        ]
        flows.append(Flow(at, (_chat("You describe video frames.", parts, 32),)))
    return flows


def no_reuse(rng: random.Random, rate: float, count: int) -> list[Flow]:
    return [
        Flow(at, (_chat(f"Request {i}.", _text(rng, 1000), 32),)) for i, at in enumerate(_poisson(rng, count, rate))
    ]


async def drive(replicas: list[str], flows: list[Flow], drain_s: float) -> Outcome:
    outcome = Outcome()
    connector = aiohttp.TCPConnector(limit=0)
    timeout = aiohttp.ClientTimeout(total=None)
    sent_count = 0
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as http:
        start = time.perf_counter()

        async def ask(body: bytes, session: str | None) -> None:
            nonlocal sent_count
            headers = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
            if session:
                headers["x-session-id"] = session
            replica = replicas[sent_count % len(replicas)]  # a Service spreads requests over replicas
            sent_count += 1
            sent = time.perf_counter()
            first: float | None = None
            tokens = 0
            try:
                async with http.post(replica, data=body, headers=headers) as response:
                    if response.status != 200:
                        outcome.errors += 1
                        await response.read()
                        return
                    async for line in response.content:
                        if line.startswith(b"data: {") and b'"content"' in line:
                            tokens += 1
                            if first is None:
                                first = time.perf_counter()
            except aiohttp.ClientError:
                outcome.errors += 1
                return
            if first is None:
                outcome.errors += 1
                return
            outcome.ttft_s.append(first - sent)
            outcome.tokens += tokens
            outcome.done += 1
            outcome.last_s = max(outcome.last_s, time.perf_counter() - start)

        async def at(when_s: float, body: bytes, session: str | None) -> None:
            await asyncio.sleep(max(0.0, start + when_s - time.perf_counter()))
            await ask(body, session)

        schedule = [
            (flow.start_s + sum(flow.gaps_s[:index]), body, flow.session)
            for flow in flows
            for index, body in enumerate(flow.bodies)
        ]
        outcome.first_s = min(when for when, _, _ in schedule)
        tasks = [asyncio.create_task(at(*item)) for item in schedule]
        _, pending = await asyncio.wait(tasks, timeout=max(when for when, _, _ in schedule) + drain_s)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
    return outcome


async def prefix_counters(pods: list[int]) -> tuple[float, float]:
    hits = queries = 0.0
    async with aiohttp.ClientSession() as http:
        for port in pods:
            async with http.get(f"http://127.0.0.1:{port}/metrics") as response:
                text = await response.text()
            for family in text_string_to_metric_families(text):
                for sample in family.samples:
                    if sample.name == "vllm:prefix_cache_hits_total":
                        hits += sample.value
                    elif sample.name == "vllm:prefix_cache_queries_total":
                        queries += sample.value
    return hits, queries


def gateway_config(pods: list[int], strategy: str, prefix_weight: float | None = None) -> dict[str, object]:
    settings: dict[str, object] = {"routing_strategy": strategy, "num_retries": 0}
    if prefix_weight is not None:
        settings["routing_strategy_args"] = {"prefix_weight": prefix_weight}
    return {
        "model_list": [
            {
                "model_name": "sim",
                "litellm_params": {"model": "hosted_vllm/sim", "api_base": f"http://127.0.0.1:{port}/v1"},
                "model_info": {"id": f"pod-{i}"},
            }
            for i, port in enumerate(pods)
        ],
        "router_settings": settings,
        "general_settings": {"master_key": KEY},
    }


@dataclass
class Row:
    workload: str
    strategy: str
    offered: int
    outcome: Outcome
    hit_rate: float

    @property
    def throughput(self) -> float:
        elapsed = max(1e-9, self.outcome.last_s - self.outcome.first_s)
        return self.outcome.tokens / elapsed

    def ttft(self, q: float) -> float:
        ordered = sorted(self.outcome.ttft_s)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


async def run_one(work: Path, workload: str, strategy: str, flows: list[Flow], args: argparse.Namespace) -> Row:
    python = sys.executable
    pods = [free_port() for _ in range(args.pods)]
    sim = [
        python,
        "-m",
        "bench.sim_vllm",
        "--ports",
        ",".join(map(str, pods)),
        "--cache-tokens",
        str(args.cache_tokens),
    ]
    tag = f"{workload[:1]}-{strategy}"
    config = work / f"{tag}.yaml"
    config.write_text(yaml.safe_dump(gateway_config(pods, strategy, args.prefix_weight)))
    gateway = str(Path(python).parent / "gateway")
    with started(sim, {}, work / f"{tag}-sim.log") as pod_process:
        await wait_until_up(f"http://127.0.0.1:{pods[-1]}/health", pod_process, 30)
        ports = [free_port() for _ in range(args.replicas)]
        env = {"GATEWAY_LOG_LEVEL": "warning"}
        with ExitStack() as stack:
            for index, port in enumerate(ports):
                command = [gateway, "serve", "--config", str(config), "--port", str(port)]
                process = stack.enter_context(started(command, env, work / f"{tag}-gw{index}.log"))
                await wait_until_up(f"http://127.0.0.1:{port}/health", process, 60)
            await asyncio.sleep(1.5)  # the first engine scrape
            replicas = [f"http://127.0.0.1:{p}/v1/chat/completions" for p in ports]
            outcome = await drive(replicas, flows, args.drain)
            hits, queries = await prefix_counters(pods)
    offered = sum(len(f.bodies) for f in flows)
    return Row(workload, strategy, offered, outcome, hits / queries if queries else 0.0)


async def run(args: argparse.Namespace) -> int:
    work = Path(tempfile.mkdtemp(prefix="bench-routing-"))
    scale = args.scale
    workloads = {
        "(a) chat over videos": video_chat(
            random.Random(1), starts_s=args.session_starts / scale, gap_s=args.question_gap / scale
        ),
        "(b) frame descriptions": frame_descriptions(random.Random(2), 30 * scale, int(300 * scale)),
        "(c) no reuse": no_reuse(random.Random(3), 18 * scale, int(240 * scale)),
    }
    rows: list[Row] = []
    for workload, flows in workloads.items():
        if workload[1] not in args.workloads:
            continue
        for strategy in args.strategies.split(","):
            row = await run_one(work, workload, strategy, flows, args)
            rows.append(row)
            print(f"{workload} {strategy}: {row.outcome.done}/{row.offered} answered", flush=True)
    print(f"\nrouting on a simulated fleet of {args.pods} vLLM pods, {args.replicas} gateway replicas, one run")
    print("| workload | strategy | answered | output tok/s | TTFT p50 s | TTFT p90 s | prefix-cache hit rate |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        answered = f"{r.outcome.done}/{r.offered}" + (f" ({r.outcome.errors} errors)" if r.outcome.errors else "")
        print(
            f"| {r.workload} | {r.strategy} | {answered} | {r.throughput:.0f} | {r.ttft(0.5):.2f} | "
            f"{r.ttft(0.9):.2f} | {r.hit_rate:.0%} |"
        )
    by = {(r.workload[:3], r.strategy): r for r in rows}
    if not all(
        k in by
        for k in [("(a)", "engine-aware"), ("(a)", "least-busy"), ("(c)", "engine-aware"), ("(c)", "least-busy")]
    ):
        return 0  # a partial run: no targets
    chat_new, chat_busy = by[("(a)", "engine-aware")], by[("(a)", "least-busy")]
    none_new, none_busy = by[("(c)", "engine-aware")], by[("(c)", "least-busy")]
    print(f"\n(a) engine-aware/least-busy: throughput {chat_new.throughput / chat_busy.throughput:.2f}x, "
          f"TTFT p90 {chat_new.ttft(0.9) / chat_busy.ttft(0.9):.3f}x")  # fmt: skip
    print(f"(c) engine-aware/least-busy: throughput {none_new.throughput / none_busy.throughput:.3f}x, "
          f"TTFT p90 {none_new.ttft(0.9) / none_busy.ttft(0.9):.2f}x")  # fmt: skip
    return verdict(
        [
            ("(a) TTFT p90 at most 1/5 of least-busy's", chat_new.ttft(0.9) <= chat_busy.ttft(0.9) / 5),
            ("(a) throughput at least 1.5x least-busy's", chat_new.throughput >= 1.5 * chat_busy.throughput),
            ("(c) throughput within 5% of least-busy's", none_new.throughput >= 0.95 * none_busy.throughput),
            ("every request answered", all(r.outcome.done == r.offered for r in rows)),
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--pods", type=int, default=4)
    parser.add_argument("--replicas", type=int, default=2, help="gateway replicas the requests alternate over")
    parser.add_argument("--scale", type=float, default=1.0, help="arrival rates and counts (b, c) times this")
    parser.add_argument("--workloads", default="abc")
    parser.add_argument(
        "--session-starts", type=float, default=12.0, help="(a): seconds over which the 40 sessions start"
    )
    parser.add_argument(
        "--question-gap", type=float, default=1.0, help="(a): mean seconds between a session's questions"
    )
    parser.add_argument("--prefix-weight", type=float, help="engine-aware's routing_strategy_args.prefix_weight")
    parser.add_argument("--cache-tokens", type=int, default=64_000, help="each pod's prefix cache")
    parser.add_argument("--strategies", default=",".join(STRATEGIES))
    parser.add_argument("--drain", type=float, default=60.0, help="seconds to wait for answers after the last arrival")
    sys.exit(asyncio.run(run(parser.parse_args())))


if __name__ == "__main__":
    main()
