"""What GPUs this machine has, read with nvidia-smi."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass


@dataclass(frozen=True)
class Gpu:
    name: str
    memory_mib: int


def parse_nvidia_smi(output: str) -> list[Gpu]:
    """Parse ``nvidia-smi --query-gpu=name,memory.total --format=csv,noheader,nounits``."""
    gpus = []
    for line in output.strip().splitlines():
        name, _, memory = line.rpartition(",")
        if name and memory.strip().isdigit():
            gpus.append(Gpu(name.strip(), int(memory.strip())))
    return gpus


def detect_gpus() -> list[Gpu]:
    """The NVIDIA GPUs visible here; empty when there is none or no driver."""
    binary = shutil.which("nvidia-smi")
    if binary is None:
        return []
    try:
        result = subprocess.run(
            [binary, "--query-gpu=name,memory.total", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return []
    return parse_nvidia_smi(result.stdout)
