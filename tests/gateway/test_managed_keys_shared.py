"""Three ``gateway serve`` replicas sharing managed keys in a real PostgreSQL (and a real Redis for
change notices): changes reach every replica within the bound, a team's budget stops all of them,
and a replica killed with SIGKILL loses at most one flush interval of spend."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from tests.conftest import GatewayFactory, UpstreamFactory, deployment
from tests.fakes import FakeUpstream
from tests.gateway_process import GatewayProcess
from tests.postgres_server import PostgresServer, own_postgres_server, postgres_server
from tests.redis_server import RedisServer, redis_server

__all__ = ["own_postgres_server", "postgres_server", "redis_server"]

pytestmark = [pytest.mark.service, pytest.mark.timeout(240)]
MASTER = "sk-master-0123456789"
ADMIN = {"Authorization": f"Bearer {MASTER}"}
PRICE_IN, PRICE_OUT = 1e-3, 2e-3
COST = 11 * PRICE_IN + 7 * PRICE_OUT
BODY = {"model": "vision", "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture
def database(postgres_server: PostgresServer) -> str:
    return postgres_server.new_database()


def _config(fake: FakeUpstream, redis: RedisServer | None = None, **settings: Any) -> dict[str, Any]:
    vision = deployment("vision", fake, id="vllm")
    vision["model_info"].update(input_cost_per_token=PRICE_IN, output_cost_per_token=PRICE_OUT)
    config: dict[str, Any] = {
        "model_list": [vision],
        "general_settings": {"master_key": MASTER},
        "gateway_settings": {"spend_flush_seconds": 0.2, "key_cache_seconds": 30, **settings},
    }
    if redis is not None:
        config["router_settings"] = {"redis_host": "127.0.0.1", "redis_port": redis.port}
    return config


@asynccontextmanager
async def _replicas(
    tmp_path: Path, config: dict[str, Any], database: str, count: int = 3
) -> AsyncIterator[list[GatewayProcess]]:
    """``count`` replicas sharing ``database``; the ones still running are stopped at the end."""
    env = {"DATABASE_URL": database}
    gateways = [GatewayProcess(tmp_path / f"gateway-{i}", config, env=env) for i in range(count)]
    try:
        await asyncio.gather(*(g.wait_up() for g in gateways))
        yield gateways
    finally:
        for gateway in gateways:
            if gateway.process.poll() is None:
                gateway.stop()


async def _chat(client: httpx.AsyncClient, gateway: GatewayProcess, key: str) -> httpx.Response:
    return await client.post(
        f"{gateway.url}/v1/chat/completions", json=BODY, headers={"Authorization": f"Bearer {key}"}
    )


async def _until(client: httpx.AsyncClient, gateways: list[GatewayProcess], key: str, status: int) -> float:
    """Seconds until every one of ``gateways`` answers ``key`` with ``status``."""
    started = time.monotonic()
    waiting = list(gateways)
    while waiting:
        assert time.monotonic() - started < 20, f"still not {status} after 20 s"
        waiting = [g for g in waiting if (await _chat(client, g, key)).status_code != status]
        if waiting:
            await asyncio.sleep(0.02)
    return time.monotonic() - started


async def _known(client: httpx.AsyncClient, gateways: list[GatewayProcess], key: str) -> None:
    """Wait until every replica accepts ``key`` (GET /v1/models: authenticated, costs nothing)."""
    deadline = time.monotonic() + 20
    for gateway in gateways:
        while (
            await client.get(f"{gateway.url}/v1/models", headers={"Authorization": f"Bearer {key}"})
        ).status_code != 200:
            assert time.monotonic() < deadline, "a replica never learned of the key"
            await asyncio.sleep(0.02)


def _stored_spend(database: str, token: str) -> float:
    with psycopg.connect(database) as conn:
        row = conn.execute("SELECT spend FROM managed_keys WHERE token = %s", (token,)).fetchone()
    assert row is not None
    return float(row[0])


async def test_changes_reach_every_replica_at_once_through_redis(
    upstream: UpstreamFactory, redis_server: RedisServer, database: str, tmp_path: Path
) -> None:
    fake = await upstream("vllm")
    async with (
        _replicas(tmp_path, _config(fake, redis_server), database) as gateways,  # polling every 30 s only
        httpx.AsyncClient(timeout=30) as client,
    ):
        created = await client.post(f"{gateways[0].url}/key/generate", json={}, headers=ADMIN)
        key = created.json()["key"]
        assert await _until(client, gateways, key, 200) < 2.0
        await client.post(f"{gateways[1].url}/key/block", json={"key": key}, headers=ADMIN)
        assert await _until(client, gateways, key, 401) < 2.0
        await client.post(f"{gateways[2].url}/key/unblock", json={"key": key}, headers=ADMIN)
        assert await _until(client, gateways, key, 200) < 2.0
        await client.post(f"{gateways[1].url}/key/delete", json={"keys": [key]}, headers=ADMIN)
        assert await _until(client, gateways, key, 401) < 2.0


async def test_without_redis_changes_reach_replicas_within_key_cache_seconds(
    upstream: UpstreamFactory, database: str, tmp_path: Path
) -> None:
    fake = await upstream("vllm")
    async with (
        _replicas(tmp_path, _config(fake, key_cache_seconds=1.0), database) as gateways,
        httpx.AsyncClient(timeout=30) as client,
    ):
        key = (await client.post(f"{gateways[0].url}/key/generate", json={}, headers=ADMIN)).json()["key"]
        assert await _until(client, gateways, key, 200) <= 1.0 + 1.0  # the bound, plus a reload on a busy machine
        await client.post(f"{gateways[2].url}/key/delete", json={"keys": [key]}, headers=ADMIN)
        assert await _until(client, gateways, key, 401) <= 1.0 + 1.0


async def test_a_teams_budget_spent_across_replicas_stops_all_of_them(
    upstream: UpstreamFactory, database: str, tmp_path: Path
) -> None:
    fake = await upstream("vllm", delay_s=0.05)
    budget_requests, workers = 20, 6
    async with _replicas(tmp_path, _config(fake, key_cache_seconds=0.5), database) as gateways:
        async with httpx.AsyncClient(timeout=30) as client:
            admin = gateways[0].url
            await client.post(
                f"{admin}/team/new", json={"team_id": "lab", "max_budget": budget_requests * COST}, headers=ADMIN
            )
            keys = [
                (await client.post(f"{admin}/key/generate", json={"team_id": "lab"}, headers=ADMIN)).json()["key"]
                for _ in range(3)
            ]
            for key in keys:
                await _known(client, gateways, key)
            served = 0
            rate_s: list[float] = []

            async def spend(worker: int) -> None:
                nonlocal served
                index = worker
                while True:
                    started = time.monotonic()
                    response = await _chat(client, gateways[index % 3], keys[index % 3])
                    index += 1
                    if response.status_code != 200:
                        assert response.json()["error"]["type"] == "budget_exceeded"
                        return
                    served += 1
                    rate_s.append(time.monotonic() - started)

            await asyncio.gather(*(spend(w) for w in range(workers)))
            # Within one flush interval every replica refuses every key of the team.
            stopped = time.monotonic()
            for gateway in gateways:
                for key in keys:
                    while (await _chat(client, gateway, key)).status_code == 200:
                        served += 1
                        await asyncio.sleep(0.02)
            assert time.monotonic() - stopped < 0.2 + 1.0
            # Overshoot: the requests in flight, plus what the replicas served within one flush interval
            # (each replica learns the others' spend when it writes its own and reads the totals back).
            per_request_s = sum(rate_s) / len(rate_s)
            within_flush = workers * 0.2 / per_request_s
            assert budget_requests <= served <= budget_requests + workers + within_flush + 2, (served, within_flush)
        for gateway in gateways:
            gateway.stop()  # a graceful stop writes what is left
        with psycopg.connect(database) as conn:
            team_spend = conn.execute("SELECT spend FROM managed_teams WHERE team_id = 'lab'").fetchone()
        assert team_spend is not None
        assert float(team_spend[0]) == pytest.approx(served * COST)


async def test_a_replica_killed_with_sigkill_loses_at_most_one_flush_interval(
    upstream: UpstreamFactory, database: str, tmp_path: Path
) -> None:
    fake = await upstream("vllm", delay_s=0.01)
    flush_s = 0.5
    config = _config(fake, spend_flush_seconds=flush_s, key_cache_seconds=0.5)
    async with _replicas(tmp_path, config, database) as gateways:
        victim = gateways[1]
        async with httpx.AsyncClient(timeout=30) as client:
            created = (await client.post(f"{gateways[0].url}/key/generate", json={}, headers=ADMIN)).json()
            key, token = created["key"], created["token"]
            await _known(client, [victim], key)
            acknowledged: list[tuple[float, float]] = []  # (when the answer arrived, its cost)
            started = time.monotonic()
            while time.monotonic() - started < 2.3:
                response = await _chat(client, victim, key)
                assert response.status_code == 200
                acknowledged.append((time.monotonic(), float(response.headers["x-litellm-response-cost"])))
            victim.kill()
            killed_at = time.monotonic()
        stored = _stored_spend(database, token)
        total = sum(cost for _, cost in acknowledged)
        safe = sum(cost for at, cost in acknowledged if at < killed_at - flush_s - 0.2)
        assert stored <= total + 1e-9
        assert stored >= safe - 1e-9, (stored, safe, total)
        assert total - stored <= sum(cost for at, cost in acknowledged if at >= killed_at - flush_s - 0.2) + 1e-9
        # The survivors see what was written.
        async with httpx.AsyncClient(timeout=30) as client:
            info = (await client.get(f"{gateways[2].url}/key/info", params={"key": key}, headers=ADMIN)).json()
        assert info["info"]["spend"] == pytest.approx(stored)


async def test_the_request_path_never_waits_on_the_database(
    upstream: UpstreamFactory, gateway: GatewayFactory, own_postgres_server: PostgresServer
) -> None:
    """PostgreSQL stops mid-run: managed keys keep working from the cache, their spend is kept in
    memory and written once the database is back; admin routes say 503 meanwhile."""
    database = own_postgres_server.new_database()
    fake = await upstream("vllm")
    gw = await gateway(_config(fake, spend_flush_seconds=0.1, key_cache_seconds=0.2), keys_database=database)
    created = (await gw.http.post("/key/generate", json={"max_budget": 100}, headers=ADMIN)).json()
    key = created["key"]
    headers = {"Authorization": f"Bearer {key}"}
    assert (await gw.http.post("/v1/chat/completions", json=BODY, headers=headers)).status_code == 200
    own_postgres_server.stop()
    for _ in range(5):
        response = await gw.http.post("/v1/chat/completions", json=BODY, headers=headers)
        assert response.status_code == 200
    admin = await gw.http.get("/key/list", headers=ADMIN)
    assert admin.status_code == 503
    assert "127.0.0.1" in admin.json()["error"]["message"]  # where, never the credentials
    own_postgres_server.start()
    deadline = time.monotonic() + 20
    while True:
        info = await gw.http.get("/key/info", params={"key": key}, headers=ADMIN)
        if info.status_code == 200 and _stored_spend(database, created["token"]) == pytest.approx(6 * COST):
            break
        assert time.monotonic() < deadline, "the spend kept during the outage was not written"
        await asyncio.sleep(0.1)


async def test_managed_keys_load_once_the_database_is_reachable(
    upstream: UpstreamFactory, gateway: GatewayFactory, own_postgres_server: PostgresServer
) -> None:
    database = own_postgres_server.new_database()
    fake = await upstream("vllm")
    config = _config(fake)
    config["gateway_settings"]["api_keys"] = [{"key": "sk-config-0123456789"}]
    first = await gateway(config, keys_database=database)
    key = (await first.http.post("/key/generate", json={}, headers=ADMIN)).json()["key"]
    own_postgres_server.stop()
    gw = await gateway(config, keys_database=database)  # starts while PostgreSQL is down
    config_key = {"Authorization": "Bearer sk-config-0123456789"}
    assert (await gw.http.post("/v1/chat/completions", json=BODY, headers=config_key)).status_code == 200
    waiting = await gw.http.post("/v1/chat/completions", json=BODY, headers={"Authorization": f"Bearer {key}"})
    assert waiting.status_code == 503  # it may be a valid key: not a 401
    assert waiting.headers["retry-after"] == "5"
    own_postgres_server.start()
    deadline = time.monotonic() + 20
    while (
        await gw.http.post("/v1/chat/completions", json=BODY, headers={"Authorization": f"Bearer {key}"})
    ).status_code != 200:
        assert time.monotonic() < deadline, "managed keys were never loaded"
        await asyncio.sleep(0.1)
