"""The routing benchmark's simulated vLLM pod behaves as vLLM does where routing matters: repeats
hit its prefix cache, the least recently used blocks are evicted first, a request waits while its
blocks do not fit, a repeat of a prompt being prefilled waits and reuses it, and its /metrics
read as a real engine's."""

from __future__ import annotations

import asyncio

import pytest

from bench.sim_vllm import BLOCK_TOKENS, BYTES_PER_TOKEN, PodSpec, SimEngine, SimRequest, prompt_blocks
from gateway.engine_stats import parse_engine_metrics

FAST = PodSpec(cache_tokens=64 * BLOCK_TOKENS, step_s=0.0005, prefill_s_per_token=0.0, decode_s_per_seq=0.0)


def _request(text: str, max_tokens: int = 2) -> SimRequest:
    blocks, tokens = prompt_blocks([{"role": "user", "content": text}])
    return SimRequest(blocks, tokens, max_tokens)


async def _served(engine: SimEngine, request: SimRequest) -> SimRequest:
    engine.submit(request)
    while await request.tokens.get() is not None:
        pass
    return request


def _text(seed: str, blocks: int) -> str:
    return (seed * (blocks * BLOCK_TOKENS * BYTES_PER_TOKEN))[: blocks * BLOCK_TOKENS * BYTES_PER_TOKEN]


@pytest.mark.unit
async def test_a_repeated_prompt_hits_and_the_least_recent_is_evicted() -> None:
    engine = SimEngine(FAST)
    runner = asyncio.create_task(engine.run())
    try:
        first = await _served(engine, _request(_text("a", 30)))
        assert first.cached_tokens == 0
        again = await _served(engine, _request(_text("a", 30) + " and a question"))
        assert again.cached_tokens >= 29 * BLOCK_TOKENS  # the shared context, block by block
        await _served(engine, _request(_text("b", 30)))
        await _served(engine, _request(_text("c", 30)))  # 64 blocks hold two of the three contexts
        evicted = await _served(engine, _request(_text("a", 30)))
        assert evicted.cached_tokens < 30 * BLOCK_TOKENS // 2
        stats = parse_engine_metrics(engine.metrics(), 0.0)
        assert stats.prefix_cache_queries == engine.prefix_queries > stats.prefix_cache_hits == engine.prefix_hits > 0
        assert (stats.waiting, stats.running) == (0.0, 0.0)
    finally:
        runner.cancel()


@pytest.mark.unit
async def test_a_request_waits_while_its_blocks_do_not_fit() -> None:
    engine = SimEngine(FAST)
    runner = asyncio.create_task(engine.run())
    try:
        long = _request(_text("x", 40), max_tokens=50)
        engine.submit(long)
        await long.tokens.get()  # it runs, holding 40 of the 64 blocks
        other = _request(_text("y", 40))
        engine.submit(other)
        await asyncio.wait_for(long.tokens.get(), 5)  # a decode step passed: the scheduler saw both
        assert list(engine.waiting) == [other]
        assert parse_engine_metrics(engine.metrics(), 0.0).waiting == 1.0
        while await long.tokens.get() is not None:
            pass
        while await other.tokens.get() is not None:
            pass
        assert other.generated == other.max_tokens
    finally:
        runner.cancel()


@pytest.mark.unit
async def test_a_repeat_of_a_prompt_being_prefilled_waits_then_reuses_it() -> None:
    """As vLLM's scheduler: waiting requests start only with token budget left after the running
    ones, so a repeat does not prefill the same context a second time beside the first."""
    engine = SimEngine(PodSpec(cache_tokens=64 * BLOCK_TOKENS, max_batched_tokens=4 * BLOCK_TOKENS, step_s=0.0005,
                               prefill_s_per_token=0.0, decode_s_per_seq=0.0))  # fmt: skip
    first = _request(_text("a", 30))
    runner = asyncio.create_task(engine.run())
    try:
        repeat = _request(_text("a", 30) + " and a question")
        engine.submit(first)
        engine.submit(repeat)  # both queued before a step: the first's prompt takes every step's budget
        await asyncio.wait_for(_served(engine, repeat), 5)
        assert repeat.cached_tokens >= 29 * BLOCK_TOKENS
        assert engine.prefix_hits >= 29 * BLOCK_TOKENS
    finally:
        runner.cancel()
