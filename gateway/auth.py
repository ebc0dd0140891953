"""API keys: who may call, which model groups they may use, and how often."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from common.auth import bearer_token, digest, find_digest, find_key
from gateway.config import ProxyConfig
from gateway.errors import AuthenticationFailed, PermissionDenied, RateLimited
from gateway.limits.shared import KeyLimits
from gateway.ratelimit import TokenBucket


class Guard(Protocol):
    """What a managed key adds to a caller's checks (gateway.keys.managed)."""

    def check_access(self) -> None:
        """401 once the key (or its team) is blocked or expired."""

    def admit(self) -> Callable[[], None]:
        """400 past its budget, 429 past its parallel requests; else what ends the request."""


@dataclass(eq=False)
class Principal:
    """A caller identified by its key; ``models`` None means every model group."""

    name: str
    models: frozenset[str] | None
    bucket: TokenBucket | None
    limits: KeyLimits | None = None  # its rpm/tpm as shared limits (Redis), when it has any
    spend_id: str | None = None  # its key's digest (hex): who spend is counted against
    team_id: str | None = None
    admin: bool = False  # may call the admin API (/key/*, /team/*, /spend/*)
    guard: Guard | None = None  # a managed key's budget, expiry and parallel requests

    def admit(self) -> Callable[[], None] | None:
        """Check what a request costs this key before it goes out; what to call once it ended."""
        return self.guard.admit() if self.guard is not None else None

    def may_use(self, group: str, requested: str | None = None) -> bool:
        """Whether this key may use ``group``: listed by its name, or (under a wildcard group) by the
        concrete model name the client asked for."""
        return self.models is None or group in self.models or (requested is not None and requested in self.models)

    def check_model(self, group: str, requested: str | None = None) -> None:
        """Raise 403 unless this key may use ``group`` for ``requested``."""
        if not self.may_use(group, requested):
            raise PermissionDenied(f"this API key may not use model '{requested or group}'", param="model")

    def check_rate(self) -> None:
        """Raise 429 with Retry-After once the key's requests-per-minute are spent."""
        if self.bucket is not None and not self.bucket.try_acquire():
            raise RateLimited(
                "this API key is over its requests-per-minute limit", retry_after=self.bucket.retry_after()
            )


OPEN_ACCESS = Principal("anonymous", None, None)


class ManagedLookup(Protocol):
    """Keys managed at run time, cached in this process (gateway.keys.managed)."""

    def find(self, key_digest: bytes) -> Principal | None:
        """The caller behind a key's digest, without waiting on anything (503 until keys are loaded)."""


class KeyStore:
    """Checks Bearer tokens against the master key, the configured API keys and managed keys."""

    def __init__(self, config: ProxyConfig) -> None:
        # Keyed by digest; a key configured twice keeps its first meaning (the master key first).
        self._principals: dict[bytes, Principal] = {}
        self.managed: ManagedLookup | None = None
        master = config.general_settings.master_key
        if master:
            self._principals[digest(master)] = Principal(
                "master", None, None, spend_id=digest(master).hex(), admin=True
            )
        for index, api_key in enumerate(config.gateway_settings.api_keys):
            principal = Principal(
                api_key.name or f"key-{index}",
                frozenset(api_key.models) if api_key.models is not None else None,
                TokenBucket(api_key.rpm) if api_key.rpm else None,
                spend_id=digest(api_key.key).hex(),
                admin=api_key.role == "admin",
            )
            if api_key.rpm or api_key.tpm:
                key_id = digest(api_key.key).hex()[:32]
                principal.limits = KeyLimits(key_id, api_key.rpm, api_key.tpm, principal.check_rate)
            self._principals.setdefault(digest(api_key.key), principal)

    @property
    def is_open(self) -> bool:
        """True when no key is configured and every caller is let in."""
        return not self._principals

    def authenticate(self, authorization: str | None) -> Principal:
        """The caller behind an ``Authorization`` header, or 401."""
        if self.is_open:
            return OPEN_ACCESS
        wanted = digest(bearer_token(authorization))
        found = find_digest(wanted, self._principals)
        if found is not None:
            return self._principals[found]
        # Managed keys are random 256-bit secrets: looked up by digest, as a hash table does.
        managed = self.managed.find(wanted) if self.managed is not None else None
        if managed is None:
            raise AuthenticationFailed("invalid API key")
        if managed.guard is not None:
            managed.guard.check_access()
        return managed

    def configured(self, key: str) -> bool:
        """Whether ``key`` is the master key or a config key."""
        return find_key(key, self._principals) is not None

    def admin(self, authorization: str | None) -> Principal:
        """The caller of an admin route: the master key or a key with the admin role, else 401/403."""
        principal = self.authenticate(authorization)
        if not principal.admin:
            raise PermissionDenied("only the master key or an admin key may call this route", code="not_admin")
        return principal
