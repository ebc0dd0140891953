"""Real ``gateway serve`` processes on free loopback ports, for tests of several processes."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import yaml

from tests.fakes import free_port, stop_gracefully

ROOT = Path(__file__).resolve().parents[1]


class GatewayProcess:
    """One ``gateway serve`` process (with ``workers`` worker processes) and its URL."""

    def __init__(
        self, directory: Path, config: dict[str, Any], workers: int = 1, env: dict[str, str] | None = None
    ) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "config.yaml").write_text(yaml.safe_dump(config))
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {**os.environ, "PYTHONPATH": str(ROOT), "GATEWAY_ENVIRONMENT": "development", **(env or {})}
        command = [sys.executable, "-m", "gateway", "serve", "--config", "config.yaml", "--port", str(self.port)]
        command += ["--workers", str(workers)]
        self.log_path = directory / "gateway.log"  # stderr: the JSON log lines, access lines included
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(command, cwd=directory, env=env, stdout=subprocess.DEVNULL, stderr=log)

    async def wait_up(self) -> None:
        async with httpx.AsyncClient() as client:
            for _ in range(600):
                if self.process.poll() is not None:
                    raise AssertionError("the gateway exited at start")
                try:
                    if (await client.get(f"{self.url}/health")).status_code == 200:
                        return
                except httpx.TransportError:
                    await asyncio.sleep(0.05)
        raise AssertionError("the gateway did not start")

    def stop(self) -> None:
        stop_gracefully(self.process)

    def kill(self) -> None:
        """SIGKILL: the process gets no chance to write anything."""
        self.process.kill()
        self.process.wait()
