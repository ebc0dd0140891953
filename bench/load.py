"""Load for the benchmarks: scenarios, request bodies, timed load against one target, or
against several in turn request by request, with each target's CPU time."""

from __future__ import annotations

import asyncio
import base64
import itertools
import os
import socket
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import aiohttp
import orjson

from bench import procstat
from bench.fake_upstream import TOKEN_EVENTS

KEY = "sk-bench-7f3a9c2e1d4b8a6f5e0c9b2a"
IMAGE_BYTES = 1024 * 1024


@dataclass(frozen=True)
class Scenario:
    name: str
    concurrency: int
    stream: bool
    image: bool
    tokens: bool = False  # the deployment streams one event per token, a millisecond apart


@dataclass
class Result:
    requests: int
    errors: int
    elapsed: float
    latencies: list[float]
    cpu_s: float | None

    @property
    def rps(self) -> float:
        return self.requests / self.elapsed

    def percentile(self, q: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000

    @property
    def cpu_ms(self) -> float | None:
        return None if self.cpu_s is None else self.cpu_s / max(1, self.requests + self.errors) * 1000


SCENARIOS = [
    Scenario(f"{'image 1MiB' if image else 'small'} {'stream' if stream else 'plain'} c={c}", c, stream, image)
    for image in (False, True)
    for stream in (False, True)
    for c in (1, 32)
] + [Scenario("token stream c=32", 32, True, False, tokens=True)]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def body(scenario: Scenario) -> bytes:
    content: object = "Say ok."
    if scenario.image:
        image = base64.b64encode(os.urandom(IMAGE_BYTES * 3 // 4)).decode()
        content = [
            {"type": "text", "text": "Describe."},
            {"type": "image_url", "image_url": {"url": f"data:image/jpeg;base64,{image}"}},
        ]
    tokens = TOKEN_EVENTS if scenario.tokens else 8
    payload: dict[str, object] = {
        "model": "bench",
        "messages": [{"role": "user", "content": content}],
        "max_tokens": tokens,
    }
    if scenario.stream:
        payload["stream"] = True
    return orjson.dumps(payload)


async def wait_until_up(url: str, process: subprocess.Popen[bytes], deadline_s: float) -> None:
    deadline = time.monotonic() + deadline_s
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"{process.args!r} exited with {process.returncode}")
            try:
                async with session.get(url, timeout=aiohttp.ClientTimeout(total=1)) as response:
                    if response.status == 200:
                        return
            except (aiohttp.ClientError, TimeoutError):
                pass
            await asyncio.sleep(0.2)
    raise RuntimeError(f"{url} did not come up in {deadline_s}s")


async def load(
    url: str, payload: bytes, scenario: Scenario, duration: float, pid: int | None, keys: Sequence[str] = (KEY,)
) -> Result:
    """``duration`` seconds of ``scenario`` against ``url``; requests take ``keys`` in turn."""
    headers = [{"Authorization": f"Bearer {key}", "Content-Type": "application/json"} for key in keys]
    turn = itertools.count()
    latencies: list[float] = []
    errors = 0
    connector = aiohttp.TCPConnector(limit=scenario.concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def one() -> None:
            nonlocal errors
            started = time.perf_counter()
            async with session.post(url, data=payload, headers=headers[next(turn) % len(headers)]) as response:
                await response.read()
                if response.status != 200:
                    errors += 1
                    return
            latencies.append(time.perf_counter() - started)

        async def worker(until: float) -> None:
            while time.perf_counter() < until:
                await one()

        warm_until = time.perf_counter() + min(0.5, duration / 4)
        await asyncio.gather(*(worker(warm_until) for _ in range(scenario.concurrency)))
        latencies.clear()
        errors = 0
        cpu_before = procstat.cpu_seconds(pid) if pid else None
        started = time.perf_counter()
        await asyncio.gather(*(worker(started + duration) for _ in range(scenario.concurrency)))
        elapsed = time.perf_counter() - started
        cpu = procstat.cpu_seconds(pid) - cpu_before if pid and cpu_before is not None else None
    return Result(len(latencies), errors, elapsed, latencies, cpu)


async def load_interleaved(
    targets: dict[str, tuple[str, int | None]],
    payload: bytes,
    duration: float,
    keys: Mapping[str, Sequence[str]] | None = None,
) -> dict[str, Result]:
    """One request at a time, to each target in turn: a slow moment of the machine then costs
    every target alike, which sequential runs of a few seconds each do not guarantee (the
    added latency of a 1 MiB image is a millisecond or two, what such moments shift). A target
    named in ``keys`` is sent those keys in turn."""
    headers = {
        name: [
            {"Authorization": f"Bearer {k}", "Content-Type": "application/json"} for k in (keys or {}).get(name, (KEY,))
        ]
        for name in targets
    }
    turn = itertools.count()
    latencies: dict[str, list[float]] = {name: [] for name in targets}
    busy = dict.fromkeys(targets, 0.0)
    errors = dict.fromkeys(targets, 0)
    sessions = {name: aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1)) for name in targets}
    try:

        async def rounds(until: float) -> None:
            while time.perf_counter() < until:
                for name, (url, _) in targets.items():
                    started = time.perf_counter()
                    choices = headers[name]
                    async with sessions[name].post(
                        url, data=payload, headers=choices[next(turn) % len(choices)]
                    ) as response:
                        await response.read()
                    took = time.perf_counter() - started
                    busy[name] += took
                    if response.status == 200:
                        latencies[name].append(took)
                    else:
                        errors[name] += 1

        await rounds(time.perf_counter() + min(0.5, duration / 4))
        for name in targets:
            latencies[name].clear()
            busy[name], errors[name] = 0.0, 0
        pids = {name: pid for name, (_, pid) in targets.items() if pid}
        cpu_before = {name: procstat.cpu_seconds(pid) for name, pid in pids.items()}
        await rounds(time.perf_counter() + duration * len(targets))
        cpu = {name: procstat.cpu_seconds(pid) - cpu_before[name] for name, pid in pids.items()}
    finally:
        for session in sessions.values():
            await session.close()
    return {
        name: Result(len(latencies[name]), errors[name], busy[name], latencies[name], cpu.get(name)) for name in targets
    }


def verdict(checks: list[tuple[str, bool]]) -> int:
    """Print each target PASS or FAIL; the exit status (1 when any failed)."""
    print("\ntargets")
    for text, ok in checks:
        print(f"  {'PASS' if ok else 'FAIL'}  {text}")
    return 0 if all(ok for _, ok in checks) else 1
