"""Process settings: where the config is, where to listen, how to log.

Read from ``GATEWAY_*`` environment variables and a ``.env`` file; command-line flags win.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


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
