"""Provider prefixes of ``litellm_params.model`` and how each is reached."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class Provider:
    """An OpenAI-compatible provider served by the pass-through."""

    name: str
    default_api_base: str | None
    api_key_env: str | None
    api_base_env: str | None


NEBIUS_API_BASE = "https://api.tokenfactory.nebius.com/v1/"

PASSTHROUGH_PROVIDERS: dict[str, Provider] = {
    "hosted_vllm": Provider("hosted_vllm", None, "HOSTED_VLLM_API_KEY", "HOSTED_VLLM_API_BASE"),
    "openai": Provider("openai", "https://api.openai.com/v1", "OPENAI_API_KEY", "OPENAI_API_BASE"),
    "nebius": Provider("nebius", NEBIUS_API_BASE, "NEBIUS_API_KEY", "NEBIUS_API_BASE"),
}


def split_model(model: str) -> tuple[str, str]:
    """``"nebius/meta-llama/X"`` -> ``("nebius", "meta-llama/X")``."""
    provider, _, name = model.partition("/")
    return provider, name


def resolve_api_base(provider: Provider, configured: str | None, env: Mapping[str, str]) -> str | None:
    """The configured base URL, else the provider's environment variable, else its default."""
    base = (
        configured or (env.get(provider.api_base_env) if provider.api_base_env else None) or provider.default_api_base
    )
    return base.rstrip("/") if base else None


def resolve_api_key(provider: Provider, configured: str | None, env: Mapping[str, str]) -> str | None:
    """The configured key, else the provider's conventional environment variable."""
    if configured:
        return configured
    return env.get(provider.api_key_env) if provider.api_key_env else None
