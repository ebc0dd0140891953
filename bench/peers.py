"""The peers the gateway is measured beside: LiteLLM Proxy (installed on first use into
``.bench/litellm-venv``), nginx as a plain reverse proxy, and the configs and processes
of each run."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import yaml

from bench.load import KEY

ROOT = Path(__file__).resolve().parents[1]
LITELLM_VENV = ROOT / ".bench" / "litellm-venv"


def ensure_litellm() -> Path:
    binary = LITELLM_VENV / "bin" / "litellm"
    if binary.exists():
        return binary
    print("installing LiteLLM Proxy into .bench/litellm-venv (first run only)...", flush=True)
    uv = shutil.which("uv") or str(Path(sys.executable).parent / "uv")
    subprocess.run([uv, "venv", "--quiet", "--python", sys.executable, str(LITELLM_VENV)], check=True)
    python = str(LITELLM_VENV / "bin" / "python")
    subprocess.run([uv, "pip", "install", "--quiet", "--python", python, "litellm[proxy]"], check=True)
    return binary


def litellm_proxy(config: Path, port: int) -> tuple[list[str], dict[str, str]]:
    """The command and environment of LiteLLM Proxy serving ``config`` with one worker on ``port``."""
    binary = ensure_litellm()
    env = {"LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_LOG": "ERROR", "LITELLM_MASTER_KEY": KEY}
    command = [str(binary), "--config", str(config), "--host", "127.0.0.1"]
    command += ["--port", str(port), "--num_workers", "1", "--telemetry", "False"]
    return command, env


@contextmanager
def started(args: list[str], env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """Run ``args`` with its output in ``log``. A gateway keeps its managed-keys database beside the
    log, not in the folder the benchmark runs from."""
    defaults = {"GATEWAY_DATA_DIR": str(log.parent / "data")}
    with log.open("wb") as sink:
        process = subprocess.Popen(args, env={**defaults, **os.environ, **env}, stdout=sink, stderr=subprocess.STDOUT)
    try:
        yield process
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()


NGINX_CONF = """
worker_processes 1;
daemon off;
pid {work}/nginx.pid;
error_log {work}/nginx-error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {work}/nginx-body;
    proxy_temp_path {work}/nginx-proxy;
    upstream deployment {{ server 127.0.0.1:{upstream}; keepalive 128; }}
    server {{
        listen 127.0.0.1:{port};
        client_max_body_size 64m;
        location / {{
            proxy_pass http://deployment;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
            proxy_request_buffering off;
        }}
    }}
}}
"""


def nginx_command(work: Path, upstream_port: int, port: int) -> list[str] | None:
    """nginx as a plain reverse proxy in front of the fake deployment, or None when not installed."""
    binary = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
    if binary is None:
        return None
    conf = work / "nginx.conf"
    conf.write_text(NGINX_CONF.format(work=work, upstream=upstream_port, port=port))
    return [binary, "-c", str(conf), "-p", str(work), "-e", str(work / "nginx-error.log")]


def write_config(path: Path, upstream_port: int, ours: bool) -> None:
    entry = {
        "model_name": "bench",
        "litellm_params": {"model": "hosted_vllm/fake", "api_base": f"http://127.0.0.1:{upstream_port}/v1"},
    }
    config: dict[str, object] = {"model_list": [entry], "general_settings": {"master_key": KEY}}
    if ours:
        config["router_settings"] = {"num_retries": 0}
    path.write_text(yaml.safe_dump(config))
