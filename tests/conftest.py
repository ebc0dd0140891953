"""Fixtures shared by every test tier: fake deployments and gateways on loopback."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
import uvloop
from fastapi import FastAPI
from openai import AsyncOpenAI

from gateway.app import create_app
from gateway.config import parse_config
from gateway.server import uvicorn_options
from tests.fakes import Behaviour, FakeUpstream, Served, serve


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Browser tests last: Playwright's sync API keeps its event loop running in the main
    thread until the session ends, which async tests after it could not share."""
    items.sort(key=lambda item: item.get_closest_marker("browser") is not None)


def pytest_asyncio_loop_factories(
    config: pytest.Config, item: pytest.Item
) -> Mapping[str, Callable[[], asyncio.AbstractEventLoop]]:
    """The gateway's tests run on uvloop, the loop ``gateway serve`` uses; tests marked
    ``both_loops`` on the standard loop too."""
    if item.get_closest_marker("both_loops"):
        return {"asyncio": asyncio.new_event_loop, "uvloop": uvloop.new_event_loop}
    if "gateway" in item.path.relative_to(item.config.rootpath).parts[:2]:
        return {"uvloop": uvloop.new_event_loop}
    return {"asyncio": asyncio.new_event_loop}


@dataclass
class RunningGateway:
    """A gateway served by uvicorn on a free loopback port."""

    url: str
    app: FastAPI
    http: httpx.AsyncClient
    clients: list[AsyncOpenAI] = field(default_factory=list)

    def openai(self, api_key: str = "unused", max_retries: int = 0) -> AsyncOpenAI:
        client = AsyncOpenAI(base_url=f"{self.url}/v1", api_key=api_key, max_retries=max_retries, timeout=30)
        self.clients.append(client)
        return client

    async def close(self) -> None:
        for client in self.clients:
            await client.close()
        await self.http.aclose()


UpstreamFactory = Callable[..., Awaitable[FakeUpstream]]
GatewayFactory = Callable[..., Awaitable[RunningGateway]]


@pytest.fixture
async def upstream() -> AsyncIterator[UpstreamFactory]:
    """Start fake deployments: ``await upstream("vllm-a", fail_status=500)``."""
    started: list[FakeUpstream] = []

    async def make(name: str, **behaviour: Any) -> FakeUpstream:
        fake = await FakeUpstream(name, Behaviour(**behaviour)).start()
        started.append(fake)
        return fake

    yield make
    for fake in started:
        await fake.stop()


@pytest.fixture
async def gateway() -> AsyncIterator[GatewayFactory]:
    """Start gateways from a config mapping: ``await gateway({"model_list": [...]})``; managed keys
    live in ``keys_database`` when it is given (a URL) and the config has a master key."""
    running: list[tuple[Served, RunningGateway]] = []

    async def start(
        config: dict[str, Any], env: dict[str, str] | None = None, keys_database: str | None = None
    ) -> RunningGateway:
        loaded = parse_config(config, env or {})
        app = create_app(loaded.config, env or {}, keys_database=keys_database)
        served = serve(app, **uvicorn_options())
        gw = RunningGateway(served.url, app, httpx.AsyncClient(base_url=served.url, timeout=30))
        running.append((served, gw))
        return gw

    yield start
    for served, gw in running:
        await gw.close()
        await served.stop()


def deployment(
    name: str, fake: FakeUpstream, model: str = "hosted_vllm/Qwen/Qwen2.5-VL-3B-Instruct", **params: Any
) -> dict[str, Any]:
    """One ``model_list`` entry pointing at ``fake``."""
    vision = params.pop("supports_vision", False)
    deployment_id = params.pop("id", None)
    info: dict[str, Any] = {"supports_vision": vision}
    if deployment_id:
        info["id"] = deployment_id
    return {"model_name": name, "litellm_params": {"model": model, "api_base": fake.url, **params}, "model_info": info}
