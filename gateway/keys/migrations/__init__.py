"""Numbered schema migrations of the managed-keys database: ``NNNN_name.sql``, run once each, in order.

One file serves SQLite and PostgreSQL: the SQL sticks to what both speak (TEXT, BIGINT, DOUBLE
PRECISION, ``ON CONFLICT``), so the tables have one definition.
"""

from __future__ import annotations

from common.migrations import numbered


def migrations() -> list[tuple[int, str, str]]:
    """(version, name, SQL) of every migration, in order."""
    return numbered("gateway.keys.migrations")
