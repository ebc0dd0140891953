"""The FastAPI application: ``create_app(config)`` builds it, routes stay thin."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from pydantic import BaseModel
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from common.env import read_env
from common.log import configure_logging
from gateway.access_log import AccessLog
from gateway.accounting import Accounting
from gateway.auth import KeyStore
from gateway.bodies import BodyInspector
from gateway.config import ProxyConfig, load_config, per_worker
from gateway.dataplane import GatewayApp, credential, proxy_endpoint
from gateway.discovery import EndpointDiscovery, Resolver
from gateway.endpoints import ENDPOINTS, MESSAGES
from gateway.engine_share import SharedScrapes
from gateway.engine_stats import EngineScraper, scraped
from gateway.errors import GatewayError, ModelNotFound, anthropic_error_response, error_response, install_error_handlers
from gateway.forwarding import Forwarder
from gateway.health import Readiness
from gateway.keys.admin import add_admin_routes
from gateway.keys.managed import ManagedKeys
from gateway.limits.host import HostSlots
from gateway.limits.shared import SharedLimits
from gateway.metrics import NO_DEPLOYMENT, UNKNOWN_GROUP, Metrics, status_class
from gateway.prices import PriceBook
from gateway.protocol import (
    AnthropicCountTokensRequest,
    AnthropicMessagesRequest,
    AudioRequest,
    ChatCompletionRequest,
    CompletionRequest,
    EmbeddingRequest,
    ErrorEnvelope,
    ModelCard,
    ModelList,
    RerankRequest,
    ResponsesRequest,
    ScoreRequest,
    SpeechRequest,
)
from gateway.request_ids import RequestIdMiddleware
from gateway.response_ids import ResponseIds
from gateway.response_store import MemoryResponseStore, RedisResponseStore, ResponseStore
from gateway.responses_api import ResponsesState
from gateway.responses_routes import add_responses_routes
from gateway.routing import Router
from gateway.sdk import SdkClient
from gateway.settings import Settings, keys_database_url
from gateway.state import GatewayState, StateDep
from gateway.upstream import UpstreamClient

log = logging.getLogger("gateway")


def _schema(model: type[BaseModel], components: dict[str, Any]) -> dict[str, Any]:
    """The model's JSON schema, its nested models moved into the OpenAPI components."""
    schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
    components.update(schema.pop("$defs", {}))
    return schema


async def _refresh_shared_metrics(metrics: Metrics, every_s: float = 1.0) -> None:
    """Keep this worker's deployment gauges current for scrapes served by another worker."""
    while True:
        metrics.refresh()
        await asyncio.sleep(every_s)


def app_from_environment() -> FastAPI:
    """One worker of ``gateway serve --workers N``: settings from ``GATEWAY_*``, limits divided among workers."""
    settings = Settings()
    configure_logging(settings.log_level)
    env = read_env(settings.env_file)
    loaded = load_config(settings.config, env)
    slots = os.environ.get("GATEWAY_SLOTS_DIR")
    engines = os.environ.get("GATEWAY_ENGINES_DIR")
    return create_app(
        per_worker(loaded.config, settings.workers),
        env,
        host_slots=Path(slots) if slots else None,
        engine_scrapes=Path(engines) if engines else None,
        keys_database=keys_database_url(settings, env, loaded.config.general_settings.database_url),
        workers=settings.workers,
    )


def create_app(
    config: ProxyConfig,
    env: Mapping[str, str] | None = None,
    resolver: Resolver | None = None,
    host_slots: Path | None = None,
    keys_database: str | None = None,
    workers: int = 1,
    engine_scrapes: Path | None = None,
) -> FastAPI:
    """Build the gateway for ``config``; provider keys missing from it are read from ``env``;
    per-pod deployment names are looked up with ``resolver`` (DNS by default); ``host_slots``
    names the folder where the workers of one host hold ``max_parallel_requests`` together,
    ``engine_scrapes`` the one where one of them scrapes each engine for all;
    ``keys_database`` (a URL) holds managed keys, which need a master key (off without either);
    ``workers`` on this host share a managed key's local limits."""
    router = Router(config, os.environ if env is None else env)
    if host_slots is not None:
        router.host_slots = HostSlots(host_slots)
    shared_scrapes = SharedScrapes(engine_scrapes) if engine_scrapes is not None else None
    keys = KeyStore(config)
    discovery = EndpointDiscovery(router, resolver, config.gateway_settings.dns_refresh_seconds)
    metrics = Metrics(lambda: (d for g in router.groups.values() for d in g.deployments), time.monotonic)
    prices = PriceBook()

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[dict[str, Any]]:
        client = UpstreamClient(config.gateway_settings.connect_timeout, config.gateway_settings.max_answer_bytes)
        sdk_client = None
        if any(d.sdk for g in router.groups.values() for d in g.deployments):
            sdk_client = SdkClient(bool(config.litellm_settings.get("drop_params", False)))
            await sdk_client.start()
        settings = config.gateway_settings
        if any(d.price is None for g in router.groups.values() for d in g.deployments):
            await asyncio.to_thread(prices.load)
        redis_url = config.router_settings.redis_address()
        store: ResponseStore = (
            RedisResponseStore(redis_url, settings.responses_ttl_seconds)
            if redis_url
            else MemoryResponseStore(settings.responses_ttl_seconds, settings.responses_store_bytes)
        )
        state = GatewayState(
            config=config,
            router=router,
            keys=keys,
            metrics=metrics,
            forwarder=Forwarder(router, client, metrics, settings, sdk_client=sdk_client, prices=prices),
            readiness=Readiness(
                router, client, settings.ready_probe_timeout, settings.ready_cache_seconds, settings.ready_requires
            ),
            inspector=BodyInspector(),
            started_at=int(time.time()),
            access_log=AccessLog(),
            responses=ResponsesState(router, ResponseIds(config.general_settings.master_key), store),
        )
        if keys.is_open:
            log.warning("no master_key or api_keys configured: every caller is let in")
        if keys_database and config.general_settings.master_key:
            state.managed = ManagedKeys(keys_database, settings, metrics, redis_url, share=1 if redis_url else workers)
            await state.managed.start()
            keys.managed = state.managed
        router.shared = SharedLimits.from_url(redis_url, metrics) if redis_url else None
        if router.shared is not None:
            await router.shared.start()
        background: list[asyncio.Task[None]] = []
        if metrics.multiprocess_dir:
            background.append(asyncio.create_task(_refresh_shared_metrics(metrics)))
        if discovery.enabled:
            await discovery.refresh()
            background.append(asyncio.create_task(discovery.run()))
        rs = config.router_settings
        if rs.engine_stats_interval > 0 and any(scraped(d) for g in router.groups.values() for d in g.deployments):
            scraper = EngineScraper(
                lambda: (d for g in router.groups.values() for d in g.deployments),
                client.engine_metrics,
                rs.engine_stats_interval,
                rs.engine_stats_timeout,
                lambda d: metrics.engine_scrape_failures.labels(d.group, d.id).inc(),
                shared_scrapes,
            )
            background.append(asyncio.create_task(scraper.run()))
        try:
            yield {"gateway": state}
        finally:
            for task in background:
                task.cancel()
            if router.shared is not None:
                await router.shared.close()
            if state.managed is not None:
                await state.managed.close()
            await state.responses.close()
            if sdk_client is not None:
                await sdk_client.close()
            await client.close()
            if router.host_slots is not None:
                router.host_slots.close()
            if shared_scrapes is not None:
                shared_scrapes.close()
            state.access_log.flush()

    app = GatewayApp(
        title="Gateway", summary="One OpenAI-compatible endpoint for local and cloud models", lifespan=lifespan
    )
    app.add_middleware(RequestIdMiddleware)
    app.respond = _add_error_handlers(app, metrics)

    # The data plane skips FastAPI's stack (gateway.dataplane); the same handlers stay mounted
    # as plain routes, so the router answers other methods on these paths with 405.
    for endpoint in ENDPOINTS:
        handler = proxy_endpoint(endpoint)
        for path in endpoint.paths:
            app.data_plane[path] = handler
            app.router.routes.append(Route(path, handler, methods=["POST"], name=f"{endpoint.name}:{path}"))
    _document_proxy_endpoints(app)
    add_responses_routes(app)
    add_admin_routes(app)

    @app.get("/v1/models", response_model=ModelList, response_model_exclude_none=True, tags=["openai"])
    async def list_models(request: Request, state: StateDep) -> ModelList:
        principal = state.keys.authenticate(credential(request, MESSAGES))
        cards = [
            ModelCard(
                id=name,
                created=state.started_at,
                owned_by=group.deployments[0].provider,
                max_model_len=group.context_tokens(),
                supports_video=group.supports_video,
            )
            for name, group in state.router.groups.items()
            if principal.may_use(name)
        ]
        # Concrete names a key was given under a wildcard group are models it may use too.
        for name in sorted(principal.models or ()):
            route = state.router.resolve(name)
            if name not in state.router.groups and route is not None:
                owner = route.group.deployments[0].provider
                cards.append(ModelCard(id=name, created=state.started_at, owned_by=owner))
        return ModelList(data=cards)

    @app.get("/v1/models/{model:path}", response_model=ModelCard, response_model_exclude_none=True, tags=["openai"])
    async def retrieve_model(model: str, request: Request, state: StateDep) -> ModelCard:
        principal = state.keys.authenticate(request.headers.get("authorization"))
        route = state.router.resolve(model)
        if route is None or not principal.may_use(route.group.name, model):
            raise ModelNotFound(f"model '{model}' is not served here; see GET /v1/models", param="model")
        group = route.group
        return ModelCard(
            id=model,
            created=state.started_at,
            owned_by=group.deployments[0].provider,
            max_model_len=group.context_tokens() if route.wildcard_match is None else None,
            supports_video=group.supports_video if route.wildcard_match is None else None,
        )

    @app.get("/health", tags=["operations"])
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/ready", tags=["operations"])
    async def ready(state: StateDep) -> JSONResponse:
        is_ready, detail = await state.readiness.check()
        return JSONResponse(detail, status_code=200 if is_ready else 503)

    @app.get("/health/groups", tags=["operations"])
    async def group_health(request: Request, state: StateDep) -> dict[str, Any]:
        # Deployment ids name pod addresses: with keys configured, a caller sees only the
        # groups its key may use (the master key: all of them).
        principal = state.keys.authenticate(request.headers.get("authorization"))
        return await state.readiness.groups(principal.may_use)

    @app.get("/metrics", tags=["operations"])
    async def prometheus_metrics(state: StateDep) -> Response:
        return Response(state.metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

    return app


def _document_proxy_endpoints(app: FastAPI) -> None:
    """Add the data-plane routes, which FastAPI does not see, to the OpenAPI schema."""
    build_default = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = build_default()
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            for endpoint in ENDPOINTS:
                model = _REQUEST_SCHEMAS[endpoint.name]
                media = "multipart/form-data" if endpoint.multipart else "application/json"
                operation = {
                    "tags": ["anthropic" if endpoint.envelope == "anthropic" else "openai"],
                    "summary": endpoint.summary,
                    "operationId": endpoint.name.replace("/", "_"),
                    "requestBody": {
                        "required": True,
                        "content": {media: {"schema": _schema(model, components)}},
                    },
                    "responses": {
                        "200": {
                            "description": "The deployment's answer; SSE when `stream` is true"
                            if endpoint.streams
                            else "The deployment's answer"
                        },
                        "default": {
                            "description": "Anthropic's error envelope"
                            if endpoint.envelope == "anthropic"
                            else "OpenAI error envelope",
                            "content": {"application/json": {"schema": _schema(ErrorEnvelope, components)}},
                        },
                    },
                }
                for path in endpoint.paths:
                    schema["paths"][path] = {"post": {**operation, "operationId": _operation_id(path)}}
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


_REQUEST_SCHEMAS: dict[str, type[BaseModel]] = {
    "chat/completions": ChatCompletionRequest,
    "completions": CompletionRequest,
    "embeddings": EmbeddingRequest,
    "responses": ResponsesRequest,
    "messages": AnthropicMessagesRequest,
    "messages/count_tokens": AnthropicCountTokensRequest,
    "audio/transcriptions": AudioRequest,
    "audio/translations": AudioRequest,
    "audio/speech": SpeechRequest,
    "rerank": RerankRequest,
    "score": ScoreRequest,
}


def _operation_id(path: str) -> str:
    return path.strip("/").replace("/", "_")


def _add_error_handlers(app: FastAPI, metrics: Metrics) -> Callable[[Request, GatewayError], Response]:
    def respond(request: Request, error: GatewayError) -> Response:
        accounting: Accounting | None = getattr(request.state, "accounting", None)
        if accounting is not None:
            accounting.finish(error.status_code, error.message)
        elif request.url.path.startswith("/v1/"):
            group = getattr(request.state, "model_group", UNKNOWN_GROUP)
            endpoint = getattr(request.state, "endpoint", "other")
            metrics.requests.labels(group, endpoint, NO_DEPLOYMENT, status_class(error.status_code)).inc()
        if error.status_code == 429:
            metrics.rate_limited.labels(error.code or "rate_limit_exceeded").inc()
        request_id = getattr(request.state, "request_id", None)
        if request.url.path.startswith(MESSAGES.paths[0]):
            return anthropic_error_response(error, request_id)
        return error_response(error, request_id)

    install_error_handlers(app, respond, log)
    return respond
