"""Loading of LiteLLM proxy ``config.yaml`` files into a validated, resolved form.

A user's existing LiteLLM config must load unchanged, so LiteLLM keys this gateway
does not act on are accepted and reported as warnings. Our own keys live in the
``gateway_settings`` section, whose schema is strict.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import quote

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from common.headers import SESSION_HEADER
from gateway.endpoints import FAMILIES
from gateway.providers import PASSTHROUGH_PROVIDERS

ENV_REFERENCE = "os.environ/"
RoutingStrategy = Literal["simple-shuffle", "least-busy", "latency-based-routing", "engine-aware"]
ROUTING_STRATEGIES: tuple[RoutingStrategy, ...] = (
    "simple-shuffle",
    "least-busy",
    "latency-based-routing",
    "engine-aware",
)


class ConfigError(Exception):
    """A config file that cannot be used; the message names the file and the key."""


class _Lenient(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class LiteLLMParams(_Lenient):
    model: str
    api_base: str | None = None
    api_key: str | None = None
    timeout: float | None = Field(default=None, gt=0)
    stream_timeout: float | None = Field(default=None, gt=0)
    rpm: int | None = Field(default=None, gt=0)
    tpm: int | None = Field(default=None, gt=0)
    weight: float = Field(default=1.0, gt=0)
    max_parallel_requests: int | None = Field(default=None, gt=0)
    extra_headers: dict[str, str] = Field(default_factory=dict)
    # Send the client's own Authorization header instead of api_key (a service that checks the
    # caller's key itself, such as the video service's video/* models); OpenAI-compatible ones only.
    forward_client_authorization: bool = False


class ModelInfo(_Lenient):
    id: str | None = None
    supports_vision: bool = False
    # Takes ``video_url`` parts (a clip as one video item); None: true for vLLM's Qwen VL video models.
    supports_video: bool | None = None
    mode: str | None = None
    max_input_tokens: int | None = Field(default=None, gt=0)  # the context length, shown by /v1/models
    per_pod: bool = False  # api_base's host is a headless Service: each address is its own deployment
    allowed_media_domains: list[str] | None = None  # media URLs it may be sent (gateway.media); ["*"]: any
    # The endpoint families its own API serves beyond chat, completions and embeddings (gateway.endpoints);
    # None: the provider's default. Families it does not serve are bridged to chat or refused.
    native_endpoints: list[str] | None = None

    @field_validator("native_endpoints")
    @classmethod
    def _known_families(cls, value: list[str] | None) -> list[str] | None:
        unknown = sorted(set(value or ()) - FAMILIES)
        if unknown:
            raise ValueError(f"unknown endpoint families {unknown}; use some of {sorted(FAMILIES)}")
        return value


class ModelEntry(_Lenient):
    model_name: str
    litellm_params: LiteLLMParams
    model_info: ModelInfo = Field(default_factory=ModelInfo)


class EngineAwareArgs(_Lenient):
    """``routing_strategy_args`` of ``engine-aware`` (gateway.engine_aware); other keys (LiteLLM's
    arguments of its own strategies) are accepted and ignored."""

    # How much a full prefix-cache miss multiplies a pod's cost: a pod holding a long prefix keeps it
    # until it is about 1 + prefix_weight times as loaded as a cold one.
    prefix_weight: float = Field(default=2.0, ge=0)
    session_header: str | None = SESSION_HEADER  # a client's session key; None: not read
    session_from_user: bool = True  # the body's ``user`` field is a session key when no header says one
    prefix_index_blocks: int = Field(default=131_072, ge=0)  # blocks (256 bytes each) the prefix index remembers

    @field_validator("session_header")
    @classmethod
    def _lower(cls, value: str | None) -> str | None:
        return value.lower() if value else None


class RouterSettings(_Lenient):
    # None: engine-aware for groups whose deployments are all vLLM, simple-shuffle for the rest.
    routing_strategy: RoutingStrategy | None = None
    routing_strategy_args: EngineAwareArgs = Field(default_factory=EngineAwareArgs)
    num_retries: int = Field(default=2, ge=0, le=10)
    retry_after: float = Field(default=0.0, ge=0)
    timeout: float = Field(default=600.0, gt=0)
    stream_timeout: float | None = Field(default=None, gt=0)
    fallbacks: list[dict[str, list[str]]] = Field(default_factory=list)
    default_fallbacks: list[str] = Field(default_factory=list)
    allowed_fails: int = Field(default=3, ge=0)
    cooldown_time: float = Field(default=5.0, ge=0)
    default_max_parallel_requests: int | None = Field(default=None, gt=0)
    # vLLM engines' own /metrics, scraped this often (0: never) and waited for this long (gateway.engine_stats).
    engine_stats_interval: float = Field(default=1.0, ge=0)
    engine_stats_timeout: float = Field(default=0.5, gt=0)
    # Shared limits (LiteLLM's keys): per-key rpm/tpm, max_parallel_requests and cooldowns across processes.
    redis_url: str | None = None
    redis_host: str | None = None
    redis_port: int = Field(default=6379, ge=1, le=65535)
    redis_password: str | None = None

    def redis_address(self) -> str | None:
        """The Redis URL shared limits use, or None when Redis is not configured."""
        if self.redis_url:
            return self.redis_url
        if not self.redis_host:
            return None
        password = f":{quote(self.redis_password, safe='')}@" if self.redis_password else ""
        return f"redis://{password}{self.redis_host}:{self.redis_port}/0"

    @field_validator("routing_strategy", mode="before")
    @classmethod
    def _known_strategy(cls, value: object) -> object:
        if value is not None and value not in ROUTING_STRATEGIES:
            raise ValueError(f"routing_strategy {value!r} is not supported; use one of {ROUTING_STRATEGIES}")
        return value


class GeneralSettings(_Lenient):
    master_key: str | None = None
    database_url: str | None = None  # managed keys' database (DATABASE_URL wins); default: SQLite in the data dir


class ApiKey(_Strict):
    key: str = Field(min_length=8)
    name: str | None = None
    models: list[str] | None = None
    rpm: int | None = Field(default=None, gt=0)
    tpm: int | None = Field(default=None, gt=0)  # tokens a minute, counted from usage; needs Redis
    role: Literal["user", "admin"] = "user"  # admin: may call /key/*, /team/* and /spend/* as the master key does


class GatewaySettings(_Strict):
    api_keys: list[ApiKey] = Field(default_factory=list)
    max_body_bytes: int = Field(default=32 * 1024 * 1024, gt=0)
    max_answer_bytes: int = Field(default=64 * 1024 * 1024, gt=0)  # a non-streamed answer, read whole
    queue_timeout: float = Field(default=5.0, ge=0)
    ready_cache_seconds: float = Field(default=5.0, ge=0)
    ready_probe_timeout: float = Field(default=2.0, gt=0)
    connect_timeout: float = Field(default=5.0, gt=0)
    retry_backoff: float = Field(default=0.05, ge=0)
    dns_refresh_seconds: float = Field(default=10.0, gt=0)
    ready_requires: list[str] | None = None  # groups /ready needs; default: none (the process can serve)
    max_audio_bytes: int = Field(default=100 * 1024 * 1024, gt=0)  # an audio upload (413 past it)
    # Responses the gateway answers by bridging to chat, kept for previous_response_id and GET
    # (in memory, or in Redis when router_settings.redis_* is set).
    responses_ttl_seconds: float = Field(default=3600.0, gt=0)
    responses_store_bytes: int = Field(default=64 * 1024 * 1024, gt=0)  # the in-memory store's cap
    # Managed keys (gateway.keys): how stale a process's copy may get (changes reach every process
    # within it, at once through Redis when configured), and how often spend is written.
    key_cache_seconds: float = Field(default=5.0, gt=0)
    spend_flush_seconds: float = Field(default=1.0, gt=0)
    store_spend_logs: bool = False  # one row per request beside the daily totals


class ProxyConfig(_Lenient):
    model_list: list[ModelEntry] = Field(min_length=1)
    router_settings: RouterSettings = Field(default_factory=RouterSettings)
    litellm_settings: dict[str, Any] = Field(default_factory=dict)
    general_settings: GeneralSettings = Field(default_factory=GeneralSettings)
    environment_variables: dict[str, str] = Field(default_factory=dict)
    gateway_settings: GatewaySettings = Field(default_factory=GatewaySettings)


# Per-token prices, in model_info or litellm_params as LiteLLM's config has them (gateway.prices).
PRICE_FIELDS = frozenset({"input_cost_per_token", "output_cost_per_token"})
# LiteLLM keys that change behaviour in LiteLLM but not here; reported so nobody is surprised.
_ACCEPTED_LITELLM_SETTINGS = {"num_retries", "request_timeout", "fallbacks", "default_fallbacks"}
# litellm_settings keys that the litellm SDK path acts on.
_SDK_LITELLM_SETTINGS = {"drop_params"}


@dataclass(frozen=True)
class LoadedConfig:
    """A validated config with every ``os.environ/`` reference resolved."""

    config: ProxyConfig
    warnings: list[str] = field(default_factory=list)


def load_config(path: Path, env: Mapping[str, str]) -> LoadedConfig:
    """Read, resolve and validate the config at ``path`` against the environment ``env``."""
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping with a 'model_list' key at the top level")
    return parse_config(raw, env, source=str(path))


def parse_config(raw: dict[str, Any], env: Mapping[str, str], source: str = "config") -> LoadedConfig:
    """Resolve and validate an already-parsed config mapping."""
    extra_env = raw.get("environment_variables") or {}
    if not isinstance(extra_env, dict):
        raise ConfigError(f"{source}: environment_variables must be a mapping")
    merged_env = {**{str(k): str(v) for k, v in extra_env.items()}, **env}
    empty: list[str] = []
    resolved = _resolve_env(raw, merged_env, source, "", empty)
    _merge_litellm_settings(resolved)
    try:
        config = ProxyConfig.model_validate(resolved)
    except ValidationError as exc:
        raise ConfigError(_describe_validation_error(source, exc)) from None
    _check_semantics(config, source)
    warnings = [f"{path}: environment variable is empty" for path in empty]
    return LoadedConfig(config=config, warnings=warnings + _collect_warnings(config))


def _resolve_env(value: Any, env: Mapping[str, str], source: str, path: str, empty: list[str]) -> Any:
    if isinstance(value, str) and value.startswith(ENV_REFERENCE):
        name = value[len(ENV_REFERENCE) :]
        if name not in env:
            raise ConfigError(f"{source}: {path or 'value'} refers to environment variable {name}, which is not set")
        if not env[name]:
            empty.append(f"{path} ({name})")
        return env[name]
    if isinstance(value, dict):
        return {k: _resolve_env(v, env, source, f"{path}.{k}" if path else str(k), empty) for k, v in value.items()}
    if isinstance(value, list):
        return [_resolve_env(v, env, source, f"{path}[{i}]", empty) for i, v in enumerate(value)]
    return value


def _merge_litellm_settings(raw: dict[str, Any]) -> None:
    """LiteLLM accepts retries/fallbacks under litellm_settings too; router_settings wins."""
    settings = raw.get("litellm_settings")
    if not isinstance(settings, dict):
        return
    router = raw.setdefault("router_settings", {}) or {}
    raw["router_settings"] = router
    aliases = {"request_timeout": "timeout"}
    for key in _ACCEPTED_LITELLM_SETTINGS:
        if key in settings:
            router.setdefault(aliases.get(key, key), settings[key])


def _describe_validation_error(source: str, exc: ValidationError) -> str:
    lines = [f"{source}: invalid config"]
    for error in exc.errors():
        location = ".".join(str(part) for part in error["loc"])
        if error["type"] == "extra_forbidden":
            lines.append(f"  {location}: unknown key")
        else:
            lines.append(f"  {location}: {error['msg']}")
    return "\n".join(lines)


def _check_semantics(config: ProxyConfig, source: str) -> None:
    groups = {entry.model_name for entry in config.model_list}
    for entry in config.model_list:
        wildcard_name = "*" in entry.model_name
        wildcard_model = "*" in entry.litellm_params.model
        if wildcard_model and not wildcard_name:
            raise ConfigError(
                f"{source}: model_list '{entry.model_name}': litellm_params.model "
                f"'{entry.litellm_params.model}' has a '*' but model_name does not"
            )
        if "/" not in entry.litellm_params.model:
            raise ConfigError(
                f"{source}: model_list '{entry.model_name}': litellm_params.model "
                f"'{entry.litellm_params.model}' needs a provider prefix such as hosted_vllm/, openai/ or nebius/"
            )
    for mapping in config.router_settings.fallbacks:
        for group, targets in mapping.items():
            for name in [group, *targets]:
                if name not in groups:
                    raise ConfigError(f"{source}: router_settings.fallbacks names '{name}', which is not a model_name")
    for name in config.router_settings.default_fallbacks:
        if name not in groups:
            raise ConfigError(f"{source}: router_settings.default_fallbacks names '{name}', which is not a model_name")
    for name in config.gateway_settings.ready_requires or []:
        if name not in groups:
            raise ConfigError(f"{source}: gateway_settings.ready_requires names '{name}', which is not a model_name")
    for index, api_key in enumerate(config.gateway_settings.api_keys):
        for name in api_key.models or []:
            if name not in groups and not any(_wildcard_matches(g, name) for g in groups):
                raise ConfigError(
                    f"{source}: gateway_settings.api_keys[{index}].models names '{name}', which is not a model_name"
                )


def _wildcard_matches(pattern: str, name: str) -> bool:
    return "*" in pattern and re.fullmatch(re.escape(pattern).replace(r"\*", ".*"), name) is not None


_PLACEHOLDER_SECRETS = {"sk-1234", "sk-change-me", "changeme", "change-me", "secret", "password"}


def check_secrets(config: ProxyConfig, source: str = "config") -> None:
    """Refuse keys copied from examples; called outside development."""
    keys = [("general_settings.master_key", config.general_settings.master_key)]
    keys += [(f"gateway_settings.api_keys[{i}].key", k.key) for i, k in enumerate(config.gateway_settings.api_keys)]
    for where, value in keys:
        if value is not None and (value.lower() in _PLACEHOLDER_SECRETS or len(value) < 8):
            raise ConfigError(
                f"{source}: {where} is a placeholder or too short; set a real secret "
                "(or GATEWAY_ENVIRONMENT=development for local experiments)"
            )


def _collect_warnings(config: ProxyConfig) -> list[str]:
    warnings: list[str] = []
    for key in config.model_extra or {}:
        warnings.append(f"{key}: not used by this gateway")
    for key in config.router_settings.model_extra or {}:
        warnings.append(f"router_settings.{key}: not used by this gateway")
    for key in config.general_settings.model_extra or {}:
        warnings.append(f"general_settings.{key}: not used by this gateway")
    for key in config.litellm_settings:
        if key not in _ACCEPTED_LITELLM_SETTINGS | _SDK_LITELLM_SETTINGS:
            warnings.append(f"litellm_settings.{key}: not used by this gateway")
    if not config.router_settings.redis_address():
        for index, api_key in enumerate(config.gateway_settings.api_keys):
            if api_key.tpm:
                warnings.append(f"gateway_settings.api_keys[{index}].tpm: enforced only with Redis (router_settings)")
    for entry in config.model_list:
        if entry.litellm_params.model.partition("/")[0] not in PASSTHROUGH_PROVIDERS:
            continue  # the litellm SDK takes every litellm_params key of its providers
        for key in entry.litellm_params.model_extra or {}:
            if key not in PRICE_FIELDS:
                warnings.append(f"model_list '{entry.model_name}' litellm_params.{key}: not used by this gateway")
        for key in ("tpm",):
            if getattr(entry.litellm_params, key) is not None:
                warnings.append(f"model_list '{entry.model_name}' litellm_params.{key}: not used by this gateway")
    return warnings


def per_worker(config: ProxyConfig, workers: int) -> ProxyConfig:
    """The config one of ``workers`` processes enforces when limits are not shared: every rpm
    divided by the number of workers (rounded up, at least 1: a host admits at most
    ``workers - 1`` more a minute than configured). ``max_parallel_requests`` stays whole: the
    workers hold it together (gateway.limits.host). With Redis configured the limits are
    shared, so they stay whole."""
    if workers <= 1 or config.router_settings.redis_address():
        return config

    def share(value: int | None) -> int | None:
        return None if value is None else max(1, math.ceil(value / workers))

    entries = [
        entry.model_copy(
            update={"litellm_params": entry.litellm_params.model_copy(update={"rpm": share(entry.litellm_params.rpm)})}
        )
        for entry in config.model_list
    ]
    keys = [key.model_copy(update={"rpm": share(key.rpm)}) for key in config.gateway_settings.api_keys]
    gateway = config.gateway_settings.model_copy(update={"api_keys": keys})
    return config.model_copy(update={"model_list": entries, "gateway_settings": gateway})
