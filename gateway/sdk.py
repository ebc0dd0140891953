"""The path for providers that do not speak OpenAI's API (Anthropic, Gemini, Azure, Bedrock, ...):
the ``litellm`` SDK translates, this module makes its answers and errors look like the fast
path's. ``litellm`` is imported only when such a deployment is configured, in a thread at
start, kept offline and quiet, with its own retries off (the gateway's apply).
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
from collections.abc import AsyncIterator
from typing import Any

import orjson

from common.errors import redacted
from gateway.config import ConfigError
from gateway.deployment import Deployment
from gateway.errors import (
    GatewayError,
    InvalidRequest,
    RateLimited,
    UpstreamFailed,
    UpstreamRejected,
    UpstreamTimeout,
)
from gateway.sdk_fields import sdk_arguments
from gateway.upstream import AttemptFailed

log = logging.getLogger("gateway.sdk")

# What LiteLLM adds to OpenAI's shapes: never sent to clients.
_EXTRA_KEYS = frozenset(
    {"provider_specific_fields", "thinking_blocks", "images", "citations", "cost", "_hidden_params"}
)
_USAGE_KEYS = frozenset(
    {"prompt_tokens", "completion_tokens", "total_tokens", "prompt_tokens_details", "completion_tokens_details"}
)
_PREFIX = re.compile(r"^(?:litellm\.)?\w+(?:Error|Exception)?:\s*(?:\w+Exception\s*-\s*)?")
_CLOSE_TIMEOUT_S = 5.0
_ENDPOINTS = {
    "chat/completions": "acompletion",
    "completions": "atext_completion",
    "embeddings": "aembedding",
    "rerank": "arerank",
    "audio/transcriptions": "atranscription",
    "audio/speech": "aspeech",
}
STREAMS = frozenset({"chat/completions", "completions"})  # what is streamed through the SDK
RAW_ANSWERS = frozenset({"audio/transcriptions", "audio/speech"})  # answers that may not be JSON
_TEXT_FORMATS = frozenset({"text", "srt", "vtt"})


class SdkClient:
    """Calls ``litellm`` for SDK deployments; one per app, created only when one is configured."""

    def __init__(self, drop_params: bool) -> None:
        self._drop_params = drop_params
        self._litellm: Any = None

    async def start(self) -> None:
        """Import ``litellm`` (seconds of CPU) off the event loop, offline and quiet, and drop the
        HTTP clients it cached for an earlier event loop (another app in the same process)."""
        if self._litellm is None:
            self._litellm = await asyncio.to_thread(_import_litellm)
            self._litellm.in_memory_llm_clients_cache.flush_cache()

    async def close(self) -> None:
        """Close the HTTP clients LiteLLM cached on this event loop (its own cleanup helper)."""
        if self._litellm is None:
            return
        try:
            await self._litellm.close_litellm_async_clients()
        except Exception as exc:  # best effort at shutdown
            log.debug("closing LiteLLM's clients failed: %s", type(exc).__name__)
        self._litellm.in_memory_llm_clients_cache.flush_cache()

    async def call(
        self, deployment: Deployment, endpoint: str, body: dict[str, Any], stream: bool, file: object = None
    ) -> Any:
        """The provider's answer as LiteLLM gives it; raises AttemptFailed like the fast path.
        ``file`` is an audio upload's file part (transcriptions)."""
        await self.start()
        if stream and endpoint not in STREAMS:
            raise AttemptFailed(
                InvalidRequest(f"model '{deployment.group}' cannot stream {endpoint}", param="stream"), False
            )
        function = getattr(self._litellm, _ENDPOINTS[endpoint])
        # Only allow-listed OpenAI fields come from the client; every SDK setting (endpoint,
        # credentials, provider) comes from the deployment's config and nothing else.
        params = sdk_arguments(endpoint, body, self._drop_params)
        params.update(deployment.sdk_params)
        params["model"] = f"{deployment.provider}/{deployment.upstream_model}"
        params["api_base"] = deployment.api_base or None
        params["api_key"] = deployment.api_key or None
        params.update(num_retries=0, max_retries=0, drop_params=self._drop_params)
        params["timeout"] = deployment.stream_timeout if stream else deployment.timeout
        if endpoint in STREAMS:
            params["stream"] = stream
        if file is not None:
            params["file"] = file
        try:
            return await function(**params)
        except Exception as exc:
            log.info("provider call failed: %s", summary(exc), extra={"deployment": deployment.id})
            raise failure(deployment, exc) from None

    async def first(self, stream: Any, deployment: Deployment) -> Any:
        """The stream's first chunk (before it, errors may still be retried)."""
        try:
            return await stream.__anext__()
        except StopAsyncIteration:
            return None
        except Exception as exc:
            raise failure(deployment, exc) from None


async def close_stream(stream: Any) -> None:
    """Close a LiteLLM stream and the provider's HTTP response under it (a no-op once it ended)."""
    close = getattr(stream, "aclose", None)
    if close is None:
        return
    try:
        async with asyncio.timeout(_CLOSE_TIMEOUT_S):
            await close()
    except Exception as exc:  # best effort: the stream is abandoned either way
        log.debug("closing a provider stream failed: %s", type(exc).__name__)


def raw_answer(endpoint: str, answer: Any, body: dict[str, Any]) -> tuple[bytes, bytes]:
    """A speech or transcription answer as (body, media type): audio bytes, a transcript in the
    text format asked for, or the JSON one."""
    if endpoint == "audio/speech":
        headers = getattr(getattr(answer, "response", None), "headers", None) or {}
        media_type = str(headers.get("content-type") or "application/octet-stream")
        return bytes(answer.content), media_type.encode("latin-1", "replace")
    if body.get("response_format") in _TEXT_FORMATS:
        return str(getattr(answer, "text", "") or "").encode(), b"text/plain; charset=utf-8"
    data = answer.model_dump(exclude_none=True) if hasattr(answer, "model_dump") else dict(answer)
    return orjson.dumps(_scrub(data)), b"application/json"


def check_providers(providers: set[str]) -> None:
    """ConfigError unless ``litellm`` is installed and knows every provider (imports it: seconds)."""
    if not providers:
        return
    try:
        litellm = _import_litellm()
    except ImportError:
        names = ", ".join(f"{p}/" for p in sorted(providers))
        raise ConfigError(
            f"deployments of {names} are served through the litellm SDK: pip install 'mmgateway[litellm]'"
        ) from None
    known = {str(p.value) if hasattr(p, "value") else str(p) for p in litellm.provider_list}
    unknown = sorted(providers - known)
    if unknown:
        raise ConfigError(f"unknown provider(s) {', '.join(f'{p}/' for p in unknown)}: LiteLLM does not know them")


def _import_litellm() -> Any:
    os.environ.setdefault("LITELLM_OFFLINE_MODE", "true")  # no price list fetched at import
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    os.environ.setdefault("LITELLM_LOG", "ERROR")
    import litellm

    litellm.suppress_debug_info = True
    litellm.telemetry = False
    litellm.callbacks = []
    litellm.success_callback = []
    litellm.failure_callback = []
    litellm.num_retries = 0
    return litellm


def shaped(answer: Any, requested_model: str) -> dict[str, Any]:
    """LiteLLM's response as an OpenAI one: the client's model name, no provider extras."""
    data: dict[str, Any] = answer.model_dump(exclude_none=False) if hasattr(answer, "model_dump") else dict(answer)
    data = _scrub(data)
    if "model" in data:
        data["model"] = requested_model
    return data


def _scrub(value: Any) -> Any:
    if isinstance(value, dict):
        cleaned = {}
        for key, item in value.items():
            if key in _EXTRA_KEYS or key.startswith(("vertex_ai_", "_")):
                continue
            if key == "usage" and isinstance(item, dict):
                item = {k: v for k, v in item.items() if k in _USAGE_KEYS and v is not None}
            cleaned[key] = _scrub(item)
        return cleaned
    if isinstance(value, list):
        return [_scrub(item) for item in value]
    return value


def sse(chunk: Any, requested_model: str) -> bytes:
    """One streamed chunk as an SSE event in OpenAI's shape."""
    data = chunk.model_dump(exclude_none=True) if hasattr(chunk, "model_dump") else dict(chunk)
    data = _scrub(data)
    data["model"] = requested_model
    return b"data: " + orjson.dumps(data) + b"\n\n"


async def events(stream: Any, first: Any, requested_model: str) -> AsyncIterator[tuple[bytes, dict[str, Any] | None]]:
    """The SSE events of a LiteLLM stream, each with the usage it reports (if any)."""
    chunk = first
    while chunk is not None:
        event = sse(chunk, requested_model)
        usage: Any = getattr(chunk, "usage", None)
        yield event, (usage.model_dump() if hasattr(usage, "model_dump") else usage)
        try:
            chunk = await stream.__anext__()
        except StopAsyncIteration:
            chunk = None


def failure(deployment: Deployment, exc: BaseException) -> AttemptFailed:
    """A LiteLLM exception as the fast path's failure: 4xx passed on, 429 with Retry-After,
    timeouts 504, everything else (5xx, 529 overloaded, connection errors) 502 and retryable."""
    group = deployment.group
    status = getattr(exc, "status_code", None)
    name = type(exc).__name__
    if name in ("Timeout", "APITimeoutError") or status == 408:
        return AttemptFailed(UpstreamTimeout(f"model '{group}' did not answer in time"), True)
    if status == 429:
        return AttemptFailed(
            RateLimited(f"model '{group}' is rate limiting requests", retry_after=_retry_after(exc)), True
        )
    if status in (401, 403):
        # The deployment's own credentials are wrong: the operator's problem, as on the fast path.
        return AttemptFailed(UpstreamFailed(f"model '{group}' refused the gateway's credentials"), True)
    if isinstance(status, int) and 400 <= status < 500 and name != "APIConnectionError":
        return AttemptFailed(UpstreamRejected(status, _message(exc), param=None, code=None), False)
    if name == "APIConnectionError" or status is None:
        log.warning("provider unreachable", extra={"deployment": deployment.id, "error": name})
        error: GatewayError = UpstreamFailed(f"model '{group}' could not be reached")
    else:
        error = UpstreamFailed(f"model '{group}' failed (upstream HTTP {status})")
    return AttemptFailed(error, True)


def summary(exc: BaseException) -> str:
    """What a log may say of a provider failure: its kind and status, never its text (which
    carries URLs, hosts and the provider's body)."""
    status = getattr(exc, "status_code", None)
    return f"{type(exc).__name__} (HTTP {status})" if isinstance(status, int) else type(exc).__name__


def _retry_after(exc: BaseException) -> float | None:
    headers = getattr(exc, "litellm_response_headers", None) or {}
    value = headers.get("retry-after") or headers.get("Retry-After") if hasattr(headers, "get") else None
    try:
        return max(0.0, float(value)) if value is not None else None
    except (TypeError, ValueError):
        return None


def _message(exc: BaseException) -> str:
    """The provider's own message for the client, without LiteLLM's prefixes or internals."""
    text = str(getattr(exc, "message", None) or exc)
    text = _PREFIX.sub("", text.strip())
    start = text.find("{")
    if start >= 0:
        try:
            parsed = orjson.loads(text[start:])
        except orjson.JSONDecodeError:
            parsed = None
        inner = parsed.get("error") if isinstance(parsed, dict) else None
        if isinstance(inner, dict) and isinstance(inner.get("message"), str):
            text = inner["message"]
    return redacted(text[:2000]) or "the provider rejected the request"
