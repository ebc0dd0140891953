"""What ``pip install 'mmgateway[launch,video]'`` gives, in a clean environment without dev tools.

The wheel is built from this checkout and installed with its public extras into a new
virtual environment outside the checkout; every console script must then work from there.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fakes import free_port, free_socket

pytestmark = [pytest.mark.system, pytest.mark.timeout(600)]

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ("gateway", "launch", "video")
CONFIG = """
model_list:
  - model_name: vision
    litellm_params: {model: hosted_vllm/Qwen/Qwen2.5-VL-3B-Instruct, api_base: "http://127.0.0.1:8000/v1"}
    model_info: {supports_vision: true}
"""


def _uv() -> str:
    found = shutil.which("uv", path=str(Path(sys.executable).parent)) or shutil.which("uv")
    if found is None:
        pytest.fail("uv is needed to build the wheel (make install puts it in .venv)")
    return found


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A clean virtual environment holding the wheel and its public extras; yields its bin folder."""
    work = tmp_path_factory.mktemp("wheel")
    subprocess.run([_uv(), "build", "--wheel", "--out-dir", str(work / "dist"), str(ROOT)], check=True, cwd=work)
    wheel = next((work / "dist").glob("mmgateway-*.whl"))
    venv = work / "venv"
    subprocess.run([_uv(), "venv", "--quiet", "--python", sys.executable, str(venv)], check=True, cwd=work)
    subprocess.run(
        [_uv(), "pip", "install", "--quiet", "--python", str(venv / "bin" / "python"), f"{wheel}[launch,video]"],
        check=True,
        cwd=work,
    )
    return venv / "bin"


def _run(bin_dir: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VIDEO_", "LAUNCH_", "GATEWAY_", "VIRTUAL_ENV"))}
    env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"
    return subprocess.run([str(bin_dir / args[0]), *args[1:]], capture_output=True, text=True, cwd=cwd, env=env)


def test_no_dev_tools_and_no_checkout_on_the_path(installed: Path, tmp_path: Path) -> None:
    probe = "import importlib.util as u; print([m for m in ('pytest', 'httpx_fake', 'tests') if u.find_spec(m)])"
    result = _run(installed, "python", "-c", probe, cwd=tmp_path)
    assert result.stdout.strip() == "[]", result.stderr


@pytest.mark.parametrize("script", SCRIPTS)
def test_every_console_script_answers_help(installed: Path, tmp_path: Path, script: str) -> None:
    result = _run(installed, script, "--help", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert f"usage: {script}" in result.stdout


def test_gateway_check_config(installed: Path, tmp_path: Path) -> None:
    (tmp_path / "config.yaml").write_text(CONFIG)
    result = _run(installed, "gateway", "check-config", "config.yaml", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "vision" in result.stdout
    assert "hosted_vllm" in result.stdout


def test_launch_vllm_dry_run_without_vllm(installed: Path, tmp_path: Path) -> None:
    result = _run(installed, "launch", "vllm", "--profile", "gpu-24gb", "--dry-run", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "vllm.entrypoints.openai.api_server" in result.stdout
    assert "Traceback" not in result.stderr
    refused = _run(installed, "launch", "vllm", "--profile", "tiny", cwd=tmp_path)
    assert refused.returncode == 1
    assert refused.stderr.count("\n") == 1
    assert "vLLM is not installed" in refused.stderr


def _wait_healthy(process: subprocess.Popen[str], url: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        if process.poll() is not None:
            pytest.fail(f"the service exited: {process.stderr.read() if process.stderr else ''}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 (an http URL built here)
                assert response.status == 200
                return
        except OSError:
            assert time.monotonic() < deadline, f"{url} did not answer within {timeout_s:.0f} s"
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=0.2)  # returns at once if the service died


def test_video_serve_answers_health(installed: Path, tmp_path: Path) -> None:
    sock = free_socket()
    port = sock.getsockname()[1]
    sock.close()
    env = {k: v for k, v in os.environ.items() if not k.startswith("VIDEO_")}
    argv = [str(installed / "video"), "serve", "--port", str(port), "--data-dir", str(tmp_path / "data")]
    with subprocess.Popen(
        argv, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    ) as process:
        try:
            _wait_healthy(process, f"http://127.0.0.1:{port}/health", 60)
        finally:
            process.terminate()
            process.wait(timeout=20)


def test_gateway_serve_manages_keys_from_the_wheel(installed: Path, tmp_path: Path) -> None:
    """The installed gateway finds its migrations and keeps managed keys in SQLite under its data dir."""
    master = "sk-packaging-0123456789"
    (tmp_path / "config.yaml").write_text(CONFIG + f"general_settings: {{master_key: {master}}}\n")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GATEWAY_", "DATABASE_URL"))}
    argv = [str(installed / "gateway"), "serve", "--config", "config.yaml", "--port", str(port)]
    with subprocess.Popen(
        argv, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    ) as process:
        try:
            _wait_healthy(process, f"http://127.0.0.1:{port}/health", 60)
            request = urllib.request.Request(
                f"http://127.0.0.1:{port}/key/generate",
                data=b'{"key_alias": "packaged"}',
                headers={"Authorization": f"Bearer {master}", "Content-Type": "application/json"},
            )
            with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
                assert response.status == 200
                assert b'"key":"sk-' in response.read()
        finally:
            process.terminate()
            process.wait(timeout=20)
    assert (tmp_path / "data" / "gateway-keys.db").is_file()


def test_video_worker_without_temporal_says_so_in_one_line(installed: Path, tmp_path: Path) -> None:
    closed = free_port()
    result = _run(installed, "video", "worker", "--temporal-address", f"127.0.0.1:{closed}", cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr.startswith(f"error: cannot reach Temporal at 127.0.0.1:{closed}")
    assert result.stderr.count("\n") == 1
    assert (installed / "temporal").exists(), "the launch extra brings the Temporal CLI (dev server)"
