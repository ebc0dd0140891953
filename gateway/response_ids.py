"""Response ids that lead the gateway back to where a response lives, on any replica.

A deployment's own id (``resp_ab12``) is wrapped as ``resp_d<tag>_resp_ab12``: ``tag`` is a
keyed digest of the deployment's id, so a replica finds the deployment among its own while a
client learns nothing of its name or address (the key is the master key: without one every
caller is trusted anyway). Responses the gateway bridged to chat and keeps itself are
``resp_g<random>``.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass

from gateway.deployment import Deployment

_PREFIX = "resp_"
_TAG_CHARS = 12
_UPSTREAM_ID = re.compile(r"[A-Za-z0-9_\-]{1,200}")
_STORED_ID = re.compile(r"resp_g[0-9a-f]{32}")


@dataclass(frozen=True)
class Located:
    """Where a response id leads: a deployment's own id, or the gateway's store."""

    deployment: Deployment | None
    upstream_id: str | None
    stored: bool = False


class ResponseIds:
    """Wraps and unwraps response ids with one key (the same on every replica)."""

    def __init__(self, key: str | None) -> None:
        self._key = (key or "gateway-response-ids").encode()
        self._tags: dict[str, str] = {}

    def tag(self, deployment: Deployment) -> str:
        """The deployment's tag: the same on every replica with the same key."""
        tag = self._tags.get(deployment.id)
        if tag is None:
            digest = hmac.new(self._key, deployment.id.encode(), hashlib.sha256).hexdigest()
            tag = digest[:_TAG_CHARS]
            if len(self._tags) < 10_000:  # pods come and go: the cache stays bounded
                self._tags[deployment.id] = tag
        return tag

    def wrap(self, deployment: Deployment, upstream_id: str) -> str:
        """The id the client sees for ``upstream_id`` from ``deployment``."""
        return f"{_PREFIX}d{self.tag(deployment)}_{upstream_id}"

    @staticmethod
    def new_stored() -> str:
        """A fresh id for a response the gateway keeps."""
        return f"{_PREFIX}g{os.urandom(16).hex()}"

    def locate(self, response_id: str, deployments: Iterable[Deployment]) -> Located | None:
        """Where ``response_id`` leads, or None when it names nothing this gateway can find."""
        if _STORED_ID.fullmatch(response_id):
            return Located(None, None, stored=True)
        if not response_id.startswith(_PREFIX + "d"):
            return None
        tag, sep, upstream = response_id[len(_PREFIX) + 1 :].partition("_")
        if not sep or len(tag) != _TAG_CHARS or not _UPSTREAM_ID.fullmatch(upstream):
            return None
        for deployment in deployments:
            if hmac.compare_digest(self.tag(deployment), tag):
                return Located(deployment, upstream)
        return None
