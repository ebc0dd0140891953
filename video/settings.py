"""Settings of the video service, from ``VIDEO_*`` variables, ``.env`` and command-line flags."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class VideoSettings(BaseSettings):
    """How the video service runs and what it asks of the gateway."""

    model_config = SettingsConfigDict(env_prefix="VIDEO_", env_file=".env", extra="ignore")

    gateway_url: str = "http://127.0.0.1:4000/v1"
    api_key: str = "unused"
    vision_model: str = "vision"
    chat_model: str = "chat"
    embedding_model: str | None = None  # a gateway embeddings group: descriptions are embedded for search
    database_url: str | None = None  # postgresql://... shares the store between machines; default: SQLite in data_dir
    data_dir: Path = Path("data")
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=1, le=65535)
    client_keys: list[str] = Field(default_factory=list)
    keys_file: Path | None = None
    max_upload_bytes: int = Field(default=2 * 1024**3, gt=0)
    max_duration_s: float = Field(default=4 * 3600, gt=0)
    default_fps: float = Field(default=1.0, gt=0, le=30)
    max_frames_limit: int = Field(default=5000, gt=0)
    max_side: int = Field(default=768, ge=64, le=4096)
    jpeg_quality: int = Field(default=85, ge=30, le=100)
    max_video_pixels: int = Field(default=7680 * 4320, gt=0)
    max_image_pixels: int = Field(default=50_000_000, gt=0)
    max_concurrency: int = Field(default=16, ge=1, le=256)
    max_jobs: int = Field(default=2, ge=1, le=64)
    frames_per_request: int = Field(default=1, ge=1, le=16)
    # Clips: a vision group that takes video is sent each chunk of the video as one video item.
    # auto: ask the gateway (GET /v1/models/{vision_model} says supports_video); video or images: decide here.
    clip_mode: Literal["auto", "video", "images"] = "auto"
    chunk_seconds: float = Field(default=10.0, ge=1, le=300)
    max_clip_frames: int = Field(default=32, ge=2, le=32)  # a clip is cut shorter past this many frames
    # The soundtrack: a gateway group serving /v1/audio/transcriptions (Whisper on vLLM, a cloud model).
    transcription_model: str | None = None
    transcription_window_s: float = Field(default=30.0, ge=5, le=600)
    transcription_concurrency: int = Field(default=4, ge=1, le=64)
    summary_batch_size: int = Field(default=20, ge=2, le=500)
    context_token_budget: int = Field(default=6000, ge=100)
    chat_context_tokens: int | None = Field(default=None, ge=256)
    description_max_tokens: int = Field(default=300, ge=1)
    answer_max_tokens: int = Field(default=600, ge=1)
    # Looking again: the vision group is shown at most this many frames of the moments a question is about (0: off).
    look_frames: int = Field(default=16, ge=0, le=64)
    look_max_tokens: int = Field(default=400, ge=16)
    request_timeout_s: float = Field(default=120, gt=0)
    max_retries: int = Field(default=5, ge=0, le=20)
    log_level: str = "info"
    # Where jobs run: in this process (the embedded default), or on ``video worker`` processes through Temporal.
    engine: Literal["local", "temporal"] = "local"
    temporal_address: str = "127.0.0.1:7233"
    temporal_namespace: str = "default"
    temporal_task_queue: str = "video-analysis"
    temporal_api_key: str | None = None  # Temporal Cloud's API key (implies TLS)
    temporal_tls: bool = False
    temporal_tls_cert: Path | None = None  # client certificate (mTLS), PEM
    temporal_tls_key: Path | None = None
    temporal_tls_ca: Path | None = None  # server CA, PEM, when not a public one
    temporal_segment_frames: int = Field(default=60, ge=1, le=1000)  # frames one activity describes
    temporal_max_pending_activities: int = Field(default=500, ge=1, le=2000)  # per workflow (Temporal caps 2,000)
    temporal_segments_per_run: int = Field(default=250, ge=1)  # then the workflow continues as new
    temporal_heartbeat_timeout_s: float = Field(default=30, ge=1, le=600)  # a dead worker's work moves after this

    @field_validator("database_url")
    @classmethod
    def _known_database(cls, url: str | None) -> str | None:
        if url and not url.startswith(("postgresql://", "postgres://", "sqlite:///")):
            raise ValueError("must start with postgresql:// (shared) or sqlite:/// (one machine)")
        return url

    def all_client_keys(self) -> list[str]:
        """Keys from flags and environment plus one key a line from ``keys_file``."""
        keys = list(self.client_keys)
        if self.keys_file is not None:
            lines = self.keys_file.read_text(encoding="utf-8").splitlines()
            keys += [line.strip() for line in lines if line.strip() and not line.startswith("#")]
        return keys
