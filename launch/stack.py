"""Runs several services as one stack: start in order, wait until healthy, prefix their
logs, and stop all of them on Ctrl-C or as soon as one dies."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

STOP_GRACE_S = 20.0
EXIT_POLL_S = 0.1  # how often a service's process is checked for having exited
GROUP_POLL_S = 0.05  # how often a group whose leader exited is checked for members still running
MAX_LINE_BYTES = 16 * 1024  # longer log lines are shown in pieces of this size


@dataclass
class Service:
    """One process of the stack; ``health_url`` answering 200 means it is ready."""

    name: str
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    health_url: str | None = None
    ready_timeout_s: float = 120.0
    announce: str = ""
    process: asyncio.subprocess.Process | None = None


class StackFailed(Exception):
    """A service died or never became healthy."""


class Stack:
    """Starts services in order and supervises them until one exits or a stop is asked."""

    def __init__(self, services: list[Service], write: Callable[[str], None] | None = None) -> None:
        self.services = services
        self._write = write or (lambda line: print(line, flush=True))
        self._width = max(len(s.name) for s in services)
        self._pumps: list[asyncio.Task[None]] = []
        self.stop_requested = asyncio.Event()

    def say(self, text: str) -> None:
        self._write(f"{'launch':<{self._width}} | {text}")

    async def run(self) -> int:
        """0 after a requested stop, 1 when a service failed."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self.stop_requested.set)
        try:
            for service in self.services:
                await self._start(service)
                await self._wait_healthy(service)
            for service in self.services:
                if service.announce:
                    self.say(f"{service.name}: {service.announce}")
            self.say("all services are up; press Ctrl-C to stop")
            failed = await self._supervise()
        except StackFailed as exc:
            self.say(f"error: {exc}; stopping the stack")
            failed = True
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)
            await self._stop_all()
        return 1 if failed else 0

    async def _start(self, service: Service) -> None:
        self.say(f"starting {service.name}")
        service.process = await asyncio.create_subprocess_exec(
            *service.argv,
            env={**os.environ, **service.env},
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,
        )
        self._pumps.append(asyncio.create_task(self._pump(service)))

    async def _pump(self, service: Service) -> None:
        assert service.process is not None
        assert service.process.stdout is not None
        prefix = f"{service.name:<{self._width}} | "
        # read() rather than readline(): a line longer than the stream's limit must not stop the
        # pump, or the child blocks on its full pipe.
        pending = bytearray()
        while chunk := await service.process.stdout.read(64 * 1024):
            pending += chunk
            *parts, rest = pending.split(b"\n")
            lines = [bytes(part) for part in parts]
            pending = bytearray(rest)
            while len(pending) > MAX_LINE_BYTES:
                lines.append(bytes(pending[:MAX_LINE_BYTES]) + b" [line continues]")
                del pending[:MAX_LINE_BYTES]
            for line in lines:
                self._write(prefix + line.decode(errors="replace").rstrip())
        if pending:
            self._write(prefix + pending.decode(errors="replace").rstrip())

    async def _wait_healthy(self, service: Service) -> None:
        if service.health_url is None:
            return
        assert service.process is not None
        started = time.monotonic()
        next_note = started + 10
        async with aiohttp.ClientSession() as session:
            while True:
                if service.process.returncode is not None:
                    raise StackFailed(f"{service.name} exited with code {service.process.returncode} while starting")
                if self.stop_requested.is_set():
                    raise StackFailed("stop requested while starting")
                try:
                    async with session.get(service.health_url, timeout=aiohttp.ClientTimeout(total=2)) as response:
                        if response.status == 200:
                            self.say(f"{service.name} is healthy after {time.monotonic() - started:.0f}s")
                            return
                except (aiohttp.ClientError, TimeoutError):
                    pass
                now = time.monotonic()
                if now - started > service.ready_timeout_s:
                    raise StackFailed(f"{service.name} was not healthy after {service.ready_timeout_s:.0f}s")
                if now >= next_note:
                    self.say(
                        f"waiting for {service.name} ({now - started:.0f}s of at most {service.ready_timeout_s:.0f}s)"
                    )
                    next_note = now + 10
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(service.process.wait(), 0.5)

    async def _supervise(self) -> bool:
        waits = {asyncio.create_task(_exited(s.process)): s for s in self.services if s.process is not None}
        stop = asyncio.create_task(self.stop_requested.wait())
        done, _ = await asyncio.wait([*waits, stop], return_when=asyncio.FIRST_COMPLETED)
        for task in [*waits, stop]:
            if task not in done:
                task.cancel()
        if stop in done:
            self.say("stopping")
            return False
        for task in done:
            service = waits[task]
            self.say(f"error: {service.name} exited with code {service.process.returncode if service.process else '?'}")
        return True

    async def _stop_all(self) -> None:
        for service in reversed(self.services):
            process = service.process
            # The group, not only the leader: a leader that already exited (vLLM's API server)
            # may have left its children (the engine core, holding the GPU) running.
            if process is None or not _group_alive(process.pid):
                continue
            _signal_group(process.pid, signal.SIGTERM)
            if not await _group_ended(process, STOP_GRACE_S):
                _signal_group(process.pid, signal.SIGKILL)
                await _group_ended(process, STOP_GRACE_S)
            self.say(f"{service.name} stopped")
        for pump in self._pumps:
            try:
                await asyncio.wait_for(pump, 5)
            except TimeoutError:
                pump.cancel()


def _signal_group(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, sig)


async def _exited(process: asyncio.subprocess.Process) -> int:
    """The process's exit code once it exited. Not ``process.wait()``: that also waits for its
    output pipe to close, which a child it left behind (vLLM's engine) keeps open."""
    while process.returncode is None:  # noqa: ASYNC110 (asyncio offers no exit event but wait())
        await asyncio.sleep(EXIT_POLL_S)
    return process.returncode


def _group_alive(pgid: int) -> bool:
    """Whether a process of group ``pgid`` still runs. Zombies do not count: a member whose
    parent exited is reaped by init, which in a container may never do it."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    proc = Path("/proc")
    if not proc.is_dir():
        return True
    return any(entry.name.isdigit() and _running_member(entry / "stat", pgid) for entry in proc.iterdir())


def _running_member(stat: Path, pgid: int) -> bool:
    try:
        fields = stat.read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return False  # gone meanwhile
    # After the command's name: state, ppid, pgrp.
    return len(fields) > 2 and fields[0] != "Z" and int(fields[2]) == pgid


async def _group_ended(process: asyncio.subprocess.Process, timeout_s: float) -> bool:
    """Wait up to ``timeout_s`` for the leader (reaped) and every other member of its group to exit."""
    deadline = time.monotonic() + timeout_s
    try:
        await asyncio.wait_for(_exited(process), timeout_s)
    except TimeoutError:
        return False
    while _group_alive(process.pid):  # members that are not our children: nothing to await
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(GROUP_POLL_S)
    return True


def run_stack(services: list[Service]) -> int:
    """Run ``services`` until stopped; the process exit code."""
    try:
        return asyncio.run(Stack(services).run())
    except KeyboardInterrupt:
        return 130


__all__ = ["Service", "Stack", "StackFailed", "run_stack"]
