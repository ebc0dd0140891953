"""``video worker``: a Temporal worker running ``VideoWorkflow`` and its activities, with the SDK's
metrics and the frame metrics on one Prometheus port, draining gracefully on SIGTERM."""

from __future__ import annotations

import asyncio
import logging
import signal
from datetime import timedelta

import openai
from openai import AsyncOpenAI
from temporalio.client import Client
from temporalio.runtime import PrometheusConfig, Runtime, TelemetryConfig
from temporalio.worker import Worker

from video.components import build_components
from video.metrics import WorkerMetrics
from video.settings import VideoSettings
from video.store import open_store
from video.temporal.activities import VideoActivities
from video.temporal.connection import connect
from video.temporal.workflows import VideoWorkflow

log = logging.getLogger("video.temporal")
DRAIN_S = 60.0  # activities in flight at SIGTERM get this long to finish before they are handed back


def build_worker(client: Client, settings: VideoSettings, activities: VideoActivities, concurrency: int) -> Worker:
    return Worker(
        client,
        task_queue=settings.temporal_task_queue,
        workflows=[VideoWorkflow],
        activities=[
            activities.plan,
            activities.describe_segment,
            activities.transcribe_soundtrack,
            activities.summarise_batches,
            activities.finish,
            activities.mark_failed,
        ],
        max_concurrent_activities=concurrency,
        graceful_shutdown_timeout=timedelta(seconds=DRAIN_S),
    )


async def check_gateway(client: AsyncOpenAI, url: str) -> None:
    """Ask the gateway for its models before taking work: says early when it cannot be reached,
    and opens the connection (and the SDK's request path) before the first frame waits on it."""
    try:
        await client.models.list(timeout=10)
    except openai.APIError as exc:
        log.warning("the gateway does not answer yet; frames will be retried", extra={"url": url, "error": str(exc)})


async def run_worker(
    settings: VideoSettings, concurrency: int, metrics_port: int | None, metrics_host: str = "127.0.0.1"
) -> None:
    """Run until SIGTERM or SIGINT, then stop polling and let the activities in flight finish."""
    if metrics_port is not None:
        telemetry = TelemetryConfig(
            metrics=PrometheusConfig(
                bind_address=f"{metrics_host}:{metrics_port}", durations_as_seconds=True, counters_total_suffix=True
            )
        )
        runtime = Runtime(telemetry=telemetry)
    else:
        runtime = Runtime.default()
    client = await connect(settings, runtime)
    store = open_store(settings.database_url, settings.data_dir)
    parts = build_components(settings, store)
    activities = VideoActivities(
        store,
        parts.describer,
        parts.summariser,
        parts.job_settings,
        WorkerMetrics(runtime.metric_meter),
        asyncio.Semaphore(settings.max_concurrency),
        heartbeat_every_s=max(0.5, settings.temporal_heartbeat_timeout_s / 3),
        soundtrack=parts.soundtrack,
    )
    await check_gateway(parts.client, settings.gateway_url)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    worker = build_worker(client, settings, activities, concurrency)
    log.info(
        "worker started",
        extra={"task_queue": settings.temporal_task_queue, "concurrency": concurrency, "metrics_port": metrics_port},
    )
    try:
        async with worker:
            await stop.wait()
            log.info("draining: no new activities; waiting for the ones in flight")
    finally:
        await parts.close()
        store.close()
    log.info("worker stopped")
