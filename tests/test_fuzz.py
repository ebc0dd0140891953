"""Property-based fuzzing of both services' OpenAPI documents against live servers on loopback.

Every generated request must get an answer (no hang), never a 5xx, and every error must be
an OpenAI error envelope. The gateway forwards to a fake deployment, so valid requests go
all the way through; the video service runs against that gateway.
"""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from gateway.app import create_app as create_gateway
from gateway.config import parse_config
from tests.fakes import FakeUpstream, Served, serve
from video.api import create_app as create_video
from video.settings import VideoSettings

pytestmark = [pytest.mark.service, pytest.mark.timeout(300)]
T = TypeVar("T")
FUZZ = settings(
    max_examples=100,
    deadline=None,
    derandomize=True,
    database=None,
    phases=[Phase.explicit, Phase.generate],  # no shrinking: each step is an HTTP call, and time is bounded
    suppress_health_check=list(HealthCheck),
)


class BackgroundLoop:
    """An event loop in its own thread, where the servers run while the (synchronous) fuzzer calls them."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="servers", daemon=True)
        self._thread.start()

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout=60)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=10)
        self.loop.close()


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """A fake deployment, a gateway in front of it and a video service using the gateway."""
    background = BackgroundLoop()
    data_dir: Path = tmp_path_factory.mktemp("fuzz-video")

    async def start() -> tuple[FakeUpstream, list[Served]]:
        fake = await FakeUpstream("fake").start()
        entries = [
            {"model_name": name, "litellm_params": {"model": "hosted_vllm/m", "api_base": fake.url}}
            for name in ("vision", "chat", "embed")
        ]
        entries[0]["model_info"] = {"supports_vision": True}
        gateway = serve(create_gateway(parse_config({"model_list": entries}, {}).config, {}))
        video = serve(
            create_video(
                VideoSettings(_env_file=None, data_dir=data_dir, gateway_url=f"{gateway.url}/v1", max_retries=0)
            )
        )  # type: ignore[call-arg]
        return fake, [gateway, video]

    fake, servers = background.run(start())
    yield {"gateway": servers[0].url, "video": servers[1].url}

    async def stop() -> None:
        for served in reversed(servers):
            await served.stop()
        await fake.stop()

    background.run(stop())
    background.close()


def _check(response: schemathesis.Response, name: str) -> None:
    assert response.status_code < 500, f"{response.status_code}: {response.text[:500]}"
    if response.status_code >= 400:
        body = response.json()
        if name.startswith("POST /v1/messages"):  # Anthropic's API, Anthropic's envelope
            assert set(body) == {"type", "error"}, body
            assert body["type"] == "error", body
        else:
            assert set(body) == {"error"}, body
        assert isinstance(body["error"]["message"], str)
        assert body["error"]["message"]
        assert isinstance(body["error"]["type"], str)


def _exerciser(
    cases: st.SearchStrategy[schemathesis.Case], name: str, statuses: Counter[tuple[str, int]]
) -> Callable[[], None]:
    @FUZZ
    @given(case=cases, served=st.sampled_from([None, "chat", "vision", "embed"]))
    def exercise(case: schemathesis.Case, served: str | None) -> None:
        if served is not None and isinstance(case.body, dict) and "model" in case.body:
            case.body["model"] = served
        response = case.call(timeout=30)
        statuses[(name, response.status_code)] += 1
        _check(response, name)

    return exercise


def _fuzz(url: str, statuses: Counter[tuple[str, int]]) -> list[str]:
    """Run every operation of the service's OpenAPI document; the operations that failed, with why.

    Most generated bodies name a model that is served, so the fuzzer reaches the
    deployment too and not only the validation in front of it.
    """
    schema = schemathesis.openapi.from_url(f"{url}/openapi.json")
    failures: list[str] = []
    operations = 0
    for result in schema.get_all_operations():
        operation = result.ok()
        operations += 1
        name = f"{operation.method.upper()} {operation.path}"

        exercise = _exerciser(operation.as_strategy(), name, statuses)
        try:
            exercise()
        except AssertionError as exc:
            failures.append(f"{name}: {str(exc).splitlines()[0][:300]}")
    assert operations >= 5, "the OpenAPI document lists the service's operations"
    return failures


def test_gateway_answers_every_request_without_a_server_error(live: dict[str, str]) -> None:
    statuses: Counter[tuple[str, int]] = Counter()
    assert _fuzz(live["gateway"], statuses) == []
    for path in ("/v1/chat/completions", "/v1/completions", "/v1/embeddings"):
        assert statuses[(f"POST {path}", 200)] > 0, f"no generated request got through {path}"


def test_video_service_answers_every_request_without_a_server_error(live: dict[str, str]) -> None:
    statuses: Counter[tuple[str, int]] = Counter()
    assert _fuzz(live["video"], statuses) == []
    assert statuses[("GET /sessions", 200)] > 0
