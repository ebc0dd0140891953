"""Deployments built from the config's ``model_list`` entries: provider, endpoint, key, limits."""

from __future__ import annotations

from collections.abc import Mapping

from gateway.config import ConfigError, ModelEntry, ProxyConfig, RouterSettings
from gateway.deployment import Deployment
from gateway.media import default_media_domains
from gateway.providers import PASSTHROUGH_PROVIDERS, resolve_api_base, resolve_api_key, split_model
from gateway.ratelimit import TokenBucket
from gateway.upstream import check_deployment


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
    if provider is None:
        # Any other LiteLLM provider goes through the litellm SDK, which knows its API.
        api_base: str | None = params.api_base.rstrip("/") if params.api_base else ""
        api_key = params.api_key
    else:
        api_base = resolve_api_base(provider, params.api_base, env)
        if api_base is None:
            raise ConfigError(f"model_list '{entry.model_name}': {provider_name}/ needs litellm_params.api_base")
        api_key = resolve_api_key(provider, params.api_key, env)
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
        max_parallel=params.max_parallel_requests or settings.default_max_parallel_requests,
        context_tokens=entry.model_info.max_input_tokens,
        per_pod=entry.model_info.per_pod,
        sdk=provider is None,
        sdk_params=dict(params.model_extra or {}) if provider is None else {},
        rpm=TokenBucket(params.rpm) if params.rpm else None,
        extra_headers=dict(params.extra_headers),
        media_domains=default_media_domains(provider_name, provider is None, entry.model_info.allowed_media_domains),
    )
    if not deployment.sdk:
        try:
            check_deployment(deployment)
        except ValueError as exc:
            raise ConfigError(f"model_list '{entry.model_name}': {exc}") from None
    return deployment
