"""The soundtrack part of a job: decode, cut into windows, transcribe them concurrently through the
gateway, store each window's segments as they arrive. Both engines run it; every write is
idempotent per (session, window), so a resumed job sends only the windows it has not stored, and a
transcript once stored is never replaced by a later failure."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import openai

from video.audio import AudioDamage, AudioUndecodable, AudioWindow, pcm, windows
from video.bounded import run_bounded
from video.fanout import gateway_error
from video.store import Session, SpeechWindow, Store
from video.transcription import Transcriber

log = logging.getLogger("video.jobs")

OnWindow = Callable[[SpeechWindow, int], Awaitable[None]]  # a window stored: the window, its segment count


@dataclass
class SpeechOutcome:
    transcribed: int = 0
    failed: int = 0
    warnings: list[str] = field(default_factory=list)
    decoded: bool = True


def heard_until(stored: list[SpeechWindow]) -> float:
    """How far from the start the soundtrack has been dealt with without a hole (failed windows count)."""
    until = 0.0
    for expected, window in enumerate(sorted(stored, key=lambda w: w.index)):
        if window.index != expected:
            break
        until = window.end_s
    return until


def speech_progress(stored: list[SpeechWindow], duration_s: float, finished: bool) -> dict[str, float | int]:
    """What ``/status`` reports about the soundtrack's windows; once ``finished``, the share is of the
    soundtrack's own length (it may end before the pictures do)."""
    done = [w for w in stored if w.error is None]
    covered = sum(w.end_s - w.start_s for w in done)
    if finished and stored:
        duration_s = max(w.end_s for w in stored)
    return {
        "transcribed_windows": len(done),
        "failed_windows": len(stored) - len(done),
        "speech_percentage": round(min(100.0, 100.0 * covered / duration_s), 1) if duration_s > 0 else 0.0,
    }


@dataclass
class Soundtrack:
    store: Store
    transcriber: Transcriber
    window_s: float = 30.0
    concurrency: int = 4
    record: Callable[[str, float | None], None] | None = None  # (outcome, seconds): metrics

    async def transcribe(self, session: Session, on_window: OnWindow | None = None) -> SpeechOutcome:
        """Transcribe the windows of ``session``'s soundtrack not stored yet; the session's ``audio``
        becomes ``done`` (``not transcribed`` when the soundtrack cannot be decoded)."""
        stored = await asyncio.to_thread(self.store.speech_windows, session.id)
        done = {w.index for w in stored if w.error is None}
        outcome = SpeechOutcome(transcribed=len(done))
        damage = AudioDamage()
        source = windows(pcm(Path(session.video_path), damage), self.window_s)

        async def work(window: AudioWindow) -> None:
            started = time.perf_counter()
            try:
                segments = await self.transcriber.transcribe(window)
                error = None
            except openai.APIError as exc:
                segments, error = [], gateway_error(exc)
            if self.record is not None:
                self.record("transcribed" if error is None else "failed", time.perf_counter() - started)
            result = SpeechWindow(window.index, window.start_s, window.end_s, error)
            kept = await asyncio.to_thread(self.store.save_speech, session.id, result, segments)
            if error is None:
                outcome.transcribed += 1
            elif kept:
                outcome.failed += 1
                log.warning("a transcription window failed", extra={"session_id": session.id, "error": error})
            if on_window is not None and kept:
                await on_window(result, len(segments))

        def take() -> AudioWindow | None:
            return next((w for w in source if w.index not in done), None)

        try:
            await run_bounded(take, work, asyncio.Semaphore(self.concurrency))
        except AudioUndecodable as exc:
            outcome.decoded = False
            outcome.warnings.append(
                f"the soundtrack could not be decoded ({exc}); the video is described without speech"
            )
        finally:
            with contextlib.suppress(ValueError):
                source.close()
        damaged = damage.warning()
        if damaged is not None and outcome.decoded:
            outcome.warnings.append(damaged)
        if outcome.failed:
            outcome.warnings.append(
                f"{outcome.failed} stretch(es) of the soundtrack could not be transcribed; "
                f"see GET /sessions/{session.id}/transcript"
            )
        audio = "done" if outcome.decoded else "not transcribed"
        await asyncio.to_thread(self.store.update_session, session.id, audio=audio)
        return outcome
