"""Which media URLs a deployment may be sent, so that no client makes us fetch what it names.

A ``hosted_vllm/`` deployment fetches the ``image_url``/``video_url`` URLs of a request itself,
from inside the cluster (cloud metadata, Redis, Temporal and every other internal service are
one URL away), and the litellm SDK downloads them in the gateway's own process for providers
that take only inline images (Anthropic, Gemini, Bedrock, ...). So by default such deployments
are sent ``data:`` URLs only; ``model_info.allowed_media_domains`` lists the domains (and their
subdomains) they may fetch from, ``["*"]`` any. OpenAI and Nebius fetch from their own
network, so they take any URL unless an allow-list is configured.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from gateway.bodies import escaped
from gateway.errors import InvalidRequest

REMOTE_FETCHING_PROVIDERS = frozenset({"openai", "nebius"})  # they fetch from their network, not ours
_KEYS = (b'"url"', b'"image_url"', b'"video_url"')
_VALUE = re.compile(rb'\s*:\s*"([^"]{0,2048})')
ANY = "*"


def default_media_domains(provider: str, sdk: bool, configured: list[str] | None) -> frozenset[str] | None:
    """The domains a deployment may be sent media URLs of; None: any."""
    if configured is not None:
        domains = frozenset(d.strip().lower().lstrip(".") for d in configured if d.strip())
        return None if ANY in domains else domains
    return None if provider in REMOTE_FETCHING_PROVIDERS and not sdk else frozenset()


def remote_media_hosts(raw: bytes) -> list[str]:
    """The hosts (lower case; "" when there is none, as in ``file:``) of the media URLs in a request
    body that are not ``data:`` URLs. It hops from quote to quote (``memchr``): base64 has none,
    so a megabyte image costs one search (multi-byte searches are 30x slower on such data)."""
    hosts = []
    position = raw.find(b'"')
    while position >= 0:
        key = next((k for k in _KEYS if raw.startswith(k, position)), None)
        if key is not None and not escaped(raw, position):
            match = _VALUE.match(raw, position + len(key))
            if match is not None:
                if match.group(1)[:5].lower() != b"data:":
                    hosts.append(_host(match.group(1)))
                position = raw.find(b'"', match.end())  # the value's closing quote: its content is skipped
                if position < 0:
                    break
        position = raw.find(b'"', position + 1)
    return hosts


def _host(value: bytes) -> str:
    try:
        return (urlsplit(value.decode("utf-8", "replace")).hostname or "").lower()
    except ValueError:
        return ""


def check_media(hosts: list[str], allowed: frozenset[str] | None, group: str) -> None:
    """InvalidRequest unless every host is allowed (``allowed`` None: any)."""
    if allowed is None:
        return
    for host in hosts:
        if not host or not any(host == d or host.endswith("." + d) for d in allowed):
            raise InvalidRequest(
                f"model '{group}' takes media as data: URLs (base64) only"
                + (", or from the domains its operator allowed" if allowed else "")
                + "; this request names a URL it may not fetch",
                param="messages",
                code="media_url_not_allowed",
            )
