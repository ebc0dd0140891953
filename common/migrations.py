"""Numbered schema migrations kept as package data: ``NNNN_name.sql`` files, run once each, in order."""

from __future__ import annotations

from importlib import resources


def numbered(package: str, folder: str = "") -> list[tuple[int, str, str]]:
    """(version, name, SQL) of every ``.sql`` file in ``package`` (or its ``folder``), in order."""
    root = resources.files(package)
    found = []
    for entry in (root.joinpath(folder) if folder else root).iterdir():
        if entry.name.endswith(".sql"):
            version = int(entry.name.split("_", 1)[0])
            found.append((version, entry.name.removesuffix(".sql"), entry.read_text(encoding="utf-8")))
    return sorted(found)
