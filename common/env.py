"""The environment a service sees: real variables over a ``.env`` file."""

from __future__ import annotations

import os
from pathlib import Path

from dotenv import dotenv_values


def read_env(env_file: Path) -> dict[str, str]:
    """The process environment over the ``.env`` file: real variables win."""
    values = {k: v for k, v in dotenv_values(env_file).items() if v is not None} if env_file.is_file() else {}
    return {**values, **os.environ}
