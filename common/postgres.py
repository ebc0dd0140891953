"""What the services say of a PostgreSQL they cannot reach: where (never the credentials) and why."""

from __future__ import annotations

import psycopg


def where(url: str) -> str:
    """``host:port`` of ``url``."""
    info = psycopg.conninfo.conninfo_to_dict(url)
    return f"{info.get('host', 'localhost')}:{info.get('port', 5432)}"


def unreachable(url: str, exc: psycopg.OperationalError) -> str:
    """``cannot reach PostgreSQL at host:port: <the driver's last words>``."""
    reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0].split(": ")[-1]
    return f"cannot reach PostgreSQL at {where(url)}: {reason}"
