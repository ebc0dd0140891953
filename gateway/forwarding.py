"""The data plane: send a request to a deployment with retries, cooldowns and fallbacks.

Retries and fallbacks happen only before the first byte goes to the client; a stream
is committed once its first chunk arrived from the deployment.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson

import gateway.sdk as sdk
from gateway.accounting import Accounting
from gateway.audio import Upload
from gateway.bodies import replace_model
from gateway.config import GatewaySettings
from gateway.deployment import Deployment
from gateway.endpoints import CHAT, Endpoint
from gateway.engine_aware import Affinity
from gateway.errors import (
    GatewayError,
    UpstreamFailed,
    UpstreamTimeout,
    anthropic_error_event,
    responses_error_event,
    sse_error_event,
)
from gateway.http1 import Response as UpstreamResponse
from gateway.limits.shared import RENEW_EVERY_S, KeyLimits
from gateway.media import check_media, remote_media_hosts
from gateway.metrics import Metrics
from gateway.prices import PriceBook
from gateway.replies import EVENT_STREAM, JSON, Reply, StreamReply
from gateway.routing import Route, Router
from gateway.streaming import EventRelay, EventTooLarge, model_replacements
from gateway.upstream import (
    JSON_TYPE,
    TRANSPORT_ERRORS,
    AttemptFailed,
    UpstreamClient,
    authorization_line,
    status_failure,
    transport_failure,
)

log = logging.getLogger("gateway.forwarding")
_MAX_RETRY_AFTER_S = 10.0


class Translation(Protocol):
    """A request in one API answered by a deployment's chat completions (gateway.bridges)."""

    def chat_body(self, upstream_model: str) -> dict[str, Any]:
        """The chat completions request for ``upstream_model``."""

    def answer(self, chat: dict[str, Any]) -> bytes:
        """A whole chat completion as the client's API answer."""

    def stream(self) -> StreamTranslation:
        """A translator for one streamed attempt."""


class StreamTranslation(Protocol):
    """Chat completion chunks in, the client's API events out."""

    def feed(self, events: bytes) -> bytes:
        """Complete chat SSE events in, the client's events out."""

    def finish(self) -> bytes:
        """The events that end the client's stream, once the chat stream ended well."""

    def error(self, error: GatewayError) -> bytes:
        """The event that ends the client's stream after a failure."""


@dataclass
class Call:
    """One client request on its way to a deployment."""

    endpoint: Endpoint
    raw: bytes
    requested_model: str
    stream: bool
    has_images: bool
    request_id: str
    accounting: Accounting
    key_limits: KeyLimits | None = None  # the key's shared limits (Redis), when it has any
    key_counted: bool = False  # an attempt was admitted: the key is counted once per request
    model_span: tuple[int, int] | None = None  # where the model's JSON string is in ``raw``, when known
    # Only these deployments may serve it (the endpoint's, or the one a response id names).
    where: Callable[[Deployment], bool] | None = None
    translation: Translation | None = None  # for deployments that bridge the endpoint to chat
    upload: Upload | None = None  # an audio upload (multipart) instead of a JSON body
    extra_head: bytes = b""  # header lines of the client's passed on (anthropic-version, ...)
    rename_id: Callable[[Deployment, str], str] | None = None  # response ids the client sees (Responses)
    previous_id: tuple[str, str] | None = None  # (the deployment's, the client's) id of the turn it continues
    affinity: Affinity | None = None  # its prefix and session, for engine-aware routing (gateway.engine_aware)
    authorization: str | None = None  # the client's Authorization, for deployments that forward it
    _encoded: dict[str, list[bytes | memoryview]] = field(default_factory=dict)
    _media_hosts: list[str] | None = None
    _parsed: dict[str, Any] | None = None

    def check_media(self, deployment: Deployment) -> None:
        """400 when the request names a media URL ``deployment`` may not be sent (gateway.media)."""
        if not self.has_images or deployment.media_domains is None:
            return
        if self._media_hosts is None:
            self._media_hosts = remote_media_hosts(self.raw)
        check_media(self._media_hosts, deployment.media_domains, deployment.group)

    def parsed(self) -> dict[str, Any]:
        """The client's body as a mapping (the SDK path needs it; the fast path never parses it whole)."""
        if self._parsed is None:
            self._parsed = orjson.loads(self.raw)
        return dict(self._parsed)

    def reset_parsed(self) -> None:
        """Forget what was derived from ``raw`` (it was just replaced)."""
        self._parsed = None
        self._encoded.clear()
        self._media_hosts = None

    def encoded_for(self, upstream_model: str) -> list[bytes | memoryview]:
        """The client's body with ``model`` rewritten, built once per upstream name."""
        data = self._encoded.get(upstream_model)
        if data is None:
            if self.upload is not None:
                data = self.upload.encoded_for(upstream_model)
            elif self.model_span is not None:  # the scan saw exactly one "model" key
                view, (start, end) = memoryview(self.raw), self.model_span
                data = [view[:start], orjson.dumps(upstream_model), view[end:]]
            else:
                data = replace_model(self.raw, self.requested_model, upstream_model)
            if data is None:
                body = orjson.loads(self.raw)
                body["model"] = upstream_model
                data = [orjson.dumps(body)]
            self._encoded[upstream_model] = data
        return data


class Forwarder:
    """Runs calls against the router's deployments."""

    def __init__(
        self,
        router: Router,
        client: UpstreamClient,
        metrics: Metrics,
        settings: GatewaySettings,
        rng: random.Random | None = None,
        sdk_client: sdk.SdkClient | None = None,
        prices: PriceBook | None = None,
    ) -> None:
        self._sdk = sdk_client
        self._prices = prices or PriceBook()
        self._router = router
        self._client = client
        self._metrics = metrics
        self._settings = settings
        self._rng = rng or random.Random()
        self._background: set[asyncio.Task[None]] = set()

    async def forward(self, call: Call, route: Route) -> Reply | StreamReply:
        """The deployment's response, or raise the last error once every route failed."""
        routes = self._router.plan(route, call.has_images, call.where)
        last: GatewayError | None = None
        for index, candidate in enumerate(routes):
            if index:
                self._metrics.fallbacks.labels(route.group.name, candidate.group.name).inc()
                log.info(
                    "falling back",
                    extra={"request_id": call.request_id, "model_group": candidate.group.name},
                )
            try:
                return await self._try_group(call, candidate)
            except GatewayError as exc:
                if exc.status_code < 429 or exc.status_code == 500:
                    raise
                last = exc
        assert last is not None
        raise last

    async def _try_group(self, call: Call, route: Route) -> Reply | StreamReply:
        group = route.group
        settings = self._router.settings
        attempts = settings.num_retries + 1
        tried: set[str] = set()
        last: AttemptFailed | None = None
        for attempt in range(attempts):
            lease = self._router.new_lease()
            try:
                caller = None if call.key_counted else call.key_limits
                deployment = await self._router.acquire(
                    group,
                    tried,
                    self._settings.queue_timeout,
                    caller,
                    lease,
                    call.accounting.add_wait,
                    call.where,
                    call.affinity,
                )
            except GatewayError:
                if last is not None:
                    raise last.error from None
                raise
            call.key_counted = True
            tried.add(deployment.id)
            call.accounting.deployment = deployment.id
            call.accounting.attempts += 1
            try:
                return await self._attempt(call, route, deployment, lease)
            except AttemptFailed as failure:
                last = failure
                if not failure.retryable:
                    raise failure.error from None
                self._note_failure(deployment, failure.error)
                if attempt + 1 < attempts:
                    self._metrics.retries.labels(group.name).inc()
                    await self._backoff(call, attempt, failure.error.retry_after)
        assert last is not None
        raise last.error

    async def fetch(self, deployment: Deployment, method: bytes, path: str, request_id: str) -> tuple[int, bytes]:
        """One request without a body to ``path`` of ``deployment`` (a stored response): its
        status and body; failures raise as the data plane's do, 4xx answers are returned."""
        try:
            response = await self._client.post(deployment, path, (), False, request_id, method=method)
        except TRANSPORT_ERRORS as exc:
            raise transport_failure(deployment, exc).error from None
        except AttemptFailed as failure:
            raise failure.error from None
        try:
            data = await response.read(self._client.max_answer_bytes)
        except TRANSPORT_ERRORS as exc:
            raise transport_failure(deployment, exc).error from None
        finally:
            response.release()
        if response.status >= 300 and response.status not in (400, 404, 405, 422):
            raise status_failure(deployment, response.status, data, None).error
        return response.status, data

    def _note_failure(self, deployment: Deployment, error: GatewayError) -> None:
        deployment.last_error = error.code or type(error).__name__
        if self._router.record_failure(deployment):
            shared = self._router.shared
            if shared is not None:
                task = asyncio.create_task(shared.publish_cooldown(deployment, self._router.settings.cooldown_time))
                self._background.add(task)
                task.add_done_callback(self._background.discard)
            self._metrics.cooldowns.labels(deployment.group, deployment.id).inc()
            log.warning(
                "deployment cooling down",
                extra={"model_group": deployment.group, "deployment": deployment.id},
            )

    async def _backoff(self, call: Call, attempt: int, retry_after: float | None) -> None:
        base = self._settings.retry_backoff * (2**attempt) * (0.5 + self._rng.random())
        delay = max(base, self._router.settings.retry_after, min(retry_after or 0.0, _MAX_RETRY_AFTER_S))
        call.accounting.waited_s += delay
        await asyncio.sleep(delay)

    async def _attempt(self, call: Call, route: Route, deployment: Deployment, lease: str) -> Reply | StreamReply:
        """One try; releases the deployment unless a stream now owns it."""
        serving = deployment.serving(call.endpoint)
        try:
            call.check_media(deployment)
            if serving is None:  # the router only offers deployments that serve the endpoint
                raise AttemptFailed(UpstreamFailed(f"model '{deployment.group}' cannot serve this endpoint"), True)
        except BaseException:
            self._router.release(deployment, lease)
            raise
        upstream_model = deployment.model_for(route.wildcard_match)
        call.accounting.price = self._prices.of(deployment, upstream_model)
        translation = call.translation if serving == "bridge" else None
        if deployment.sdk and serving != "native":
            return await self._attempt_sdk(call, deployment, lease, upstream_model, translation)
        if translation is not None:
            endpoint = CHAT
            body: list[bytes | memoryview] = [orjson.dumps(translation.chat_body(upstream_model))]
            content_type, extra_head = JSON_TYPE, b""
        else:
            endpoint, body = call.endpoint, call.encoded_for(upstream_model)
            content_type = call.upload.content_type if call.upload is not None else JSON_TYPE
            extra_head = call.extra_head
        if deployment.forward_authorization:
            extra_head += authorization_line(deployment, call.authorization)
        accounting = call.accounting
        sent = accounting.now()
        handed_off = False
        streamed = call.stream or (endpoint.relayed and translation is None)
        try:
            response = await self._client.post(
                deployment,
                endpoint.name,
                body,
                streamed,
                call.request_id,
                content_type=content_type,
                extra_head=extra_head,
            )
        except TRANSPORT_ERRORS as exc:
            accounting.waited_s += accounting.now() - sent
            self._router.release(deployment, lease)
            raise transport_failure(deployment, exc) from None
        except BaseException:  # AttemptFailed, or the client gone (cancelled) while waiting
            self._router.release(deployment, lease)
            raise
        try:
            if response.status != 200 or not streamed:
                data = await response.read(self._client.max_answer_bytes)
                accounting.waited_s += accounting.now() - sent
                if response.status != 200:
                    raise status_failure(deployment, response.status, data, response.header("Retry-After"))
                deployment.record_latency(accounting.now() - sent)
                if call.endpoint.answer == "bytes" and translation is None:
                    call.accounting.finish(200)
                    media_type = response.header("Content-Type")
                    return Reply(data, call.request_id, media_type.encode("latin-1") if media_type else JSON)
                return self._complete(call, upstream_model, data, deployment, translation)
            first = await response.readany()
            if not first:
                raise AttemptFailed(UpstreamFailed(f"model '{deployment.group}' closed the stream without data"), True)
            accounting.first_byte()
            deployment.record_latency(accounting.now() - sent)
            handed_off = True
            media_type = response.header("Content-Type")
            if not call.stream:  # audio: relayed as it arrives
                return StreamReply(
                    self._relay_bytes(call, deployment, lease, response, first, sent),
                    call.request_id,
                    media_type.encode("latin-1") if media_type else b"application/octet-stream",
                )
            rename = call.rename_id
            replacements = model_replacements(upstream_model, call.requested_model)
            if call.previous_id is not None:
                theirs, ours = call.previous_id
                replacements.append((orjson.dumps(theirs), orjson.dumps(ours)))
            relay = EventRelay(
                replacements,
                ends=endpoint.stream_end,
                rename_id=(lambda upstream_id: rename(deployment, upstream_id)) if rename is not None else None,
            )
            return StreamReply(
                self._relay(call, deployment, lease, response, relay, first, sent, translation),
                call.request_id,
                media_type.encode("latin-1") if media_type and translation is None else EVENT_STREAM,
            )
        except TRANSPORT_ERRORS as exc:
            accounting.waited_s += accounting.now() - sent
            raise transport_failure(deployment, exc) from None
        finally:
            if not handed_off:
                response.release()
                self._router.release(deployment, lease)

    def _complete(
        self, call: Call, upstream_model: str, data: bytes, deployment: Deployment, translation: Translation | None
    ) -> Reply:
        try:
            parsed = orjson.loads(data)
        except orjson.JSONDecodeError:
            raise AttemptFailed(
                UpstreamFailed(f"model '{deployment.group}' answered with a body that is not JSON"), True
            ) from None
        if isinstance(parsed, dict):
            self._count_tokens(call, parsed.get("usage"))
            if translation is not None:
                data = translation.answer(parsed)
            else:
                renamed = False
                if parsed.get("model") == upstream_model:
                    parsed["model"] = call.requested_model
                    renamed = True
                if call.rename_id is not None and isinstance(parsed.get("id"), str):
                    parsed["id"] = call.rename_id(deployment, parsed["id"])
                    renamed = True
                if call.previous_id is not None and parsed.get("previous_response_id") == call.previous_id[0]:
                    parsed["previous_response_id"] = call.previous_id[1]
                if renamed:
                    data = orjson.dumps(parsed)
        elif translation is not None:
            raise AttemptFailed(UpstreamFailed(f"model '{deployment.group}' answered with an unexpected body"), True)
        call.accounting.finish(200)
        reply = Reply(data, call.request_id)
        reply.headers.append(call.accounting.cost_header())
        return reply

    async def _relay(
        self,
        call: Call,
        deployment: Deployment,
        lease: str,
        response: UpstreamResponse,
        relay: EventRelay,
        first: bytes,
        sent: float,
        translation: Translation | None = None,
    ) -> AsyncIterator[bytes]:
        accounting = call.accounting
        status, note = 200, None
        translator = translation.stream() if translation is not None else None
        try:
            out = relay.feed(first)
            if translator is not None:
                out = translator.feed(out)
            if out:
                yield out
            renewed = accounting.now()
            while chunk := await response.readany():
                out = relay.feed(chunk)
                if translator is not None and out:
                    out = translator.feed(out)
                if out:
                    yield out
                if accounting.now() - renewed > RENEW_EVERY_S:
                    renewed = accounting.now()
                    self._router.renew(deployment, lease)
            rest = relay.finish()
            if translator is not None and rest:
                rest = translator.feed(rest)
            if rest:
                yield rest
            if not relay.done:
                status, note = 502, "stream ended without its last event"
                yield self._error_event(
                    call, translator, UpstreamFailed(f"model '{deployment.group}' ended the stream early")
                )
            elif translator is not None:
                yield translator.finish()
        except EventTooLarge as exc:
            status, note = 502, str(exc)
            log.warning(
                "stream cut", extra={"request_id": call.request_id, "deployment": deployment.id, "reason": note}
            )
            yield self._error_event(
                call, translator, UpstreamFailed(f"model '{deployment.group}' sent a malformed stream: {exc}")
            )
        except TRANSPORT_ERRORS as exc:
            status, note = 502, "stream broke mid-way"
            error: GatewayError = transport_failure(deployment, exc).error
            self._note_failure(deployment, error)
            if isinstance(error, UpstreamTimeout):
                status = 504
            yield self._error_event(call, translator, error)
        except GatewayError as exc:  # the deployment reported a failure inside a bridged stream
            status, note = exc.status_code, "the deployment failed mid-way"
            yield self._error_event(call, translator, exc)
        except (asyncio.CancelledError, GeneratorExit):
            status, note = 499, "client disconnected"
            raise
        finally:
            self._stream_ended(call, deployment, lease, response, sent, relay.usage, status, note)

    async def _relay_bytes(
        self, call: Call, deployment: Deployment, lease: str, response: UpstreamResponse, first: bytes, sent: float
    ) -> AsyncIterator[bytes]:
        """An answer that is not a stream of events (audio), piece by piece; a break ends it short."""
        accounting = call.accounting
        status, note = 200, None
        try:
            yield first
            renewed = accounting.now()
            while chunk := await response.readany():
                yield chunk
                if accounting.now() - renewed > RENEW_EVERY_S:
                    renewed = accounting.now()
                    self._router.renew(deployment, lease)
        except TRANSPORT_ERRORS as exc:
            status, note = 502, "answer broke mid-way"
            self._note_failure(deployment, transport_failure(deployment, exc).error)
        except (asyncio.CancelledError, GeneratorExit):
            status, note = 499, "client disconnected"
            raise
        finally:
            self._stream_ended(call, deployment, lease, response, sent, None, status, note)

    def _stream_ended(
        self,
        call: Call,
        deployment: Deployment,
        lease: str,
        response: UpstreamResponse,
        sent: float,
        usage: dict[str, Any] | None,
        status: int,
        note: str | None,
    ) -> None:
        """A relayed answer is over: its connection and slot go back, the request is counted."""
        call.accounting.waited_s += call.accounting.now() - sent
        response.release()
        self._router.release(deployment, lease)
        self._count_tokens(call, usage)
        call.accounting.finish(status, note)

    @staticmethod
    def _error_event(call: Call, translator: StreamTranslation | None, error: GatewayError) -> bytes:
        """The event that ends the client's stream after a failure, in its API's shape."""
        if translator is not None:
            return translator.error(error)
        return stream_error_event(call.endpoint, error)

    async def _attempt_sdk(
        self,
        call: Call,
        deployment: Deployment,
        lease: str,
        upstream_model: str,
        translation: Translation | None,
    ) -> Reply | StreamReply:
        """One try through the litellm SDK, with the fast path's accounting and release rules."""
        assert self._sdk is not None
        accounting = call.accounting
        sent = accounting.now()
        handed_off = False
        file = None
        if translation is not None:
            endpoint, body = CHAT.name, translation.chat_body(upstream_model)
        elif call.upload is not None:
            endpoint, body, file = call.endpoint.name, call.upload.values(), call.upload.file_part()
        else:
            endpoint, body = call.endpoint.name, call.parsed()
        try:
            answer = await self._sdk.call(deployment, endpoint, body, call.stream, file)
            if not call.stream:
                accounting.waited_s += accounting.now() - sent
                deployment.record_latency(accounting.now() - sent)
                if endpoint in sdk.RAW_ANSWERS:  # speech audio, or a transcript as text
                    raw, media_type = sdk.raw_answer(endpoint, answer, body)
                    accounting.finish(200)
                    return Reply(raw, call.request_id, media_type)
                data = sdk.shaped(answer, call.requested_model)
                self._count_tokens(call, data.get("usage"))
                accounting.finish(200)
                encoded = translation.answer(data) if translation is not None else orjson.dumps(data)
                reply = Reply(encoded, call.request_id)
                reply.headers.append(accounting.cost_header())
                return reply
            first = await self._sdk.first(answer, deployment)
            if first is None:
                raise AttemptFailed(UpstreamFailed(f"model '{deployment.group}' closed the stream without data"), True)
            accounting.first_byte()
            deployment.record_latency(accounting.now() - sent)
            handed_off = True
            return StreamReply(
                self._relay_sdk(call, deployment, lease, answer, first, sent, translation), call.request_id
            )
        except AttemptFailed:
            accounting.waited_s += accounting.now() - sent
            raise
        finally:
            if not handed_off:
                self._router.release(deployment, lease)

    async def _relay_sdk(
        self,
        call: Call,
        deployment: Deployment,
        lease: str,
        stream: Any,
        first: Any,
        sent: float,
        translation: Translation | None = None,
    ) -> AsyncIterator[bytes]:
        accounting = call.accounting
        status, note = 200, None
        usage: dict[str, Any] | None = None
        translator = translation.stream() if translation is not None else None
        try:
            renewed = accounting.now()
            async for event, reported in sdk.events(stream, first, call.requested_model):
                if reported:
                    usage = reported
                out = translator.feed(event) if translator is not None else event
                if out:
                    yield out
                if accounting.now() - renewed > RENEW_EVERY_S:
                    renewed = accounting.now()
                    self._router.renew(deployment, lease)
            yield translator.finish() if translator is not None else b"data: [DONE]\n\n"
        except (asyncio.CancelledError, GeneratorExit):
            status, note = 499, "client disconnected"
            raise
        except GatewayError as exc:  # the provider reported a failure inside a bridged stream
            status, note = exc.status_code, "the deployment failed mid-way"
            yield self._error_event(call, translator, exc)
        except Exception as exc:
            log.warning("stream failed mid-way: %s", sdk.summary(exc), extra={"request_id": call.request_id})
            error = sdk.failure(deployment, exc).error
            status, note = error.status_code, "stream broke mid-way"
            self._note_failure(deployment, error)
            yield self._error_event(call, translator, error)
        finally:
            # A client that left, or a stream that broke, leaves the provider generating (and
            # billing) until its stream is closed.
            await sdk.close_stream(stream)
            accounting.waited_s += accounting.now() - sent
            self._router.release(deployment, lease)
            self._count_tokens(call, usage)
            accounting.finish(status, note)

    def _count_tokens(self, call: Call, usage: object) -> None:
        if not isinstance(usage, dict):
            return
        call.accounting.usage(usage)
        shared = self._router.shared
        total = usage.get("total_tokens")
        if shared is not None and call.key_limits is not None and isinstance(total, int):
            shared.record_usage(call.key_limits, total)


def stream_error_event(endpoint: Endpoint, error: GatewayError) -> bytes:
    """The event that ends a relayed stream of ``endpoint`` after a failure."""
    if endpoint.envelope == "anthropic":
        return anthropic_error_event(error)
    if endpoint.name == "responses":
        return responses_error_event(error)
    return sse_error_event(error)
