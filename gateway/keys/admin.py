"""The admin API for managed keys and teams, on LiteLLM's paths with its fields and shapes.

Only the master key, or a config key with ``role: admin``, may call these routes. A generated
key is returned once, by ``/key/generate``; only its SHA-256 (the ``token``) is stored and shown
afterwards. Keys may be named by the key itself or by its token.
"""

from __future__ import annotations

import asyncio
import math
import secrets
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import orjson
from fastapi import FastAPI, Request
from pydantic import BaseModel, ValidationError
from starlette.responses import Response

from common.auth import digest
from common.errors import InvalidRequest, NotFound, ServiceUnavailable
from gateway.bodies import read_body
from gateway.keys.admin_types import (
    DeleteKeys,
    DeleteTeams,
    GenerateKey,
    KeyRef,
    NewTeam,
    UpdateKey,
    UpdateTeam,
)
from gateway.keys.database import Conflict, DatabaseUnavailable
from gateway.keys.durations import seconds
from gateway.keys.managed import ManagedKeys
from gateway.keys.records import ManagedKey, Team, shown
from gateway.state import GatewayState, StateDep

B = TypeVar("B", bound=BaseModel)
T = TypeVar("T")
MAX_ADMIN_BODY = 256 * 1024
MAX_PAGE_SIZE = 100
MAX_SPEND_DAYS = 366
MAX_SPEND_LOGS = 10_000
_TOKEN_LENGTH = 64


def _json(content: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(content), status_code=status, media_type="application/json")


async def _body(request: Request, model: type[B]) -> B:
    """The request's JSON as ``model``: 400 naming the field that is unknown or wrong."""
    raw = await read_body(request, MAX_ADMIN_BODY)  # never buffers more than the bound
    try:
        return model.model_validate_json(raw)
    except ValidationError as exc:
        error = exc.errors()[0]
        where = ".".join(str(part) for part in error["loc"]) or None
        if error["type"] == "extra_forbidden":
            raise InvalidRequest(f"unknown field '{where}'", param=where) from None
        if error["type"] == "json_invalid":
            raise InvalidRequest("the body is not valid JSON") from None
        message = str(error["msg"]).removeprefix("Value error, ")
        raise InvalidRequest(f"{where}: {message}" if where else message, param=where) from None


def _managed(request: Request, state: GatewayState) -> ManagedKeys:
    """The caller must be an admin, and managed keys must be on."""
    state.keys.admin(request.headers.get("authorization"))
    if state.managed is None:
        raise InvalidRequest(
            "managed keys are off: they need general_settings.master_key and a database "
            "(DATABASE_URL, or `gateway serve`, which keeps them in SQLite)",
            code="managed_keys_off",
        )
    return state.managed


async def _db(work: Callable[[], T]) -> T:
    try:
        return await asyncio.to_thread(work)
    except DatabaseUnavailable as exc:
        raise ServiceUnavailable(f"the keys database cannot be reached now: {exc}", retry_after=5) from None
    except Conflict as exc:
        reason = "that key_alias is taken" if "alias" in str(exc) else "the change conflicts with a stored key or team"
        raise InvalidRequest(reason, code="conflict") from None


def _token(presented: str) -> str:
    """The token of a key named by itself or by its token."""
    lowered = presented.lower()
    if len(lowered) == _TOKEN_LENGTH and all(c in "0123456789abcdef" for c in lowered):
        return lowered
    return digest(presented).hex()


async def _stored_key(managed: ManagedKeys, presented: str) -> ManagedKey:
    """The key named by itself or by its token, or 404."""
    token = _token(presented)
    key = await _db(lambda: managed.db.key(token))
    if key is None:
        raise NotFound("no such key", param="key", code="key_not_found")
    return key


def _key_info(managed: ManagedKeys, key: ManagedKey) -> dict[str, Any]:
    """A key as just read from the database, with what this process spent and has not written yet."""
    info = shown(key)
    unwritten = managed.counter.unwritten_keys.get(key.token, 0.0)
    info["spend"] = managed.in_window(key.spend, key.budget_reset_at) + unwritten
    return info


def _team_info(managed: ManagedKeys, team: Team) -> dict[str, Any]:
    info = shown(team)
    unwritten = managed.counter.unwritten_teams.get(team.team_id, 0.0)
    info["spend"] = managed.in_window(team.spend, team.budget_reset_at) + unwritten
    return info


def _check_models(state: GatewayState, models: list[str] | None, team: Team | None) -> None:
    """Every model must be served here, and within the team's models when the team lists some."""
    for index, name in enumerate(models or ()):
        if state.router.resolve(name) is None:
            raise InvalidRequest(f"model '{name}' is not served here; see GET /v1/models", param=f"models.{index}")
    _within_team(models, team)


def _within_team(models: list[str] | None, team: Team | None) -> None:
    for index, name in enumerate(models or ()):
        if team is not None and team.models and name not in team.models:
            raise InvalidRequest(f"model '{name}' is not among team '{team.team_id}''s models", param=f"models.{index}")


async def _team_of(managed: ManagedKeys, team_id: str | None) -> Team | None:
    if team_id is None:
        return None
    team = await _db(lambda: managed.db.team(team_id))
    if team is None:
        raise InvalidRequest(f"team '{team_id}' does not exist; create it with POST /team/new", param="team_id")
    return team


def _bounded_by_team(body: BaseModel, team: Team | None) -> None:
    """A key's budget and limits may not exceed its team's."""
    if team is None:
        return
    for name in ("max_budget", "rpm_limit", "tpm_limit", "max_parallel_requests"):
        mine, theirs = getattr(body, name, None), getattr(team, name)
        if mine is not None and theirs is not None and mine > theirs:
            raise InvalidRequest(f"{name} {mine} is above team '{team.team_id}''s {theirs}", param=name)


def _apply(record: ManagedKey | Team, body: BaseModel, now: float) -> list[str]:
    """Copy the fields ``body`` sets onto ``record``; the names of the columns that changed."""
    changed = []
    for name in body.model_fields_set:
        value = getattr(body, name)
        if name in ("key", "team_id") and isinstance(record, ManagedKey if name == "key" else Team):
            continue
        if name == "duration":
            record.expires = now + seconds(value) if value is not None else None  # type: ignore[union-attr]
            changed.append("expires")
            continue
        if name in ("models", "metadata") and value is None:
            value = [] if name == "models" else {}
        setattr(record, name, value)
        changed.append(name)
    if "budget_duration" in body.model_fields_set:
        record.budget_reset_at = now + seconds(record.budget_duration) if record.budget_duration else None
        changed.append("budget_reset_at")
    record.updated_at = now
    return changed


def add_admin_routes(app: FastAPI) -> None:
    """Mount ``/key/*``, ``/team/*`` and ``/spend/logs`` on ``app``."""

    @app.post("/key/generate", tags=["admin"], summary="Create a managed key (shown once)")
    async def generate_key(request: Request, state: StateDep) -> Response:
        managed = _managed(request, state)
        body = await _body(request, GenerateKey)
        team = await _team_of(managed, body.team_id)
        _check_models(state, body.models, team)
        _bounded_by_team(body, team)
        if body.key is not None and state.keys.configured(body.key):
            raise InvalidRequest("that key is taken", param="key", code="conflict")
        secret = body.key or f"sk-{secrets.token_urlsafe(32)}"
        now = time.time()
        key = ManagedKey(token=digest(secret).hex(), key_name=f"sk-...{secret[-4:]}", created_at=now)
        _apply(key, body, now)
        await _db(lambda: managed.db.insert(key))
        await managed.changed()
        return _json({**_key_info(managed, key), "key": secret})

    @app.post("/key/update", tags=["admin"], summary="Change a managed key's models, budget or limits")
    async def update_key(request: Request, state: StateDep) -> Response:
        managed = _managed(request, state)
        body = await _body(request, UpdateKey)
        key = await _stored_key(managed, body.key)
        team = await _team_of(managed, body.team_id if "team_id" in body.model_fields_set else key.team_id)
        if body.models is not None:
            _check_models(state, body.models, team)
        elif "team_id" in body.model_fields_set:  # its models must fit the new team's
            _within_team(key.models, team)
        _bounded_by_team(body, team)
        changed = _apply(key, body, time.time())
        await _db(lambda: managed.db.update(key, changed))
        await managed.changed()
        return _json(_key_info(managed, key))

    async def set_blocked(request: Request, state: GatewayState, blocked: bool) -> Response:
        managed = _managed(request, state)
        body = await _body(request, KeyRef)
        key = await _stored_key(managed, body.key)
        key.blocked, key.updated_at = blocked, time.time()
        await _db(lambda: managed.db.update(key, ["blocked"]))
        await managed.changed()
        return _json(_key_info(managed, key))

    @app.post("/key/block", tags=["admin"], summary="Refuse a managed key from now on")
    async def block_key(request: Request, state: StateDep) -> Response:
        return await set_blocked(request, state, True)

    @app.post("/key/unblock", tags=["admin"], summary="Accept a blocked key again")
    async def unblock_key(request: Request, state: StateDep) -> Response:
        return await set_blocked(request, state, False)

    @app.post("/key/delete", tags=["admin"], summary="Delete managed keys")
    async def delete_keys(request: Request, state: StateDep) -> Response:
        managed = _managed(request, state)
        body = await _body(request, DeleteKeys)
        if not body.keys and not body.key_aliases:
            raise InvalidRequest("name the keys to delete in 'keys' or 'key_aliases'", param="keys")
        tokens = [_token(k) for k in body.keys or ()]
        for alias in body.key_aliases or ():
            found = await _db(lambda alias=alias: managed.db.key_by_alias(alias))  # type: ignore[misc]
            if found is not None:
                tokens.append(found.token)
        deleted = await _db(lambda: managed.db.delete_keys(tokens))
        await managed.changed()
        return _json({"deleted_keys": deleted})

    @app.get("/key/info", tags=["admin"], summary="A managed key's settings and spend")
    async def key_info(request: Request, state: StateDep, key: str) -> Response:
        managed = _managed(request, state)
        found = await _stored_key(managed, key)
        return _json({"key": found.token, "info": _key_info(managed, found)})

    @app.get("/key/list", tags=["admin"], summary="Managed keys, a page at a time")
    async def list_keys(
        request: Request,
        state: StateDep,
        page: int = 1,
        size: int = 10,
        team_id: str | None = None,
        key_alias: str | None = None,
        return_full_object: bool = False,
    ) -> Response:
        managed = _managed(request, state)
        if page < 1:
            raise InvalidRequest("page starts at 1", param="page")
        if not 1 <= size <= MAX_PAGE_SIZE:
            raise InvalidRequest(f"size is 1 to {MAX_PAGE_SIZE}", param="size")
        keys, total = await _db(lambda: managed.db.list_keys(team_id, key_alias, page, size))
        listed: list[Any] = [_key_info(managed, k) for k in keys] if return_full_object else [k.token for k in keys]
        return _json(
            {"keys": listed, "total_count": total, "current_page": page, "total_pages": math.ceil(total / size)}
        )

    @app.post("/team/new", tags=["admin"], summary="Create a team whose models, budget and limits bound its keys")
    async def new_team(request: Request, state: StateDep) -> Response:
        managed = _managed(request, state)
        body = await _body(request, NewTeam)
        _check_models(state, body.models, None)
        now = time.time()
        team = Team(team_id=body.team_id or str(uuid.uuid4()), created_at=now)
        _apply(team, body, now)
        if await _db(lambda: managed.db.team(team.team_id)) is not None:
            raise InvalidRequest(f"team '{team.team_id}' exists already", param="team_id", code="conflict")
        await _db(lambda: managed.db.insert(team))
        await managed.changed()
        return _json(_team_info(managed, team))

    @app.post("/team/update", tags=["admin"], summary="Change a team")
    async def update_team(request: Request, state: StateDep) -> Response:
        managed = _managed(request, state)
        body = await _body(request, UpdateTeam)
        team = await _team_of(managed, body.team_id)
        assert team is not None
        _check_models(state, body.models, None)
        changed = _apply(team, body, time.time())
        await _db(lambda: managed.db.update(team, changed))
        await managed.changed()
        return _json({"team_id": team.team_id, "data": _team_info(managed, team)})

    @app.post("/team/delete", tags=["admin"], summary="Delete teams and their keys")
    async def delete_teams(request: Request, state: StateDep) -> Response:
        managed = _managed(request, state)
        body = await _body(request, DeleteTeams)
        teams, keys = await _db(lambda: managed.db.delete_teams(body.team_ids))
        await managed.changed()
        return _json({"deleted_teams": teams, "deleted_keys": keys})

    @app.get("/team/info", tags=["admin"], summary="A team's settings, spend and keys")
    async def team_info(request: Request, state: StateDep, team_id: str) -> Response:
        managed = _managed(request, state)
        team = await _db(lambda: managed.db.team(team_id))
        if team is None:
            raise NotFound(f"team '{team_id}' does not exist", param="team_id", code="team_not_found")
        keys = await _db(lambda: managed.db.team_keys(team_id))
        return _json(
            {"team_id": team_id, "team_info": _team_info(managed, team), "keys": [_key_info(managed, k) for k in keys]}
        )

    @app.get("/team/list", tags=["admin"], summary="Every team")
    async def list_teams(request: Request, state: StateDep) -> Response:
        managed = _managed(request, state)
        teams = await _db(managed.db.list_teams)
        return _json([_team_info(managed, t) for t in teams])

    @app.get("/spend/logs", tags=["admin"], summary="Spend by day, key, team and model group")
    async def spend_logs(
        request: Request,
        state: StateDep,
        start_date: str | None = None,
        end_date: str | None = None,
        api_key: str | None = None,
        team_id: str | None = None,
        request_id: str | None = None,
        summarize: bool = True,
    ) -> Response:
        managed = _managed(request, state)
        start, end = _date_range(start_date, end_date)
        token = _token(api_key) if api_key else None
        if request_id is not None or not summarize:
            if not managed.settings.store_spend_logs:
                raise InvalidRequest(
                    "per-request spend logs are off: set gateway_settings.store_spend_logs (daily totals are kept)",
                    param="summarize",
                )
            end_epoch = (end + timedelta(days=1)).timestamp()
            logs = await _db(
                lambda: managed.db.spend_logs(start.timestamp(), end_epoch, token, request_id, MAX_SPEND_LOGS)
            )
            return _json([_log_row(g) for g in logs if team_id is None or g.team_id == team_id])
        rows = await _db(lambda: managed.db.daily_spend(_day(start), _day(end), token, team_id))
        days: dict[str, dict[str, Any]] = {}
        for day, row_token, row_team, group, spend, requests, prompt, completion in rows:
            entry = days.setdefault(
                day,
                {
                    "startTime": day,
                    "spend": 0.0,
                    "requests": 0,
                    "prompt_tokens": 0,
                    "completion_tokens": 0,
                    "models": {},
                    "api_keys": {},
                    "teams": {},
                },
            )
            entry["spend"] += spend
            entry["requests"] += requests
            entry["prompt_tokens"] += prompt
            entry["completion_tokens"] += completion
            entry["models"][group] = entry["models"].get(group, 0.0) + spend
            entry["api_keys"][row_token] = entry["api_keys"].get(row_token, 0.0) + spend
            if row_team:
                entry["teams"][row_team] = entry["teams"].get(row_team, 0.0) + spend
        return _json(list(days.values()))


def _day(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d")


def _date_range(start_date: str | None, end_date: str | None) -> tuple[datetime, datetime]:
    """The days asked for (UTC, both ends included): the last 30 by default, at most a year."""
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    try:
        end = datetime.strptime(end_date, "%Y-%m-%d").replace(tzinfo=UTC) if end_date else today
    except ValueError:
        raise InvalidRequest("end_date is YYYY-MM-DD", param="end_date") from None
    try:
        start = datetime.strptime(start_date, "%Y-%m-%d").replace(tzinfo=UTC) if start_date else end - timedelta(30)
    except ValueError:
        raise InvalidRequest("start_date is YYYY-MM-DD", param="start_date") from None
    if start > end:
        raise InvalidRequest("start_date is after end_date", param="start_date")
    if (end - start).days >= MAX_SPEND_DAYS:
        raise InvalidRequest(f"ask for at most {MAX_SPEND_DAYS} days at a time", param="start_date")
    return start, end


def _log_row(log: Any) -> dict[str, Any]:
    return {
        "request_id": log.request_id,
        "api_key": log.token,
        "team_id": log.team_id or None,
        "model_group": log.model_group,
        "spend": log.spend,
        "prompt_tokens": log.prompt_tokens,
        "completion_tokens": log.completion_tokens,
        "total_tokens": log.prompt_tokens + log.completion_tokens,
        "startTime": datetime.fromtimestamp(log.started_at, UTC).isoformat(),
    }
