"""SDK-path benchmark: a non-OpenAI provider (an Anthropic Messages fake) through this gateway's
litellm SDK path and through LiteLLM Proxy, same fake, same config, one worker each, one run.
Also checks that a gateway with only OpenAI-compatible deployments never loads litellm.

Run: ``python -m bench.providers [--duration 3]``.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml

from bench import procstat
from bench.load import KEY, Scenario, body, free_port, load, wait_until_up
from bench.peers import litellm_proxy, started

SCENARIOS = [Scenario("anthropic plain c=32", 32, False, False), Scenario("anthropic stream c=32", 32, True, False)]


def config(anthropic_port: int) -> dict[str, Any]:
    entry = {
        "model_name": "bench",
        "litellm_params": {
            "model": "anthropic/claude-bench",
            "api_base": f"http://127.0.0.1:{anthropic_port}",
            "api_key": "sk-ant-bench",
        },
    }
    return {"model_list": [entry], "general_settings": {"master_key": KEY}, "router_settings": {"num_retries": 0}}


async def run(args: argparse.Namespace) -> int:
    work = Path(tempfile.mkdtemp(prefix="bench-providers-"))
    python = sys.executable
    fake_port, upstream_port, ours_port, fast_port, litellm_port = (free_port() for _ in range(5))
    (work / "config.yaml").write_text(yaml.safe_dump(config(fake_port)))
    fast = {"model_list": [{"model_name": "bench", "litellm_params": {
        "model": "hosted_vllm/fake", "api_base": f"http://127.0.0.1:{upstream_port}/v1"}}],
        "general_settings": {"master_key": KEY}}  # fmt: skip
    (work / "fast.yaml").write_text(yaml.safe_dump(fast))
    gateway = str(Path(python).parent / "gateway")
    rows: list[tuple[str, str, float, float | None, int]] = []
    with (
        started([python, "-m", "bench.fake_anthropic", "--port", str(fake_port)], {}, work / "fake.log") as fake,
        started([python, "-m", "bench.fake_upstream", "--port", str(upstream_port)], {}, work / "up.log") as up,
        started([gateway, "serve", "--config", str(work / "config.yaml"), "--port", str(ours_port)],
                {"GATEWAY_LOG_LEVEL": "warning"}, work / "ours.log") as ours,
        started([gateway, "serve", "--config", str(work / "fast.yaml"), "--port", str(fast_port)],
                {"GATEWAY_LOG_LEVEL": "warning"}, work / "fast.log") as fast_gateway,
    ):  # fmt: skip
        await wait_until_up(f"http://127.0.0.1:{fake_port}/health", fake, 30)
        await wait_until_up(f"http://127.0.0.1:{upstream_port}/v1/models", up, 30)
        await wait_until_up(f"http://127.0.0.1:{ours_port}/health", ours, 120)
        await wait_until_up(f"http://127.0.0.1:{fast_port}/health", fast_gateway, 60)
        targets = {"ours (litellm SDK path)": (ours_port, ours.pid)}
        litellm_ctx = None
        if not args.skip_litellm:
            command, env = litellm_proxy(work / "config.yaml", litellm_port)
            litellm_ctx = started(command, env, work / "litellm.log")
            litellm = litellm_ctx.__enter__()
            await wait_until_up(f"http://127.0.0.1:{litellm_port}/health/liveliness", litellm, 180)
            targets["LiteLLM Proxy"] = (litellm_port, litellm.pid)
        try:
            for scenario in SCENARIOS:
                payload = body(scenario)
                for name, (port, pid) in targets.items():
                    url = f"http://127.0.0.1:{port}/v1/chat/completions"
                    result = await load(url, payload, scenario, args.duration, pid)
                    rows.append((scenario.name, name, result.rps, result.cpu_ms, result.errors))
            fast_rss = procstat.rss_bytes(fast_gateway.pid)
            sdk_rss = procstat.rss_bytes(ours.pid)
        finally:
            if litellm_ctx is not None:
                litellm_ctx.__exit__(None, None, None)
    print("\n| scenario | gateway | req/s | CPU ms/req | errors |\n| --- | --- | --- | --- | --- |")
    for scenario_name, name, rps, cpu, errors in rows:
        print(
            f"| {scenario_name} | {name} | {rps:.0f} | {cpu:.2f} | {errors} |"
            if cpu
            else f"| {scenario_name} | {name} | {rps:.0f} | - | {errors} |"
        )
    checks = []
    for scenario in SCENARIOS:
        figures = {name: rps for s, name, rps, _, _ in rows if s == scenario.name}
        if "LiteLLM Proxy" in figures:
            ratio = figures["ours (litellm SDK path)"] / figures["LiteLLM Proxy"]
            checks.append((f"{scenario.name}: ours / LiteLLM Proxy throughput {ratio:.2f}x >= 1x", ratio >= 1))
    checks.append(
        (f"fast-path gateway RSS {fast_rss / 2**20:.0f} MiB < 150 MiB (litellm not loaded)", fast_rss < 150 * 2**20)
    )
    print(f"\nSDK-path gateway RSS {sdk_rss / 2**20:.0f} MiB (litellm loaded)\n\ntargets")
    for text, ok in checks:
        print(f"  {'PASS' if ok else 'FAIL'}  {text}")
    return 0 if all(ok for _, ok in checks) else 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--duration", type=float, default=3.0)
    parser.add_argument("--skip-litellm", action="store_true")
    sys.exit(asyncio.run(run(parser.parse_args())))


if __name__ == "__main__":
    main()
