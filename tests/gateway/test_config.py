"""Loading LiteLLM-format configs, and the check-config command."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from gateway.cli import main
from gateway.config import ConfigError, check_secrets, load_config, parse_config
from gateway.routing import Router

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE_ENV = {
    "VLLM_0_API_BASE": "http://127.0.0.1:8000/v1",
    "VLLM_1_API_BASE": "http://127.0.0.1:8001/v1",
    "NEBIUS_API_KEY": "nb-123456",
    "GATEWAY_MASTER_KEY": "sk-a-real-master-key",
    "VIDEO_SERVICE_KEY": "sk-a-real-video-key",
}


def _entry(name: str = "vision", model: str = "hosted_vllm/qwen", **params: object) -> dict[str, object]:
    return {"model_name": name, "litellm_params": {"model": model, "api_base": "http://127.0.0.1:1/v1", **params}}


def test_example_config_loads_with_every_group() -> None:
    loaded = load_config(ROOT / "config.example.yaml", EXAMPLE_ENV)
    router = Router(loaded.config, EXAMPLE_ENV)
    assert list(router.groups) == ["vision", "chat", "structured", "nebius/*"]
    assert [d.api_base for d in router.groups["vision"].deployments] == [
        "http://127.0.0.1:8000/v1",
        "http://127.0.0.1:8001/v1",
    ]
    chat = router.groups["chat"].deployments[0]
    assert chat.api_base == "https://api.tokenfactory.nebius.com/v1"
    assert chat.api_key == "nb-123456"
    assert router.groups["nebius/*"].deployments[0].api_base == "https://api.tokenfactory.nebius.com/v1"
    assert loaded.warnings == []


def test_litellm_config_with_foreign_keys_loads_and_reports_them() -> None:
    raw = {
        "model_list": [_entry(tpm=1000, drop_params=True)],
        "litellm_settings": {"success_callback": ["langfuse"], "num_retries": 4},
        "router_settings": {"redis_host": "redis", "redis_db": 3},
        "general_settings": {"alerting": ["slack"]},
        "callbacks": ["x"],
    }
    loaded = parse_config(raw, {})
    assert loaded.config.router_settings.num_retries == 4
    assert sorted(loaded.warnings) == [
        "callbacks: not used by this gateway",
        "general_settings.alerting: not used by this gateway",
        "litellm_settings.success_callback: not used by this gateway",
        "model_list 'vision' litellm_params.drop_params: not used by this gateway",
        "model_list 'vision' litellm_params.tpm: not used by this gateway",
        "router_settings.redis_db: not used by this gateway",
    ]
    assert loaded.config.router_settings.redis_address() == "redis://redis:6379/0"


def test_env_references_resolve_from_environment_variables_section() -> None:
    raw = {
        "model_list": [_entry(api_key="os.environ/VLLM_KEY")],
        "environment_variables": {"VLLM_KEY": "from-config"},
    }
    assert parse_config(raw, {}).config.model_list[0].litellm_params.api_key == "from-config"
    assert parse_config(raw, {"VLLM_KEY": "from-env"}).config.model_list[0].litellm_params.api_key == "from-env"


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"model_list": [_entry(api_key="os.environ/NOPE")]}, "environment variable NOPE, which is not set"),
        ({"model_list": []}, "model_list"),
        ({"model_list": [_entry()], "gateway_settings": {"max_body": 1}}, "gateway_settings.max_body: unknown key"),
        ({"model_list": [_entry(timeout="soon")]}, "timeout"),
        ({"model_list": [_entry(model="qwen")]}, "needs a provider prefix"),
        ({"model_list": [_entry(name="x", model="nebius/*")]}, "has a '*' but model_name does not"),
        (
            {"model_list": [_entry()], "router_settings": {"fallbacks": [{"vision": ["nope"]}]}},
            "fallbacks names 'nope'",
        ),
        (
            {"model_list": [_entry()], "router_settings": {"routing_strategy": "usage-based-routing-v2"}},
            "not supported",
        ),
        (
            {"model_list": [_entry()], "gateway_settings": {"api_keys": [{"key": "sk-123456789", "models": ["x"]}]}},
            "names 'x'",
        ),
    ],
)
def test_bad_configs_are_refused_with_the_key_named(raw: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(raw, {})
    assert message in str(caught.value)


def test_other_providers_take_the_sdk_path_and_unknown_ones_are_refused() -> None:
    from gateway.sdk import check_providers

    loaded = parse_config({"model_list": [_entry(model="bedrock/claude", aws_region_name="eu-west-1")]}, {})
    (deployment,) = Router(loaded.config, {}).groups["vision"].deployments
    assert deployment.sdk
    assert deployment.sdk_params == {"aws_region_name": "eu-west-1"}
    assert loaded.warnings == []  # the SDK takes its providers' own litellm_params
    check_providers({"bedrock", "anthropic", "gemini", "azure"})
    with pytest.raises(ConfigError, match="unknown provider"):
        check_providers({"nonsense"})


def test_vllm_without_api_base_is_refused() -> None:
    loaded = parse_config({"model_list": [{"model_name": "v", "litellm_params": {"model": "hosted_vllm/q"}}]}, {})
    with pytest.raises(ConfigError, match=r"needs litellm_params\.api_base"):
        Router(loaded.config, {})


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"api_base": "ftp://models.internal/v1"}, "not an http(s) URL"),
        ({"api_base": "http://admin:secret@vllm:8000/v1"}, "carries credentials"),
        ({"api_base": "http://vllm:8000/v1", "extra_headers": {"X-Team": "a\r\nHost: other"}}, "line break"),
        ({"api_base": "http://vllm:8000/v1", "api_key": "sk-\nsecret"}, "line break"),
    ],
)
def test_deployments_whose_requests_cannot_be_written_are_refused(params: dict[str, object], message: str) -> None:
    entry = {"model_name": "v", "litellm_params": {"model": "hosted_vllm/q", **params}}
    loaded = parse_config({"model_list": [entry]}, {})
    with pytest.raises(ConfigError, match=f"model_list .v.: .*{re.escape(message)}") as caught:
        Router(loaded.config, {})
    assert "secret" not in str(caught.value)


def test_placeholder_secrets_are_refused() -> None:
    loaded = parse_config({"model_list": [_entry()], "general_settings": {"master_key": "sk-1234"}}, {})
    with pytest.raises(ConfigError, match="placeholder"):
        check_secrets(loaded.config)


def test_check_config_prints_routing_table(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("\n".join(f"{k}={v}" for k, v in EXAMPLE_ENV.items()))
    assert main(["check-config", str(ROOT / "config.example.yaml"), "--env-file", str(env_file)]) == 0
    out = capsys.readouterr().out
    assert "vllm-1" in out
    assert "fallback: chat -> structured" in out
    assert "nb-123456" not in out


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "cannot read"),
        ("model_list: [", "not valid YAML"),
        ("- a\n- b\n", "expected a mapping"),
        ("model_list:\n  - model_name: x\n", "litellm_params"),
    ],
)
def test_check_config_fails_clearly(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, content: str | None, message: str
) -> None:
    path = tmp_path / "config.yaml"
    if content is not None:
        path.write_text(content)
    assert main(["check-config", str(path), "--env-file", str(tmp_path / "none")]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: {path}")
    assert message in err
