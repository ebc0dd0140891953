"""The soundtrack: found and decoded with PyAV, mixed to mono, resampled to 16 kHz with soxr (a
high-quality resampler; the ffmpeg inside PyAV's wheels has no soxr), and cut into windows of
about ``window_s`` seconds for transcription: at the quietest moment near each window's end when
that is silence, else with a short overlap, each window keeping only the speech that is its own.
"""

from __future__ import annotations

import io
import wave
from collections.abc import Generator, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import av
import numpy as np
import soxr

SAMPLE_RATE = 16_000
FRAME_S = 0.05  # the stretch whose loudness is compared when looking for silence
SEARCH_S = 6.0  # a window ends at its quietest moment within this long before its end (at most its last quarter)
OVERLAP_S = 1.0  # when no silence is found, windows overlap by this much
SILENCE_RMS = 0.003  # about -50 dBFS: below this (or a tenth of the window's loudness) is silence
MIN_TAIL_S = 0.2  # a last window shorter than this is not worth a request


class AudioUndecodable(Exception):
    """The soundtrack is there but cannot be decoded; the message says why."""


@dataclass(frozen=True)
class AudioTrack:
    duration_s: float
    codec: str
    sample_rate: int
    channels: int


@dataclass(frozen=True)
class AudioWindow:
    """A stretch of the soundtrack, ``start_s`` to ``end_s``; the speech whose middle falls in
    ``keep_from_s``..``keep_until_s`` is this window's (the rest belongs to an overlapping neighbour)."""

    index: int
    start_s: float
    end_s: float
    keep_from_s: float
    keep_until_s: float
    samples: np.ndarray  # float32, mono, SAMPLE_RATE

    def wav(self) -> bytes:
        """The window as a 16-bit mono WAV file."""
        pcm = (np.clip(self.samples, -1.0, 1.0) * 32767).astype("<i2")
        buffer = io.BytesIO()
        with wave.open(buffer, "wb") as out:
            out.setnchannels(1)
            out.setsampwidth(2)
            out.setframerate(SAMPLE_RATE)
            out.writeframes(pcm.tobytes())
        return buffer.getvalue()


def probe_audio(path: Path) -> AudioTrack | None:
    """The file's first audio stream, or None when it has none (or cannot be opened as media)."""
    try:
        with av.open(str(path)) as container:
            if not container.streams.audio:
                return None
            stream = container.streams.audio[0]
            if stream.duration is not None and stream.time_base is not None:
                duration = float(stream.duration * stream.time_base)
            else:
                duration = (container.duration or 0) / 1_000_000
            codec = stream.codec_context.name if stream.codec_context is not None else "unknown"
            return AudioTrack(duration, codec, stream.rate or 0, stream.channels or 0)
    except (av.error.FFmpegError, OSError):
        return None


def audio_only(path: Path) -> bool:
    """Whether the file holds sound but no pictures."""
    try:
        with av.open(str(path)) as container:
            return bool(container.streams.audio) and not container.streams.video
    except (av.error.FFmpegError, OSError):
        return False


@dataclass
class AudioDamage:
    """What a decoding pass could not read: filled in as it goes."""

    gaps: list[tuple[float, float]] = field(default_factory=list)  # (start_s, end_s) heard as silence

    def warning(self) -> str | None:
        if not self.gaps:
            return None
        lost = sum(end - start for start, end in self.gaps)
        where = ", ".join(f"{start:.1f}s-{end:.1f}s" for start, end in self.gaps[:5])
        more = f" and {len(self.gaps) - 5} more" if len(self.gaps) > 5 else ""
        return f"the soundtrack is damaged: {lost:.1f}s could not be decoded ({where}{more}); nothing is heard there"


GAP_S = 0.05  # a jump in the decoded frames' times longer than this is damage, filled with silence


def pcm(path: Path, damage: AudioDamage | None = None) -> Iterator[np.ndarray]:
    """The soundtrack as float32 mono chunks at ``SAMPLE_RATE``, decoded as it is read. Damaged
    packets are skipped and the time they covered is silence (so what follows keeps its time),
    each gap recorded in ``damage``; AudioUndecodable when nothing at all can be decoded."""
    damage = damage if damage is not None else AudioDamage()
    try:
        container = av.open(str(path))
    except (av.error.FFmpegError, OSError) as exc:
        raise AudioUndecodable(f"the soundtrack cannot be opened: {exc}") from None
    with container:
        if not container.streams.audio:
            return
        stream = container.streams.audio[0]
        mono = av.AudioResampler(format="flt", layout="mono", rate=stream.rate or SAMPLE_RATE)
        resampler: soxr.ResampleStream | None = None
        decoded = failures = 0
        position = 0.0  # seconds of audio fed so far (silence for gaps included)
        for packet in _packets(container, stream):
            try:
                frames = packet.decode()
            except av.error.FFmpegError:
                failures += 1
                continue
            for frame in frames:
                if not isinstance(frame, av.AudioFrame):
                    continue
                starts = float(frame.pts * frame.time_base) if frame.pts is not None and frame.time_base else None
                for mixed in mono.resample(frame):
                    samples = mixed.to_ndarray().reshape(-1).astype(np.float32, copy=False)
                    if resampler is None:
                        resampler = soxr.ResampleStream(
                            mixed.sample_rate, SAMPLE_RATE, 1, dtype="float32", quality="HQ"
                        )
                    if starts is not None and decoded and starts > position + GAP_S:
                        damage.gaps.append((round(position, 2), round(starts, 2)))
                        silence = np.zeros(round((starts - position) * mixed.sample_rate), np.float32)
                        position += len(silence) / mixed.sample_rate
                        out = resampler.resample_chunk(silence)
                        if len(out):
                            yield out
                    starts = None  # the frame's later pieces follow on
                    decoded += len(samples)
                    position += len(samples) / mixed.sample_rate
                    out = resampler.resample_chunk(samples)
                    if len(out):
                        yield out
        if resampler is not None:
            rest = resampler.resample_chunk(np.zeros(0, np.float32), last=True)
            if len(rest):
                yield rest
        if decoded == 0:
            raise AudioUndecodable(
                f"no audio could be decoded ({failures} damaged packet(s), codec {stream.codec_context.name})"
            )


def _packets(container: av.container.InputContainer, stream: av.AudioStream) -> Iterator[av.Packet[av.AudioStream]]:
    """The stream's packets; a demuxer error past the first packets ends the stream (damage)."""
    try:
        yield from container.demux(stream)
    except av.error.FFmpegError:
        return


def windows(chunks: Iterable[np.ndarray], window_s: float = 30.0) -> Generator[AudioWindow, None, None]:
    """Cut a stream of samples into windows of at most ``window_s`` seconds (see the module)."""
    target = int(window_s * SAMPLE_RATE)
    pending: list[np.ndarray] = []
    held = 0
    start = 0  # the sample the pending audio starts at
    keep_from = 0.0
    index = 0
    for chunk in chunks:
        pending.append(chunk)
        held += len(chunk)
        while held > target:
            buffer = np.concatenate(pending)
            cut, silent = _cut(buffer[:target])
            following = cut if silent else max(1, cut - int(OVERLAP_S * SAMPLE_RATE))
            boundary = (start + (cut if silent else (cut + following) // 2)) / SAMPLE_RATE
            yield AudioWindow(
                index, start / SAMPLE_RATE, (start + cut) / SAMPLE_RATE, keep_from, boundary, buffer[:cut]
            )
            index += 1
            keep_from = boundary
            pending = [buffer[following:]]
            held = len(pending[0])
            start += following
    if held >= MIN_TAIL_S * SAMPLE_RATE or (index == 0 and held):
        buffer = np.concatenate(pending)
        end = (start + held) / SAMPLE_RATE
        yield AudioWindow(index, start / SAMPLE_RATE, end, keep_from, float("inf"), buffer)


def _cut(window: np.ndarray) -> tuple[int, bool]:
    """Where to end ``window``: the middle of its quietest stretch near the end, and whether that is silence."""
    frame = int(FRAME_S * SAMPLE_RATE)
    # Only near the end: a short window that starts in silence must not be cut there.
    search = min(len(window) // 4, int(SEARCH_S * SAMPLE_RATE))
    tail = window[len(window) - search :]
    count = len(tail) // frame
    if count == 0:
        return len(window), False
    loudness = np.sqrt(np.mean(tail[: count * frame].reshape(count, frame) ** 2, axis=1))
    quietest = int(np.argmin(loudness))
    overall = float(np.sqrt(np.mean(window**2))) if len(window) else 0.0
    silent = float(loudness[quietest]) <= max(SILENCE_RMS, 0.1 * overall)
    if not silent:
        return len(window), False
    return len(window) - search + quietest * frame + frame // 2, True
