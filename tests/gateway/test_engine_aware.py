"""The engine-aware strategy: prefixes stick to their pod, a hot prefix spreads, sessions hash to
one pod on every replica, unknown pods are never free, and pods that go away take only their own
sessions along."""

from __future__ import annotations

import random
from collections import Counter
from typing import Any

import orjson
import pytest

from gateway.config import parse_config
from gateway.deployment import Deployment
from gateway.engine_aware import BLOCK_BYTES, MAX_BLOCKS, Affinity, PrefixIndex, leading_blocks
from gateway.engine_stats import EngineStats
from gateway.routing import Router
from tests.conftest import GatewayFactory, UpstreamFactory, deployment

NOW = 1000.0


def _router(count: int = 3, **router: Any) -> Router:
    entries = [
        {
            "model_name": "g",
            "litellm_params": {"model": "hosted_vllm/q", "api_base": f"http://pod-{i}.invalid/v1"},
            "model_info": {"id": f"pod-{i}"},
        }
        for i in range(count)
    ]
    config = parse_config({"model_list": entries, "router_settings": router}, {}).config
    return Router(config, {}, rng=random.Random(3), clock=lambda: NOW)


def _scraped(d: Deployment, waiting: float = 0.0, running: float = 0.0, kv: float = 0.1) -> None:
    d.engine = EngineStats(NOW, waiting=waiting, running=running, kv_cache_usage=kv)
    d.in_flight_at_scrape = d.in_flight


def _chat(context: str, question: str, model: str = "g") -> bytes:
    body = {
        "messages": [{"role": "system", "content": context}, {"role": "user", "content": question}],
        "model": model,
        "max_tokens": 16,
    }
    return orjson.dumps(body)


def _affinity(router: Router, raw: bytes, session: str | None = None) -> Affinity:
    return router.engine_aware.affinity(raw, "messages", session, None)


def _context(seed: int, size: int = 20_000) -> str:
    words = random.Random(seed).choices(["frame", "person", "desk", "mug", "walks", "red", "door", "speaks"], k=size)
    return " ".join(words)[:size]


async def _send(router: Router, affinity: Affinity, release: bool = True) -> Deployment:
    chosen = await router.acquire(router.groups["g"], set(), 0, affinity=affinity)
    if release:
        router.release(chosen)
    return chosen


@pytest.mark.unit
def test_leading_blocks_follow_the_messages_not_the_fields_before_them() -> None:
    context = _context(1)
    one, two = _chat(context, "what is on the desk?"), _chat(context, "who speaks first?", model="other")
    a, b = leading_blocks(one, "messages"), leading_blocks(two, "messages")
    shared = len(context) // BLOCK_BYTES
    assert a[:shared] == b[:shared]  # the same context, whatever the model or the question
    assert a[-1] != b[-1]
    assert len(leading_blocks(b"x" * (BLOCK_BYTES * MAX_BLOCKS * 3), None)) == MAX_BLOCKS  # bounded work
    moved = orjson.dumps({"model": "g", "stream": True, "messages": orjson.loads(one)["messages"]})
    assert leading_blocks(moved, "messages")[:shared] == a[:shared]


@pytest.mark.unit
def test_the_prefix_index_keeps_its_capacity_and_counts_runs_of_blocks() -> None:
    index = PrefixIndex(capacity=4)
    index.record([b"a", b"b", b"c"], "pod-0")
    index.record([b"a", b"x"], "pod-1")
    assert index.matched([b"a", b"b", b"c", b"d"], {"pod-0", "pod-1"}) == {"pod-0": 3, "pod-1": 1}
    assert index.matched([b"a", b"b"], {"pod-1"}) == {"pod-1": 1}  # only candidates count
    index.record([b"y", b"z"], "pod-2")
    assert len(index) == 4  # the least recently routed block ("b") went first
    assert index.matched([b"a", b"b", b"c"], {"pod-0"}) == {"pod-0": 1}


@pytest.mark.unit
async def test_a_repeated_context_stays_on_its_pod() -> None:
    router = _router()
    for d in router.groups["g"].deployments:
        _scraped(d)
    homes = set()
    for seed in range(6):
        context = _context(seed)
        first = await _send(router, _affinity(router, _chat(context, "q0")))
        for question in range(1, 6):
            assert (await _send(router, _affinity(router, _chat(context, f"q{question}")))).id == first.id
        homes.add(first.id)
    assert len(homes) > 1  # different contexts do not all land on one pod


@pytest.mark.unit
async def test_a_hot_prefix_spreads_to_a_second_pod_when_its_first_is_overloaded() -> None:
    router = _router(routing_strategy_args={"prefix_weight": 2})
    for d in router.groups["g"].deployments:
        _scraped(d)
    context = _context(9)
    first = await _send(router, _affinity(router, _chat(context, "warm")))
    _scraped(first, waiting=3, running=8)  # a queue like the others' plus a few: stay
    assert (await _send(router, _affinity(router, _chat(context, "again")))).id == first.id
    _scraped(first, waiting=12, running=8)  # other gateways filled it: the prefix moves to a second pod
    second = await _send(router, _affinity(router, _chat(context, "busy")))
    assert second.id != first.id
    _scraped(second, waiting=2)  # now both hold it: the less loaded of the two wins, not a cold third pod
    assert (await _send(router, _affinity(router, _chat(context, "more")))).id == second.id
    # Without scrapes, this process's own in-flight requests spread it the same way, once the
    # first pod has about three times the second's load (plus a margin).
    local = _router(count=2, routing_strategy_args={"prefix_weight": 2})
    held = [await _send(local, _affinity(local, _chat(context, f"c{i}")), release=False) for i in range(24)]
    (_, most), (_, least) = Counter(d.id for d in held).most_common()
    assert least >= 3
    assert most <= 3 * least + 9


@pytest.mark.unit
async def test_a_pod_whose_scrape_failed_is_unknown_never_free() -> None:
    router = _router(count=2)
    silent, busy = router.groups["g"].deployments
    silent.engine = EngineStats(NOW, error="no answer in time")
    _scraped(busy, waiting=5, running=2)
    cold = _affinity(router, _chat(_context(3), "q"))
    assert (await _send(router, cold)).id == busy.id  # unknown scores as the busiest known pod and one more
    costs = router.engine_aware.costs([silent, busy], cold, NOW)
    assert costs[silent.id] > costs[busy.id]
    silent.engine = EngineStats(NOW - 60, waiting=0, running=0)  # stale stats are unknown too
    assert (await _send(router, _affinity(router, _chat(_context(4), "q")))).id == busy.id


@pytest.mark.unit
async def test_sessions_hash_to_the_same_pod_on_every_replica_and_a_lost_pod_moves_only_its_own() -> None:
    replicas = [_router(count=4), _router(count=4)]
    for router in replicas:
        for d in router.groups["g"].deployments:
            _scraped(d)
    sessions = [f"session-{i}" for i in range(40)]
    homes: dict[str, str] = {}
    for session in sessions:
        picks = {
            (await _send(router, _affinity(router, _chat(_context(i), "q"), session))).id
            for i, router in enumerate(replicas)  # different bodies: only the session ties them
        }
        assert len(picks) == 1, session
        homes[session] = picks.pop()
    assert len(set(homes.values())) == 4  # 40 sessions use every pod
    router = replicas[0]
    group = router.groups["g"]
    gone = group.deployments.pop(1)  # its pod went away (per-pod discovery)
    for session in sessions:
        now_at = (await _send(router, _affinity(router, _chat("x", "q"), session))).id
        if homes[session] != gone.id:
            assert now_at == homes[session]
        else:
            assert now_at != gone.id


@pytest.mark.unit
async def test_the_user_field_is_a_session_key_unless_configured_off() -> None:
    router = _router(count=4)
    by_user = router.engine_aware.affinity(_chat("a", "b"), "messages", None, "user-7")
    assert by_user.session == "user-7"
    assert router.engine_aware.affinity(_chat("a", "b"), "messages", "s-1", "user-7").session == "s-1"
    off = _router(count=4, routing_strategy_args={"session_from_user": False, "session_header": None})
    assert off.engine_aware.affinity(_chat("a", "b"), "messages", "s-1", "user-7").session is None


@pytest.mark.unit
def test_vllm_groups_default_to_engine_aware_and_others_keep_shuffle() -> None:
    entries = [
        {"model_name": "local", "litellm_params": {"model": "hosted_vllm/q", "api_base": "http://v.invalid/v1"}},
        {"model_name": "cloud", "litellm_params": {"model": "nebius/m", "api_key": "k"}},
        {"model_name": "mixed", "litellm_params": {"model": "hosted_vllm/q", "api_base": "http://v.invalid/v1"}},
        {"model_name": "mixed", "litellm_params": {"model": "nebius/m", "api_key": "k"}},
    ]
    router = Router(parse_config({"model_list": entries}, {}).config, {})
    assert {n: g.strategy for n, g in router.groups.items()} == {
        "local": "engine-aware",
        "cloud": "simple-shuffle",
        "mixed": "simple-shuffle",
    }
    chosen = Router(
        parse_config({"model_list": entries, "router_settings": {"routing_strategy": "least-busy"}}, {}).config, {}
    )
    assert {g.strategy for g in chosen.groups.values()} == {"least-busy"}
    # Only requests that may be routed engine-aware (by their group or a fallback) are hashed.
    fallbacks = {"fallbacks": [{"cloud": ["local"]}]}
    routed = Router(parse_config({"model_list": entries, "router_settings": fallbacks}, {}).config, {})
    assert {n: routed.engine_aware_for(g) for n, g in routed.groups.items()} == {
        "local": True,
        "cloud": True,
        "mixed": False,
    }


@pytest.mark.service
async def test_through_the_gateway_a_session_header_keeps_a_conversation_on_one_pod(
    upstream: UpstreamFactory, gateway: GatewayFactory
) -> None:
    pods = [await upstream(f"vllm-{i}") for i in range(3)]
    gw = await gateway({"model_list": [deployment("g", pod, id=f"pod-{i}") for i, pod in enumerate(pods)]})
    for conversation in range(6):
        for turn in range(4):
            body = orjson.loads(_chat(_context(100 + conversation, 3000), f"turn {turn}"))
            answer = await gw.http.post(
                "/v1/chat/completions", json=body, headers={"x-session-id": f"conversation-{conversation}"}
            )
            assert answer.status_code == 200, answer.text
    served = [len(pod.bodies) for pod in pods]
    assert sum(served) == 24
    assert all(count % 4 == 0 for count in served), served  # each conversation's turns on one pod
    assert sum(1 for count in served if count) >= 2
