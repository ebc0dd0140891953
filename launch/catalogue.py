"""The Qwen2.5-VL models this project knows how to serve."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ModelSpec:
    name: str
    repo_id: str
    size_gb: float
    quantization: str | None
    notes: str = ""


CATALOGUE: dict[str, ModelSpec] = {
    m.name: m
    for m in [
        ModelSpec("qwen2.5-vl-3b", "Qwen/Qwen2.5-VL-3B-Instruct", 7.5, None),
        ModelSpec("qwen2.5-vl-3b-awq", "Qwen/Qwen2.5-VL-3B-Instruct-AWQ", 3.2, "awq"),
        ModelSpec("qwen2.5-vl-7b", "Qwen/Qwen2.5-VL-7B-Instruct", 16.6, None),
        ModelSpec("qwen2.5-vl-7b-awq", "Qwen/Qwen2.5-VL-7B-Instruct-AWQ", 6.5, "awq"),
        ModelSpec("qwen2.5-vl-72b", "Qwen/Qwen2.5-VL-72B-Instruct", 147.0, None, "needs several GPUs"),
        ModelSpec("qwen2.5-vl-72b-awq", "Qwen/Qwen2.5-VL-72B-Instruct-AWQ", 41.0, "awq"),
        ModelSpec("tiny-qwen2.5-vl", "", 0.001, None, "random weights built by `launch tiny-model`"),
    ]
}


def find(name: str) -> ModelSpec:
    """The catalogue entry named ``name`` (or whose repo id is ``name``)."""
    for spec in CATALOGUE.values():
        if name in (spec.name, spec.repo_id):
            return spec
    known = ", ".join(CATALOGUE)
    raise KeyError(f"unknown model '{name}'; known: {known}")
