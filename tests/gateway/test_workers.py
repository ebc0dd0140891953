"""``gateway serve --workers N``: several processes on one port, metrics summed over them, limits divided."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import yaml

from tests.conftest import UpstreamFactory, deployment
from tests.fakes import free_socket
from tests.metrics_samples import sample

pytestmark = [pytest.mark.service, pytest.mark.timeout(120)]
ROOT = Path(__file__).resolve().parents[2]
KEY = "sk-workers-0123456789"


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def _start_gateway(directory: Path, port: int) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "GATEWAY_ENVIRONMENT": "development"}
    command = [sys.executable, "-m", "gateway", "serve", "--config", "config.yaml", "--port", str(port)]
    command += ["--workers", "2"]
    return subprocess.Popen(command, cwd=directory, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


async def _wait_up(url: str, process: subprocess.Popen[bytes]) -> None:
    async with httpx.AsyncClient() as client:
        for _ in range(400):
            assert process.poll() is None, "the gateway exited at start"
            try:
                if (await client.get(f"{url}/health")).status_code == 200:
                    return
            except httpx.TransportError:
                await asyncio.sleep(0.05)
    raise AssertionError("the gateway did not start")


async def test_workers_share_a_port_sum_their_metrics_and_divide_limits(
    upstream: UpstreamFactory, tmp_path: Path
) -> None:
    fake = await upstream("vllm")
    config = {
        "model_list": [deployment("vision", fake)],
        "gateway_settings": {"api_keys": [{"key": KEY, "rpm": 10}]},
    }
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    sock = free_socket()
    port = sock.getsockname()[1]
    sock.close()
    process = _start_gateway(tmp_path, port)
    url = f"http://127.0.0.1:{port}"
    try:
        await _wait_up(url, process)
        assert len(_children(process.pid)) >= 2, "two worker processes serve the port"
        body = {"model": "vision", "messages": [{"role": "user", "content": "hi"}]}
        statuses = []
        # A new connection per request, so the kernel spreads them over the workers.
        for _ in range(30):
            async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {KEY}"}) as client:
                statuses.append((await client.post("/v1/chat/completions", json=body)).status_code)
        admitted = statuses.count(200)
        # rpm 10 divided between two workers: 5 each, whichever worker a request reached.
        assert 5 <= admitted <= 11, statuses
        assert set(statuses) == {200, 429}
        async with httpx.AsyncClient(base_url=url) as client:
            for _ in range(4):  # whichever worker answers the scrape, it reports every worker's counts
                metrics = (await client.get("/metrics")).text
                assert sample(metrics, "gateway_requests_total", model_group="vision", status_class="2xx") == admitted
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)
