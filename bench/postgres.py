"""A real PostgreSQL server (Debian's server binaries) on a free loopback port, for tests and benchmarks.

``initdb`` refuses to run as root, so as root the cluster is created and run as ``postgres``.
"""

from __future__ import annotations

import glob
import os
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import psycopg

from bench.load import free_port


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
    binaries: Path
    process: subprocess.Popen[bytes] | None = None

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def new_database(self) -> str:
        """A fresh empty database; its URL."""
        name = "t" + uuid.uuid4().hex[:12]
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def start(self) -> None:
        """Run the server and wait until it takes connections."""
        options = ["-c", "listen_addresses=127.0.0.1", "-c", f"unix_socket_directories={self.directory}"]
        with (self.directory / "server.log").open("ab") as log_file:
            self.process = subprocess.Popen(
                [
                    self.binaries / "postgres",
                    "-D",
                    self.directory / "data",
                    "-p",
                    str(self.port),
                    *options,
                    "-c",
                    "fsync=off",
                ],
                stdout=subprocess.DEVNULL,
                stderr=log_file,
                cwd=self.directory,
                user=_as_postgres()[0],
                group=_as_postgres()[1],
            )
        deadline = time.monotonic() + 30
        while True:
            try:
                psycopg.connect(self.url(), connect_timeout=2).close()
                return
            except psycopg.OperationalError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    log = (self.directory / "server.log").read_text(errors="replace")[-2000:]
                    raise RuntimeError(f"PostgreSQL did not start:\n{log}") from None
                time.sleep(0.05)

    def stop(self) -> None:
        """Stop the server (fast shutdown: open connections are cut, as in a restart)."""
        if self.process is not None:
            self.process.send_signal(signal.SIGINT)  # "fast" shutdown; SIGTERM waits for every client
            self.process.wait(timeout=30)
            self.process = None


def _as_postgres() -> tuple[int | None, int | None]:
    """The (uid, gid) to run the server as: ``postgres`` when this process is root, else its own."""
    if os.geteuid() != 0:
        return None, None
    import pwd

    account = pwd.getpwnam("postgres")
    return account.pw_uid, account.pw_gid


def new_server() -> PostgresServer:
    """A new cluster in a temporary folder, running on a free loopback port."""
    binaries = server_binaries()
    if binaries is None:
        raise RuntimeError("PostgreSQL's server binaries are missing: `make postgres` installs Debian's postgresql")
    directory = Path(tempfile.mkdtemp(prefix="pg-"))
    user, group = _as_postgres()
    if user is not None and group is not None:
        os.chown(directory, user, group)
    subprocess.run(
        [binaries / "initdb", "-D", directory / "data", "-U", "postgres", "-A", "trust", "--no-sync", "-E", "UTF8"],
        check=True,
        stdout=subprocess.DEVNULL,
        cwd=directory,
        user=user,
        group=group,
    )
    server = PostgresServer(free_port(), directory, binaries)
    server.start()
    return server
