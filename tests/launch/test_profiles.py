"""Profile selection by GPU memory, the vLLM command each makes, and the model catalogue."""

from __future__ import annotations

import json

import pytest

from launch.catalogue import CATALOGUE, find
from launch.cli import main
from launch.gpu import Gpu, parse_nvidia_smi
from launch.profiles import PROFILES, select_profile, vllm_command

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("memory_gib", "expected"),
    [
        (None, "cpu"),
        (4, "cpu"),
        (8, "gpu-8gb"),
        (12, "gpu-8gb"),
        (16, "gpu-16gb"),
        (24, "gpu-24gb"),
        (48, "gpu-24gb"),
        (80, "gpu-80gb"),
        (141, "gpu-80gb"),
    ],
)
def test_profile_follows_gpu_memory(memory_gib: int | None, expected: str) -> None:
    gpus = [] if memory_gib is None else [Gpu("GPU", memory_gib * 1024 - 300)]
    assert select_profile(gpus).name == expected


def test_smallest_gpu_decides() -> None:
    assert select_profile([Gpu("big", 81920), Gpu("small", 24576)]).name == "gpu-24gb"


def test_nvidia_smi_output_is_parsed() -> None:
    out = "NVIDIA H100 80GB HBM3, 81559\nNVIDIA A10G, 23028\n"
    assert parse_nvidia_smi(out) == [Gpu("NVIDIA H100 80GB HBM3", 81559), Gpu("NVIDIA A10G", 23028)]
    assert parse_nvidia_smi("") == []


def _flags(argv: list[str]) -> dict[str, str | None]:
    flags: dict[str, str | None] = {}
    for index, item in enumerate(argv):
        if item.startswith("--"):
            following = argv[index + 1] if index + 1 < len(argv) else None
            flags[item] = None if following is None or following.startswith("--") else following
    return flags


def test_7b_on_80gb_gpus_runs_data_parallel_with_recipe_pixels() -> None:
    launch = vllm_command(
        PROFILES["gpu-80gb"], "Qwen/Qwen2.5-VL-7B-Instruct", "qwen2.5-vl-7b", python="py", gpu_count=4
    )
    flags = _flags(launch.argv)
    assert launch.argv[:3] == ["py", "-m", "vllm.entrypoints.openai.api_server"]
    assert json.loads(flags["--mm-processor-kwargs"] or "") == {"max_pixels": 1003520}
    assert flags["--data-parallel-size"] == "4"
    assert "--tensor-parallel-size" not in flags
    assert int(flags["--max-model-len"] or 0) < 128 * 1024
    assert flags["--gpu-memory-utilization"] == "0.92"
    assert "--enable-prefix-caching" in flags
    assert "VLLM_CPU_KVCACHE_SPACE" not in launch.env


def test_awq_profiles_quantize_and_cpu_profiles_use_the_shim() -> None:
    awq = _flags(vllm_command(PROFILES["gpu-8gb"], "m", "m", python="py").argv)
    assert awq["--quantization"] == "awq_marlin"
    assert awq["--dtype"] == "float16"
    tiny = vllm_command(PROFILES["tiny"], "/models/tiny", "tiny", python="py")
    assert _flags(tiny.argv)["--max-model-len"] == "512"
    assert "--enforce-eager" in tiny.argv
    assert tiny.env["VLLM_CPU_KVCACHE_SPACE"] == "1"
    assert tiny.env["HF_HUB_OFFLINE"] == "1"
    assert tiny.env["PYTHONPATH"].split(":")[0].endswith("launch/cpu_site")


def test_every_profile_sets_the_documented_flags() -> None:
    for profile in PROFILES.values():
        flags = _flags(vllm_command(profile, "m", "m", python="py").argv)
        for flag in ("--max-model-len", "--max-num-seqs", "--limit-mm-per-prompt", "--mm-processor-kwargs"):
            assert flag in flags, (profile.name, flag)
        assert json.loads(flags["--structured-outputs-config"] or "")["backend"] == "guidance"
        assert profile.model in CATALOGUE


def test_hub_model_is_not_forced_offline() -> None:
    launch = vllm_command(PROFILES["gpu-24gb"], "Qwen/Qwen2.5-VL-7B-Instruct", "m", python="py", offline=False)
    assert "HF_HUB_OFFLINE" not in launch.env


def test_dry_run_prints_the_command(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--vllm-python", "/opt/vllm/bin/python", "vllm", "--profile", "gpu-16gb", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "# profile gpu-16gb" in out
    assert "--model Qwen/Qwen2.5-VL-7B-Instruct-AWQ" in out
    assert "--max-pixels" not in out
    assert """--mm-processor-kwargs '{"max_pixels":1003520}'""" in out


def test_dry_run_passes_extra_flags(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["vllm", "--profile", "gpu-8gb", "--dry-run", "--", "--quantization", "awq"]) == 0
    assert capsys.readouterr().out.rstrip().endswith("--quantization awq")


def test_catalogue_lookup() -> None:
    assert find("Qwen/Qwen2.5-VL-7B-Instruct").name == "qwen2.5-vl-7b"
    assert {m.name for m in CATALOGUE.values()} >= {"qwen2.5-vl-3b", "qwen2.5-vl-7b-awq", "qwen2.5-vl-72b-awq"}
    with pytest.raises(KeyError, match="unknown model"):
        find("llama")


def test_unknown_profile_is_refused() -> None:
    with pytest.raises(SystemExit, match="unknown profile"):
        main(["vllm", "--profile", "huge", "--dry-run"])


def test_video_limits_follow_the_model_context() -> None:
    from launch.up import video_limits

    assert video_limits(PROFILES["tiny"])["VIDEO_DESCRIPTION_MAX_TOKENS"] == "24"
    assert video_limits(PROFILES["gpu-24gb"]) == {}
