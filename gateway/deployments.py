"""Deployments built from the config's ``model_list`` entries: provider, endpoint, key, limits."""

from __future__ import annotations

import re
from collections.abc import Mapping

from gateway.config import ConfigError, ModelEntry, ProxyConfig, RouterSettings
from gateway.deployment import Deployment
from gateway.endpoints import BASE_FAMILIES
from gateway.media import default_media_domains
from gateway.prices import configured_price
from gateway.providers import (
    NATIVE_SDK_PROVIDERS,
    PASSTHROUGH_PROVIDERS,
    resolve_api_base,
    resolve_api_key,
    split_model,
)
from gateway.ratelimit import TokenBucket
from gateway.sdk_fields import sdk_endpoints
from gateway.upstream import check_deployment

# vLLM's video models: Qwen2-VL, Qwen2.5-VL, Qwen3-VL (by name, as served or as on the hub).
VIDEO_MODELS = re.compile(r"qwen(2|2[._]5|3)[-_]?vl", re.IGNORECASE)


def takes_video(provider: str, upstream_model: str, configured: bool | None) -> bool:
    """Whether a deployment is sent clips as video items: ``model_info.supports_video``, else true
    for ``hosted_vllm/`` Qwen VL models."""
    if configured is not None:
        return configured
    return provider == "hosted_vllm" and VIDEO_MODELS.search(upstream_model) is not None


def build_deployments(config: ProxyConfig, env: Mapping[str, str]) -> dict[str, list[Deployment]]:
    """Every group's deployments, in config order (ConfigError for one that cannot be served)."""
    groups: dict[str, list[Deployment]] = {}
    for entry in config.model_list:
        group = groups.setdefault(entry.model_name, [])
        group.append(build_deployment(entry, len(group), env, config.router_settings))
    return groups


def build_deployment(entry: ModelEntry, index: int, env: Mapping[str, str], settings: RouterSettings) -> Deployment:
    """The deployment a ``model_list`` entry describes (the ``index``-th of its group)."""
    params = entry.litellm_params
    provider_name, upstream_model = split_model(params.model)
    provider = PASSTHROUGH_PROVIDERS.get(provider_name)
    sdk = provider is None
    native: frozenset[str] = frozenset()
    path_prefix = ""
    if provider is None:
        # Any other LiteLLM provider goes through the litellm SDK, which knows its API; a few
        # serve some endpoints through their own API as well (Anthropic's Messages).
        api_base: str | None = params.api_base.rstrip("/") if params.api_base else ""
        api_key = params.api_key
        own = NATIVE_SDK_PROVIDERS.get(provider_name)
        if own is not None:
            api_base = resolve_api_base(own, params.api_base, env)
            api_key = resolve_api_key(own, params.api_key, env)
            native, path_prefix = own.native, own.path_prefix
    else:
        native = provider.native
        api_base = resolve_api_base(provider, params.api_base, env)
        if api_base is None:
            raise ConfigError(f"model_list '{entry.model_name}': {provider_name}/ needs litellm_params.api_base")
        api_key = resolve_api_key(provider, params.api_key, env)
    if params.forward_client_authorization and sdk:
        raise ConfigError(
            f"model_list '{entry.model_name}': forward_client_authorization needs an OpenAI-compatible provider "
            f"(openai/, hosted_vllm/), not {provider_name}/"
        )
    timeout = params.timeout or settings.timeout
    deployment = Deployment(
        id=entry.model_info.id or f"{entry.model_name}/{index}",
        group=entry.model_name,
        provider=provider_name,
        upstream_model=upstream_model,
        api_base=api_base or "",
        api_key=api_key,
        timeout=timeout,
        stream_timeout=params.stream_timeout or settings.stream_timeout or timeout,
        weight=params.weight,
        supports_vision=entry.model_info.supports_vision,
        supports_video=takes_video(provider_name, upstream_model, entry.model_info.supports_video),
        max_parallel=params.max_parallel_requests or settings.default_max_parallel_requests,
        context_tokens=entry.model_info.max_input_tokens,
        per_pod=entry.model_info.per_pod,
        sdk=sdk,
        sdk_params=dict(params.model_extra or {}) if sdk else {},
        rpm=TokenBucket(params.rpm) if params.rpm else None,
        extra_headers=dict(params.extra_headers),
        forward_authorization=params.forward_client_authorization,
        media_domains=default_media_domains(provider_name, sdk, entry.model_info.allowed_media_domains),
        native=_native(native, sdk, entry.model_info.native_endpoints),
        path_prefix=path_prefix,
        sdk_endpoints=sdk_endpoints(provider_name) if sdk else frozenset(),
        price=configured_price(entry.model_info.model_extra or {}, params.model_extra or {}),
    )
    if deployment.native:
        try:
            check_deployment(deployment)
        except ValueError as exc:
            raise ConfigError(f"model_list '{entry.model_name}': {exc}") from None
    return deployment


def _native(default: frozenset[str], sdk: bool, configured: list[str] | None) -> frozenset[str]:
    """The endpoint families a deployment's own API serves: ``model_info.native_endpoints`` (plus
    chat, completions and embeddings for OpenAI-compatible ones), else the provider's default."""
    if configured is None:
        return default
    return frozenset(configured) | (frozenset() if sdk else BASE_FAMILIES)
