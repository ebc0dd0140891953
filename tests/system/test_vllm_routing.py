"""Engine-aware routing over two real vLLM replicas (CPU, the tiny model, prefix caching on):
a conversation's repeated context finds its pod's prefix cache, by vLLM's own counters, where
the shuffle lands it on a cold pod half the time."""

from __future__ import annotations

import random
import urllib.request

import pytest

from bench.routing import WORDS
from gateway.engine_stats import parse_engine_metrics
from tests.conftest import GatewayFactory
from tests.system.conftest import SERVED_NAME, VllmServer

pytestmark = [pytest.mark.system, pytest.mark.timeout(900)]

CONVERSATIONS = 10
TURNS = 4


def _prefix_counters(servers: list[VllmServer]) -> tuple[float, float]:
    """(prefix-cache hits, queries) in tokens, summed over the replicas, as vLLM reports them."""
    hits = queries = 0.0
    for server in servers:
        with urllib.request.urlopen(f"{server.url}/metrics", timeout=10) as response:  # noqa: S310 - loopback
            stats = parse_engine_metrics(response.read().decode(), 0.0)
        hits += stats.prefix_cache_hits or 0.0
        queries += stats.prefix_cache_queries or 0.0
    return hits, queries


async def _hit_rate(gateway: GatewayFactory, servers: list[VllmServer], strategy: str, seed: int) -> float:
    """The share of prompt tokens found in the replicas' prefix caches over the conversations."""
    deployments = [
        {
            "model_name": "vision",
            "litellm_params": {"model": f"hosted_vllm/{SERVED_NAME}", "api_base": f"{s.url}/v1", "timeout": 120},
            "model_info": {"id": f"pod-{i}"},
        }
        for i, s in enumerate(servers)
    ]
    gw = await gateway({"model_list": deployments, "router_settings": {"routing_strategy": strategy}})
    client = gw.openai()
    rng = random.Random(seed)  # contexts no replica has seen: the counters start cold for them
    contexts = [" ".join(rng.choices(WORDS, k=120)) for _ in range(CONVERSATIONS)]
    hits_before, queries_before = _prefix_counters(servers)
    for turn in range(TURNS):
        for context in contexts:
            await client.chat.completions.create(
                model="vision",
                messages=[
                    {"role": "system", "content": f"Descriptions of a video: {context}"},
                    {"role": "user", "content": f"What happens in part {turn}?"},
                ],
                max_tokens=2,
            )
    hits, queries = _prefix_counters(servers)
    return (hits - hits_before) / (queries - queries_before)


async def test_repeated_contexts_stay_on_the_replica_that_caches_them(
    gateway: GatewayFactory, vllm_server: VllmServer, second_vllm_server: VllmServer
) -> None:
    servers = [vllm_server, second_vllm_server]
    shuffled = await _hit_rate(gateway, servers, "simple-shuffle", seed=11)
    engine_aware = await _hit_rate(gateway, servers, "engine-aware", seed=12)
    print(f"prefix-cache hit rate over two vLLM replicas: engine-aware {engine_aware:.0%}, shuffle {shuffled:.0%}")
    # Every turn after the first finds its whole context cached: 3 of 4 turns, less the question.
    assert engine_aware >= 0.9 * (TURNS - 1) / TURNS * 0.9, (engine_aware, shuffled)
    # The shuffle sends a turn to the replica that lacks the context half the time at first.
    assert engine_aware > shuffled + 0.05, (engine_aware, shuffled)
