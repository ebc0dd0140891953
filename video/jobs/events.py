"""Progress events per session, for Server-Sent Events subscribers."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from typing import Any


class EventHub:
    """Fans each session's progress events out to its subscribers; a slow one loses the oldest."""

    def __init__(self) -> None:
        self._subscribers: dict[str, set[asyncio.Queue[dict[str, Any]]]] = defaultdict(set)

    def subscribe(self, session_id: str) -> asyncio.Queue[dict[str, Any]]:
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(maxsize=1000)
        self._subscribers[session_id].add(queue)
        return queue

    def unsubscribe(self, session_id: str, queue: asyncio.Queue[dict[str, Any]]) -> None:
        self._subscribers[session_id].discard(queue)
        if not self._subscribers[session_id]:
            del self._subscribers[session_id]

    def watched(self) -> list[str]:
        """The sessions someone is subscribed to."""
        return list(self._subscribers)

    def publish(self, session_id: str, event: dict[str, Any]) -> None:
        for queue in list(self._subscribers.get(session_id, ())):
            if queue.full():
                queue.get_nowait()  # a slow reader loses the oldest progress event, never blocks the job
            queue.put_nowait(event)
