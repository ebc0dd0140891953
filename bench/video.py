"""Video benchmark: frame extraction against ffmpeg, fan-out efficiency against C/L, and the
local engine against Temporal workers (``bench.video_engines``).

Run: ``python -m bench.video``. Extraction compares wall time on a 720p30 H.264 file at
1 fps with ``ffmpeg -i IN -vf fps=1:round=up,scale=768:-2`` writing JPEGs (the system's
ffmpeg when installed, else the one imageio-ffmpeg ships). Fan-out sends frames through
the pipeline to a fake upstream that serves C requests at once with latency L.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import imageio_ffmpeg
from aiohttp import web
from openai import AsyncOpenAI

from bench.procstat import rss_bytes
from video.fanout import Describer, fan_out
from video.probe import probe
from video.sampling import SampledFrame, SamplingOptions, sample

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / ".bench"


def ffmpeg_binary() -> str:
    return shutil.which("ffmpeg") or imageio_ffmpeg.get_ffmpeg_exe()


def make_720p(seconds: int) -> Path:
    path = CACHE / f"720p30-{seconds}s.mp4"
    if not path.exists():
        CACHE.mkdir(exist_ok=True)
        print(f"generating {path.name} (once)...", flush=True)
        source = ["-f", "lavfi", "-i", f"testsrc2=size=1280x720:rate=30:duration={seconds}"]
        encoding = ["-vf", "noise=alls=10:allf=t", "-c:v", "libx264", "-preset", "veryfast", "-b:v", "3M"]
        encoding += ["-maxrate", "3M", "-bufsize", "6M", "-pix_fmt", "yuv420p", "-g", "60"]
        subprocess.run(
            [imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-y", *source, *encoding, str(path)], check=True
        )
    return path


def time_ffmpeg(video: Path, out: Path) -> float:
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    started = time.perf_counter()
    filters = ["-vf", "fps=1:round=up,scale=768:-2", "-q:v", "3"]
    subprocess.run(
        [ffmpeg_binary(), "-v", "error", "-y", "-i", str(video), *filters, str(out / "%05d.jpg")], check=True
    )
    return time.perf_counter() - started


def time_ours(video: Path) -> tuple[float, int]:
    started = time.perf_counter()
    info = probe(video)
    count = sum(1 for _ in sample(video, info, SamplingOptions(fps=1, max_side=768)))
    return time.perf_counter() - started, count


async def fake_upstream(capacity: int, latency: float) -> tuple[web.AppRunner, str, dict[str, int]]:
    slots = asyncio.Semaphore(capacity)
    stats = {"in_flight": 0, "max_in_flight": 0}
    answer = {
        "id": "x",
        "object": "chat.completion",
        "model": "vision",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "a frame"}, "finish_reason": "stop"}],
    }

    async def chat(request: web.Request) -> web.Response:
        await request.read()
        stats["in_flight"] += 1
        stats["max_in_flight"] = max(stats["max_in_flight"], stats["in_flight"])
        try:
            async with slots:
                await asyncio.sleep(latency)
        finally:
            stats["in_flight"] -= 1
        return web.json_response(answer)

    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_post("/v1/chat/completions", chat)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    return runner, f"http://127.0.0.1:{port}/v1", stats


async def fan_out_efficiency(video: Path, capacity: int, latency: float, concurrency: int, frames: int) -> None:
    runner, url, stats = await fake_upstream(capacity, latency)
    info = probe(video)
    options = SamplingOptions(fps=frames / info.duration_s, max_frames=frames, max_side=768)
    done = 0

    async def on_result(
        batch: list[SampledFrame], clip: tuple[float, float] | None, description: str | None, error: str | None
    ) -> None:
        nonlocal done
        assert error is None, error
        done += len(batch)

    async with AsyncOpenAI(base_url=url, api_key="bench", max_retries=0) as client:
        describer = Describer(client, "vision")
        started = time.perf_counter()
        await fan_out(sample(video, info, options), describer, on_result, max_concurrency=concurrency)
        elapsed = time.perf_counter() - started
    await runner.cleanup()
    ideal = capacity / latency
    rate = done / elapsed
    print(f"\nfan-out: {done} frames of {video.name}, upstream capacity C={capacity} latency L={latency}s")
    print(f"  {rate:.1f} frames/s; C/L = {ideal:.1f} frames/s; efficiency {rate / ideal:.1%} (target >= 95%)")
    print(f"  most requests in flight at the upstream: {stats['max_in_flight']} (max_concurrency {concurrency})")
    print(f"  {'PASS' if rate / ideal >= 0.95 else 'FAIL'}  efficiency >= 95%")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=int, default=60, help="length of the 720p test video")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--no-engines", action="store_true", help="skip the local-vs-Temporal engine comparison")
    args = parser.parse_args()
    video = make_720p(args.seconds)
    out = Path(tempfile.mkdtemp(prefix="bench-ffmpeg-"))
    print(f"extraction: {video.name}, 1 fps, longer side 768, JPEG; ffmpeg = {ffmpeg_binary()}")
    theirs = min(time_ffmpeg(video, out) for _ in range(args.runs))
    runs = [time_ours(video) for _ in range(args.runs)]
    ours = min(t for t, _ in runs)
    frames = len(list(out.iterdir()))
    shutil.rmtree(out, ignore_errors=True)
    ratio = ours / theirs
    print(f"  ffmpeg {theirs:.2f}s ({frames} JPEGs), ours {ours:.2f}s ({runs[0][1]} JPEGs): ratio {ratio:.2f}x")
    print(f"  {'PASS' if ratio <= 0.8 else 'FAIL'}  ours/ffmpeg <= 0.8x")
    print(f"  sampler process RSS after extraction: {rss_bytes(os.getpid()) / 2**20:.0f} MiB")
    asyncio.run(fan_out_efficiency(video, capacity=8, latency=0.1, concurrency=16, frames=1000))
    if not args.no_engines:
        from bench.video_engines import compare_engines

        sys.exit(compare_engines(seconds=600, fps=2.0, workers=[1, 2, 4]))
    sys.exit(0)


if __name__ == "__main__":
    main()
