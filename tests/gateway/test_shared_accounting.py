"""What the shared limits record in a real Redis: every token usage counted, a running stream's
slot kept, queued releases never lost to a cancelled admission."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as redis

from gateway.deployment import Deployment
from gateway.limits.shared import PREFIX, KeyLimits, SharedLimits
from gateway.metrics import Metrics
from tests.redis_server import RedisServer, redis_server

__all__ = ["redis_server"]

pytestmark = [pytest.mark.service, pytest.mark.timeout(60)]


def _deployment(**fields: object) -> Deployment:
    values: dict[str, object] = {"timeout": 600.0, "stream_timeout": 600.0, "max_parallel": 4, **fields}
    return Deployment(
        id="vllm",
        group="vision",
        provider="hosted_vllm",
        upstream_model="m",
        api_base="http://127.0.0.1:9/v1",
        api_key=None,
        weight=1.0,
        supports_vision=True,
        **values,  # type: ignore[arg-type]
    )


@pytest.fixture
async def shared(redis_server: RedisServer) -> AsyncIterator[SharedLimits]:
    limits = SharedLimits.from_url(redis_server.url, Metrics(lambda: [], lambda: 0.0, multiprocess_dir=""))
    await limits.start()
    yield limits
    await limits.close()


@pytest.fixture
async def raw(redis_server: RedisServer) -> AsyncIterator[redis.Redis]:
    client = redis.Redis.from_url(redis_server.url)
    yield client
    await client.aclose()


async def test_equal_usages_flushed_apart_are_all_counted(shared: SharedLimits, raw: redis.Redis) -> None:
    caller = KeyLimits("k", rpm=None, tpm=1000, check_local=lambda: None)
    for _ in range(3):
        shared.record_usage(caller, 10)
        await shared.flush()
    members = await raw.zrange(f"{PREFIX}key:k:tpm", 0, -1)
    assert sum(int(m.split(b":")[0]) for m in members) == 30


async def test_a_streams_slot_outlives_its_gaps_and_is_renewed(shared: SharedLimits, raw: redis.Redis) -> None:
    deployment = _deployment(timeout=1.0, stream_timeout=300.0)
    lease = shared.new_lease()
    assert (await shared.admit(deployment, None, lease)).outcome == "ok"
    slots = f"{PREFIX}deployment:vllm:slots"
    now_ms = (await raw.time())[0] * 1000
    first = await raw.zscore(slots, lease)
    assert first is not None
    assert first - now_ms >= 300_000  # a stream may wait 300 s between two chunks
    await asyncio.sleep(0.01)
    shared.renew(deployment, lease)
    await shared.flush()
    renewed = await raw.zscore(slots, lease)
    assert renewed is not None
    assert renewed > first
    shared.release(deployment, lease)
    await shared.flush()
    shared.renew(deployment, lease)  # a renewal after the release adds nothing back
    await shared.flush()
    assert await raw.zscore(slots, lease) is None


async def test_releases_survive_a_cancelled_admission(redis_server: RedisServer, raw: redis.Redis) -> None:
    deployment = _deployment()
    first = SharedLimits.from_url(redis_server.url, Metrics(lambda: [], lambda: 0.0, multiprocess_dir=""))
    lease = first.new_lease()
    assert (await first.admit(deployment, None, lease)).outcome == "ok"
    await first.close()
    # A new process's first admission is cancelled (its client left) while it still connects.
    shared = SharedLimits.from_url(redis_server.url, Metrics(lambda: [], lambda: 0.0, multiprocess_dir=""))
    shared.release(deployment, lease)
    admission = asyncio.create_task(shared.admit(deployment, None, shared.new_lease()))
    await asyncio.sleep(0)
    admission.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await admission
    await shared.flush()
    await shared.close()
    assert await raw.zscore(f"{PREFIX}deployment:vllm:slots", lease) is None


def test_leases_are_the_gateways_own() -> None:
    limits = SharedLimits(redis.Redis(), Metrics(lambda: [], lambda: 0.0, multiprocess_dir=""))
    assert len({limits.new_lease() for _ in range(1000)}) == 1000
    other = SharedLimits(redis.Redis(), Metrics(lambda: [], lambda: 0.0, multiprocess_dir=""))
    assert limits.new_lease() != other.new_lease()
