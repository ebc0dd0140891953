"""Where requests go, and their prepared heads."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit


@dataclass(frozen=True)
class Origin:
    """Where requests go: scheme, host and port, and the ``Host`` header and path prefix to use."""

    tls: bool
    host: str
    port: int
    host_header: bytes
    path: bytes

    @classmethod
    def parse(cls, url: str) -> Origin:
        """``http(s)://host[:port][/prefix]``; ValueError for anything else."""
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("api_base is not an http(s) URL")
        if parts.username or parts.password:
            raise ValueError("api_base carries credentials; give them as api_key or extra_headers")
        tls = parts.scheme == "https"
        try:
            port = parts.port or (443 if tls else 80)
        except ValueError:
            raise ValueError("api_base has an invalid port") from None
        host = parts.hostname
        shown = f"[{host}]" if ":" in host else host
        default = port == (443 if tls else 80)
        host_header = shown if default else f"{shown}:{port}"
        return cls(tls, host, port, _header_value(host_header), _header_value(parts.path.rstrip("/")))


def _header_value(value: str) -> bytes:
    if "\r" in value or "\n" in value:
        raise ValueError("a header value may not contain a line break")
    return value.encode("latin-1")


def request_head(method: bytes, origin: Origin, path: str, headers: Sequence[tuple[str, str]]) -> bytes:
    """The request line and headers up to, not including, ``Content-Length`` and the blank line.

    Built once per deployment and endpoint; ValueError for a header that cannot be sent.
    """
    lines = [method, b" ", origin.path, b"/", _header_value(path), b" HTTP/1.1\r\nHost: ", origin.host_header, b"\r\n"]
    for name, value in headers:
        lines += [_header_value(name), b": ", _header_value(value), b"\r\n"]
    return b"".join(lines)
