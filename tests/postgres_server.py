"""A real PostgreSQL server (Debian's server binaries) on a free loopback port, for the shared store.

``initdb`` refuses to run as root, so as root the cluster is created and run as ``postgres``.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest

from tests.fakes import free_port


def server_binaries() -> Path | None:
    """The folder of ``initdb`` and ``postgres``: on PATH, else Debian's newest version."""
    found = shutil.which("initdb")
    if found:
        return Path(found).resolve().parent
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    return Path(versions[-1]).parent if versions else None


@dataclass
class PostgresServer:
    port: int
    directory: Path
    process: subprocess.Popen[bytes]

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def new_database(self) -> str:
        """A fresh empty database; its URL."""
        name = "t" + uuid.uuid4().hex[:12]
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)


def _as_postgres() -> dict[str, object]:
    if os.geteuid() != 0:
        return {}
    import pwd

    account = pwd.getpwnam("postgres")
    return {"user": account.pw_uid, "group": account.pw_gid}


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    binaries = server_binaries()
    if binaries is None:
        pytest.fail("PostgreSQL's server binaries are missing: `make test` installs Debian's postgresql")
    directory = Path(tempfile.mkdtemp(prefix="video-pg-"))
    owner = _as_postgres()
    if owner:
        os.chown(directory, owner["user"], owner["group"])  # type: ignore[arg-type]
    data = directory / "data"
    subprocess.run(
        [binaries / "initdb", "-D", data, "-U", "postgres", "-A", "trust", "--no-sync", "-E", "UTF8"],
        check=True,
        stdout=subprocess.DEVNULL,
        cwd=directory,
        **owner,  # type: ignore[arg-type]
    )
    port = free_port()
    options = ["-c", "listen_addresses=127.0.0.1", "-c", f"unix_socket_directories={directory}", "-c", "fsync=off"]
    with (directory / "server.log").open("wb") as log_file:
        process = subprocess.Popen(
            [binaries / "postgres", "-D", data, "-p", str(port), *options],
            stdout=subprocess.DEVNULL,
            stderr=log_file,
            cwd=directory,
            **owner,  # type: ignore[arg-type]
        )
    server = PostgresServer(port, directory, process)
    deadline = time.monotonic() + 30
    while True:
        try:
            psycopg.connect(server.url(), connect_timeout=2).close()
            break
        except psycopg.OperationalError:
            if process.poll() is not None or time.monotonic() > deadline:
                log = (directory / "server.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"PostgreSQL did not start:\n{log}") from None
            time.sleep(0.05)
    yield server
    process.terminate()
    process.wait(timeout=30)
    shutil.rmtree(directory, ignore_errors=True)
