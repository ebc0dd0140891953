"""Numbered schema migrations, one folder per database: ``NNNN_name.sql`` run once each, in order."""

from __future__ import annotations

from importlib import resources


def migrations(dialect: str) -> list[tuple[int, str, str]]:
    """(version, name, SQL) of every migration of ``dialect`` (``sqlite`` or ``postgres``), in order."""
    folder = resources.files("video.store.migrations").joinpath(dialect)
    found = []
    for entry in folder.iterdir():
        if entry.name.endswith(".sql"):
            version = int(entry.name.split("_", 1)[0])
            found.append((version, entry.name.removesuffix(".sql"), entry.read_text(encoding="utf-8")))
    return sorted(found)
