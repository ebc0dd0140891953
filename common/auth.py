"""Bearer keys: how they are read from a request, stored (SHA-256) and compared (constant time)."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable

from common.errors import AuthenticationFailed


def digest(key: str) -> bytes:
    """How keys are stored and compared: their SHA-256."""
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).digest()


def bearer_token(authorization: str | None) -> str:
    """The key of an ``Authorization: Bearer <key>`` header, or 401."""
    if not authorization:
        raise AuthenticationFailed("missing API key: send 'Authorization: Bearer <key>'")
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise AuthenticationFailed("malformed Authorization header: expected 'Bearer <key>'")
    return token.strip()


def find_key(presented: str, digests: Iterable[bytes]) -> bytes | None:
    """The stored digest matching ``presented``; compares against every one, so timing reveals nothing."""
    return find_digest(digest(presented), digests)


def find_digest(wanted: bytes, digests: Iterable[bytes]) -> bytes | None:
    """``wanted`` among ``digests``, compared against every one in constant time."""
    found = None
    for candidate in digests:
        if hmac.compare_digest(candidate, wanted) and found is None:
            found = candidate
    return found
