"""What the gateway's handlers share: its state, created once per app by the lifespan."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from gateway.access_log import AccessLog
from gateway.auth import KeyStore
from gateway.bodies import BodyInspector
from gateway.config import ProxyConfig
from gateway.forwarding import Forwarder
from gateway.health import Readiness
from gateway.keys.managed import ManagedKeys
from gateway.metrics import Metrics
from gateway.responses_api import ResponsesState
from gateway.routing import Router


@dataclass
class GatewayState:
    """Everything a request handler needs, created once per app."""

    config: ProxyConfig
    router: Router
    keys: KeyStore
    metrics: Metrics
    forwarder: Forwarder
    readiness: Readiness
    inspector: BodyInspector
    started_at: int
    access_log: AccessLog
    responses: ResponsesState
    managed: ManagedKeys | None = None  # keys managed at run time, when a database is configured


async def get_state(request: Request) -> GatewayState:
    """The app's state, placed in every request's scope by the lifespan (async: no thread hop)."""
    state: GatewayState = request.state.gateway
    return state


StateDep = Annotated[GatewayState, Depends(get_state)]
