"""The packages' boundaries: the video service runs without the gateway's code."""

from __future__ import annotations

import subprocess
import sys

import pytest


@pytest.mark.unit
def test_video_service_does_not_import_the_gateway() -> None:
    code = (
        "import sys\n"
        "import video.api, video.cli, video.jobs, video.actions, video.upload, video.image\n"
        "import video.temporal.worker, video.temporal.engine, video.store.postgres\n"
        "leaked = sorted(m for m in sys.modules if m == 'gateway' or m.startswith('gateway.'))\n"
        "print(','.join(leaked))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == ""


@pytest.mark.unit
def test_a_missing_session_is_not_reported_as_a_missing_model() -> None:
    from common.errors import NotFound
    from gateway.errors import ModelNotFound

    assert NotFound("x").code == "not_found"
    assert ModelNotFound("x").code == "model_not_found"
    assert issubclass(ModelNotFound, NotFound)


@pytest.mark.unit
def test_checking_a_config_loads_no_web_stack_redis_or_metrics() -> None:
    code = (
        "import sys\n"
        "import gateway, gateway.cli, gateway.config, gateway.deployments\n"
        "heavy = ('fastapi', 'redis', 'prometheus_client', 'uvicorn', 'litellm', 'gateway.app')\n"
        "print(','.join(sorted(m for m in heavy if m in sys.modules)))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == ""


@pytest.mark.unit
@pytest.mark.parametrize("module", ["gateway.forwarding", "gateway.http1._connection", "gateway.dataplane"])
def test_modules_import_on_their_own(module: str) -> None:
    # A module that needs its package (or a sibling) to be half-imported first is part of a cycle.
    subprocess.run([sys.executable, "-c", f"import {module}"], check=True)
