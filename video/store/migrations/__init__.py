"""Numbered schema migrations, one folder per database: ``NNNN_name.sql`` run once each, in order."""

from __future__ import annotations

from common.migrations import numbered


def migrations(dialect: str) -> list[tuple[int, str, str]]:
    """(version, name, SQL) of every migration of ``dialect`` (``sqlite`` or ``postgres``), in order."""
    return numbered("video.store.migrations", dialect)
