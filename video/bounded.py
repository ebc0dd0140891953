"""Work on items read one at a time in a thread, a bounded number at once: the loop the frame
fan-out and the soundtrack share."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")


async def run_bounded(
    take: Callable[[], T | None], work: Callable[[T], Awaitable[None]], slots: asyncio.Semaphore
) -> None:
    """Run ``work(item)`` for each item ``take()`` gives (None: no more), one slot each.

    A slot is taken before an item is read, so no more items than slots are ever held. ``take``
    (decoding: CPU-bound) runs in a worker thread while work is in flight. When a ``work`` raises,
    no further item is taken, the work in flight is cancelled, and the error is raised; cancelling
    this cancels the work too, and returns only once none of it runs.
    """
    running: set[asyncio.Task[None]] = set()
    failed: list[BaseException] = []  # the first failure stops the loop

    async def run(item: T) -> None:
        try:
            await work(item)
        except Exception as exc:
            failed.append(exc)  # before the slot is released, so no new item is taken after it
            raise
        finally:
            slots.release()

    try:
        while True:
            await slots.acquire()
            try:
                item = None if failed else await asyncio.to_thread(take)
            except BaseException:
                slots.release()
                raise
            if failed:
                slots.release()
                raise failed[0]
            if item is None:
                slots.release()
                break
            task = asyncio.create_task(run(item))
            running.add(task)
            task.add_done_callback(running.discard)
        if running:
            await asyncio.gather(*running)
    finally:
        for task in running:
            task.cancel()
        # Wait for the cancelled work, so its slots are free when this returns.
        await asyncio.gather(*running, return_exceptions=True)
