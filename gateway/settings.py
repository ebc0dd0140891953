"""Process settings: where the config is, where to listen, how to log.

Read from ``GATEWAY_*`` environment variables and a ``.env`` file; command-line flags win.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

KEYS_DATABASE_FILE = "gateway-keys.db"


class Settings(BaseSettings):
    """How the gateway process runs; what it routes lives in the config file."""

    model_config = SettingsConfigDict(env_prefix="GATEWAY_", env_file=".env", extra="ignore")

    config: Path = Path("config.yaml")
    host: str = "127.0.0.1"
    port: int = Field(default=4000, ge=1, le=65535)
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    environment: Literal["development", "production"] = "production"
    env_file: Path = Path(".env")
    workers: int = Field(default=1, ge=1, le=256)
    data_dir: Path = Path("data")  # where the embedded managed-keys database lives (gateway-keys.db)


def keys_database_url(settings: Settings, env: Mapping[str, str], configured: str | None) -> str:
    """Where managed keys live: ``DATABASE_URL`` (LiteLLM's name), else ``general_settings.database_url``,
    else SQLite in the data directory."""
    return env.get("DATABASE_URL") or configured or f"sqlite:///{(settings.data_dir / KEYS_DATABASE_FILE).resolve()}"
