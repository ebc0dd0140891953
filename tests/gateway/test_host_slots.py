"""Slots held across the processes of one host: what one process holds, another cannot take,
and a process that dies frees its slots."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.deployment import Deployment
from gateway.limits.host import HostSlots

pytestmark = pytest.mark.unit

HOLDER = """
import sys, time
from pathlib import Path
from gateway.deployment import Deployment
from gateway.limits.host import HostSlots
deployment = Deployment("vllm@10.0.0.1", "vision", "hosted_vllm", "m", "http://x/v1", None, 1, 1, 1, True, 2)
slots = HostSlots(Path(sys.argv[1]))
assert slots.take(deployment, "a") and slots.take(deployment, "b") and not slots.take(deployment, "c")
print("holding", flush=True)
time.sleep(600)
"""


def _deployment() -> Deployment:
    return Deployment("vllm@10.0.0.1", "vision", "hosted_vllm", "m", "http://x/v1", None, 1, 1, 1, True, 2)


def test_slots_are_held_across_processes_and_freed_when_one_dies(tmp_path: Path) -> None:
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(tmp_path)], stdout=subprocess.PIPE)
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline() == b"holding\n"
        slots = HostSlots(tmp_path)
        assert not slots.take(_deployment(), "mine"), "another process holds both slots"
    finally:
        holder.kill()
        holder.wait()
        if holder.stdout is not None:
            holder.stdout.close()
    assert slots.take(_deployment(), "mine")
    assert slots.take(_deployment(), "again")
    assert not slots.take(_deployment(), "third")
    slots.give_back("mine")
    slots.give_back("mine")  # twice: nothing more is freed
    assert slots.take(_deployment(), "third")
    assert not slots.take(_deployment(), "fourth")
    slots.close()
    assert all("10.0.0.1" not in p.name for p in tmp_path.iterdir()), "file names carry no address"


def test_a_departed_deployments_files_close_once_its_last_slot_is_back(tmp_path: Path) -> None:
    slots = HostSlots(tmp_path)
    assert slots.take(_deployment(), "in-flight")
    opened = len(os.listdir("/proc/self/fd"))
    slots.forget(_deployment().id)  # the pod left while a request to it runs
    assert len(os.listdir("/proc/self/fd")) == opened
    slots.give_back("in-flight")
    assert len(os.listdir("/proc/self/fd")) == opened - 2, "its two slot files are closed"
    slots.close()
