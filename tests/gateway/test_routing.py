"""Deployment choice, wildcards, cooldowns, fallbacks and admission, without I/O."""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from typing import Any

import pytest

from gateway.config import parse_config
from gateway.errors import NoDeploymentAvailable, RateLimited
from gateway.routing import Router


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _router(entries: list[dict[str, Any]], clock: Clock | None = None, **router: Any) -> Router:
    config = parse_config({"model_list": entries, "router_settings": router}, {}).config
    return Router(config, {}, rng=random.Random(7), clock=clock or Clock())


def _entry(name: str, dep_id: str, model: str = "hosted_vllm/q", vision: bool = False, **params: Any) -> dict:
    return {
        "model_name": name,
        "litellm_params": {"model": model, "api_base": f"http://{dep_id}.invalid/v1", **params},
        "model_info": {"id": dep_id, "supports_vision": vision},
    }


@pytest.mark.unit
def test_exact_group_wins_over_wildcards_and_wildcards_fill_the_model() -> None:
    router = _router(
        [
            _entry("nebius/*", "any", model="nebius/*"),
            _entry("nebius/meta-llama/*", "llama", model="nebius/meta-llama/*"),
            _entry("nebius/special", "special", model="nebius/other-name"),
        ]
    )
    exact = router.resolve("nebius/special")
    assert exact is not None
    assert exact.group.name == "nebius/special"
    specific = router.resolve("nebius/meta-llama/Llama-3.3-70B")
    assert specific is not None
    assert specific.group.name == "nebius/meta-llama/*"
    assert specific.group.deployments[0].model_for(specific.wildcard_match) == "meta-llama/Llama-3.3-70B"
    general = router.resolve("nebius/Qwen/Qwen3")
    assert general is not None
    assert general.group.deployments[0].model_for(general.wildcard_match) == "Qwen/Qwen3"
    assert router.resolve("openai/gpt") is None


@pytest.mark.unit
async def test_simple_shuffle_follows_weights() -> None:
    router = _router(
        [_entry("g", "heavy", weight=3), _entry("g", "light", weight=1)], routing_strategy="simple-shuffle"
    )
    group = router.groups["g"]
    picks: Counter[str] = Counter()
    for _ in range(4000):
        deployment = await router.acquire(group, set(), 0)
        picks[deployment.id] += 1
        router.release(deployment)
    assert 0.70 < picks["heavy"] / 4000 < 0.80


@pytest.mark.unit
async def test_least_busy_picks_the_idlest() -> None:
    router = _router([_entry("g", "a"), _entry("g", "b"), _entry("g", "c")], routing_strategy="least-busy")
    group = router.groups["g"]
    taken = [await router.acquire(group, set(), 0) for _ in range(3)]
    assert sorted(d.id for d in taken) == ["a", "b", "c"]
    router.release(next(d for d in taken if d.id == "b"))
    assert (await router.acquire(group, set(), 0)).id == "b"


@pytest.mark.unit
async def test_latency_based_routing_prefers_the_fastest() -> None:
    router = _router([_entry("g", "slow"), _entry("g", "fast")], routing_strategy="latency-based-routing")
    slow, fast = router.groups["g"].deployments
    slow.record_latency(0.9)
    fast.record_latency(0.1)
    assert (await router.acquire(router.groups["g"], set(), 0)).id == "fast"


@pytest.mark.unit
async def test_cooldown_after_allowed_fails_then_recovery() -> None:
    clock = Clock()
    router = _router([_entry("g", "a"), _entry("g", "b")], clock, allowed_fails=2, cooldown_time=10)
    a = router.groups["g"].deployments[0]
    assert not router.record_failure(a)
    assert not router.record_failure(a)
    assert router.record_failure(a)
    for _ in range(20):
        chosen = await router.acquire(router.groups["g"], set(), 0)
        assert chosen.id == "b"
        router.release(chosen)
    clock.now += 10
    assert not router.is_cooling(a)


@pytest.mark.unit
async def test_failures_older_than_a_minute_are_forgotten() -> None:
    clock = Clock()
    router = _router([_entry("g", "a")], clock, allowed_fails=1)
    a = router.groups["g"].deployments[0]
    router.record_failure(a)
    clock.now += 61
    assert not router.record_failure(a)


@pytest.mark.unit
async def test_all_cooling_raises_with_time_left() -> None:
    clock = Clock()
    router = _router([_entry("g", "a")], clock, allowed_fails=0, cooldown_time=7)
    router.record_failure(router.groups["g"].deployments[0])
    clock.now += 2
    with pytest.raises(NoDeploymentAvailable) as caught:
        await router.acquire(router.groups["g"], set(), 0)
    assert caught.value.retry_after == pytest.approx(5)


@pytest.mark.unit
async def test_retry_prefers_a_deployment_not_yet_tried() -> None:
    router = _router([_entry("g", "a"), _entry("g", "b")])
    for _ in range(20):
        chosen = await router.acquire(router.groups["g"], {"a"}, 0)
        assert chosen.id == "b"
        router.release(chosen)
    assert (await router.acquire(router.groups["g"], {"a", "b"}, 0)).id in {"a", "b"}


@pytest.mark.unit
def test_plan_skips_groups_without_vision_for_images() -> None:
    router = _router(
        [_entry("v", "v", vision=True), _entry("t", "t"), _entry("v2", "v2", vision=True)],
        fallbacks=[{"v": ["t", "v2"]}],
    )
    route = router.resolve("v")
    assert route is not None
    assert [r.group.name for r in router.plan(route, has_images=False)] == ["v", "t", "v2"]
    assert [r.group.name for r in router.plan(route, has_images=True)] == ["v", "v2"]


@pytest.mark.unit
def test_default_fallbacks_apply_to_groups_without_their_own() -> None:
    router = _router([_entry("a", "a"), _entry("b", "b")], default_fallbacks=["b"])
    route = router.resolve("a")
    assert route is not None
    assert [r.group.name for r in router.plan(route, has_images=False)] == ["a", "b"]


@pytest.mark.unit
async def test_deployment_rpm_is_enforced() -> None:
    router = _router([_entry("g", "a", rpm=2)])
    group = router.groups["g"]
    for _ in range(2):
        router.release(await router.acquire(group, set(), 0))
    with pytest.raises(RateLimited) as caught:
        await router.acquire(group, set(), 0)
    assert caught.value.retry_after == pytest.approx(30, rel=0.01)


@pytest.mark.unit
async def test_waiting_request_gets_the_released_slot() -> None:
    router = _router([_entry("g", "a", max_parallel_requests=1)])
    group = router.groups["g"]
    held = await router.acquire(group, set(), 0)
    waiter = asyncio.create_task(router.acquire(group, set(), 5))
    await asyncio.sleep(0)
    assert not waiter.done()
    router.release(held)
    assert (await waiter).id == "a"
    with pytest.raises(RateLimited):
        await router.acquire(group, set(), 0)
