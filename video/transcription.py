"""Sends soundtrack windows to the gateway's ``/v1/audio/transcriptions`` and keeps the segments
each window owns, with absolute times; joins windows' segments into one transcript."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from openai import AsyncOpenAI

from video.audio import AudioWindow
from video.store import SpeechSegment

_WORD = re.compile(r"\S+")
_MAX_REPEAT_WORDS = 6


@dataclass
class Transcriber:
    """Asks a gateway transcription group (Whisper on vLLM, a cloud model) for timed segments."""

    client: AsyncOpenAI
    model: str

    async def transcribe(self, window: AudioWindow) -> list[SpeechSegment]:
        """The window's own segments, at absolute times; raises openai errors once retries are spent."""
        result = await self.client.audio.transcriptions.create(
            model=self.model,
            file=(f"window-{window.index}.wav", window.wav(), "audio/wav"),
            response_format="verbose_json",
            timestamp_granularities=["segment"],
        )
        found = [(s.start, s.end, s.text) for s in result.segments or []]
        if not found and (result.text or "").strip():
            found = [(0.0, window.end_s - window.start_s, result.text)]
        segments = []
        for start, end, text in found:
            start_s = round(window.start_s + max(0.0, float(start)), 3)
            end_s = round(min(window.end_s, window.start_s + max(float(start), float(end))), 3)
            middle = (start_s + end_s) / 2
            if text.strip() and window.keep_from_s <= middle < window.keep_until_s:
                segments.append(SpeechSegment(start_s, max(start_s, end_s), text.strip()))
        return segments


def joined(segments: Iterable[SpeechSegment]) -> list[SpeechSegment]:
    """Segments in time order, without the words a segment repeats from the end of the one before
    (neighbouring windows overlap, and both may have heard the words at their seam)."""
    result: list[SpeechSegment] = []
    for segment in sorted(segments, key=lambda s: (s.start_s, s.end_s)):
        if result and segment.start_s < result[-1].end_s + 1.0:
            text = _without_repeat(result[-1].text, segment.text)
            if not text:
                continue
            segment = SpeechSegment(segment.start_s, segment.end_s, text)
        result.append(segment)
    return result


def _without_repeat(before: str, text: str) -> str:
    """``text`` without its first words when they are the last words of ``before``."""
    tail = [w.lower().strip(".,!?;:") for w in _WORD.findall(before)]
    words = _WORD.findall(text)
    head = [w.lower().strip(".,!?;:") for w in words]
    for count in range(min(_MAX_REPEAT_WORDS, len(tail), len(head)), 0, -1):
        if tail[-count:] == head[:count]:
            return " ".join(words[count:])
    return text


def _timestamp(seconds: float, separator: str) -> str:
    milliseconds = round(seconds * 1000)
    hours, rest = divmod(milliseconds, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    whole, millis = divmod(rest, 1000)
    return f"{hours:02d}:{minutes:02d}:{whole:02d}{separator}{millis:03d}"


def webvtt(segments: list[SpeechSegment]) -> str:
    cues = [f"{_timestamp(s.start_s, '.')} --> {_timestamp(s.end_s, '.')}\n{s.text}\n" for s in segments]
    return "WEBVTT\n\n" + "\n".join(cues)


def srt(segments: list[SpeechSegment]) -> str:
    cues = [
        f"{n}\n{_timestamp(s.start_s, ',')} --> {_timestamp(s.end_s, ',')}\n{s.text}\n"
        for n, s in enumerate(segments, start=1)
    ]
    return "\n".join(cues)
