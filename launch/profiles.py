"""vLLM launch profiles for Qwen2.5-VL, chosen by GPU memory, and the command they make.

Sources for the choices (see the README's profile table): the vLLM Qwen2.5-VL recipe
(``max_pixels`` 1003520, ``--max-model-len`` well below the 128K default, data parallel
rather than tensor parallel for 7B), Qwen's model cards (AWQ checkpoints, pixel limits),
and measurements of the CPU server on this project's test machines.
"""

from __future__ import annotations

import json
import os
import shlex
from dataclasses import dataclass, field
from pathlib import Path

from launch.gpu import Gpu

PATCH_PIXELS = 28 * 28  # one image token per merged 28x28 patch
STRUCTURED_OUTPUTS = {"backend": "guidance", "disable_any_whitespace": True}


@dataclass(frozen=True)
class Profile:
    """Everything needed to serve one model on one kind of machine."""

    name: str
    model: str
    min_gpu_gib: float | None  # None: runs on CPU
    max_model_len: int
    max_num_seqs: int
    max_pixels: int
    limit_mm_per_prompt: dict[str, int]
    gpu_memory_utilization: float | None = None
    quantization: str | None = None
    dtype: str = "bfloat16"
    prefix_caching: bool = True
    enforce_eager: bool = False
    cpu_kv_cache_gib: int | None = None
    auto_select: bool = True
    notes: str = ""
    extra_env: dict[str, str] = field(default_factory=dict)

    @property
    def on_cpu(self) -> bool:
        """Whether the profile runs on the CPU build of vLLM."""
        return self.min_gpu_gib is None


PROFILES: dict[str, Profile] = {
    p.name: p
    for p in [
        Profile(
            "tiny",
            "tiny-qwen2.5-vl",
            None,
            max_model_len=512,
            max_num_seqs=64,
            max_pixels=64 * PATCH_PIXELS,
            limit_mm_per_prompt={"image": 2, "video": 1},
            enforce_eager=True,
            cpu_kv_cache_gib=1,
            auto_select=False,
            notes="random weights built locally: tests and smoke tests only",
            # vLLM keeps Responses (for previous_response_id and GET) only with this set, and never
            # evicts them: fine for tests, not for a long-running server (see the README).
            extra_env={"VLLM_ENABLE_RESPONSES_API_STORE": "1"},
        ),
        Profile(
            "cpu",
            "qwen2.5-vl-3b",
            None,
            max_model_len=8192,
            max_num_seqs=8,
            max_pixels=512 * PATCH_PIXELS,
            limit_mm_per_prompt={"image": 2, "video": 1},
            enforce_eager=True,
            cpu_kv_cache_gib=8,
            notes="no GPU: slow, for development",
        ),
        Profile(
            "gpu-8gb",
            "qwen2.5-vl-3b-awq",
            7,
            max_model_len=8192,
            max_num_seqs=16,
            max_pixels=768 * PATCH_PIXELS,
            limit_mm_per_prompt={"image": 4, "video": 1},
            gpu_memory_utilization=0.90,
            quantization="awq_marlin",
            dtype="float16",
        ),
        Profile(
            "gpu-16gb",
            "qwen2.5-vl-7b-awq",
            14,
            max_model_len=16384,
            max_num_seqs=32,
            max_pixels=1280 * PATCH_PIXELS,
            limit_mm_per_prompt={"image": 8, "video": 1},
            gpu_memory_utilization=0.90,
            quantization="awq_marlin",
            dtype="float16",
        ),
        Profile(
            "gpu-24gb",
            "qwen2.5-vl-7b",
            22,
            max_model_len=8192,
            max_num_seqs=32,
            max_pixels=1280 * PATCH_PIXELS,
            limit_mm_per_prompt={"image": 8, "video": 1},
            gpu_memory_utilization=0.92,
            notes="bf16 weights take ~16.6 GB: a shorter context leaves room for the KV cache",
        ),
        Profile(
            "gpu-80gb",
            "qwen2.5-vl-7b",
            70,
            max_model_len=32768,
            max_num_seqs=256,
            max_pixels=1280 * PATCH_PIXELS,
            limit_mm_per_prompt={"image": 16, "video": 2},
            gpu_memory_utilization=0.92,
            notes="high concurrency; one replica per GPU (data parallel)",
        ),
        Profile(
            "gpu-80gb-72b",
            "qwen2.5-vl-72b-awq",
            70,
            max_model_len=16384,
            max_num_seqs=64,
            max_pixels=1280 * PATCH_PIXELS,
            limit_mm_per_prompt={"image": 8, "video": 1},
            gpu_memory_utilization=0.92,
            quantization="awq_marlin",
            dtype="float16",
            auto_select=False,
            notes="the larger model on one 80 GB GPU (~41 GB of AWQ weights)",
        ),
    ]
}


def select_profile(gpus: list[Gpu]) -> Profile:
    """The largest auto-selectable profile that fits the smallest GPU; ``cpu`` without one."""
    if not gpus:
        return PROFILES["cpu"]
    memory_gib = min(gpu.memory_mib for gpu in gpus) / 1024
    fitting = [
        p for p in PROFILES.values() if p.auto_select and p.min_gpu_gib is not None and p.min_gpu_gib <= memory_gib
    ]
    if not fitting:
        return PROFILES["cpu"]
    return max(fitting, key=lambda p: p.min_gpu_gib or 0)


@dataclass(frozen=True)
class Launch:
    """A vLLM server command line and the environment it needs."""

    argv: list[str]
    env: dict[str, str]

    def shell(self) -> str:
        """The command as one line a person can paste into a shell."""
        env = " ".join(f"{k}={shlex.quote(v)}" for k, v in sorted(self.env.items()))
        return f"{env} {shlex.join(self.argv)}".strip()


def vllm_command(
    profile: Profile,
    model_path: str,
    served_name: str,
    *,
    python: str,
    host: str = "127.0.0.1",
    port: int = 8000,
    gpu_count: int = 0,
    offline: bool = True,
    extra_args: list[str] | None = None,
) -> Launch:
    """The exact command that serves ``model_path`` with ``profile``'s flags.

    ``offline``: the model is on disk, so vLLM must not contact the hub; otherwise
    ``model_path`` is a hub id that vLLM downloads.
    """
    argv = [python, "-m", "vllm.entrypoints.openai.api_server", "--model", model_path]
    argv += ["--served-model-name", served_name, "--host", host, "--port", str(port)]
    argv += ["--dtype", profile.dtype, "--max-model-len", str(profile.max_model_len)]
    argv += ["--max-num-seqs", str(profile.max_num_seqs)]
    argv += ["--limit-mm-per-prompt", json.dumps(profile.limit_mm_per_prompt, separators=(",", ":"))]
    argv += ["--mm-processor-kwargs", json.dumps({"max_pixels": profile.max_pixels}, separators=(",", ":"))]
    argv += ["--structured-outputs-config", json.dumps(STRUCTURED_OUTPUTS, separators=(",", ":"))]
    argv += ["--enable-prefix-caching" if profile.prefix_caching else "--no-enable-prefix-caching"]
    # The gateway scrapes /metrics every second (gateway.engine_stats): not a log line each time.
    argv += ["--disable-access-log-for-endpoints", "/metrics"]
    if profile.gpu_memory_utilization is not None:
        argv += ["--gpu-memory-utilization", str(profile.gpu_memory_utilization)]
    if profile.quantization:
        argv += ["--quantization", profile.quantization]
    if profile.enforce_eager:
        argv += ["--enforce-eager"]
    if gpu_count > 1 and not profile.on_cpu:
        argv += ["--data-parallel-size", str(gpu_count)]
    argv += extra_args or []
    env = {"HF_HUB_OFFLINE": "1"} if offline else {}
    env.update(profile.extra_env)
    if profile.on_cpu:
        env["VLLM_CPU_KVCACHE_SPACE"] = str(profile.cpu_kv_cache_gib or 4)
        root = Path(__file__).resolve().parents[1]
        env["PYTHONPATH"] = os.pathsep.join([str(root / "launch" / "cpu_site"), str(root)])
    return Launch(argv, env)
