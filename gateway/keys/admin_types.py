"""The bodies of the admin API, as LiteLLM's proxy takes them; unknown fields are refused by name."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from gateway.keys.durations import seconds

MAX_MODELS = 1000
MAX_METADATA_BYTES = 16 * 1024
MAX_IDS = 1000


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _Limits(_Body):
    models: list[str] | None = Field(default=None, max_length=MAX_MODELS)
    max_budget: float | None = Field(default=None, ge=0)
    budget_duration: str | None = None
    rpm_limit: int | None = Field(default=None, ge=1)
    tpm_limit: int | None = Field(default=None, ge=1)
    max_parallel_requests: int | None = Field(default=None, ge=1)
    metadata: dict[str, Any] | None = None
    blocked: bool | None = None

    @field_validator("budget_duration", "duration", check_fields=False)
    @classmethod
    def _duration(cls, value: str | None) -> str | None:
        if value is not None:
            seconds(value)
        return value

    @field_validator("metadata")
    @classmethod
    def _small(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is not None and len(repr(value)) > MAX_METADATA_BYTES:
            raise ValueError(f"metadata is bounded to {MAX_METADATA_BYTES} bytes")
        return value

    @field_validator("models")
    @classmethod
    def _names(cls, value: list[str] | None) -> list[str] | None:
        if value is not None and any(not isinstance(m, str) or not m or len(m) > 256 for m in value):
            raise ValueError("models are names of 1 to 256 characters")
        return value


class _KeyFields(_Limits):
    key_alias: str | None = Field(default=None, min_length=1, max_length=256)
    team_id: str | None = Field(default=None, min_length=1, max_length=256)
    duration: str | None = None  # how long until the key expires; None: never


class GenerateKey(_KeyFields):
    key: str | None = Field(default=None, min_length=16, max_length=256)  # a key of one's own; default: random


class UpdateKey(_KeyFields):
    key: str = Field(min_length=1, max_length=256)  # the key, or its token (the digest /key/info shows)


class DeleteKeys(_Body):
    keys: list[str] | None = Field(default=None, max_length=MAX_IDS)
    key_aliases: list[str] | None = Field(default=None, max_length=MAX_IDS)


class KeyRef(_Body):
    key: str = Field(min_length=1, max_length=256)


class _TeamFields(_Limits):
    team_alias: str | None = Field(default=None, min_length=1, max_length=256)


class NewTeam(_TeamFields):
    team_id: str | None = Field(default=None, min_length=1, max_length=256, pattern=r"^[A-Za-z0-9_.:-]+$")


class UpdateTeam(_TeamFields):
    team_id: str = Field(min_length=1, max_length=256)


class DeleteTeams(_Body):
    team_ids: list[str] = Field(min_length=1, max_length=MAX_IDS)
