"""What the workflow and its activities exchange: small dataclasses (frames never travel here)."""

from __future__ import annotations

from dataclasses import dataclass, field

WORKFLOW_ID_PREFIX = "video-analysis-"
SEGMENTS_PER_RUN = 250  # segments one workflow run schedules before it continues as new (history stays small)


def workflow_id(session_id: str) -> str:
    """The workflow id of a session's job, as ``POST /upload`` returns it."""
    return f"{WORKFLOW_ID_PREFIX}{session_id}"


@dataclass
class JobPlan:
    total_frames: int
    segment_frames: int  # frames one describe_segment activity covers (whole summary batches)
    batch_size: int
    transcribe: bool = False  # the soundtrack is transcribed beside the frames

    def segments(self) -> int:
        return max(1, -(-self.total_frames // self.segment_frames))

    def frame_range(self, segment: int) -> tuple[int, int | None]:
        """First and last frame (inclusive) of a segment; the last segment runs to the end."""
        first = segment * self.segment_frames
        return first, None if segment == self.segments() - 1 else first + self.segment_frames - 1


@dataclass
class VideoJobInput:
    session_id: str
    segment_frames: int = 60
    max_pending_activities: int = 500
    heartbeat_timeout_s: float = 30.0
    segments_per_run: int = SEGMENTS_PER_RUN
    # Carried over continue-as-new:
    plan: JobPlan | None = None
    next_segment: int = 0
    produced: int = 0
    warnings: list[str] = field(default_factory=list)
    speech_done: bool = False


@dataclass
class SpeechInput:
    session_id: str


@dataclass
class SpeechResult:
    transcribed: int
    failed: int
    warnings: list[str] = field(default_factory=list)


@dataclass
class PlanInput:
    session_id: str
    segment_frames: int


@dataclass
class SegmentInput:
    session_id: str
    first: int
    last: int | None


@dataclass
class SegmentOutcome:
    produced: int  # one past the last frame index this segment produced (0: none)
    described: int
    failed: int
    warnings: list[str] = field(default_factory=list)


@dataclass
class SummariseInput:
    session_id: str
    batches: list[int]


@dataclass
class FinishInput:
    session_id: str
    produced: int
    warnings: list[str]


@dataclass
class FailInput:
    session_id: str
    message: str
