"""Managed keys for ``bench.gateway``: 10,000 of them in a real PostgreSQL, 1,000 used in turn.

The keys are written straight into the tables (after the gateway's own migrations ran), with
budgets, so that every request of the benchmark is checked against a budget and counted as spend.
"""

from __future__ import annotations

import time

import psycopg

from common.auth import digest
from gateway.keys.database import KeyDatabase
from gateway.keys.records import KEY_COLUMNS, ManagedKey, column_values

MANAGED_KEYS = 10_000
USED_KEYS = 1_000


def secret(index: int) -> str:
    return f"sk-bench-managed-{index:05d}-0123456789abcdef"


def seed(database_url: str) -> list[str]:
    """Create the tables and ``MANAGED_KEYS`` keys; the secrets of the ``USED_KEYS`` the load sends."""
    KeyDatabase(database_url).close()
    now = time.time()
    rows = [
        column_values(
            ManagedKey(
                token=digest(secret(i)).hex(),
                key_name=f"sk-...{secret(i)[-4:]}",
                max_budget=1_000_000.0,
                rpm_limit=None,
                created_at=now,
                updated_at=now,
            ),
            KEY_COLUMNS,
        )
        for i in range(MANAGED_KEYS)
    ]
    marks = ", ".join(["%s"] * len(KEY_COLUMNS))
    with psycopg.connect(database_url) as conn:
        with conn.cursor() as cursor:
            cursor.executemany(
                f"INSERT INTO managed_keys ({', '.join(KEY_COLUMNS)}) VALUES ({marks})",  # noqa: S608
                rows,
            )
        conn.execute("UPDATE managed_revision SET revision = revision + 1 WHERE id = 1")
    return [secret(i) for i in range(USED_KEYS)]


def transactions(database_url: str) -> int:
    """Transactions the database has run (every query is one, or part of one), as its statistics say."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("SELECT pg_stat_clear_snapshot()")
        row = conn.execute(
            "SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = current_database()"
        ).fetchone()
    assert row is not None
    return int(row[0])
