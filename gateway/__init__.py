"""One OpenAI-compatible endpoint over local vLLM replicas and cloud providers."""

from gateway.app import create_app
from gateway.config import ConfigError, LoadedConfig, ProxyConfig, load_config, parse_config

__all__ = ["ConfigError", "LoadedConfig", "ProxyConfig", "create_app", "load_config", "parse_config"]
