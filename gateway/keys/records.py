"""Teams and managed keys as stored, and as LiteLLM's admin API shows them."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

# The columns both tables share, in the order of the dataclasses' fields after their ids.
LIMIT_COLUMNS = (
    "models",
    "max_budget",
    "budget_duration",
    "budget_reset_at",
    "spend",
    "rpm_limit",
    "tpm_limit",
    "max_parallel_requests",
    "metadata",
    "blocked",
    "created_at",
    "updated_at",
)


@dataclass
class Limits:
    """What a key or a team may spend and how fast; ``models`` empty: every model it is allowed."""

    models: list[str] = field(default_factory=list)
    max_budget: float | None = None
    budget_duration: str | None = None
    budget_reset_at: float | None = None
    spend: float = 0.0  # within the current budget window, as last written
    rpm_limit: int | None = None
    tpm_limit: int | None = None
    max_parallel_requests: int | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    blocked: bool = False
    created_at: float = 0.0
    updated_at: float = 0.0


@dataclass
class Team(Limits):
    team_id: str = ""
    team_alias: str | None = None


@dataclass
class ManagedKey(Limits):
    token: str = ""  # the key's SHA-256, hex: the only form stored
    key_name: str = ""  # "sk-...abcd": enough to recognise a key, not to use it
    key_alias: str | None = None
    team_id: str | None = None
    expires: float | None = None


TEAM_COLUMNS = ("team_id", "team_alias", *LIMIT_COLUMNS)
KEY_COLUMNS = ("token", "key_name", "key_alias", "team_id", "expires", *LIMIT_COLUMNS)
_JSON = frozenset({"models", "metadata"})


def column_values(record: Limits, columns: Iterable[str]) -> tuple[Any, ...]:
    """``record``'s values for ``columns`` as the columns store them: lists and mappings as JSON
    text, flags as 0 or 1."""
    return tuple(_stored(getattr(record, name), name) for name in columns)


def _stored(value: Any, name: str) -> Any:
    if name in _JSON:
        return json.dumps(value, separators=(",", ":"))
    if name == "blocked":
        return int(bool(value))
    return value


def team_from_row(row: tuple[Any, ...]) -> Team:
    return Team(**_parsed(dict(zip(TEAM_COLUMNS, row, strict=True))))


def key_from_row(row: tuple[Any, ...]) -> ManagedKey:
    return ManagedKey(**_parsed(dict(zip(KEY_COLUMNS, row, strict=True))))


def _parsed(values: dict[str, Any]) -> dict[str, Any]:
    for name in _JSON:
        values[name] = json.loads(values[name])
    values["blocked"] = bool(values["blocked"])
    for name in ("rpm_limit", "tpm_limit", "max_parallel_requests"):
        if values[name] is not None:
            values[name] = int(values[name])
    return values


def iso(epoch: float | None) -> str | None:
    return None if epoch is None else datetime.fromtimestamp(epoch, UTC).isoformat()


def shown(record: Limits) -> dict[str, Any]:
    """The record as the admin API returns it: LiteLLM's field names, times in ISO 8601."""
    out = asdict(record)
    for name in ("budget_reset_at", "created_at", "updated_at", "expires"):
        if name in out:
            out[name] = iso(out[name])
    return out
