"""``launch up`` process handling: start in order, wait for health, stop everything when one dies."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import pytest

from launch.stack import Service, Stack
from tests.fakes import free_socket

pytestmark = [pytest.mark.service, pytest.mark.timeout(60)]

PY = sys.executable
WAIT_FOREVER = [PY, "-c", "import signal; print('ready', flush=True); signal.pause()"]


def _alive(pid: int) -> bool:
    """Running (a zombie left for init to reap has ended)."""
    try:
        os.kill(pid, 0)
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (ProcessLookupError, FileNotFoundError):
        return False
    return state != "Z"


def _port() -> int:
    sock = free_socket()
    port: int = sock.getsockname()[1]
    sock.close()
    return port


async def test_a_dying_service_brings_the_stack_down() -> None:
    lines: list[str] = []
    steady = Service("steady", WAIT_FOREVER)
    crashing = Service("crashing", [PY, "-c", "import sys; print('boom', flush=True); sys.exit(3)"])
    stack = Stack([steady, crashing], lines.append)
    assert await stack.run() == 1
    assert steady.process is not None
    assert not _alive(steady.process.pid)
    assert any(line.endswith("error: crashing exited with code 3") for line in lines)
    assert "crashing | boom" in lines
    assert any(line.endswith("steady stopped") for line in lines)


async def test_services_wait_for_health_and_stop_on_request() -> None:
    lines: list[str] = []
    port = _port()
    web = Service(
        "web",
        [PY, "-m", "http.server", str(port), "--bind", "127.0.0.1"],
        health_url=f"http://127.0.0.1:{port}/",
        ready_timeout_s=30,
        announce=f"http://127.0.0.1:{port}/",
    )
    after = Service("after", WAIT_FOREVER)
    up = asyncio.Event()

    def write(line: str) -> None:
        lines.append(line)
        if "all services are up" in line:
            up.set()

    stack = Stack([web, after], write)
    running = asyncio.create_task(stack.run())
    await asyncio.wait_for(up.wait(), 30)
    healthy = next(line for line in lines if "web is healthy" in line)
    assert lines.index(healthy) < lines.index("launch | starting after")
    stack.stop_requested.set()
    assert await running == 0
    assert web.process is not None
    assert after.process is not None
    assert not _alive(web.process.pid)
    assert not _alive(after.process.pid)


async def test_a_service_that_never_gets_healthy_fails_the_start() -> None:
    lines: list[str] = []
    port = _port()
    deaf = Service("deaf", WAIT_FOREVER, health_url=f"http://127.0.0.1:{port}/health", ready_timeout_s=1)
    never_started = Service("later", WAIT_FOREVER)
    assert await Stack([deaf, never_started], lines.append).run() == 1
    assert any("deaf was not healthy after 1s" in line for line in lines)
    assert never_started.process is None


async def test_a_service_dying_while_starting_is_reported() -> None:
    lines: list[str] = []
    port = _port()
    broken = Service("broken", [PY, "-c", "raise SystemExit(7)"], health_url=f"http://127.0.0.1:{port}/")
    assert await Stack([broken], lines.append).run() == 1
    assert any("broken exited with code 7 while starting" in line for line in lines)


async def test_a_log_line_over_64_kib_neither_stops_the_pump_nor_blocks_the_service() -> None:
    lines: list[str] = []
    # 300 KiB on one line, then more output than a pipe holds: a dead pump would block the child.
    chatty = Service(
        "chatty",
        [PY, "-c", "import sys; print('x' * 300_000); [print('line', i) for i in range(20000)]; print('finished')"],
    )
    stack = Stack([chatty, Service("steady", WAIT_FOREVER)], lines.append)
    assert await asyncio.wait_for(stack.run(), 30) == 1
    assert "chatty | finished" in lines
    assert "chatty | line 19999" in lines
    long_pieces = [line for line in lines if line.startswith("chatty | xxxx")]
    assert sum(line.count("x") for line in long_pieces) == 300_000


async def test_a_leader_that_exited_does_not_orphan_its_children(tmp_path: Path) -> None:
    # vLLM's API server can die and leave its engine process (and the GPU memory) behind.
    pid_file = tmp_path / "child.pid"
    leader = Service(
        "leader",
        ["sh", "-c", f"sleep 300 & echo $! > {pid_file}; echo started; exit 3"],
    )
    steady = Service("steady", WAIT_FOREVER)
    lines: list[str] = []
    assert await Stack([steady, leader], lines.append).run() == 1
    child = int(pid_file.read_text())
    orphaned = _alive(child)
    if orphaned:
        os.kill(child, 9)
    assert not orphaned, "the child of the exited leader was left running"
    assert any(line.endswith("leader stopped") for line in lines)
