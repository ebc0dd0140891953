"""Videos generated for the tests (ffmpeg from imageio-ffmpeg, no download), and a running service."""

from __future__ import annotations

import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import imageio_ffmpeg
import pytest

from tests.fakes import Served, serve
from video.api import create_app
from video.settings import VideoSettings

FFMPEG = imageio_ffmpeg.get_ffmpeg_exe()
# Frames of the variable-frame-rate video: every third frame of a 30 fps source, all of them in [2 s, 3 s].
VFR_SOURCE_FPS = 30
VFR_FRAMES = [n for n in range(180) if n % 3 == 0 or 60 <= n <= 90]


def ffmpeg(*args: str) -> None:
    subprocess.run([FFMPEG, "-v", "error", "-y", *args], check=True)


def make_video(
    path: Path,
    *,
    seconds: float,
    fps: int = 10,
    size: str = "160x120",
    codec: str = "libx264",
    extra: tuple[str, ...] = (),
) -> Path:
    source = f"testsrc2=size={size}:rate={fps}:duration={seconds}"
    pix = ["-pix_fmt", "yuv420p"] if codec in ("libx264", "libvpx-vp9", "mpeg4") else []
    ffmpeg("-f", "lavfi", "-i", source, *extra, "-c:v", codec, *pix, str(path))
    return path


@dataclass(frozen=True)
class Videos:
    h264_mp4: Path
    mpeg4_mkv: Path
    mjpeg_avi: Path
    vp9_webm: Path
    vfr_mp4: Path
    short_mp4: Path
    single_frame_mp4: Path
    two_scenes_mp4: Path
    damaged_mp4: Path
    truncated_mp4: Path
    not_a_video: Path
    empty: Path


@pytest.fixture(scope="session")
def videos(tmp_path_factory: pytest.TempPathFactory) -> Videos:
    d = tmp_path_factory.mktemp("videos")
    vfr = d / "vfr.mp4"
    ffmpeg(
        "-f", "lavfi", "-i", f"testsrc2=size=160x120:rate={VFR_SOURCE_FPS}:duration=6",
        "-vf", r"select='not(mod(n\,3))+between(n\,60\,90)'", "-fps_mode", "vfr",
        "-c:v", "libx264", "-pix_fmt", "yuv420p", str(vfr),
    )  # fmt: skip
    two_scenes = d / "two_scenes.mp4"
    ffmpeg(
        "-f", "lavfi", "-i", "color=c=red:size=160x120:rate=10:duration=3",
        "-f", "lavfi", "-i", "color=c=blue:size=160x120:rate=10:duration=3",
        "-filter_complex", "[0:v][1:v]concat=n=2:v=1", "-c:v", "libx264", "-pix_fmt", "yuv420p", str(two_scenes),
    )  # fmt: skip
    # 5% of the bytes scrambled mid-file: OpenCV stops there silently; frames resume after the damage.
    damaged_source = make_video(d / "damaged_source.mp4", seconds=10, size="320x240", extra=("-g", "10"))
    data = bytearray(damaged_source.read_bytes())
    middle, length = len(data) // 2, len(data) // 20
    data[middle : middle + length] = bytes((b * 7 + 13) & 0xFF for b in data[middle : middle + length])
    (d / "damaged.mp4").write_bytes(bytes(data))
    whole = make_video(d / "whole.mp4", seconds=4)
    (d / "truncated.mp4").write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    (d / "notes.mp4").write_text("this is not a video\n" * 100)
    (d / "empty.mp4").write_bytes(b"")
    return Videos(
        h264_mp4=make_video(d / "h264.mp4", seconds=5),
        mpeg4_mkv=make_video(d / "mpeg4.mkv", seconds=5, codec="mpeg4"),
        mjpeg_avi=make_video(d / "mjpeg.avi", seconds=5, codec="mjpeg", extra=("-pix_fmt", "yuvj420p")),
        vp9_webm=make_video(d / "vp9.webm", seconds=5, codec="libvpx-vp9", extra=("-b:v", "200k")),
        vfr_mp4=vfr,
        short_mp4=make_video(d / "short.mp4", seconds=0.4),
        single_frame_mp4=make_video(d / "single.mp4", seconds=1, extra=("-frames:v", "1")),
        two_scenes_mp4=two_scenes,
        damaged_mp4=d / "damaged.mp4",
        truncated_mp4=d / "truncated.mp4",
        not_a_video=d / "notes.mp4",
        empty=d / "empty.mp4",
    )


@dataclass(frozen=True)
class Soundtracks:
    speech_mp4: Path  # 12 s: "The deadline is on Friday." from 1 s, "Open the red box now." from 7 s
    corrupt_audio_mkv: Path  # 5 s of video; its audio stream's packets cannot be decoded
    damaged_audio_mkv: Path  # 6 s of video and a tone whose AAC packets 30-49 (about 1.9 s-3.1 s) are noise
    audio_only_m4a: Path  # speech and no video stream
    said: tuple[float, float]  # when the two sentences start


def _say(text: str, path: Path) -> Path:
    subprocess.run(["espeak-ng", "-w", str(path), text], check=True, capture_output=True)
    return path


def _corrupt_audio(path: Path) -> Path:
    """A Matroska file whose video decodes and whose MP3 stream holds random bytes."""
    import fractions
    import random

    import av
    import numpy as np

    with av.open(str(path), "w") as out:
        video = out.add_stream("mjpeg", rate=10)
        video.width, video.height, video.pix_fmt = 160, 120, "yuvj420p"
        audio = out.add_stream("mp3", rate=16000)
        noise = random.Random(1)
        for n in range(50):
            picture = np.full((120, 160, 3), (n * 5) % 255, np.uint8)
            for packet in video.encode(av.VideoFrame.from_ndarray(picture, format="rgb24")):
                out.mux(packet)
        for n in range(40):
            packet = av.Packet(bytes(noise.randrange(256) for _ in range(200)))
            packet.stream = audio
            packet.pts = packet.dts = n * 1152
            packet.time_base = fractions.Fraction(1, 16000)
            out.mux(packet)
        for packet in video.encode(None):
            out.mux(packet)
    return path


def _damaged_audio(path: Path) -> Path:
    """A Matroska file with a 6 s tone in AAC whose packets 30 to 49 are replaced by random bytes."""
    import random

    import av
    import numpy as np

    noise = random.Random(2)
    with av.open(str(path), "w") as out:
        video = out.add_stream("mjpeg", rate=10)
        video.width, video.height, video.pix_fmt = 160, 120, "yuvj420p"
        audio = out.add_stream("aac", rate=16000, layout="mono")
        tone = (np.sin(2 * np.pi * 300 * np.arange(16000 * 6) / 16000) * 0.3).astype(np.float32)
        packets = []
        for start in range(0, len(tone), 1024):
            frame = av.AudioFrame.from_ndarray(tone[start : start + 1024].reshape(1, -1), format="flt", layout="mono")
            frame.sample_rate, frame.pts = 16000, start
            packets += audio.encode(frame)
        packets += audio.encode(None)
        for n in range(60):
            picture = np.full((120, 160, 3), (n * 5) % 255, np.uint8)
            for packet in video.encode(av.VideoFrame.from_ndarray(picture, format="rgb24")):
                out.mux(packet)
        for n, packet in enumerate(packets):
            if 30 <= n < 50:
                garbage = av.Packet(bytes(noise.randrange(256) for _ in range(packet.size)))
                garbage.stream, garbage.time_base = audio, packet.time_base
                garbage.pts, garbage.dts = packet.pts, packet.dts
                packet = garbage
            out.mux(packet)
        for packet in video.encode(None):
            out.mux(packet)
    return path


@pytest.fixture(scope="session")
def soundtracks(tmp_path_factory: pytest.TempPathFactory) -> Soundtracks:
    d = tmp_path_factory.mktemp("soundtracks")
    first, second = _say("The deadline is on Friday.", d / "first.wav"), _say("Open the red box now.", d / "second.wav")
    speech = d / "speech.mp4"
    ffmpeg(
        "-f", "lavfi", "-i", "testsrc2=size=160x120:rate=10:duration=12", "-i", str(first), "-i", str(second),
        "-filter_complex",
        "[1:a]adelay=1000:all=1[a1];[2:a]adelay=7000:all=1[a2];[a1][a2]amix=inputs=2:normalize=0,apad=whole_dur=12[a]",
        "-map", "0:v", "-map", "[a]", "-c:v", "libx264", "-pix_fmt", "yuv420p", "-c:a", "aac", "-t", "12", str(speech),
    )  # fmt: skip
    audio_only = d / "speech.m4a"
    ffmpeg("-i", str(first), "-c:a", "aac", str(audio_only))
    return Soundtracks(
        speech, _corrupt_audio(d / "corrupt_audio.mkv"), _damaged_audio(d / "damaged_audio.mkv"), audio_only, (1.0, 7.0)
    )


@dataclass
class RunningService:
    url: str
    http: httpx.AsyncClient
    settings: VideoSettings


ServiceFactory = Callable[..., Awaitable[RunningService]]


@pytest.fixture
async def video_service(tmp_path: Path) -> AsyncIterator[ServiceFactory]:
    """Start the video service in-process on a free loopback port: ``await video_service(gateway_url=...)``."""
    running: list[tuple[Served, httpx.AsyncClient]] = []

    async def start(**overrides: Any) -> RunningService:
        settings = VideoSettings(
            _env_file=None,  # type: ignore[call-arg]
            **{"data_dir": tmp_path / "data", "max_retries": 1, "summary_batch_size": 4, **overrides},
        )
        served = serve(create_app(settings))
        http = httpx.AsyncClient(base_url=served.url, timeout=60)
        running.append((served, http))
        return RunningService(served.url, http, settings)

    yield start
    for served, http in running:
        await http.aclose()
        await served.stop()
