"""Every Prometheus metric the video service exports, on its own registry, prefixed ``video_``."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from temporalio.common import MetricMeter


class _Jobs(Collector):
    def __init__(self, running: Callable[[], int], queued: Callable[[], int]) -> None:
        self._running = running
        self._queued = queued

    def collect(self) -> Iterable[Metric]:
        yield GaugeMetricFamily("video_jobs_in_progress", "Analysis jobs running now", value=self._running())
        yield GaugeMetricFamily("video_jobs_queued", "Analysis jobs waiting for a free job slot", value=self._queued())


class VideoMetrics:
    def __init__(self, running: Callable[[], int], queued: Callable[[], int] = lambda: 0) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.jobs = Counter("video_jobs", "Finished analysis jobs by outcome", ["status"], registry=self.registry)
        self.frames = Counter(
            "video_frames", "Frames sent to the vision model by outcome", ["outcome"], registry=self.registry
        )
        self.frame_latency = Histogram(
            "video_frame_description_seconds",
            "Time to describe one request's frames through the gateway",
            buckets=(0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
            registry=self.registry,
        )
        self.speech_windows = Counter(
            "video_speech_windows",
            "Soundtrack windows sent for transcription by outcome",
            ["outcome"],
            registry=self.registry,
        )
        self.transcription_latency = Histogram(
            "video_transcription_seconds",
            "Time to transcribe one soundtrack window through the gateway",
            buckets=(0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
            registry=self.registry,
        )
        self.registry.register(_Jobs(running, queued))
        ProcessCollector(registry=self.registry)

    def render(self) -> bytes:
        return generate_latest(self.registry)

    def speech(self, outcome: str, seconds: float | None) -> None:
        self.speech_windows.labels(outcome).inc()
        if seconds is not None:
            self.transcription_latency.observe(seconds)


class WorkerMetrics:
    """The job and frame metrics of a ``video worker``, exported with the Temporal SDK's own metrics
    (one Prometheus endpoint per worker), under the names the in-process engine uses:
    ``video_jobs_total{status}``, ``video_frames_total{outcome}``, ``video_frame_description_seconds``,
    ``video_speech_windows_total{outcome}``, ``video_transcription_seconds``."""

    def __init__(self, meter: MetricMeter) -> None:
        self._jobs = meter.create_counter("video_jobs", "Finished analysis jobs by outcome")
        self._frames = meter.create_counter("video_frames", "Frames sent to the vision model by outcome")
        self._latency = meter.create_histogram_float(
            "video_frame_description_seconds", "Time to describe one request's frames through the gateway", "s"
        )

        self._speech = meter.create_counter("video_speech_windows", "Soundtrack windows sent for transcription")
        self._speech_latency = meter.create_histogram_float(
            "video_transcription_seconds", "Time to transcribe one soundtrack window through the gateway", "s"
        )

    def job(self, status: str) -> None:
        self._jobs.add(1, {"status": status})

    def speech(self, outcome: str, seconds: float | None) -> None:
        self._speech.add(1, {"outcome": outcome})
        if seconds is not None:
            self._speech_latency.record(seconds)

    def frames(self, outcome: str, count: int) -> None:
        self._frames.add(count, {"outcome": outcome})

    def latency(self, seconds: float) -> None:
        self._latency.record(seconds)
