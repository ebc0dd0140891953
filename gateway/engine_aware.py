"""The ``engine-aware`` routing strategy: a pod that likely holds the request's prefix in its
cache, unless its queue makes another pod sooner.

Every request is scored on each candidate deployment (lower is better)::

    cost = (load + 4) * (1 + prefix_weight * size * (1 - hit)) * (1 + kv_pressure)

- ``load``: the requests the engine last said were waiting, plus a quarter of those running (a
  queued request delays this one by its prefill, a running one by a decode step), plus those
  this gateway process sent it since that scrape, less those of its own answered since
  (gateway.engine_stats); divided by the deployment's ``weight``. A pod whose stats are
  missing or stale is unknown: it is scored as loaded as the busiest known pod plus one, never
  as free. Without any scraped pod the load is the in-flight count alone (least-busy).
- ``hit``: the share of the request's leading blocks that this process last routed to the pod
  (the approximate prefix index), or 1 for the pod a session key hashes to (rendezvous hashing
  over the candidates: every gateway replica picks the same pod, and a pod that goes away moves
  only its own sessions).
- ``size``: how much a miss would cost, from 0 to 1 as the request grows to 8 KiB (about 2,000
  tokens): a short prompt is cheap to prefill anywhere. A request with a session key counts as
  full size: its session's pod holds the conversation so far, however this request's body starts.
- ``kv_pressure``: from 0 to 1 as the engine's KV cache fills past 90 % (it would preempt or evict).

Costs multiply, so a pod holding a long prefix keeps it until it is about ``1 + prefix_weight``
times as loaded as a cold pod (with the default of 2: three times, plus a margin of 8 requests),
then the prefix spreads to a second pod, which the index learns too; queues of similar length
never move it. Exact ties go to the rendezvous choice for the request's session or prefix, so
replicas agree on new prefixes too.

Blocks are 256 bytes of the request body from its main field (``messages``, ``input``,
``prompt``) on, hashed in a chain (each digest covers every byte before it), up to 128 KiB:
images and video frames inline count by their bytes, URLs by their text.
"""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

from gateway.config import EngineAwareArgs
from gateway.deployment import Deployment

BLOCK_BYTES = 256  # about 64 tokens of text
MAX_BLOCKS = 512  # 128 KiB
_HOLDERS_PER_BLOCK = 8  # pods remembered for one block (a hot prefix on more pods than this forgets the oldest)
_STATS_MAX_AGE_FACTOR = 3.0  # stats older than this many scrape intervals are unknown
_KV_PRESSURE_FROM = 0.9
_RUNNING_SHARE = 0.25  # what a running request weighs beside a waiting one
_LOAD_MARGIN = 4.0  # requests: small queues differ by noise, not by what a miss costs
_FULL_SIZE_BLOCKS = 32  # a request this long (8 KiB) costs a full miss to prefill elsewhere
_MAX_SESSION_CHARS = 256


@dataclass(frozen=True)
class Affinity:
    """What a request shares with earlier ones: its leading blocks' chained digests, its session."""

    blocks: tuple[bytes, ...]
    session: str | None = None

    def rendezvous_key(self) -> bytes:
        """The session, else the whole leading prefix: what exact ties are broken by."""
        if self.session is not None:
            return self.session.encode("utf-8", "replace")
        return self.blocks[-1] if self.blocks else b""


def leading_blocks(raw: bytes, field: str | None) -> tuple[bytes, ...]:
    """Chained digests of ``raw``'s blocks from the key ``field`` on (or from the start)."""
    start = raw.find(b'"' + field.encode() + b'"') if field else -1
    start = max(start, 0)
    end = min(len(raw), start + BLOCK_BYTES * MAX_BLOCKS)
    view = memoryview(raw)
    chain = hashlib.blake2b(digest_size=12)
    digests: list[bytes] = []
    for position in range(start, end, BLOCK_BYTES):
        chain.update(view[position : min(end, position + BLOCK_BYTES)])
        digests.append(chain.copy().digest())
    return tuple(digests)


class PrefixIndex:
    """Which deployments this process last sent each block to, bounded by ``capacity`` blocks
    (the least recently routed are forgotten first)."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._holders: OrderedDict[bytes, list[str]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._holders)

    def matched(self, blocks: Sequence[bytes], ids: set[str]) -> dict[str, int]:
        """For each of ``ids`` that holds the first block, how many leading blocks in a row it holds."""
        run: dict[str, int] = {}
        for count, digest in enumerate(blocks):
            holders = self._holders.get(digest)
            if not holders:
                break
            advanced = False
            for holder in holders:
                if holder in ids and run.get(holder, 0) == count:
                    run[holder] = count + 1
                    advanced = True
            if not advanced:
                break
        return run

    def record(self, blocks: Sequence[bytes], deployment_id: str) -> None:
        """``deployment_id`` now holds these blocks."""
        if not self.capacity:
            return
        for digest in blocks:
            holders = self._holders.get(digest)
            if holders is None:
                self._holders[digest] = [deployment_id]
            else:
                self._holders.move_to_end(digest)
                if deployment_id in holders:
                    holders.remove(deployment_id)
                holders.append(deployment_id)
                del holders[:-_HOLDERS_PER_BLOCK]
        while len(self._holders) > self.capacity:
            self._holders.popitem(last=False)


class EngineAware:
    """Chooses by engine state, the prefix index and session keys (see the module's text)."""

    def __init__(self, args: EngineAwareArgs, stats_interval_s: float) -> None:
        self.args = args
        self.index = PrefixIndex(args.prefix_index_blocks)
        self._max_age_s = max(stats_interval_s, 0.1) * _STATS_MAX_AGE_FACTOR if stats_interval_s > 0 else 0.0

    def affinity(self, raw: bytes, field: str | None, header: str | None, user: str | None) -> Affinity:
        """What ``raw`` shares with earlier requests; ``header`` is the session header's value."""
        session = header if self.args.session_header else None
        if not session and self.args.session_from_user:
            session = user
        return Affinity(leading_blocks(raw, field), session[:_MAX_SESSION_CHARS] if session else None)

    def choose(
        self, candidates: Sequence[Deployment], affinity: Affinity | None, now: float | None = None
    ) -> Deployment:
        costs = self.costs(candidates, affinity, now)
        lowest = min(costs.values())
        tied = [d for d in candidates if costs[d.id] <= lowest + 1e-9]
        if len(tied) == 1:
            return tied[0]
        key = affinity.rendezvous_key() if affinity is not None else b""
        return max(tied, key=lambda d: _rendezvous(key, d.id))

    def costs(
        self, candidates: Sequence[Deployment], affinity: Affinity | None, now: float | None = None
    ) -> dict[str, float]:
        """Each candidate's cost for this request (lower is better)."""
        now = time.monotonic() if now is None else now
        current = {d.id for d in candidates if self._current(d, now)}
        loads = self._loads(candidates, current)
        hits: dict[str, float] = {}
        if affinity is not None:
            if affinity.blocks:
                run = self.index.matched(affinity.blocks, {d.id for d in candidates})
                hits = {holder: count / len(affinity.blocks) for holder, count in run.items()}
            if affinity.session is not None:
                key = affinity.session.encode("utf-8", "replace")
                home = max(candidates, key=lambda d: _rendezvous(key, d.id))
                hits[home.id] = 1.0
        size = min(1.0, len(affinity.blocks) / _FULL_SIZE_BLOCKS) if affinity is not None else 0.0
        if affinity is not None and affinity.session is not None:
            size = 1.0  # a session's pod holds its context, however this request's body starts
        miss = self.args.prefix_weight * size
        return {
            d.id: (loads[d.id] / d.weight + _LOAD_MARGIN)
            * (1.0 + miss * (1.0 - hits.get(d.id, 0.0)))
            * (1.0 + (self._kv_pressure(d) if d.id in current else 0.0))
            for d in candidates
        }

    def taken(self, deployment: Deployment, affinity: Affinity | None) -> None:
        """``deployment`` was given the request: it now holds its prefix."""
        if affinity is not None and affinity.blocks:
            self.index.record(affinity.blocks, deployment.id)

    def _current(self, deployment: Deployment, now: float) -> bool:
        stats = deployment.engine
        return stats is not None and self._max_age_s > 0 and stats.current(now, self._max_age_s)

    def _loads(self, candidates: Sequence[Deployment], current: set[str]) -> dict[str, float]:
        known: dict[str, float] = {}
        for d in candidates:
            if d.id in current:
                assert d.engine is not None
                # A queued request delays this one by its whole prefill, a running one by a decode step.
                engine = (d.engine.waiting or 0.0) + _RUNNING_SHARE * (d.engine.running or 0.0)
                # Ours sent since the scrape add to it; ours answered since take away from it.
                since = d.in_flight - d.in_flight_at_scrape
                known[d.id] = max(_RUNNING_SHARE * d.in_flight, engine + since, 0.0)
        if not known:
            return {d.id: float(d.in_flight) for d in candidates}
        unknown = max(known.values()) + 1.0
        return {d.id: known.get(d.id, max(float(d.in_flight), unknown)) for d in candidates}

    def _kv_pressure(self, deployment: Deployment) -> float:
        """How far past 90 % the engine's KV cache is (its stats are current)."""
        assert deployment.engine is not None
        usage = deployment.engine.kv_cache_usage
        if usage is None or usage <= _KV_PRESSURE_FROM:
            return 0.0
        return min(1.0, (usage - _KV_PRESSURE_FROM) / (1.0 - _KV_PRESSURE_FROM))


def _rendezvous(key: bytes, deployment_id: str) -> bytes:
    return hashlib.blake2b(key + b"\x00" + deployment_id.encode(), digest_size=8).digest()
