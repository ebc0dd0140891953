"""Lets CPU-only torch import the CUDA build of torchvision that PyPI ships.

Importing that torchvision registers fake kernels for ``torchvision::nms`` and
``torchvision::qnms``, whose schemas come from its compiled extension, which cannot load
beside CPU torch: ``RuntimeError: operator torchvision::nms does not exist``. Defining the
two schemas first lets the import succeed; neither operator is used by Qwen2.5-VL.
Must run before anything imports torchvision, in every process: vLLM spawns workers and
inspects model architectures in a fresh interpreter, so the vLLM launcher puts
``launch/cpu_site`` (a ``sitecustomize``) on ``PYTHONPATH``.
"""

from __future__ import annotations

import importlib.abc
import importlib.metadata
import sys

SCHEMAS = {
    "torchvision::nms": "(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "torchvision::qnms": "(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
}


def needed() -> bool:
    """True for CPU torch beside a torchvision wheel that is not a CPU build."""
    import torch

    if torch.version.cuda is not None:
        return False
    try:
        version = importlib.metadata.version("torchvision")
    except importlib.metadata.PackageNotFoundError:
        return False
    return "+cpu" not in version


def install() -> bool:
    """Define the missing schemas when needed; returns whether it did."""
    if not needed():
        return False
    import torch

    for name, schema in SCHEMAS.items():
        namespace, op = name.split("::")
        if not hasattr(getattr(torch.ops, namespace), op):
            torch.library.define(name, schema)
    return True


class _BeforeTorchvision(importlib.abc.MetaPathFinder):
    """Runs ``install`` the first time anything imports torchvision, then steps aside."""

    def find_spec(self, fullname: str, path: object = None, target: object = None) -> None:
        if fullname == "torchvision":
            sys.meta_path.remove(self)
            install()
        return None


def install_on_import() -> None:
    """Arrange for ``install`` to run just before torchvision is first imported.

    Cheap at interpreter start (torch is not imported until torchvision is), so it can
    run from ``sitecustomize`` in every process of a vLLM server, including the
    subprocess vLLM starts to inspect model architectures.
    """
    if not any(isinstance(finder, _BeforeTorchvision) for finder in sys.meta_path):
        sys.meta_path.insert(0, _BeforeTorchvision())
