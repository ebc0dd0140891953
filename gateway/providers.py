"""Provider prefixes of ``litellm_params.model``, how each is reached, and which APIs it serves itself."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from gateway.endpoints import BASE_FAMILIES, FAMILIES


@dataclass(frozen=True)
class Provider:
    """A provider whose HTTP API the gateway relays byte for byte (for the API ``native`` names)."""

    name: str
    default_api_base: str | None
    api_key_env: str | None
    api_base_env: str | None
    native: frozenset[str] = BASE_FAMILIES  # endpoint families it serves (gateway.endpoints)
    path_prefix: str = ""  # what comes between api_base and an endpoint's name


NEBIUS_API_BASE = "https://api.tokenfactory.nebius.com/v1/"

PASSTHROUGH_PROVIDERS: dict[str, Provider] = {
    # vLLM serves every family: Responses, Anthropic Messages, audio, rerank and score.
    "hosted_vllm": Provider("hosted_vllm", None, "HOSTED_VLLM_API_KEY", "HOSTED_VLLM_API_BASE", FAMILIES),
    "openai": Provider(
        "openai",
        "https://api.openai.com/v1",
        "OPENAI_API_KEY",
        "OPENAI_API_BASE",
        BASE_FAMILIES | {"responses", "audio"},
    ),
    "nebius": Provider("nebius", NEBIUS_API_BASE, "NEBIUS_API_KEY", "NEBIUS_API_BASE"),
}
# Providers served through the litellm SDK whose own API some endpoints relay directly: Anthropic's
# Messages API goes to Anthropic as the client sent it.
NATIVE_SDK_PROVIDERS: dict[str, Provider] = {
    "anthropic": Provider(
        "anthropic",
        "https://api.anthropic.com",
        "ANTHROPIC_API_KEY",
        "ANTHROPIC_API_BASE",
        frozenset({"messages"}),
        path_prefix="v1/",
    ),
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
