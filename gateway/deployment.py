"""One upstream model endpoint and its live state: load, failures, cooldown, latency."""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from gateway.endpoints import BASE_FAMILIES, Endpoint
from gateway.ratelimit import TokenBucket
from gateway.sdk_fields import SDK_BASE_ENDPOINTS

if TYPE_CHECKING:
    from gateway.engine_stats import EngineStats
    from gateway.prices import Price

_FAIL_WINDOW_S = 60.0
# native: relayed to the deployment's own API; bridge: translated to chat completions and back;
# sdk: through the litellm SDK.
Serving = Literal["native", "bridge", "sdk"]
BRIDGED_ENDPOINTS = frozenset({"responses", "messages"})
_LATENCY_SMOOTHING = 0.2


@dataclass(eq=False)
class Deployment:
    """A configured model endpoint; ``upstream_model`` may hold a ``*`` filled per request."""

    id: str
    group: str
    provider: str
    upstream_model: str
    api_base: str
    api_key: str | None
    timeout: float
    stream_timeout: float
    weight: float
    supports_vision: bool
    max_parallel: int | None = None
    context_tokens: int | None = None
    supports_video: bool = False  # takes video_url parts (a clip as one video item)
    sdk: bool = False  # not OpenAI-compatible: served through the litellm SDK (gateway.sdk)
    sdk_params: dict[str, Any] = field(default_factory=dict)  # more litellm_params for the SDK (api_version, ...)
    per_pod: bool = False  # api_base names a headless Service: one deployment per address (gateway.discovery)
    rpm: TokenBucket | None = None
    extra_headers: dict[str, str] = field(default_factory=dict)
    forward_authorization: bool = False  # requests carry the client's Authorization header, not api_key
    media_domains: frozenset[str] | None = frozenset()  # domains of media URLs it may be sent; None: any
    native: frozenset[str] = BASE_FAMILIES  # endpoint families its own API serves (gateway.endpoints)
    path_prefix: str = ""  # between api_base and an endpoint's name ("v1/" for Anthropic's API)
    sdk_endpoints: frozenset[str] = SDK_BASE_ENDPOINTS  # what the litellm SDK serves for it (gateway.sdk_fields)
    price: Price | None = None  # its per-token prices from the config (gateway.prices)
    in_flight: int = 0
    cooldown_until: float = 0.0
    latency_s: float | None = None
    last_error: str | None = None  # the kind of the last failure, for /health/groups
    probe_failure: str | None = None  # why the last health probe failed; None when it answered
    engine: EngineStats | None = None  # what a vLLM engine last said of itself (gateway.engine_stats)
    in_flight_at_scrape: int = 0  # this process's in-flight count when ``engine`` was asked for
    _fails: deque[float] = field(default_factory=deque)

    def serving(self, endpoint: Endpoint) -> Serving | None:
        """How this deployment serves ``endpoint``; None when it cannot."""
        if endpoint.family in self.native:
            return "native"
        if self.sdk and endpoint.name in self.sdk_endpoints:
            return "sdk"
        if endpoint.name in BRIDGED_ENDPOINTS and (self.sdk or "chat" in self.native):
            return "bridge"
        return None

    def is_cooling(self, now: float) -> bool:
        """Whether the deployment is out of rotation after too many failures."""
        return now < self.cooldown_until

    def is_healthy(self, now: float) -> bool:
        """In rotation, and its last health probe (if any) got an answer."""
        return not self.is_cooling(now) and self.probe_failure is None

    def has_capacity(self) -> bool:
        """Whether another request fits under ``max_parallel_requests``."""
        return self.max_parallel is None or self.in_flight < self.max_parallel

    def record_failure(self, allowed_fails: int, cooldown_time: float, now: float | None = None) -> bool:
        """Count a failure; returns True when it starts a cooldown."""
        now = time.monotonic() if now is None else now
        self._fails.append(now)
        while self._fails and self._fails[0] < now - _FAIL_WINDOW_S:
            self._fails.popleft()
        if len(self._fails) > allowed_fails and cooldown_time > 0:
            self.cooldown_until = now + cooldown_time
            self._fails.clear()
            return True
        return False

    def record_latency(self, seconds: float) -> None:
        """Feed the smoothed latency used by ``latency-based-routing``."""
        if self.latency_s is None:
            self.latency_s = seconds
        else:
            self.latency_s += _LATENCY_SMOOTHING * (seconds - self.latency_s)

    def model_for(self, wildcard_match: str | None) -> str:
        """The model name sent upstream, with a wildcard group's ``*`` filled in."""
        if wildcard_match is not None and "*" in self.upstream_model:
            return self.upstream_model.replace("*", wildcard_match, 1)
        return self.upstream_model
