"""Connecting to Temporal from settings: a local dev server, a self-hosted cluster (TLS, mTLS) or
Temporal Cloud (API key)."""

from __future__ import annotations

from temporalio.client import Client, TLSConfig
from temporalio.runtime import Runtime

from video.settings import VideoSettings


def tls_config(settings: VideoSettings) -> bool | TLSConfig:
    files = (settings.temporal_tls_cert, settings.temporal_tls_key, settings.temporal_tls_ca)
    if any(files):
        cert, key, ca = (f.read_bytes() if f else None for f in files)
        return TLSConfig(client_cert=cert, client_private_key=key, server_root_ca_cert=ca)
    return settings.temporal_tls or settings.temporal_api_key is not None


async def connect(settings: VideoSettings, runtime: Runtime | None = None, lazy: bool = False) -> Client:
    """A client of the configured namespace; ``lazy`` connects at the first call (the API starts
    even while Temporal is down)."""
    return await Client.connect(
        settings.temporal_address,
        namespace=settings.temporal_namespace,
        api_key=settings.temporal_api_key,
        tls=tls_config(settings),
        runtime=runtime,
        lazy=lazy,
    )
