"""A real vLLM OpenAI server on CPU with the tiny random-weights Qwen2.5-VL, shared by a session."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from launch.profiles import PROFILES, vllm_command
from tests.fakes import free_socket

ROOT = Path(__file__).resolve().parents[2]
VLLM_PYTHON = os.environ.get("LAUNCH_VLLM_PYTHON", str(ROOT / ".venv-vllm" / "bin" / "python"))
TINY_DIR = ROOT / "models" / "tiny-qwen2.5-vl"
SERVED_NAME = "tiny-qwen2.5-vl"
RERANKER_DIR = ROOT / "models" / "tiny-reranker"
RERANKER_NAME = "tiny-reranker"
WHISPER_DIR = ROOT / "models" / "tiny-whisper"
WHISPER_NAME = "tiny-whisper"
READY_MARKER = "Application startup complete"
START_TIMEOUT_S = 600


@dataclass
class VllmServer:
    url: str
    log: Path


def _wait_for_health(url: str, process: subprocess.Popen[str], timeout_s: float = 60) -> None:
    """uvicorn logs its startup just before it binds: poll until /health answers."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 - loopback http URL
                if response.status == 200:
                    return
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                raise
        time.sleep(0.2)


def _built(module: str, directory: Path) -> Path:
    """A tiny model built once by ``module`` with the vLLM environment, kept under models/."""
    if not Path(VLLM_PYTHON).exists():
        pytest.fail(f"the vLLM environment is missing ({VLLM_PYTHON}); run `make vllm-env`")
    if not (directory / "config.json").is_file():
        subprocess.run(
            [VLLM_PYTHON, "-m", module, str(directory)],
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            check=True,
        )
    return directory


@pytest.fixture(scope="session")
def tiny_model() -> Path:
    """The tiny model, built once and kept under models/."""
    return _built("launch.tiny_model", TINY_DIR)


@pytest.fixture(scope="session")
def vllm_server(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[VllmServer]:
    """vLLM started with the tiny profile; ready when its log says so."""
    yield from _serve_tiny(tiny_model, tmp_path_factory.mktemp("vllm") / "vllm.log")


@pytest.fixture(scope="session")
def second_vllm_server(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[VllmServer]:
    """A second replica of ``vllm_server`` (the same model and profile), for routing between pods."""
    yield from _serve_tiny(tiny_model, tmp_path_factory.mktemp("vllm-b") / "vllm.log")


def _serve_tiny(model: Path, log_path: Path) -> Iterator[VllmServer]:
    sock = free_socket()
    port = sock.getsockname()[1]
    sock.close()
    launch = vllm_command(PROFILES["tiny"], str(model), SERVED_NAME, python=VLLM_PYTHON, port=port)
    yield from _serve(launch.argv, launch.env, port, log_path)


@pytest.fixture(scope="session")
def reranker_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VllmServer]:
    """vLLM serving the tiny random cross-encoder (launch.tiny_reranker): rerank and score."""
    model = _built("launch.tiny_reranker", RERANKER_DIR)
    yield from _serve_small(model, RERANKER_NAME, 512, tmp_path_factory.mktemp("reranker") / "vllm.log")


@pytest.fixture(scope="session")
def whisper_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VllmServer]:
    """vLLM serving the tiny random Whisper (launch.tiny_whisper): transcriptions and translations."""
    model = _built("launch.tiny_whisper", WHISPER_DIR)
    yield from _serve_small(model, WHISPER_NAME, 448, tmp_path_factory.mktemp("whisper") / "vllm.log")


def _serve_small(model: Path, name: str, max_len: int, log_path: Path) -> Iterator[VllmServer]:
    """vLLM with a tiny model that is not a chat model: the tiny profile's environment (CPU KV
    cache, the torchvision shim, offline), and only the arguments every model takes."""
    sock = free_socket()
    port = sock.getsockname()[1]
    sock.close()
    env = vllm_command(PROFILES["tiny"], str(model), name, python=VLLM_PYTHON, port=port).env
    argv = [VLLM_PYTHON, "-m", "vllm.entrypoints.openai.api_server", "--model", str(model)]
    argv += ["--served-model-name", name, "--host", "127.0.0.1", "--port", str(port)]
    argv += ["--dtype", "float32", "--max-model-len", str(max_len), "--enforce-eager"]
    yield from _serve(argv, env, port, log_path)


def _serve(argv: list[str], env: dict[str, str], port: int, log_path: Path) -> Iterator[VllmServer]:
    """Run a vLLM server until the session ends; ready when its log says so."""
    process = subprocess.Popen(
        argv,
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    ready = threading.Event()

    def pump() -> None:
        assert process.stdout is not None
        with log_path.open("w") as log:
            for line in process.stdout:
                log.write(line)
                log.flush()
                if READY_MARKER in line:
                    ready.set()
        ready.set()  # the process ended: stop waiting

    pumper = threading.Thread(target=pump, daemon=True)
    pumper.start()
    try:
        ready.wait(START_TIMEOUT_S)
        if process.poll() is not None or not ready.is_set():
            tail = log_path.read_text()[-4000:]
            pytest.fail(f"vLLM did not start (exit {process.poll()}); log tail:\n{tail}")
        url = f"http://127.0.0.1:{port}"
        _wait_for_health(f"{url}/health", process)
        yield VllmServer(url, log_path)
    finally:
        try:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout=60)
        except ProcessLookupError:
            pass
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        pumper.join(timeout=30)
        if process.stdout is not None:
            process.stdout.close()
