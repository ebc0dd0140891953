"""Responses the gateway answered by bridging to chat, kept for ``previous_response_id`` and GET.

In memory by default, bounded by bytes and age (the oldest go first); in Redis, with the same
age as its expiry, when ``router_settings.redis_*`` is set, so that every replica finds every
response. A record is the response object, the conversation that led to it (input items) and
the model group it belongs to.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import orjson
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from common.errors import ServiceUnavailable

log = logging.getLogger("gateway.responses")
_KEY_PREFIX = "gateway:response:"
_REDIS_TIMEOUT_S = 2.0


@dataclass(frozen=True)
class StoredResponse:
    """One kept response."""

    group: str
    response: dict[str, Any]
    items: list[dict[str, Any]]  # the input that led to it, earlier turns included

    def encode(self) -> bytes:
        return orjson.dumps({"group": self.group, "response": self.response, "items": self.items})

    @staticmethod
    def decode(data: bytes) -> StoredResponse:
        raw = orjson.loads(data)
        return StoredResponse(raw["group"], raw["response"], raw["items"])

    def conversation(self) -> list[dict[str, Any]]:
        """The items a follow-up turn starts from: this response's input, then its output."""
        return [*self.items, *self.response.get("output", [])]


class ResponseStore(Protocol):
    async def put(self, response_id: str, record: StoredResponse) -> None: ...
    async def get(self, response_id: str) -> StoredResponse | None: ...
    async def delete(self, response_id: str) -> bool: ...
    async def close(self) -> None: ...


class MemoryResponseStore:
    """Records kept in this process, at most ``max_bytes`` of them and none older than ``ttl_s``."""

    def __init__(self, ttl_s: float, max_bytes: int, clock: Callable[[], float] = time.monotonic) -> None:
        self._ttl_s = ttl_s
        self._max_bytes = max_bytes
        self._clock = clock
        self._records: OrderedDict[str, tuple[float, bytes]] = OrderedDict()
        self._bytes = 0

    async def put(self, response_id: str, record: StoredResponse) -> None:
        data = record.encode()
        if len(data) > self._max_bytes:
            log.warning("a response is larger than the whole store: not kept", extra={"response_id": response_id})
            return
        await self.delete(response_id)
        self._records[response_id] = (self._clock() + self._ttl_s, data)
        self._bytes += len(data)
        while self._bytes > self._max_bytes:
            _, (_, oldest) = self._records.popitem(last=False)
            self._bytes -= len(oldest)

    async def get(self, response_id: str) -> StoredResponse | None:
        self._expire()
        found = self._records.get(response_id)
        return StoredResponse.decode(found[1]) if found is not None else None

    async def delete(self, response_id: str) -> bool:
        found = self._records.pop(response_id, None)
        if found is None:
            return False
        self._bytes -= len(found[1])
        return True

    async def close(self) -> None:
        self._records.clear()
        self._bytes = 0

    def _expire(self) -> None:
        now = self._clock()
        while self._records:
            response_id, (expires, data) = next(iter(self._records.items()))
            if expires > now:
                return
            del self._records[response_id]
            self._bytes -= len(data)


class RedisResponseStore:
    """Records in Redis, expiring after ``ttl_s``: every gateway replica sees them."""

    def __init__(self, url: str, ttl_s: float) -> None:
        self._redis = aioredis.Redis.from_url(
            url, socket_timeout=_REDIS_TIMEOUT_S, socket_connect_timeout=_REDIS_TIMEOUT_S
        )
        self._ttl_ms = max(1, int(ttl_s * 1000))

    async def put(self, response_id: str, record: StoredResponse) -> None:
        try:
            await self._redis.set(_KEY_PREFIX + response_id, record.encode(), px=self._ttl_ms)
        except (RedisError, OSError) as exc:
            # The answer was given; only its follow-ups will miss it.
            log.warning("response not kept: Redis failed (%s)", type(exc).__name__)

    async def get(self, response_id: str) -> StoredResponse | None:
        try:
            data = await self._redis.get(_KEY_PREFIX + response_id)
        except (RedisError, OSError) as exc:
            raise _unavailable(exc) from None
        return StoredResponse.decode(data) if isinstance(data, bytes) else None

    async def delete(self, response_id: str) -> bool:
        try:
            return bool(await self._redis.delete(_KEY_PREFIX + response_id))
        except (RedisError, OSError) as exc:
            raise _unavailable(exc) from None

    async def close(self) -> None:
        await self._redis.aclose()


def _unavailable(exc: BaseException) -> ServiceUnavailable:
    log.warning("stored responses unreachable: Redis failed (%s)", type(exc).__name__)
    return ServiceUnavailable("stored responses are unavailable right now", code="store_unavailable", retry_after=5)
