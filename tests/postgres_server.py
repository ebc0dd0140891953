"""Fixtures with a real PostgreSQL server (``bench.postgres``) on a free loopback port."""

from __future__ import annotations

import shutil
from collections.abc import Iterator

import pytest

from bench import postgres
from bench.postgres import PostgresServer

__all__ = ["PostgresServer", "new_server", "own_postgres_server", "postgres_server"]


def new_server() -> PostgresServer:
    """A new cluster in a temporary folder; the test fails when the server binaries are missing."""
    if postgres.server_binaries() is None:
        pytest.fail("PostgreSQL's server binaries are missing: `make test` installs Debian's postgresql")
    return postgres.new_server()


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    server = new_server()
    yield server
    server.stop()
    shutil.rmtree(server.directory, ignore_errors=True)


@pytest.fixture
def own_postgres_server() -> Iterator[PostgresServer]:
    """A server of the test's own, which it may stop and start again."""
    server = new_server()
    yield server
    server.stop()
    shutil.rmtree(server.directory, ignore_errors=True)
