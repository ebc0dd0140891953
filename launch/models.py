"""Model files on disk: download with resume, and verification of what is there."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import struct
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlparse

from launch.catalogue import ModelSpec

DOWNLOAD_PATTERNS = ["*.json", "*.safetensors", "*.jinja", "*.txt", "*.model", "*.py"]
_SHA256_HEX = 64


class ModelError(Exception):
    """A download or verification that cannot go on; the message says why."""


def hub_endpoint() -> str:
    return os.environ.get("HF_ENDPOINT", "https://huggingface.co")


def check_hub_reachable(timeout: float = 5.0) -> None:
    """Fail at once, with the reason, when the model hub cannot be reached."""
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes"):
        raise ModelError("HF_HUB_OFFLINE is set: downloads are disabled")
    url = urlparse(hub_endpoint())
    host, port = url.hostname or "huggingface.co", url.port or (443 if url.scheme == "https" else 80)
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as exc:
        raise ModelError(f"cannot reach {host}:{port} ({exc.strerror or exc}); is this machine offline?") from None


def download(spec: ModelSpec, models_dir: Path, token: str | None = None) -> Path:
    """Download ``spec`` into ``models_dir/<name>``; an interrupted download resumes."""
    if not spec.repo_id:
        raise ModelError(f"{spec.name} is not downloadable: build it with `launch tiny-model`")
    check_hub_reachable()
    from huggingface_hub import snapshot_download

    target = models_dir / spec.name
    snapshot_download(spec.repo_id, local_dir=target, allow_patterns=DOWNLOAD_PATTERNS, token=token)
    return target


def safetensors_problem(path: Path) -> str | None:
    """Check that a safetensors file is as long as its own header says it must be."""
    size = path.stat().st_size
    with path.open("rb") as handle:
        prefix = handle.read(8)
        if len(prefix) < 8:
            return f"{path.name}: truncated (no header)"
        (header_len,) = struct.unpack("<Q", prefix)
        if header_len > size - 8:
            return f"{path.name}: truncated (header says {header_len} bytes, file has {size})"
        try:
            header = json.loads(handle.read(header_len))
        except (json.JSONDecodeError, UnicodeDecodeError):
            return f"{path.name}: header is not valid JSON"
    ends = [t["data_offsets"][1] for k, t in header.items() if k != "__metadata__"]
    expected = 8 + header_len + max(ends, default=0)
    if size != expected:
        return f"{path.name}: size {size} bytes, expected {expected}"
    return None


def _cached_sha256(directory: Path, name: str) -> str | None:
    """The sha256 that huggingface_hub recorded for a file it downloaded, if any."""
    metadata = directory / ".cache" / "huggingface" / "download" / f"{name}.metadata"
    try:
        lines = metadata.read_text().splitlines()
    except OSError:
        return None
    etag = lines[1].strip() if len(lines) > 1 else ""
    return etag if len(etag) == _SHA256_HEX and all(c in "0123456789abcdef" for c in etag) else None


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(8 * 1024 * 1024):
            digest.update(chunk)
    return digest.hexdigest()


def verify(directory: Path, check_hashes: bool = True, progress: Callable[[str], None] | None = None) -> list[str]:
    """Problems with the model in ``directory``: missing files, wrong sizes, wrong hashes."""
    if not directory.is_dir():
        return [f"{directory}: no such directory"]
    problems = [f"{name}: missing" for name in ("config.json",) if not (directory / name).is_file()]
    if not any((directory / n).is_file() for n in ("tokenizer.json", "vocab.json")):
        problems.append("tokenizer.json: missing")
    if not any((directory / n).is_file() for n in ("preprocessor_config.json", "processor_config.json")):
        problems.append("preprocessor_config.json: missing")
    index = directory / "model.safetensors.index.json"
    if index.is_file():
        try:
            shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        except (json.JSONDecodeError, KeyError, TypeError):
            return [*problems, "model.safetensors.index.json: not a valid index"]
    else:
        shards = ["model.safetensors"]
    for shard in shards:
        path = directory / shard
        if not path.is_file():
            problems.append(f"{shard}: missing")
            continue
        problem = safetensors_problem(path)
        if problem:
            problems.append(problem)
            continue
        expected = _cached_sha256(directory, shard) if check_hashes else None
        if expected is not None:
            if progress:
                progress(f"hashing {shard}")
            if _sha256(path) != expected:
                problems.append(f"{shard}: sha256 does not match the hub's")
    return problems
