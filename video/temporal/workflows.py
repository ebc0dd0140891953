"""``VideoWorkflow``: one per video. Plans segments, describes them through a bounded window of
activities, summarises each segment's batches, continues as new before its history grows large,
and finishes. Deterministic: no I/O here, only activities."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from video.temporal.activities import VideoActivities
    from video.temporal.shared import (
        FailInput,
        FinishInput,
        JobPlan,
        PlanInput,
        SegmentInput,
        SegmentOutcome,
        SpeechInput,
        SummariseInput,
        VideoJobInput,
    )

NON_RETRYABLE = ["VideoRejected", "SessionGone"]
RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=60),
    maximum_attempts=10,
    non_retryable_error_types=NON_RETRYABLE,
)


@workflow.defn
class VideoWorkflow:
    def __init__(self) -> None:
        self._speech_task: asyncio.Task[list[str]] | None = None

    @workflow.run
    async def run(self, job: VideoJobInput) -> str:
        try:
            plan = job.plan or await self._plan(job)
            # The soundtrack runs beside the frames; a run continued as new starts it again, and it
            # goes on from the windows already stored.
            if plan.transcribe and not job.speech_done:
                self._speech_task = asyncio.create_task(self._speech(job))
            produced, warnings = await self._describe(job, plan)
            if self._speech_task is not None:
                warnings += await self._speech_task
            return await workflow.execute_activity_method(
                VideoActivities.finish,
                FinishInput(job.session_id, produced, warnings),
                start_to_close_timeout=timedelta(hours=2),
                heartbeat_timeout=timedelta(seconds=job.heartbeat_timeout_s),
                retry_policy=RETRY,
            )
        except ActivityError as exc:
            cause = exc.cause
            if isinstance(cause, ApplicationError) and cause.type == "SessionGone":
                return "deleted"
            message = str(cause.message if isinstance(cause, ApplicationError) else exc.message)
            await workflow.execute_activity_method(
                VideoActivities.mark_failed,
                FailInput(job.session_id, message),
                start_to_close_timeout=timedelta(minutes=1),
                retry_policy=RETRY,
            )
            raise ApplicationError(message, non_retryable=True) from exc

    async def _speech(self, job: VideoJobInput) -> list[str]:
        """The soundtrack's warnings; its failure never fails the frames."""
        try:
            result = await workflow.execute_activity_method(
                VideoActivities.transcribe_soundtrack,
                SpeechInput(job.session_id),
                start_to_close_timeout=timedelta(hours=6),
                heartbeat_timeout=timedelta(seconds=job.heartbeat_timeout_s),
                retry_policy=RETRY,
            )
        except ActivityError as exc:
            cause = exc.cause
            if isinstance(cause, ApplicationError) and cause.type == "SessionGone":
                raise
            return ["the soundtrack could not be transcribed; see the workers' log"]
        return result.warnings

    async def _plan(self, job: VideoJobInput) -> JobPlan:
        return await workflow.execute_activity_method(
            VideoActivities.plan,
            PlanInput(job.session_id, job.segment_frames),
            start_to_close_timeout=timedelta(minutes=10),
            retry_policy=RETRY,
        )

    async def _describe(self, job: VideoJobInput, plan: JobPlan) -> tuple[int, list[str]]:
        """Describe the segments from ``job.next_segment``, at most ``max_pending_activities`` at once;
        after ``segments_per_run`` of them, continue as new with what was reached."""
        produced, warnings = job.produced, list(job.warnings)
        pending: list[asyncio.Task[SegmentOutcome]] = []  # a list: replays must see the same order
        segment, scheduled = job.next_segment, 0
        while segment < plan.segments() or pending:
            while segment < plan.segments() and len(pending) < job.max_pending_activities:
                if scheduled >= job.segments_per_run:
                    break
                pending.append(asyncio.create_task(self._segment(job, plan, segment)))
                segment, scheduled = segment + 1, scheduled + 1
            if not pending:
                heard = self._speech_task is not None and self._speech_task.done()
                if heard and self._speech_task is not None:
                    warnings += self._speech_task.result()
                workflow.continue_as_new(
                    replace(
                        job,
                        plan=plan,
                        next_segment=segment,
                        produced=produced,
                        warnings=warnings,
                        speech_done=job.speech_done or heard,
                    )
                )
            done, pending = await workflow.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                outcome = task.result()
                produced = max(produced, outcome.produced)
                warnings += [w for w in outcome.warnings if w not in warnings]
        return produced, warnings

    async def _segment(self, job: VideoJobInput, plan: JobPlan, segment: int) -> SegmentOutcome:
        first, last = plan.frame_range(segment)
        outcome = await workflow.execute_activity_method(
            VideoActivities.describe_segment,
            SegmentInput(job.session_id, first, last),
            start_to_close_timeout=timedelta(hours=2),
            heartbeat_timeout=timedelta(seconds=job.heartbeat_timeout_s),
            retry_policy=RETRY,
        )
        end = outcome.produced if last is None else last + 1
        batches = list(range(first // plan.batch_size, -(-end // plan.batch_size)))
        if batches:
            await workflow.execute_activity_method(
                VideoActivities.summarise_batches,
                SummariseInput(job.session_id, batches),
                start_to_close_timeout=timedelta(minutes=30),
                heartbeat_timeout=timedelta(seconds=job.heartbeat_timeout_s),
                retry_policy=RETRY,
            )
        return outcome
