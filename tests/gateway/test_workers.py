"""``gateway serve --workers N``: several processes on one port, metrics summed over them, limits divided."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.conftest import UpstreamFactory, deployment
from tests.gateway_process import GatewayProcess
from tests.metrics_samples import sample

pytestmark = [pytest.mark.service, pytest.mark.timeout(120)]
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


async def test_workers_share_a_port_sum_their_metrics_and_divide_limits(
    upstream: UpstreamFactory, tmp_path: Path
) -> None:
    fake = await upstream("vllm")
    config = {
        "model_list": [deployment("vision", fake)],
        "gateway_settings": {"api_keys": [{"key": KEY, "rpm": 10}]},
    }
    gateway = GatewayProcess(tmp_path, config, workers=2)
    try:
        await gateway.wait_up()
        assert len(_children(gateway.process.pid)) >= 2, "two worker processes serve the port"
        body = {"model": "vision", "messages": [{"role": "user", "content": "hi"}]}
        statuses = []
        # A new connection per request, so the kernel spreads them over the workers.
        for _ in range(30):
            async with httpx.AsyncClient(base_url=gateway.url, headers={"Authorization": f"Bearer {KEY}"}) as client:
                statuses.append((await client.post("/v1/chat/completions", json=body)).status_code)
        admitted = statuses.count(200)
        # rpm 10 divided between two workers: 5 each, whichever worker a request reached.
        assert 5 <= admitted <= 11, statuses
        assert set(statuses) == {200, 429}
        async with httpx.AsyncClient(base_url=gateway.url) as client:
            for _ in range(4):  # whichever worker answers the scrape, it reports every worker's counts
                metrics = (await client.get("/metrics")).text
                assert sample(metrics, "gateway_requests_total", model_group="vision", status_class="2xx") == admitted
    finally:
        gateway.stop()
