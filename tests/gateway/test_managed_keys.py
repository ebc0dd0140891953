"""Managed keys through the admin API (plain HTTP, as LiteLLM's docs show it) and the OpenAI SDK:
teams bound their keys, spend comes from usage and prices, budgets and expiry are enforced, and
every bad input gets a 400/401/403 naming what is wrong."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
import pytest

from gateway.keys.database import KeyDatabase
from tests.conftest import GatewayFactory, RunningGateway, UpstreamFactory, deployment
from tests.fakes import FakeUpstream
from tests.gateway_process import GatewayProcess
from tests.metrics_samples import sample
from tests.waiting import eventually

pytestmark = [pytest.mark.service, pytest.mark.timeout(120)]
MASTER = "sk-master-0123456789"
CONFIG_KEY = "sk-config-0123456789"
ADMIN_KEY = "sk-config-admin-0123456789"
ADMIN = {"Authorization": f"Bearer {MASTER}"}
PRICE_IN, PRICE_OUT = 1e-3, 2e-3
COST = 11 * PRICE_IN + 7 * PRICE_OUT  # the fake reports 11 prompt and 7 completion tokens
BODY = {"model": "vision", "messages": [{"role": "user", "content": "hi"}]}


def _config(fake: FakeUpstream, **settings: Any) -> dict[str, Any]:
    vision = deployment("vision", fake, id="vllm")
    vision["model_info"].update(input_cost_per_token=PRICE_IN, output_cost_per_token=PRICE_OUT)
    chat = deployment("chat", fake, model="openai/gpt-4o", id="cloud")  # priced from litellm's price map
    return {
        "model_list": [vision, chat],
        "general_settings": {"master_key": MASTER},
        "gateway_settings": {
            "api_keys": [{"key": CONFIG_KEY, "name": "config"}, {"key": ADMIN_KEY, "role": "admin"}],
            "spend_flush_seconds": 0.1,
            "key_cache_seconds": 0.2,
            **settings,
        },
    }


async def _start(
    gateway: GatewayFactory, upstream: UpstreamFactory, tmp_path: Path, **settings: Any
) -> tuple[RunningGateway, FakeUpstream]:
    fake = await upstream("vllm")
    gw = await gateway(_config(fake, **settings), keys_database=f"sqlite:///{tmp_path / 'keys.db'}")
    return gw, fake


async def _admin(gw: RunningGateway, path: str, body: dict[str, Any] | None = None, **params: Any) -> httpx.Response:
    if body is None:
        return await gw.http.get(path, headers=ADMIN, params=params)
    return await gw.http.post(path, headers=ADMIN, json=body)


async def _chat(gw: RunningGateway, key: str, model: str = "vision") -> httpx.Response:
    return await gw.http.post(
        "/v1/chat/completions", json={**BODY, "model": model}, headers={"Authorization": f"Bearer {key}"}
    )


async def test_keys_and_teams_through_the_admin_api(
    gateway: GatewayFactory, upstream: UpstreamFactory, tmp_path: Path
) -> None:
    gw, _ = await _start(gateway, upstream, tmp_path)
    team = (await _admin(gw, "/team/new", {"team_alias": "research", "models": ["vision"], "max_budget": 10})).json()
    assert team["team_alias"] == "research"
    assert team["models"] == ["vision"]
    generated = await _admin(
        gw,
        "/key/generate",
        {
            "key_alias": "alice",
            "team_id": team["team_id"],
            "models": ["vision"],
            "max_budget": 5,
            "budget_duration": "30d",
            "rpm_limit": 100,
            "metadata": {"owner": "alice"},
            "duration": "7d",
        },
    )
    assert generated.status_code == 200, generated.text
    created = generated.json()
    secret, token = created["key"], created["token"]
    assert secret.startswith("sk-")
    assert created["key_name"] == f"sk-...{secret[-4:]}"
    assert created["expires"] is not None
    assert created["budget_reset_at"] is not None
    # Shown once: info (by the key or by its token) and lists carry the token, never the key.
    for named in (secret, token):
        info = await _admin(gw, "/key/info", key=named)
        assert info.status_code == 200
        assert info.json()["key"] == token
        assert secret not in info.text
        assert info.json()["info"]["metadata"] == {"owner": "alice"}
    listed = (await _admin(gw, "/key/list", team_id=team["team_id"])).json()
    assert listed == {"keys": [token], "total_count": 1, "current_page": 1, "total_pages": 1}
    # Stored as a digest only.
    assert secret.encode() not in (tmp_path / "keys.db").read_bytes()

    assert (await _chat(gw, secret)).status_code == 200
    assert (await _chat(gw, secret, "chat")).status_code == 403  # outside its models
    blocked = await _admin(gw, "/key/block", {"key": secret})
    assert blocked.json()["blocked"] is True
    refused = await _chat(gw, secret)
    assert refused.status_code == 401
    assert refused.json()["error"]["code"] == "key_blocked"
    await _admin(gw, "/key/unblock", {"key": token})
    assert (await _chat(gw, secret)).status_code == 200

    updated = await _admin(gw, "/key/update", {"key": secret, "key_alias": "alice-2", "rpm_limit": 50})
    assert updated.json()["key_alias"] == "alice-2"
    assert updated.json()["rpm_limit"] == 50
    team_info = (await _admin(gw, "/team/info", team_id=team["team_id"])).json()
    assert [k["token"] for k in team_info["keys"]] == [token]
    renamed = await _admin(gw, "/team/update", {"team_id": team["team_id"], "team_alias": "lab"})
    assert renamed.json()["data"]["team_alias"] == "lab"
    assert [t["team_alias"] for t in (await _admin(gw, "/team/list")).json()] == ["lab"]

    other = (await _admin(gw, "/key/generate", {"key_alias": "bob"})).json()
    deleted = await _admin(gw, "/key/delete", {"key_aliases": ["bob"]})
    assert deleted.json() == {"deleted_keys": [other["token"]]}
    assert (await _chat(gw, other["key"])).status_code == 401
    gone = await _admin(gw, "/team/delete", {"team_ids": [team["team_id"]]})
    assert gone.json() == {"deleted_teams": [team["team_id"]], "deleted_keys": [token]}
    assert (await _chat(gw, secret)).status_code == 401
    # Config keys keep working beside managed ones; a config key with the admin role may administer.
    assert (await _chat(gw, CONFIG_KEY)).status_code == 200
    by_admin = await gw.http.post("/key/generate", json={}, headers={"Authorization": f"Bearer {ADMIN_KEY}"})
    assert by_admin.status_code == 200


@pytest.mark.parametrize(
    ("path", "body", "status", "param", "says"),
    [
        ("/key/generate", {"modles": ["vision"]}, 400, "modles", "unknown field 'modles'"),
        ("/key/generate", {"max_budget": -1}, 400, "max_budget", "greater than or equal to 0"),
        ("/key/generate", {"rpm_limit": -5}, 400, "rpm_limit", "greater than or equal to 1"),
        ("/key/generate", {"team_id": "nope"}, 400, "team_id", "team 'nope' does not exist"),
        ("/key/generate", {"models": ["gpt-9"]}, 400, "models.0", "not served here"),
        ("/key/generate", {"budget_duration": "soon"}, 400, "budget_duration", "not a duration"),
        ("/key/generate", {"duration": "0d"}, 400, "duration", "not a duration"),
        ("/key/update", {"key": "sk-unknown-key-000"}, 404, "key", "no such key"),
        ("/team/new", {"max_budget": -0.5}, 400, "max_budget", "greater than or equal to 0"),
        ("/team/new", {"teamalias": "x"}, 400, "teamalias", "unknown field"),
        ("/team/delete", {}, 400, "team_ids", "Field required"),
        ("/key/delete", {}, 400, "keys", "name the keys"),
        ("/key/generate", {"key": MASTER}, 400, "key", "that key is taken"),
    ],
)
async def test_bad_admin_input_is_refused_naming_the_field(
    gateway: GatewayFactory,
    upstream: UpstreamFactory,
    tmp_path: Path,
    path: str,
    body: dict[str, Any],
    status: int,
    param: str,
    says: str,
) -> None:
    gw, _ = await _start(gateway, upstream, tmp_path)
    response = await _admin(gw, path, body)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["param"] == param
    assert says in error["message"]


async def test_team_bounds_its_keys_and_admin_routes_need_an_admin(
    gateway: GatewayFactory, upstream: UpstreamFactory, tmp_path: Path
) -> None:
    gw, _ = await _start(gateway, upstream, tmp_path)
    team = (await _admin(gw, "/team/new", {"team_id": "lab", "models": ["vision"], "rpm_limit": 10})).json()
    outside = await _admin(gw, "/key/generate", {"team_id": team["team_id"], "models": ["chat"]})
    assert outside.status_code == 400
    assert outside.json()["error"]["message"] == "model 'chat' is not among team 'lab''s models"
    above = await _admin(gw, "/key/generate", {"team_id": "lab", "rpm_limit": 20})
    assert above.json()["error"]["param"] == "rpm_limit"
    # A key without models of its own gets its team's.
    key = (await _admin(gw, "/key/generate", {"team_id": "lab"})).json()["key"]
    assert (await _chat(gw, key)).status_code == 200
    assert (await _chat(gw, key, "chat")).status_code == 403
    # Not an admin: a config key, a managed key; no key at all.
    for caller in (CONFIG_KEY, key):
        refused = await gw.http.post("/key/generate", json={}, headers={"Authorization": f"Bearer {caller}"})
        assert refused.status_code == 403
        assert refused.json()["error"]["code"] == "not_admin"
    assert (await gw.http.get("/key/list")).status_code == 401
    huge = await gw.http.post("/key/generate", content=b"{" + b" " * 300_000 + b"}", headers=ADMIN)
    assert huge.status_code == 413


async def test_spend_from_usage_header_totals_and_metric(
    gateway: GatewayFactory, upstream: UpstreamFactory, tmp_path: Path
) -> None:
    gw, _ = await _start(gateway, upstream, tmp_path, store_spend_logs=True)
    await _admin(gw, "/team/new", {"team_id": "lab"})
    created = (await _admin(gw, "/key/generate", {"team_id": "lab", "key_alias": "sdk"})).json()
    client = gw.openai(api_key=created["key"])
    raw = await client.chat.completions.with_raw_response.create(
        model="vision", messages=[{"role": "user", "content": "hi"}]
    )
    assert float(raw.headers["x-litellm-response-cost"]) == pytest.approx(COST)
    # A model without configured prices is priced from the map inside the litellm package (gpt-4o).
    mapped = await client.chat.completions.with_raw_response.create(
        model="chat", messages=[{"role": "user", "content": "hi"}]
    )
    assert float(mapped.headers["x-litellm-response-cost"]) == pytest.approx(11 * 2.5e-6 + 7 * 1e-5)
    stream = await client.chat.completions.create(
        model="vision",
        messages=[{"role": "user", "content": "hi"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    usage = [chunk.usage async for chunk in stream if chunk.usage is not None][-1]
    streamed_cost = usage.prompt_tokens * PRICE_IN + usage.completion_tokens * PRICE_OUT
    total = COST + 11 * 2.5e-6 + 7 * 1e-5 + streamed_cost

    async def written() -> bool:
        info = (await _admin(gw, "/key/info", key=created["key"])).json()["info"]
        return bool(info["spend"] == pytest.approx(total))

    await eventually(written)  # at once: what this process counted and has not written yet is included

    async def flushed() -> bool:
        days = (await _admin(gw, "/spend/logs")).json()
        return bool(days and days[0]["spend"] == pytest.approx(total))

    await eventually(flushed)
    days = (await _admin(gw, "/spend/logs")).json()
    assert len(days) == 1
    assert days[0]["spend"] == pytest.approx(total)
    assert days[0]["requests"] == 3
    assert days[0]["models"] == {
        "vision": pytest.approx(COST + streamed_cost),
        "chat": pytest.approx(total - COST - streamed_cost),
    }
    assert days[0]["teams"] == {"lab": pytest.approx(total)}
    logs = (await _admin(gw, "/spend/logs", summarize="false")).json()
    assert sorted(log["model_group"] for log in logs) == ["chat", "vision", "vision"]
    assert (await _admin(gw, "/team/info", team_id="lab")).json()["team_info"]["spend"] == pytest.approx(total)
    metrics = (await gw.http.get("/metrics")).text
    assert sample(metrics, "gateway_spend_total", model_group="vision", team="lab") == pytest.approx(
        COST + streamed_cost
    )
    # Config keys' spend is counted too (by their digest), without budgets.
    assert (await _chat(gw, CONFIG_KEY)).status_code == 200
    bad_range = await _admin(gw, "/spend/logs", start_date="2026-13-01")
    assert bad_range.json()["error"]["param"] == "start_date"


async def test_budgets_windows_and_expiry(gateway: GatewayFactory, upstream: UpstreamFactory, tmp_path: Path) -> None:
    gw, _ = await _start(gateway, upstream, tmp_path)
    key = (await _admin(gw, "/key/generate", {"max_budget": 2.5 * COST})).json()["key"]
    statuses = [(await _chat(gw, key)).status_code for _ in range(5)]
    assert statuses == [200, 200, 200, 400, 400]
    refused = (await _chat(gw, key)).json()["error"]
    assert refused["type"] == "budget_exceeded"
    assert refused["code"] == "400"
    assert "Max budget" in refused["message"]
    # Through the SDK the same refusal is a BadRequestError.
    with pytest.raises(openai.BadRequestError):
        await gw.openai(api_key=key).chat.completions.create(
            model="vision", messages=[{"role": "user", "content": "x"}]
        )

    # A team's budget stops every one of its keys.
    await _admin(gw, "/team/new", {"team_id": "lab", "max_budget": 1.5 * COST})
    first, second = [(await _admin(gw, "/key/generate", {"team_id": "lab"})).json()["key"] for _ in range(2)]
    assert (await _chat(gw, first)).status_code == 200
    assert (await _chat(gw, second)).status_code == 200
    assert (await _chat(gw, first)).status_code == 400
    assert (await _chat(gw, second)).json()["error"]["type"] == "budget_exceeded"

    # A window that ends starts a new one: the key may spend again.
    windowed = (await _admin(gw, "/key/generate", {"max_budget": 0.5 * COST, "budget_duration": "2s"})).json()["key"]
    assert (await _chat(gw, windowed)).status_code == 200
    assert (await _chat(gw, windowed)).status_code == 400

    async def reset() -> bool:
        return (await _chat(gw, windowed)).status_code == 200

    await eventually(reset, within_s=8)

    # An expired key is refused with 401.
    short = (await _admin(gw, "/key/generate", {"duration": "1s"})).json()["key"]
    assert (await _chat(gw, short)).status_code == 200

    async def expired() -> bool:
        response = await _chat(gw, short)
        return response.status_code == 401 and response.json()["error"]["code"] == "expired_key"

    await eventually(expired, within_s=5)


async def test_parallel_requests_of_a_key_are_bounded(
    gateway: GatewayFactory, upstream: UpstreamFactory, tmp_path: Path
) -> None:
    fake = await upstream("vllm", delay_s=0.3)
    gw = await gateway(_config(fake), keys_database=f"sqlite:///{tmp_path / 'keys.db'}")
    key = (await _admin(gw, "/key/generate", {"max_parallel_requests": 2})).json()["key"]
    statuses = await asyncio.gather(*(_chat(gw, key) for _ in range(5)))
    assert sorted(r.status_code for r in statuses) == [200, 200, 429, 429, 429]
    # Its slots come back once the requests ended.
    assert (await _chat(gw, key)).status_code == 200


def test_migrations_are_versioned_and_keep_data(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'keys.db'}"
    from gateway.keys.records import Team

    first = KeyDatabase(url)
    first.insert(Team(team_id="kept", created_at=1.0, updated_at=1.0))
    first.close()
    again = KeyDatabase(url)  # opening again applies nothing twice and drops nothing
    assert [t.team_id for t in again.list_teams()] == ["kept"]
    assert again.revision() == 1
    again.close()


async def test_an_embedded_database_that_cannot_be_opened_leaves_managed_keys_unavailable(
    gateway: GatewayFactory, upstream: UpstreamFactory, tmp_path: Path
) -> None:
    fake = await upstream("vllm")
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    gw = await gateway(_config(fake), keys_database=f"sqlite:///{blocker / 'keys.db'}")
    assert (await _chat(gw, CONFIG_KEY)).status_code == 200
    assert (await _chat(gw, "sk-unknown-0123456789")).status_code == 401
    refused = await _admin(gw, "/key/generate", {})
    assert refused.status_code == 503
    assert "set DATABASE_URL" in refused.json()["error"]["message"]


async def test_workers_of_one_host_share_the_embedded_database(upstream: UpstreamFactory, tmp_path: Path) -> None:
    """``gateway serve --workers 2``: both workers use one SQLite file; a key made through either
    works on both within key_cache_seconds, and a stop writes every worker's spend."""
    fake = await upstream("vllm")
    config = _config(fake, key_cache_seconds=0.5)
    process = GatewayProcess(tmp_path / "gateway", config, workers=2)
    try:
        await process.wait_up()
        # A new connection each request, so that requests land on either worker.
        fresh = httpx.Limits(max_keepalive_connections=0)
        async with httpx.AsyncClient(base_url=process.url, timeout=30, limits=fresh) as client:
            created = (await client.post("/key/generate", json={}, headers=ADMIN)).json()
            headers = {"Authorization": f"Bearer {created['key']}"}
            deadline = time.monotonic() + 0.5 + 2.0  # the bound, plus a reload's time on a busy machine
            accepted = 0
            while accepted < 20:  # twenty in a row: both workers know it
                ok = (await client.get("/v1/models", headers=headers)).status_code == 200
                accepted = accepted + 1 if ok else 0
                assert time.monotonic() < deadline, "a worker did not learn of the key in time"
            for _ in range(20):
                assert (await client.post("/v1/chat/completions", json=BODY, headers=headers)).status_code == 200
    finally:
        process.stop()
    database = KeyDatabase(f"sqlite:///{tmp_path / 'gateway' / 'data' / 'gateway-keys.db'}")
    stored = database.key(created["token"])
    database.close()
    assert stored is not None
    assert stored.spend == pytest.approx(20 * COST)


async def test_anthropic_clients_use_managed_keys_and_get_anthropics_envelope(
    gateway: GatewayFactory, upstream: UpstreamFactory, tmp_path: Path
) -> None:
    gw, _ = await _start(gateway, upstream, tmp_path)
    mapped_cost = 11 * 2.5e-6 + 7 * 1e-5  # "chat" is gpt-4o, priced from litellm's map
    key = (await _admin(gw, "/key/generate", {"max_budget": 1.5 * mapped_cost})).json()["key"]
    async with anthropic.AsyncAnthropic(base_url=gw.url, api_key=key, max_retries=0, timeout=30) as client:
        ask = {"model": "chat", "max_tokens": 16, "messages": [{"role": "user", "content": "hi"}]}
        for _ in range(2):
            message = await client.messages.create(**ask)
            assert message.usage.output_tokens == 7
        with pytest.raises(anthropic.BadRequestError) as refused:
            await client.messages.create(**ask)
    assert refused.value.body["type"] == "error"
    assert "Budget has been exceeded" in refused.value.body["error"]["message"]


async def test_bad_query_parameters_get_the_envelope(
    gateway: GatewayFactory, upstream: UpstreamFactory, tmp_path: Path
) -> None:
    gw, _ = await _start(gateway, upstream, tmp_path)
    for path, params, param in (
        ("/key/info", {}, "key"),
        ("/key/list", {"page": "first"}, "page"),
        ("/key/list", {"size": 1000}, "size"),
        ("/team/info", {}, "team_id"),
        ("/spend/logs", {"summarize": "maybe"}, "summarize"),
    ):
        response = await _admin(gw, path, **params)
        assert response.status_code == 400, (path, response.text)
        assert response.json()["error"]["param"] == param
        assert response.json()["error"]["type"] == "invalid_request_error"
