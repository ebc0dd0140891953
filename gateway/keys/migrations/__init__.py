"""Numbered schema migrations of the managed-keys database: ``NNNN_name.sql``, run once each, in order.

One file serves SQLite and PostgreSQL: the SQL sticks to what both speak (TEXT, BIGINT, DOUBLE
PRECISION, ``ON CONFLICT``), so the tables have one definition.
"""

from __future__ import annotations

from importlib import resources


def migrations() -> list[tuple[int, str, str]]:
    """(version, name, SQL) of every migration, in order."""
    found = []
    for entry in resources.files("gateway.keys.migrations").iterdir():
        if entry.name.endswith(".sql"):
            version = int(entry.name.split("_", 1)[0])
            found.append((version, entry.name.removesuffix(".sql"), entry.read_text(encoding="utf-8")))
    return sorted(found)
