"""Fleet benchmark: one gateway worker against all of them, without and with Redis-shared
limits, beside LiteLLM Proxy, on the same fake deployment in one run.

Run: ``python -m bench.fleet [--duration 3] [--skip-litellm]``. With Redis, every request
passes a key rpm check and a deployment concurrency check (limits set high enough never to
refuse), so the figures show what sharing limits costs; "Redis calls/req" counts the
script calls Redis executed per request served.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import socket
import sys
import tempfile
from pathlib import Path
from typing import Any

import aiohttp
import yaml
from prometheus_client.parser import text_string_to_metric_families

from bench.load import KEY, Scenario, body, free_port, load, wait_until_up
from bench.peers import litellm_proxy, started

SCENARIOS = [Scenario("small plain c=32", 32, False, False), Scenario("small stream c=32", 32, True, False)]


# What the gateway sends (INFO commandstats also counts the commands its scripts run inside Redis).
ROUND_TRIP_COMMANDS = ("cmdstat_evalsha:", "cmdstat_eval:", "cmdstat_set:", "cmdstat_script|load:")


def redis_calls(port: int) -> int:
    """Round trips gateways made to Redis so far (script calls and cooldown writes)."""
    with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
        sock.sendall(b"INFO commandstats\r\n")
        data = b""
        while b"\r\n" not in data:
            data += sock.recv(65536)
        header, _, data = data.partition(b"\r\n")
        size = int(header[1:])
        while len(data) < size:
            data += sock.recv(65536)
    total = 0
    for line in data.decode(errors="replace").splitlines():
        if line.startswith(ROUND_TRIP_COMMANDS):
            total += int(line.split("calls=")[1].split(",")[0])
    return total


async def served(url: str) -> float:
    """Requests the gateway answered so far, from its own metrics."""
    async with aiohttp.ClientSession() as session, session.get(f"{url}/metrics") as response:
        text = await response.text()
    return sum(
        s.value for f in text_string_to_metric_families(text) for s in f.samples if s.name == "gateway_requests_total"
    )


def config(upstream_port: int, redis_port: int | None) -> dict[str, Any]:
    entry = {
        "model_name": "bench",
        "litellm_params": {
            "model": "hosted_vllm/fake",
            "api_base": f"http://127.0.0.1:{upstream_port}/v1",
            "max_parallel_requests": 10_000,
        },
    }
    settings: dict[str, Any] = {"num_retries": 0}
    if redis_port is not None:
        settings.update(redis_host="127.0.0.1", redis_port=redis_port)
    return {
        "model_list": [entry],
        "router_settings": settings,
        "general_settings": {"master_key": "sk-master-unused-0123456789"},
        "gateway_settings": {"api_keys": [{"key": KEY, "rpm": 10_000_000}]},
    }


async def run(args: argparse.Namespace) -> int:
    work = Path(tempfile.mkdtemp(prefix="bench-fleet-"))
    python = sys.executable
    cores = len(os.sched_getaffinity(0))
    upstream_port, redis_port = free_port(), free_port()
    redis_server = shutil.which("redis-server")
    if redis_server is None:
        print("redis-server is not installed (make redis)", file=sys.stderr)
        return 1
    variants: list[tuple[str, int, bool]] = [("ours 1 worker", 1, False), (f"ours {cores} workers", cores, False)]
    variants += [("ours 1 worker + Redis", 1, True), (f"ours {cores} workers + Redis", cores, True)]
    rows: list[list[str]] = []
    redis_args = [redis_server, "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "", "--dir", str(work)]
    upstream_args = [python, "-m", "bench.fake_upstream", "--port", str(upstream_port)]
    with started(upstream_args, {}, work / "up.log") as upstream, started(redis_args, {}, work / "redis.log") as redis:
        await wait_until_up(f"http://127.0.0.1:{upstream_port}/v1/models", upstream, 30)
        await asyncio.sleep(0.5)
        if redis.poll() is not None:
            print("redis-server did not start", file=sys.stderr)
            return 1
        for name, workers, shared in variants:
            port = free_port()
            path = work / f"{workers}-{shared}.yaml"
            path.write_text(yaml.safe_dump(config(upstream_port, redis_port if shared else None)))
            command = [str(Path(python).parent / "gateway"), "serve", "--config", str(path), "--port", str(port)]
            command += ["--workers", str(workers)]
            with started(command, {"GATEWAY_LOG_LEVEL": "warning"}, work / f"{name}.log") as gateway:
                await wait_until_up(f"http://127.0.0.1:{port}/health", gateway, 60)
                rows.append(
                    await measure(name, f"http://127.0.0.1:{port}", gateway.pid, redis_port if shared else None, args)
                )
        if not args.skip_litellm:
            port = free_port()
            (work / "litellm.yaml").write_text(yaml.safe_dump({
                "model_list": [{"model_name": "bench", "litellm_params": {
                    "model": "hosted_vllm/fake", "api_base": f"http://127.0.0.1:{upstream_port}/v1"}}],
                "general_settings": {"master_key": KEY}}))  # fmt: skip
            command, env = litellm_proxy(work / "litellm.yaml", port)
            with started(command, env, work / "litellm.log") as litellm:
                await wait_until_up(f"http://127.0.0.1:{port}/health/liveliness", litellm, 180)
                rows.append(
                    await measure("LiteLLM Proxy 1 worker", f"http://127.0.0.1:{port}", litellm.pid, None, args)
                )
    print(f"\nfleet on {cores} cores, {args.duration:g} s per figure")
    print("| gateway | req/s plain c=32 | req/s stream c=32 | CPU ms/req (plain) | Redis calls/req |")
    print("| --- | --- | --- | --- | --- |")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    return 0


async def measure(name: str, url: str, pid: int, redis_port: int | None, args: argparse.Namespace) -> list[str]:
    figures: list[str] = [name]
    calls_per_request = "-"
    cpu = "-"
    for scenario in SCENARIOS:
        before = redis_calls(redis_port) if redis_port else 0
        answered = await served(url) if redis_port else 0.0
        result = await load(f"{url}/v1/chat/completions", body(scenario), scenario, args.duration, pid)
        figures.append(f"{result.rps:.0f}" + (f" ({result.errors} errors)" if result.errors else ""))
        if not scenario.stream:
            cpu = f"{result.cpu_ms:.2f}" if result.cpu_ms is not None else "-"
            if redis_port:
                requests = await served(url) - answered
                calls_per_request = f"{(redis_calls(redis_port) - before) / max(1.0, requests):.2f}"
    return [*figures, cpu, calls_per_request]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--duration", type=float, default=3.0)
    parser.add_argument("--skip-litellm", action="store_true")
    sys.exit(asyncio.run(run(parser.parse_args())))


if __name__ == "__main__":
    main()
