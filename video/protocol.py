"""The video API's request and response shapes, in one place (``/docs`` shows them)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

MAX_QUESTION_CHARS = 4000
MAX_TURN_CHARS = 20_000  # an earlier turn of a conversation (POST /chat's history, OpenAI messages)


class HistoryTurn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: Literal["user", "assistant"]
    content: str = Field(max_length=MAX_TURN_CHARS)


class ChatRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    session_id: str
    question: str = Field(min_length=1, max_length=MAX_QUESTION_CHARS)
    history: list[HistoryTurn] = Field(
        default_factory=list, max_length=200, description="earlier turns, oldest first; the latest that fit are sent"
    )
    look: bool | None = Field(
        default=None, description="look again at the frames of the moments (default: when VIDEO_LOOK_FRAMES > 0)"
    )
    stream: bool = Field(default=False, description="Server-Sent Events: answer.delta pieces, then answer.done")


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
    clip_mode: str = Field(default="images", description="video: clips sent as video items; images: frames as pictures")
    audio: str = Field(default="none", description="the soundtrack: none, not transcribed, transcribing or done")
    transcribed_windows: int | None = Field(default=None, description="soundtrack windows transcribed")
    failed_windows: int | None = Field(default=None, description="soundtrack windows that could not be transcribed")
    speech_percentage: float | None = Field(default=None, description="share of the soundtrack transcribed")


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
    clip_start_s: float | None = Field(default=None, description="described as part of a clip: where the clip starts")
    clip_end_s: float | None = Field(default=None, description="and where it ends")


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
    index: int = Field(description="the frame shown for the moment (for speech: the frame at its start)")
    timestamp_s: float
    timestamp: str
    description: str = Field(description="what was seen, or what was said")
    thumbnail_url: str
    kind: str = Field(default="vision", description="vision (a description) or speech (a transcript segment)")
    end_s: float | None = Field(default=None, description="where the speech segment ends")


class SearchResponse(BaseModel):
    query: str
    results: list[SearchResult]


class RetrievedMoment(BaseModel):
    index: int
    timestamp_s: float
    timestamp: str


class TranscriptSegment(BaseModel):
    start_s: float
    end_s: float
    start: str
    text: str


class TranscriptGap(BaseModel):
    start_s: float
    end_s: float
    error: str


class TranscriptResponse(BaseModel):
    session_id: str
    audio: str = Field(description="none, not transcribed, transcribing or done")
    segments: list[TranscriptSegment]
    failed: list[TranscriptGap] = Field(description="stretches of the soundtrack that could not be transcribed")


class CitedMoment(BaseModel):
    timestamp_s: float
    timestamp: str
    index: int | None = Field(description="the frame at that time")
    thumbnail_url: str | None


class TokenUsage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class ChatResponse(BaseModel):
    session_id: str
    question: str
    answer: str
    context_batches_used: int
    total_frames_in_context: int
    summary_level: int | None
    time_range_s: list[float] | None
    retrieved: list[RetrievedMoment]
    speech_segments_in_context: int = 0
    looked: bool = Field(default=False, description="whether the vision group looked at the moments again")
    looked_at: list[RetrievedMoment] = Field(default_factory=list, description="the frames it looked at")
    cited: list[CitedMoment] = Field(default_factory=list, description="the moments the answer cites")
    history_turns_used: int = Field(default=0, description="earlier turns that fitted the chat model's context")
    notes: list[str] = Field(default_factory=list, description="why something asked for was not done")
    usage: TokenUsage | None = None
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
