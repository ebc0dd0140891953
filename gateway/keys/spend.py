"""Spend counted in memory as requests end, taken out in batches for the database.

Each key's and team's spend not yet written is kept beside the batches, so that budgets are
checked against what was written (as last read) plus what this process has spent since.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from gateway.keys.database import SpendLog, SpendRow

MAX_PENDING_LOGS = 100_000  # request logs kept while the database is away; the daily totals are kept whole


@dataclass
class _Totals:
    spend: float = 0.0
    requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0


@dataclass
class Batch:
    """One flush: daily rows and request logs, and the per-key and per-team sums they add."""

    rows: list[SpendRow] = field(default_factory=list)
    logs: list[SpendLog] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.rows or self.logs)


class SpendCounter:
    """What this process spent and has not written yet."""

    def __init__(self, keep_logs: bool, clock: Callable[[], float] = time.time) -> None:
        self.keep_logs = keep_logs
        self._clock = clock
        self._rows: dict[tuple[str, str, str, str], _Totals] = {}
        self._logs: list[SpendLog] = []
        self.dropped_logs = 0
        self._day_number, self._day_text = -1, ""
        # Spend not yet in the database's totals: pending here, or in a batch being written.
        self.unwritten_keys: dict[str, float] = {}
        self.unwritten_teams: dict[str, float] = {}

    def record(
        self,
        token: str,
        team_id: str | None,
        model_group: str,
        cost: float,
        prompt_tokens: int,
        completion_tokens: int,
        request_id: str,
    ) -> None:
        now = self._clock()
        day = self._day(now)
        totals = self._rows.setdefault((day, token, team_id or "", model_group), _Totals())
        totals.spend += cost
        totals.requests += 1
        totals.prompt_tokens += prompt_tokens
        totals.completion_tokens += completion_tokens
        if cost:
            self.unwritten_keys[token] = self.unwritten_keys.get(token, 0.0) + cost
            if team_id:
                self.unwritten_teams[team_id] = self.unwritten_teams.get(team_id, 0.0) + cost
        if self.keep_logs:
            if len(self._logs) >= MAX_PENDING_LOGS:
                self._logs.pop(0)
                self.dropped_logs += 1
            log = SpendLog(request_id, token, team_id or "", model_group, cost, prompt_tokens, completion_tokens, now)
            self._logs.append(log)

    def _day(self, now: float) -> str:
        """The UTC day of ``now`` (formatted once a day)."""
        number = int(now // 86400)
        if number != self._day_number:
            self._day_number, self._day_text = number, datetime.fromtimestamp(now, UTC).strftime("%Y-%m-%d")
        return self._day_text

    def take(self) -> Batch:
        """Everything pending, as one batch to write; the counter starts over (its unwritten sums stay)."""
        rows = [
            SpendRow(*key, t.spend, t.requests, t.prompt_tokens, t.completion_tokens) for key, t in self._rows.items()
        ]
        batch = Batch(rows, self._logs)
        self._rows, self._logs = {}, []
        return batch

    def written(self, batch: Batch) -> None:
        """``batch`` is in the database and its totals were read back: it no longer counts as unwritten."""
        for row in batch.rows:
            _subtract(self.unwritten_keys, row.token, row.spend)
            if row.team_id:
                _subtract(self.unwritten_teams, row.team_id, row.spend)

    def put_back(self, batch: Batch) -> None:
        """``batch`` could not be written: it goes out with the next one."""
        for row in batch.rows:
            totals = self._rows.setdefault((row.day, row.token, row.team_id, row.model_group), _Totals())
            totals.spend += row.spend
            totals.requests += row.requests
            totals.prompt_tokens += row.prompt_tokens
            totals.completion_tokens += row.completion_tokens
        room = MAX_PENDING_LOGS - len(self._logs)
        kept = batch.logs[-room:] if room > 0 else []
        self.dropped_logs += len(batch.logs) - len(kept)
        self._logs = kept + self._logs


def _subtract(sums: dict[str, float], name: str, amount: float) -> None:
    left = sums.get(name, 0.0) - amount
    if left <= 1e-12:
        sums.pop(name, None)
    else:
        sums[name] = left
