"""Loaded at start by every Python process of a CPU vLLM server (via PYTHONPATH)."""

from launch.torchvision_shim import install_on_import

install_on_import()
