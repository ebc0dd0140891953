"""Verification of model directories, and downloads without a reachable hub."""

from __future__ import annotations

import hashlib
import json
import struct
from pathlib import Path

import pytest

from launch.catalogue import find
from launch.cli import main
from launch.models import ModelError, download, verify

pytestmark = pytest.mark.unit


def _safetensors(path: Path, floats: int) -> None:
    header = json.dumps({"w": {"dtype": "F32", "shape": [floats], "data_offsets": [0, floats * 4]}}).encode()
    path.write_bytes(struct.pack("<Q", len(header)) + header + bytes(floats * 4))


def _model(directory: Path, shards: int = 2) -> Path:
    directory.mkdir(parents=True)
    for name in ("config.json", "tokenizer.json", "preprocessor_config.json"):
        (directory / name).write_text("{}")
    names = [f"model-{i + 1:05d}-of-{shards:05d}.safetensors" for i in range(shards)]
    for index, name in enumerate(names):
        _safetensors(directory / name, 16 * (index + 1))
    weight_map = {f"layer{i}": name for i, name in enumerate(names)}
    (directory / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    return directory


def test_complete_model_verifies(tmp_path: Path) -> None:
    assert verify(_model(tmp_path / "m")) == []


def test_missing_shard_is_reported(tmp_path: Path) -> None:
    model = _model(tmp_path / "m", shards=3)
    (model / "model-00002-of-00003.safetensors").unlink()
    assert verify(model) == ["model-00002-of-00003.safetensors: missing"]


def test_truncated_shard_is_reported(tmp_path: Path) -> None:
    model = _model(tmp_path / "m")
    shard = model / "model-00001-of-00002.safetensors"
    shard.write_bytes(shard.read_bytes()[:-10])
    assert verify(model) == ["model-00001-of-00002.safetensors: size 125 bytes, expected 135"]


def test_hash_recorded_by_the_hub_client_is_checked(tmp_path: Path) -> None:
    model = _model(tmp_path / "m")
    shard = "model-00002-of-00002.safetensors"
    metadata = model / ".cache" / "huggingface" / "download"
    metadata.mkdir(parents=True)
    good = hashlib.sha256((model / shard).read_bytes()).hexdigest()
    (metadata / f"{shard}.metadata").write_text(f"abc123\n{good}\n1700000000\n")
    assert verify(model) == []
    (metadata / f"{shard}.metadata").write_text(f"abc123\n{'0' * 64}\n1700000000\n")
    assert verify(model) == [f"{shard}: sha256 does not match the hub's"]
    assert verify(model, check_hashes=False) == []


def test_missing_directory_and_files(tmp_path: Path) -> None:
    assert verify(tmp_path / "nothing") == [f"{tmp_path / 'nothing'}: no such directory"]
    (tmp_path / "empty").mkdir()
    assert verify(tmp_path / "empty") == [
        "config.json: missing",
        "tokenizer.json: missing",
        "preprocessor_config.json: missing",
        "model.safetensors: missing",
    ]


def test_download_fails_at_once_offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelError, match="HF_HUB_OFFLINE"):
        download(find("qwen2.5-vl-3b"), tmp_path)
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # discard port: refused at once
    with pytest.raises(ModelError, match=r"cannot reach 127\.0\.0\.1:9"):
        download(find("qwen2.5-vl-3b"), tmp_path)


def test_cli_verify_and_download_exit_codes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _model(tmp_path / "qwen2.5-vl-3b")
    assert main(["--models-dir", str(tmp_path), "models", "verify", "qwen2.5-vl-3b"]) == 0
    (tmp_path / "qwen2.5-vl-3b" / "model-00001-of-00002.safetensors").unlink()
    assert main(["--models-dir", str(tmp_path), "models", "verify", "qwen2.5-vl-3b"]) == 1
    assert "model-00001-of-00002.safetensors: missing" in capsys.readouterr().err
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert main(["--models-dir", str(tmp_path), "models", "download", "qwen2.5-vl-7b"]) == 1
    assert "cannot download qwen2.5-vl-7b" in capsys.readouterr().err
    assert main(["--models-dir", str(tmp_path), "models", "list"]) == 0
