"""Engine-aware routing over two real vLLM replicas (CPU, the tiny model, prefix caching on):
a conversation's repeated context finds its pod's prefix cache, by vLLM's own counters, where
the shuffle lands it on a cold pod half the time."""

from __future__ import annotations

import random
import urllib.request

import pytest

from bench.routing import WORDS
from gateway.engine_stats import parse_engine_metrics
from tests.conftest import GatewayFactory, RunningGateway
from tests.metrics_samples import sample
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


async def _served(gw: RunningGateway, count: int) -> list[float]:
    """Chat requests each replica has answered through the gateway so far."""
    text = (await gw.http.get("/metrics")).text
    return [
        sample(text, "gateway_requests_total", deployment=f"pod-{i}", status_class="2xx") or 0.0 for i in range(count)
    ]


async def _conversations(
    gateway: GatewayFactory, servers: list[VllmServer], strategy: str, seed: int
) -> tuple[float, list[set[int]]]:
    """The share of prompt tokens found in the replicas' prefix caches over the conversations,
    and the replicas each conversation's turns went to."""
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
    placed: list[set[int]] = [set() for _ in contexts]
    for turn in range(TURNS):
        for index, context in enumerate(contexts):
            before = await _served(gw, len(servers))
            await client.chat.completions.create(
                model="vision",
                messages=[
                    {"role": "system", "content": f"Descriptions of a video: {context}"},
                    {"role": "user", "content": f"What happens in part {turn}?"},
                ],
                max_tokens=2,
            )
            after = await _served(gw, len(servers))
            placed[index].update(i for i in range(len(servers)) if after[i] > before[i])
    hits, queries = _prefix_counters(servers)
    return (hits - hits_before) / (queries - queries_before), placed


async def test_repeated_contexts_stay_on_the_replica_that_caches_them(
    gateway: GatewayFactory, vllm_server: VllmServer, second_vllm_server: VllmServer
) -> None:
    servers = [vllm_server, second_vllm_server]
    shuffled, _ = await _conversations(gateway, servers, "simple-shuffle", seed=11)
    engine_aware, placed = await _conversations(gateway, servers, "engine-aware", seed=12)
    print(f"prefix-cache hit rate over two vLLM replicas: engine-aware {engine_aware:.0%}, shuffle {shuffled:.0%}")
    # Every turn of a conversation went to the replica that served its first turn...
    assert all(len(replicas) == 1 for replicas in placed), placed
    assert {next(iter(r)) for r in placed} == {0, 1}  # ...and new contexts use both replicas
    # ...so vLLM finds the context cached three turns in four, where the shuffle often misses.
    assert engine_aware > shuffled, (engine_aware, shuffled)
