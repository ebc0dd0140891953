"""The video API's request and response shapes, in one place (``/docs`` shows them)."""

from __future__ import annotations

from pydantic import BaseModel, Field


class ChatRequest(BaseModel):
    session_id: str
    question: str = Field(min_length=1, max_length=4000)


class UploadResponse(BaseModel):
    session_id: str
    message: str
    total_frames: int
    workflow_id: str = Field(description="the job's id; with the Temporal engine, its workflow id")
    duration_s: float


class Progress(BaseModel):
    session_id: str
    status: str = Field(description="queued, processing, completed or failed")
    processed_frames: int
    failed_frames: int
    total_frames: int
    progress_percentage: float
    prompt: str | None
    warnings: list[str]
    error: str | None
    queue_position: int | None = Field(default=None, description="while queued behind other jobs (local engine)")


class SessionListItem(Progress):
    filename: str
    created_at: float
    duration_s: float


class Frame(BaseModel):
    index: int
    timestamp_s: float
    timestamp: str
    description: str | None
    error: str | None
    thumbnail_url: str


class FramesResponse(BaseModel):
    session_id: str
    frames: list[Frame]


class BatchSummary(BaseModel):
    batch_index: int
    start_s: float
    end_s: float
    time_range: str
    frame_count: int
    summary: str


class OverviewNode(BaseModel):
    level: int
    index: int
    start_s: float
    end_s: float
    time_range: str
    frame_count: int
    summary: str


class SummariesResponse(BaseModel):
    session_id: str
    summaries: list[BatchSummary]
    overview: list[OverviewNode]


class SearchResult(BaseModel):
    session_id: str
    filename: str
    index: int
    timestamp_s: float
    timestamp: str
    description: str
    thumbnail_url: str


class SearchResponse(BaseModel):
    query: str
    results: list[SearchResult]


class RetrievedMoment(BaseModel):
    index: int
    timestamp_s: float
    timestamp: str


class ChatResponse(BaseModel):
    session_id: str
    question: str
    answer: str
    context_batches_used: int
    total_frames_in_context: int
    summary_level: int | None
    time_range_s: list[float] | None
    retrieved: list[RetrievedMoment]
    progress_percentage: float
    status: str
    covered_until_s: float


class ImageResponse(BaseModel):
    filename: str
    width: int
    height: int
    description: str
    insights: str


class DeleteResponse(BaseModel):
    session_id: str
    deleted: bool


class Health(BaseModel):
    status: str
