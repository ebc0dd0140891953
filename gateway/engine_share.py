"""One scrape of each engine for all the workers of a host (``gateway serve --workers N``).

Each engine has two files in the host's folder: a lock and its last stats. The worker holding an
engine's lock (``flock``, kept while the worker lives; the kernel frees it when the worker dies,
and another takes it at its next round) scrapes the engine and writes what it found; the other
workers read that file. So a vLLM pod is asked once an interval per gateway pod, not once per
worker. A reader whose file is missing or too old (gateway.engine_stats: two intervals; the
scraping worker is stuck) scrapes for itself meanwhile.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
from pathlib import Path
from typing import Any


class SharedScrapes:
    """Who scrapes which engine on this host, and what it last found (files in ``directory``)."""

    def __init__(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self._directory = directory
        self._locks: dict[str, int] = {}  # engine -> the descriptor this process holds its lock on

    def owns(self, engine: str) -> bool:
        """Whether this process scrapes ``engine`` (taking its lock when no other process holds it)."""
        if engine in self._locks:
            return True
        descriptor = os.open(self._path(engine, "lock"), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(descriptor)
            return False
        self._locks[engine] = descriptor
        return True

    def publish(self, engine: str, found: dict[str, Any]) -> None:
        """What this process found on ``engine``, for the other workers (replaced whole, never half-written)."""
        path = self._path(engine, "json")
        partial = path.with_suffix(f".{os.getpid()}.tmp")
        partial.write_text(json.dumps(found))
        os.replace(partial, path)

    def read(self, engine: str) -> dict[str, Any] | None:
        """What the scraping worker last found on ``engine``; None before its first scrape."""
        try:
            found = json.loads(self._path(engine, "json").read_text())
        except (OSError, ValueError):
            return None
        return found if isinstance(found, dict) else None

    def keep_only(self, engines: set[str]) -> None:
        """Let go of the engines no longer routed to (a pod that left): their locks are released."""
        for engine in [e for e in self._locks if e not in engines]:
            os.close(self._locks.pop(engine))

    def close(self) -> None:
        self.keep_only(set())

    def _path(self, engine: str, suffix: str) -> Path:
        name = hashlib.blake2b(engine.encode(), digest_size=12).hexdigest()
        return self._directory / f"{name}.{suffix}"
