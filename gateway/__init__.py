"""One OpenAI-compatible endpoint over local vLLM replicas and cloud providers.

The package imports nothing eagerly: ``gateway check-config`` loads the config code alone,
not FastAPI, Redis or Prometheus. The public names resolve on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

_PUBLIC = {
    "create_app": "gateway.app",
    "ConfigError": "gateway.config",
    "LoadedConfig": "gateway.config",
    "ProxyConfig": "gateway.config",
    "load_config": "gateway.config",
    "parse_config": "gateway.config",
}
__all__ = sorted(_PUBLIC)


def __getattr__(name: str) -> Any:
    module = _PUBLIC.get(name)
    if module is None:
        raise AttributeError(f"module 'gateway' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
