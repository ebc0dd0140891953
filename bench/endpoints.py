"""Endpoint benchmark: the Responses API passed through (plain and streamed) and Anthropic's
Messages API translated to chat, beside chat completions, against the same fake deployment
(bench.fake_vllm), through this gateway and through LiteLLM Proxy, in one run at concurrency 32.

Run: ``python -m bench.endpoints [--duration 3] [--skip-litellm]``. The gateway serves two groups
on the fake: ``bench`` as ``hosted_vllm/`` (Responses passed through) and ``bench-chat`` as a
chat-only provider (``nebius/``: Messages and Responses translated). LiteLLM Proxy gets the same
two groups (``hosted_vllm/`` and ``openai/``). Targets: the Responses pass-through within 1.2x
of chat's CPU per request; the translated Messages paths at least 10x LiteLLM Proxy's throughput.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import orjson
import yaml

from bench.load import KEY, Result, Scenario, free_port, load, verdict, wait_until_up
from bench.peers import litellm_proxy, started


@dataclass(frozen=True)
class Case:
    name: str
    path: str
    body: dict[str, object]
    stream: bool


CHAT = [{"role": "user", "content": "Say ok."}]
CASES = [
    Case("chat plain", "/v1/chat/completions", {"model": "bench", "messages": CHAT, "max_tokens": 8}, False),
    Case("chat stream", "/v1/chat/completions", {"model": "bench", "messages": CHAT, "stream": True}, True),
    Case("responses plain", "/v1/responses", {"model": "bench", "input": "Say ok.", "max_output_tokens": 8}, False),
    Case("responses stream", "/v1/responses", {"model": "bench", "input": "Say ok.", "stream": True}, True),
    Case(
        "messages plain (translated)", "/v1/messages", {"model": "bench-chat", "messages": CHAT, "max_tokens": 8}, False
    ),
    Case(
        "messages stream (translated)",
        "/v1/messages",
        {"model": "bench-chat", "messages": CHAT, "max_tokens": 8, "stream": True},
        True,
    ),
]


def write_config(path: Path, upstream_port: int, ours: bool) -> None:
    base = f"http://127.0.0.1:{upstream_port}/v1"
    chat_only = "nebius/fake" if ours else "openai/fake"
    entries = [
        {"model_name": "bench", "litellm_params": {"model": "hosted_vllm/fake", "api_base": base}},
        {"model_name": "bench-chat", "litellm_params": {"model": chat_only, "api_base": base, "api_key": "k"}},
    ]
    config: dict[str, object] = {"model_list": entries, "general_settings": {"master_key": KEY}}
    if ours:
        config["router_settings"] = {"num_retries": 0}
    path.write_text(yaml.safe_dump(config))


async def run(args: argparse.Namespace) -> int:
    work = Path(tempfile.mkdtemp(prefix="bench-endpoints-"))
    upstream_port, ours_port, litellm_port = free_port(), free_port(), free_port()
    write_config(work / "ours.yaml", upstream_port, ours=True)
    write_config(work / "litellm.yaml", upstream_port, ours=False)
    python = sys.executable
    gateway = [str(Path(python).parent / "gateway"), "serve", "--config", str(work / "ours.yaml")]
    targets: dict[str, tuple[str, int]] = {}
    with (
        started([python, "-m", "bench.fake_vllm", "--port", str(upstream_port)], {}, work / "up.log") as upstream,
        started([*gateway, "--port", str(ours_port)], {"GATEWAY_LOG_LEVEL": "info"}, work / "ours.log") as ours,
    ):
        await wait_until_up(f"http://127.0.0.1:{upstream_port}/v1/models", upstream, 30)
        await wait_until_up(f"http://127.0.0.1:{ours_port}/health", ours, 30)
        targets["ours"] = (f"http://127.0.0.1:{ours_port}", ours.pid)
        litellm_ctx = None
        if not args.skip_litellm:
            command, env = litellm_proxy(work / "litellm.yaml", litellm_port)
            litellm_ctx = started(command, env, work / "litellm.log")
            litellm = litellm_ctx.__enter__()
            await wait_until_up(f"http://127.0.0.1:{litellm_port}/health/liveliness", litellm, 180)
            targets["litellm"] = (f"http://127.0.0.1:{litellm_port}", litellm.pid)
        try:
            results = await measure(targets, args.duration)
        finally:
            if litellm_ctx is not None:
                litellm_ctx.__exit__(None, None, None)
    return report(results)


async def measure(targets: dict[str, tuple[str, int]], duration: float) -> dict[tuple[str, str], Result]:
    results: dict[tuple[str, str], Result] = {}
    print(f"{'endpoint':<30}{'target':<9}{'req/s':>9}{'p50 ms':>9}{'cpu ms/req':>12}{'errors':>8}")
    for case in CASES:
        scenario = Scenario(case.name, 32, case.stream, False)
        for target, (origin, pid) in targets.items():
            result = await load(origin + case.path, orjson.dumps(case.body), scenario, duration, pid)
            results[(case.name, target)] = result
            cpu = f"{result.cpu_ms:.2f}" if result.cpu_ms is not None else "-"
            print(
                f"{case.name:<30}{target:<9}{result.rps:>9.0f}{result.percentile(0.5):>9.2f}{cpu:>12}"
                f"{result.errors:>8}",
                flush=True,
            )
    return results


def report(results: dict[tuple[str, str], Result]) -> int:
    checks: list[tuple[str, bool]] = []
    for kind in ("plain", "stream"):
        chat, responses = results[(f"chat {kind}", "ours")], results[(f"responses {kind}", "ours")]
        if chat.cpu_ms and responses.cpu_ms:
            ratio = responses.cpu_ms / chat.cpu_ms
            checks.append((f"responses {kind} pass-through CPU/req {ratio:.2f}x chat's <= 1.2x", ratio <= 1.2))
        if chat.errors or responses.errors:
            checks.append((f"{kind}: no errors", False))
    print("\n| endpoint | ours req/s | LiteLLM req/s | ours/LiteLLM | ours CPU ms/req | LiteLLM CPU ms/req |")
    print("| --- | --- | --- | --- | --- | --- |")
    for case in CASES:
        ours, litellm = results[(case.name, "ours")], results.get((case.name, "litellm"))
        times = f"{ours.rps / litellm.rps:.1f}x" if litellm is not None and litellm.rps else "-"
        row: list[str] = [case.name, f"{ours.rps:.0f}", f"{litellm.rps:.0f}" if litellm else "-", times]
        row += [f"{ours.cpu_ms or 0:.2f}", f"{litellm.cpu_ms or 0:.2f}" if litellm else "-"]
        print("| " + " | ".join(row) + " |")
        if "translated" in case.name and litellm is not None and litellm.rps and not litellm.errors:
            value = ours.rps / litellm.rps
            checks.append((f"{case.name}: ours/litellm throughput {value:.1f}x >= 10x", value >= 10))
        if ours.errors:
            checks.append((f"{case.name}: {ours.errors} errors through the gateway", False))
    return verdict(checks)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--duration", type=float, default=3.0, help="seconds of load per endpoint and target")
    parser.add_argument("--skip-litellm", action="store_true", help="measure the gateway alone")
    sys.exit(asyncio.run(run(parser.parse_args())))


if __name__ == "__main__":
    main()
