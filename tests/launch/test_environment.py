"""Where ``launch`` finds vLLM and the model, installed by pip or in a checkout."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import yaml

from launch import environment
from launch.cli import main
from launch.environment import HOW_TO_GET_VLLM, LaunchError, model_source, vllm_python
from launch.up import UpOptions, plan_stack

pytestmark = pytest.mark.unit


@pytest.fixture
def no_vllm_anywhere(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """As after ``pip install mmgateway[launch]`` without vLLM: no module, no checkout venv, no setting."""
    monkeypatch.delenv("LAUNCH_VLLM_PYTHON", raising=False)
    monkeypatch.setattr(environment, "_importable", lambda module: False)
    monkeypatch.setattr(environment, "CHECKOUT_VLLM_PYTHON", tmp_path / "absent" / "python")


def _model_dir(path: Path, weights: str | None = "model.safetensors") -> Path:
    path.mkdir(parents=True)
    (path / "config.json").write_text(json.dumps({"architectures": ["Qwen2_5_VLForConditionalGeneration"]}))
    if weights:
        (path / weights).write_bytes(b"\0" * 16)
    return path


def test_vllm_in_the_own_environment_is_used(monkeypatch: pytest.MonkeyPatch, no_vllm_anywhere: None) -> None:
    monkeypatch.setattr(environment, "_importable", lambda module: module == "vllm")
    assert vllm_python(None, {}) == sys.executable


def test_a_named_python_wins(no_vllm_anywhere: None) -> None:
    assert vllm_python(sys.executable, {}) == sys.executable
    assert vllm_python(None, {"LAUNCH_VLLM_PYTHON": sys.executable}) == sys.executable
    with pytest.raises(LaunchError, match="does not exist"):
        vllm_python("/nowhere/bin/python", {})


def test_without_vllm_one_line_says_how_to_get_it(no_vllm_anywhere: None, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(LaunchError) as caught:
        vllm_python(None, {})
    assert str(caught.value) == HOW_TO_GET_VLLM
    assert main(["vllm", "--profile", "tiny"]) == 1
    err = capsys.readouterr().err.strip()
    assert err == f"error: {HOW_TO_GET_VLLM}"
    assert main(["vllm", "--profile", "gpu-24gb", "--dry-run"]) == 0  # the command is still shown
    assert "-m vllm.entrypoints.openai.api_server" in capsys.readouterr().out


def test_a_local_model_directory_is_served(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = _model_dir(tmp_path / "my-finetune")
    source = model_source(str(model), tmp_path / "models")
    assert (source.location, source.served_name, source.on_disk) == (str(model), "my-finetune", True)
    args = ["--vllm-python", sys.executable, "vllm", "--profile", "gpu-24gb", "--model", str(model), "--dry-run"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert f"--model {model} --served-model-name my-finetune" in out
    assert "HF_HUB_OFFLINE=1" in out


def test_a_directory_that_is_not_a_model_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(LaunchError, match=r"no config\.json"):
        model_source(str(empty), tmp_path)
    with pytest.raises(LaunchError, match="no weights"):
        model_source(str(_model_dir(tmp_path / "no-weights", weights=None)), tmp_path)
    assert main(["--vllm-python", sys.executable, "vllm", "--model", str(empty), "--dry-run"]) == 2
    assert "no config.json" in capsys.readouterr().err
    with pytest.raises(LaunchError, match="no model directory"):
        model_source(str(tmp_path / "missing"), tmp_path)


def test_catalogue_names_and_hub_ids(tmp_path: Path) -> None:
    assert model_source("qwen2.5-vl-7b", tmp_path).location == "Qwen/Qwen2.5-VL-7B-Instruct"
    assert model_source("qwen2.5-vl-7b", tmp_path).on_disk is False
    downloaded = _model_dir(tmp_path / "qwen2.5-vl-3b")
    assert model_source("qwen2.5-vl-3b", tmp_path).location == str(downloaded)
    hub = model_source("my-org/Qwen2.5-VL-7B-ft", tmp_path)
    assert (hub.location, hub.served_name, hub.on_disk) == ("my-org/Qwen2.5-VL-7B-ft", "my-org/Qwen2.5-VL-7B-ft", False)
    with pytest.raises(LaunchError, match="unknown model"):
        model_source("llama", tmp_path)


def test_launch_up_gives_the_video_service_the_gateway_key_and_reads_dotenv(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("GATEWAY_MASTER_KEY", "NEBIUS_API_KEY", "VIDEO_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    env_file = tmp_path / ".env"
    env_file.write_text("NEBIUS_API_KEY=nb-123\nGATEWAY_MASTER_KEY=master-456\n")
    _model_dir(tmp_path / "models" / "tiny-qwen2.5-vl")
    options = UpOptions(
        root=Path(__file__).resolve().parents[2],
        models_dir=tmp_path / "models",
        vllm_python=sys.executable,
        tiny=True,
        env_file=env_file,
        state_dir=tmp_path / "state",
    )
    services = {s.name: s for s in plan_stack(options, lambda _: None)}
    config = yaml.safe_load((tmp_path / "state" / "gateway.yaml").read_text())
    chat = next(m for m in config["model_list"] if m["model_name"] == "chat")
    assert chat["litellm_params"]["model"].startswith("nebius/")  # the key came from .env, as the gateway reads it
    assert config["general_settings"]["master_key"] == "os.environ/GATEWAY_MASTER_KEY"
    assert services["video"].env["VIDEO_API_KEY"] == "master-456"
    assert services["gateway"].argv[-2:] == ["--env-file", str(env_file)]
    # Each video session is a model through the gateway, answered with the caller's own key.
    video = next(m for m in config["model_list"] if m["model_name"] == "video/*")
    assert video["litellm_params"]["api_base"] == "http://127.0.0.1:8080/v1"
    assert video["litellm_params"]["forward_client_authorization"] is True


def test_launch_up_keeps_a_video_key_of_its_own(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from launch.up import video_gateway_key

    assert video_gateway_key({"GATEWAY_MASTER_KEY": "m"}) == {"VIDEO_API_KEY": "m"}
    assert video_gateway_key({"GATEWAY_MASTER_KEY": "m", "VIDEO_API_KEY": "own"}) == {}
    assert video_gateway_key({}) == {}


def test_launch_up_from_another_folder_names_the_model_by_its_full_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The tiny model is built from the checkout's folder: a relative models folder must not make
    vLLM look for it there (or, not finding it, be given an empty model name)."""
    _model_dir(tmp_path / "models" / "tiny-qwen2.5-vl")
    monkeypatch.chdir(tmp_path)
    options = UpOptions(
        root=Path(__file__).resolve().parents[2],
        models_dir=Path("models"),
        vllm_python=sys.executable,
        tiny=True,
        env_file=tmp_path / ".env",
        state_dir=tmp_path / "state",
    )
    argv = {s.name: s for s in plan_stack(options, lambda _: None)}["vllm"].argv
    assert argv[argv.index("--model") + 1] == str(tmp_path / "models" / "tiny-qwen2.5-vl")
