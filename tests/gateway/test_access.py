"""Authentication, per-key limits and the error envelope for bad input."""

from __future__ import annotations

from typing import Any

import openai
import pytest

from tests.conftest import GatewayFactory, UpstreamFactory, deployment

pytestmark = pytest.mark.service

HI = [{"role": "user", "content": "hi"}]
MASTER = "sk-master-0123456789"
TEAM = "sk-team-a-0123456789"


async def _secured(upstream: UpstreamFactory, gateway: GatewayFactory, **gateway_settings: Any):
    fake = await upstream("vllm")
    config = {
        "model_list": [deployment("vision", fake), deployment("chat", fake)],
        "general_settings": {"master_key": "os.environ/MASTER_KEY"},
        "gateway_settings": {
            "api_keys": [{"key": TEAM, "name": "team-a", "models": ["vision"], "rpm": 3}],
            **gateway_settings,
        },
    }
    return fake, await gateway(config, env={"MASTER_KEY": MASTER})


def _envelope_ok(body: dict[str, Any]) -> dict[str, Any]:
    assert set(body) == {"error"}
    assert set(body["error"]) == {"message", "type", "param", "code"}
    error: dict[str, Any] = body["error"]
    return error


async def test_missing_and_wrong_keys_get_401(upstream: UpstreamFactory, gateway: GatewayFactory) -> None:
    _, gw = await _secured(upstream, gateway)
    missing = await gw.http.post("/v1/chat/completions", json={"model": "vision", "messages": HI})
    assert missing.status_code == 401
    assert _envelope_ok(missing.json())["code"] == "invalid_api_key"
    with pytest.raises(openai.AuthenticationError):
        await gw.openai(api_key="sk-wrong-key-000").chat.completions.create(model="vision", messages=HI)
    with pytest.raises(openai.AuthenticationError):
        await gw.openai(api_key="sk-wrong-key-000").models.list()


async def test_master_key_reaches_every_group(upstream: UpstreamFactory, gateway: GatewayFactory) -> None:
    _, gw = await _secured(upstream, gateway)
    client = gw.openai(api_key=MASTER)
    for model in ("vision", "chat"):
        answer = await client.chat.completions.create(model=model, messages=HI)
        assert answer.model == model


async def test_key_limited_to_its_models_gets_403(upstream: UpstreamFactory, gateway: GatewayFactory) -> None:
    fake, gw = await _secured(upstream, gateway)
    client = gw.openai(api_key=TEAM)
    await client.chat.completions.create(model="vision", messages=HI)
    with pytest.raises(openai.PermissionDeniedError) as caught:
        await client.chat.completions.create(model="chat", messages=HI)
    assert "chat" in str(caught.value)
    assert [m.id for m in (await client.models.list()).data] == ["vision"]
    assert len(fake.bodies) == 1


async def test_key_over_its_rpm_gets_429_with_retry_after(upstream: UpstreamFactory, gateway: GatewayFactory) -> None:
    _, gw = await _secured(upstream, gateway)
    headers = {"Authorization": f"Bearer {TEAM}"}
    statuses = []
    for _ in range(4):
        response = await gw.http.post("/v1/chat/completions", json={"model": "vision", "messages": HI}, headers=headers)
        statuses.append(response.status_code)
    assert statuses == [200, 200, 200, 429]
    assert int(response.headers["retry-after"]) >= 1
    assert _envelope_ok(response.json())["type"] == "rate_limit_error"


async def test_keys_never_appear_in_logs(
    upstream: UpstreamFactory, gateway: GatewayFactory, caplog: pytest.LogCaptureFixture
) -> None:
    _, gw = await _secured(upstream, gateway)
    caplog.set_level("DEBUG")
    await gw.http.post(
        "/v1/chat/completions",
        json={"model": "vision", "messages": HI},
        headers={"Authorization": "Bearer sk-wrong-key-000"},
    )
    await gw.http.post(
        "/v1/chat/completions", json={"model": "vision", "messages": HI}, headers={"Authorization": f"Bearer {TEAM}"}
    )
    logged = caplog.text + " ".join(str(r.__dict__) for r in caplog.records)
    assert TEAM not in logged
    assert "sk-wrong-key-000" not in logged


@pytest.mark.parametrize(
    ("payload", "status", "param", "fragment"),
    [
        (b"{not json", 400, None, "not valid JSON"),
        (b"", 400, None, "empty"),
        (b"[1, 2]", 400, None, "JSON object"),
        (b'{"messages": [{"role": "user", "content": "hi"}]}', 400, "model", "'model' is required"),
        (b'{"model": "vision"}', 400, "messages", "'messages' is required"),
        (b'{"model": "vision", "messages": []}', 400, "messages", "'messages' is required"),
        (b'{"model": "vision", "messages": "hi"}', 400, "messages", "must be a list"),
        (b'{"model": "vision", "messages": [{"role": "user", "content": "x"}], "stream": "yes"}', 400, "stream", ""),
        (b'{"model": "nope", "messages": [{"role": "user", "content": "x"}]}', 404, "model", "not served here"),
    ],
)
async def test_bad_input_gets_openai_errors(
    upstream: UpstreamFactory,
    gateway: GatewayFactory,
    payload: bytes,
    status: int,
    param: str | None,
    fragment: str,
) -> None:
    fake, gw = await _secured(upstream, gateway)
    response = await gw.http.post(
        "/v1/chat/completions",
        content=payload,
        headers={"Authorization": f"Bearer {MASTER}", "Content-Type": "application/json"},
    )
    assert response.status_code == status
    error = _envelope_ok(response.json())
    assert error["param"] == param
    assert fragment in error["message"]
    assert fake.bodies == []


async def test_body_over_limit_gets_413(upstream: UpstreamFactory, gateway: GatewayFactory) -> None:
    fake, gw = await _secured(upstream, gateway, max_body_bytes=1024)
    big = {"model": "vision", "messages": [{"role": "user", "content": "x" * 2048}]}
    response = await gw.http.post("/v1/chat/completions", json=big, headers={"Authorization": f"Bearer {MASTER}"})
    assert response.status_code == 413
    assert _envelope_ok(response.json())["code"] == "request_too_large"

    async def chunks():
        yield b'{"model": "vision", "messages": [{"role": "user", "content": "'
        yield b"x" * 4096
        yield b'"}]}'

    streamed = await gw.http.post(
        "/v1/chat/completions", content=chunks(), headers={"Authorization": f"Bearer {MASTER}"}
    )
    assert streamed.status_code == 413
    assert fake.bodies == []


async def test_unknown_route_and_method_use_the_envelope(upstream: UpstreamFactory, gateway: GatewayFactory) -> None:
    _, gw = await _secured(upstream, gateway)
    missing = await gw.http.get("/v1/nothing-here")
    assert missing.status_code == 404
    assert _envelope_ok(missing.json())["code"] == "not_found"
    wrong_method = await gw.http.get("/v1/chat/completions")
    assert wrong_method.status_code == 405
    _envelope_ok(wrong_method.json())


@pytest.mark.parametrize(
    ("allowed", "listed"),
    [
        (["nebius/Qwen/Qwen3-32B"], ["nebius/Qwen/Qwen3-32B"]),  # a concrete name under the wildcard
        (["nebius/*"], ["nebius/*"]),  # the wildcard group itself
    ],
)
async def test_keys_restricted_to_wildcard_models_work(
    upstream: UpstreamFactory, gateway: GatewayFactory, allowed: list[str], listed: list[str]
) -> None:
    fake = await upstream("cloud")
    key = "sk-wildcard-0123456789"
    config = {
        "model_list": [deployment("vision", fake), deployment("nebius/*", fake, model="nebius/*")],
        "gateway_settings": {"api_keys": [{"key": key, "models": allowed}]},
    }
    gw = await gateway(config)
    client = gw.openai(api_key=key)
    answer = await client.chat.completions.create(model="nebius/Qwen/Qwen3-32B", messages=HI)
    assert answer.model == "nebius/Qwen/Qwen3-32B"
    assert fake.bodies[-1]["model"] == "Qwen/Qwen3-32B"
    models = [m.id async for m in client.models.list()]
    assert models == listed
    with pytest.raises(openai.PermissionDeniedError):
        await client.chat.completions.create(model="vision", messages=HI)
    if allowed == ["nebius/Qwen/Qwen3-32B"]:
        with pytest.raises(openai.PermissionDeniedError):
            await client.chat.completions.create(model="nebius/deepseek-ai/DeepSeek-V3", messages=HI)


async def test_only_deployments_that_ask_get_the_clients_authorization(
    upstream: UpstreamFactory, gateway: GatewayFactory
) -> None:
    own, forwarded = await upstream("own-key"), await upstream("checks-callers")
    config = {
        "model_list": [
            {"model_name": "chat", "litellm_params": {**deployment("chat", own)["litellm_params"], "api_key": "sk-op"}},
            {
                "model_name": "video/*",
                "litellm_params": {
                    "model": "openai/video/*",
                    "api_base": forwarded.url,
                    "api_key": "sk-operator-key",
                    "forward_client_authorization": True,
                },
            },
        ],
        "gateway_settings": {"api_keys": [{"key": TEAM}]},
    }
    gw = await gateway(config)
    client = gw.openai(api_key=TEAM)
    await client.chat.completions.create(model="chat", messages=HI)
    assert own.headers[-1]["Authorization"] == "Bearer sk-op"
    await client.chat.completions.create(model="video/s1", messages=HI)
    assert forwarded.headers[-1]["Authorization"] == f"Bearer {TEAM}", "the caller's own key, not the operator's"
    assert [k for k in forwarded.headers[-1] if k.lower() == "authorization"] == ["Authorization"]
    assert forwarded.bodies[-1]["model"] == "video/s1"

    # A forwarded key the service refuses is the caller's error (401), not an operator's (502).
    forwarded.behaviour.fail_status = 401
    forwarded.behaviour.fail_body = b'{"error": {"message": "invalid API key", "code": "invalid_api_key"}}'
    with pytest.raises(openai.AuthenticationError) as refused:
        await client.chat.completions.create(model="video/s1", messages=HI)
    assert refused.value.status_code == 401
    assert refused.value.message.endswith("invalid API key")


def test_forwarding_the_clients_authorization_needs_an_openai_compatible_provider() -> None:
    from gateway.config import ConfigError, parse_config
    from gateway.deployments import build_deployments

    entry = {"model_name": "c", "litellm_params": {"model": "anthropic/claude", "forward_client_authorization": True}}
    with pytest.raises(ConfigError, match="forward_client_authorization needs an OpenAI-compatible provider"):
        build_deployments(parse_config({"model_list": [entry]}, {}).config, {})
