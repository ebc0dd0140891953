"""What ``launch up`` starts: vLLM with a profile, the gateway in front of it, the video service."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from common.env import read_env
from launch.catalogue import find
from launch.environment import temporal_cli
from launch.gpu import detect_gpus
from launch.profiles import PROFILES, Profile, select_profile, vllm_command
from launch.stack import Service

TINY_WARNING = (
    "!!! Serving the TINY RANDOM-WEIGHTS model: every answer is meaningless. !!!\n"
    "!!! It proves the stack works. For real answers: `launch models download qwen2.5-vl-3b` (CPU)\n"
    "!!! or run on a GPU machine, where a real profile is chosen by GPU memory."
)


@dataclass(frozen=True)
class UpOptions:
    root: Path
    models_dir: Path
    vllm_python: str
    profile: str | None = None
    tiny: bool = False
    host: str = "127.0.0.1"
    vllm_port: int = 8000
    gateway_port: int = 4000
    video_port: int = 8080
    with_video: bool = True
    engine: str = "local"  # where video jobs run: in the video service, or on Temporal workers
    video_workers: int = 2
    temporal_port: int = 7233
    temporal_ui_port: int = 8233
    temporal_http_port: int = 7243
    worker_metrics_port: int = 9464
    env_file: Path = Path(".env")
    state_dir: Path = Path(".launch")


def choose_profile(options: UpOptions, say: Callable[[str], None]) -> Profile:
    """The requested profile; without one, by GPU memory, falling back to the tiny model."""
    if options.tiny:
        return PROFILES["tiny"]
    if options.profile:
        if options.profile not in PROFILES:
            raise RuntimeError(f"unknown profile '{options.profile}'; choose from {', '.join(PROFILES)}")
        return PROFILES[options.profile]
    gpus = detect_gpus()
    profile = select_profile(gpus)
    if profile.on_cpu and not (options.models_dir / profile.model).is_dir():
        say(f"no GPU found and {profile.model} is not in {options.models_dir}: using the tiny model")
        return PROFILES["tiny"]
    return profile


def gateway_config(
    served_name: str, vllm_url: str, max_parallel: int, env: dict[str, str], context_tokens: int | None = None
) -> dict[str, Any]:
    """A gateway config: ``vision`` on the local vLLM; ``chat`` on Nebius when a key is set, else local."""
    local = {
        "model": f"hosted_vllm/{served_name}",
        "api_base": vllm_url,
        "timeout": 300,
        "stream_timeout": 120,
        "max_parallel_requests": max_parallel,
    }
    context = {"max_input_tokens": context_tokens} if context_tokens else {}
    models: list[dict[str, Any]] = [
        {
            "model_name": "vision",
            "litellm_params": local,
            "model_info": {"id": "local-vllm", "supports_vision": True, **context},
        }
    ]
    if env.get("NEBIUS_API_KEY"):
        nebius = {"api_key": "os.environ/NEBIUS_API_KEY", "timeout": 120}
        models.append(
            {
                "model_name": "chat",
                "litellm_params": {"model": "nebius/meta-llama/Llama-3.3-70B-Instruct", **nebius},
                "model_info": {"id": "nebius-chat"},
            }
        )
        models.append({"model_name": "nebius/*", "litellm_params": {"model": "nebius/*", **nebius}})
    else:
        models.append(
            {
                "model_name": "chat",
                "litellm_params": local,
                "model_info": {"id": "local-vllm-chat", "supports_vision": True, **context},
            }
        )
    config: dict[str, Any] = {
        "model_list": models,
        # No routing_strategy: engine-aware for the vLLM groups, simple-shuffle for cloud ones.
        "router_settings": {"num_retries": 2, "cooldown_time": 10},
    }
    if env.get("GATEWAY_MASTER_KEY"):
        config["general_settings"] = {"master_key": "os.environ/GATEWAY_MASTER_KEY"}
    return config


def plan_stack(options: UpOptions, say: Callable[[str], None]) -> list[Service]:
    """Prepare everything ``launch up`` needs and return the services to run, in start order."""
    profile = choose_profile(options, say)
    spec = find(profile.model)
    # Absolute: the tiny model is built from the checkout's folder, whatever the current one is.
    model_dir = (options.models_dir / spec.name).absolute()
    if profile.name == "tiny":
        say(TINY_WARNING)
        if not model_dir.is_dir():
            say(f"building the tiny model in {model_dir}")
            subprocess.run(
                [options.vllm_python, "-m", "launch.tiny_model", str(model_dir)],
                cwd=options.root,
                env={**os.environ, "PYTHONPATH": str(options.root)},
                check=True,
            )
    local = model_dir.is_dir()
    launch = vllm_command(
        profile,
        str(model_dir) if local else spec.repo_id,
        spec.name,
        python=options.vllm_python,
        host=options.host,
        port=options.vllm_port,
        gpu_count=0 if profile.on_cpu else len(detect_gpus()),
        offline=local,
    )
    env = dict(launch.env)
    say(f"vLLM profile {profile.name}: {launch.shell()}")
    vllm_url = f"http://{_client_host(options.host)}:{options.vllm_port}"
    options.state_dir.mkdir(parents=True, exist_ok=True)
    config_path = options.state_dir / "gateway.yaml"
    env_seen = read_env(options.env_file)
    config = gateway_config(spec.name, f"{vllm_url}/v1", profile.max_num_seqs * 2, env_seen, profile.max_model_len)
    with_video = options.with_video and _installed("video.cli")
    video_url = f"http://{_client_host(options.host)}:{options.video_port}"
    if with_video:
        config["model_list"].append(video_models(video_url))
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    bin_dir = Path(sys.executable).parent
    gateway_url = f"http://{_client_host(options.host)}:{options.gateway_port}"
    groups = ", ".join(m["model_name"] for m in config["model_list"])
    services = [
        Service(
            "vllm",
            launch.argv,
            env,
            health_url=f"{vllm_url}/health",
            ready_timeout_s=600 if profile.on_cpu else 1800,
            announce=f"{vllm_url}/v1 serving '{spec.name}' (profile {profile.name})",
        ),
        Service(
            "gateway",
            [
                str(bin_dir / "gateway"),
                "serve",
                "--config",
                str(config_path),
                "--host",
                options.host,
                "--port",
                str(options.gateway_port),
                "--env-file",
                str(options.env_file),
            ],
            {"GATEWAY_ENVIRONMENT": "development"},
            health_url=f"{gateway_url}/health",
            ready_timeout_s=60,
            announce=f"{gateway_url}/v1 (OpenAI API; models: {groups}; docs at {gateway_url}/docs)",
        ),
    ]
    if with_video:
        video_env = {**video_limits(profile), **video_gateway_key(env_seen)}
        if options.engine == "temporal":
            temporal = temporal_services(options, f"{gateway_url}/v1", video_env)
            services += temporal
            video_env = {**video_env, **temporal[0].env}
        services.append(
            Service(
                "video",
                [
                    str(bin_dir / "video"),
                    "serve",
                    "--gateway-url",
                    f"{gateway_url}/v1",
                    "--host",
                    options.host,
                    "--port",
                    str(options.video_port),
                ],
                video_env,
                health_url=f"{video_url}/health",
                ready_timeout_s=60,
                announce=f"{video_url} (video upload, status and chat)",
            )
        )
    return services


def temporal_services(options: UpOptions, gateway_v1: str, video_env: dict[str, str]) -> list[Service]:
    """A Temporal dev server (its history kept in ``.launch/temporal.db``, UI on ``temporal_ui_port``)
    and ``video worker`` processes; the video service then only starts and watches workflows."""
    host = _client_host(options.host)
    http_port = options.temporal_http_port
    engine_env = {"VIDEO_ENGINE": "temporal", "VIDEO_TEMPORAL_ADDRESS": f"{host}:{options.temporal_port}"}
    server = Service(
        "temporal",
        [
            temporal_cli(),
            "server",
            "start-dev",
            "--ip",
            options.host,
            "--port",
            str(options.temporal_port),
            "--http-port",
            str(http_port),
            "--ui-port",
            str(options.temporal_ui_port),
            "--db-filename",
            str(options.state_dir / "temporal.db"),
            "--log-level",
            "warn",
        ],
        engine_env,
        health_url=f"http://{host}:{http_port}/api/v1/namespaces/default",
        ready_timeout_s=60,
        announce=f"Temporal at {host}:{options.temporal_port}; its UI (every video job) at http://{host}:{options.temporal_ui_port}",
    )
    workers = Service(
        "workers",
        [
            str(Path(sys.executable).parent / "video"),
            "worker",
            "--gateway-url",
            gateway_v1,
            "--processes",
            str(options.video_workers),
            "--metrics-port",
            str(options.worker_metrics_port),
        ],
        {**video_env, **engine_env},
        health_url=f"http://127.0.0.1:{options.worker_metrics_port}/metrics",
        ready_timeout_s=60,
        announce=f"{options.video_workers} video worker process(es); metrics from port {options.worker_metrics_port}",
    )
    return [server, workers]


def video_limits(profile: Profile) -> dict[str, str]:
    """Keep descriptions, summaries and answers inside a small model's context."""
    if profile.max_model_len >= 4096:
        return {}
    return {
        "VIDEO_DESCRIPTION_MAX_TOKENS": "24",
        "VIDEO_ANSWER_MAX_TOKENS": "48",
        "VIDEO_CONTEXT_TOKEN_BUDGET": "150",
        "VIDEO_SUMMARY_BATCH_SIZE": "4",
        "VIDEO_CHUNK_SECONDS": "4",  # clips of a few frames: their visual tokens fit the context too
        "VIDEO_MAX_CLIP_FRAMES": "6",
        "VIDEO_LOOK_FRAMES": "2",  # looking again: two frames beside the question
        "VIDEO_LOOK_MAX_TOKENS": "24",
    }


def video_models(video_url: str) -> dict[str, Any]:
    """The gateway group ``video/*``: each video session as the model ``video/<session_id>``, answered
    by the video service with the caller's own key (forwarded), so sessions stay their owners'."""
    return {
        "model_name": "video/*",
        "litellm_params": {
            "model": "openai/video/*",
            "api_base": f"{video_url}/v1",
            "forward_client_authorization": True,
            "timeout": 300,
        },
        "model_info": {"id": "video-sessions"},
    }


def video_gateway_key(env: dict[str, str]) -> dict[str, str]:
    """The video service calls the gateway with its master key, unless it was given a key of its own."""
    if env.get("VIDEO_API_KEY") or not env.get("GATEWAY_MASTER_KEY"):
        return {}
    return {"VIDEO_API_KEY": env["GATEWAY_MASTER_KEY"]}


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        return False


def _listen(host: str, port: int) -> list[str]:
    return ["--host", host, "--port", str(port)]


def _client_host(host: str) -> str:
    return "127.0.0.1" if host in ("0.0.0.0", "::") else host
