"""Engine comparison: the in-process engine against Temporal with 1, 2 and 4 worker processes,
in one run, on one machine, against a fake gateway that describes C frames at once in L seconds.

Run: ``python -m bench.video_engines`` (``python -m bench.video`` runs it too). Each engine gets a
fresh ``video serve`` (and workers) sharing one Temporal dev server; the same video is uploaded and
the time from the upload's answer to ``completed`` is measured. Two gateways:
- upstream-bound (C=8, L=0.2 s: C/L = 40 frames/s): every engine should reach 95% of C/L;
- CPU-bound (C=256, L=0.01 s): the machine's cores are the limit; Temporal against the local engine.
Summaries go to the chat model, which the fake answers at once (only frames use the capacity).
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
import uuid
from dataclasses import dataclass
from pathlib import Path

import httpx
from aiohttp import web

from bench.load import free_port
from launch.environment import temporal_cli

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Upstream:
    capacity: int
    latency_s: float

    @property
    def ideal(self) -> float:
        return self.capacity / self.latency_s


async def serve_gateway(upstream: Upstream) -> tuple[web.AppRunner, str, dict[str, float]]:
    slots = asyncio.Semaphore(upstream.capacity)
    seen: dict[str, float] = {}
    answer = b'{"id":"x","object":"chat.completion","model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"a frame"},"finish_reason":"stop"}]}'  # noqa: E501

    async def chat(request: web.Request) -> web.Response:
        body = await request.read()
        if b'"model":"vision"' in body.replace(b" ", b""):
            seen.setdefault("first", time.perf_counter())
            async with slots:
                await asyncio.sleep(upstream.latency_s)
            seen["last"] = time.perf_counter()
        return web.Response(body=answer, content_type="application/json")

    async def models(_: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": "vision", "object": "model"}]})

    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_post("/v1/chat/completions", chat)
    app.router.add_get("/v1/models", models)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, f"http://127.0.0.1:{runner.addresses[0][1]}/v1", seen


@dataclass(frozen=True)
class Result:
    rate: float  # frames per second, upload answered to completed
    startup_s: float  # upload answered to the first frame at the gateway
    tail_s: float  # the last frame described to completed (summaries, roll-up, status)


def start_temporal(directory: Path) -> tuple[subprocess.Popen[bytes], str]:
    port, http_port = free_port(), free_port()
    command = [temporal_cli(), "server", "start-dev", "--headless", "--ip", "127.0.0.1", "--port", str(port)]
    command += ["--http-port", str(http_port), "--metrics-port", str(free_port()), "--log-level", "error"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=directory)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{http_port}/api/v1/namespaces/default").status_code == 200:
                return process, f"127.0.0.1:{port}"
        except httpx.TransportError:
            time.sleep(0.1)
    raise RuntimeError("the Temporal dev server did not start")


def _spawn(args: list[str], env: dict[str, str], directory: Path) -> subprocess.Popen[bytes]:
    full = {**os.environ, "PYTHONPATH": str(ROOT), **env}
    quiet = subprocess.DEVNULL
    return subprocess.Popen([sys.executable, "-m", "video", *args], env=full, cwd=directory, stdout=quiet, stderr=quiet)


def _stop(processes: list[subprocess.Popen[bytes]]) -> None:
    for process in processes:
        process.terminate()
    for process in processes:
        try:
            process.wait(timeout=90)
        except subprocess.TimeoutExpired:
            process.kill()


async def _job(http: httpx.AsyncClient, video: Path, fps: float) -> tuple[int, float, float]:
    """Upload, wait for ``completed``; the frame count, when the upload was answered, when it completed."""
    with video.open("rb") as handle:
        job = (await http.post("/upload", files={"file": (video.name, handle)}, data={"fps": str(fps)})).json()
    started = time.perf_counter()
    while True:
        status = (await http.get(f"/status/{job['session_id']}")).json()
        if status["status"] in ("completed", "failed"):
            break
        await asyncio.sleep(0.05)
    ended = time.perf_counter()
    if status["status"] != "completed" or status["processed_frames"] != job["total_frames"]:
        raise RuntimeError(f"the job did not complete: {status}")
    return int(job["total_frames"]), started, ended


async def run_engine(
    video: Path,
    warm_up: Path,
    gateway_url: str,
    seen: dict[str, float],
    workers: int,
    temporal: str | None,
    fps: float,
) -> Result:
    """Frames per second from the upload's answer to ``completed``, after a warm-up job (processes
    started, imports done, connections open); ``workers`` 0 is the local engine."""
    directory = Path(tempfile.mkdtemp(prefix="bench-engine-"))
    port = free_port()
    env = {
        "VIDEO_GATEWAY_URL": gateway_url,
        "VIDEO_DATA_DIR": str(directory / "data"),
        "VIDEO_MAX_CONCURRENCY": "16",
        "VIDEO_LOG_LEVEL": "warning",
        "VIDEO_MAX_RETRIES": "0",
    }
    if temporal is not None:
        env |= {"VIDEO_ENGINE": "temporal", "VIDEO_TEMPORAL_ADDRESS": temporal}
        env |= {"VIDEO_TEMPORAL_TASK_QUEUE": f"bench-{uuid.uuid4().hex[:8]}"}
    processes = [_spawn(["serve", "--port", str(port)], env, directory)]
    processes += [_spawn(["worker", "--concurrency", "4"], env, directory) for _ in range(workers)]
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=120) as http:
            for _ in range(1200):
                try:
                    if (await http.get("/health")).status_code == 200:
                        break
                except httpx.TransportError:
                    await asyncio.sleep(0.05)
            await _job(http, warm_up, fps)
            seen.clear()
            frames, started, ended = await _job(http, video, fps)
        return Result(frames / (ended - started), seen["first"] - started, ended - seen["last"])
    finally:
        _stop(processes)
        shutil.rmtree(directory, ignore_errors=True)


SCENARIOS = {"upstream-bound": Upstream(8, 0.2), "CPU-bound": Upstream(256, 0.01)}


async def compare(video: Path, warm_up: Path, fps: float, worker_counts: list[int], scenarios: list[str]) -> int:
    directory = Path(tempfile.mkdtemp(prefix="bench-temporal-"))
    temporal_process, temporal = start_temporal(directory)
    failures = 0
    try:
        for name in scenarios:
            upstream = SCENARIOS[name]
            runner, url, seen = await serve_gateway(upstream)
            try:
                rows = [("local", await run_engine(video, warm_up, url, seen, 0, None, fps))]
                for count in worker_counts:
                    rows.append(
                        (f"temporal x{count}", await run_engine(video, warm_up, url, seen, count, temporal, fps))
                    )
            finally:
                await runner.cleanup()
            local = rows[0][1].rate
            ideal = f"C/L={upstream.ideal:.0f} frames/s"
            print(f"\n{name}: fake gateway C={upstream.capacity}, L={upstream.latency_s}s, {ideal}")
            print("| engine | frames/s | of C/L | of local | upload to first frame | last frame to completed |")
            print("| --- | --- | --- | --- | --- | --- |")
            for engine, r in rows:
                print(
                    f"| {engine} | {r.rate:.1f} | {r.rate / upstream.ideal:.0%} | {r.rate / local:.0%} "
                    f"| {r.startup_s * 1000:.0f} ms | {r.tail_s * 1000:.0f} ms |"
                )
            temporal_rates = [r.rate for engine, r in rows[1:]]
            if name == "upstream-bound":
                ok = min(temporal_rates) >= 0.95 * upstream.ideal
                print(f"{'PASS' if ok else 'FAIL'}  every Temporal run >= 95% of C/L")
            else:
                ok = max(temporal_rates) >= 0.9 * local
                print(f"{'PASS' if ok else 'FAIL'}  Temporal (best worker count) >= 90% of the local engine")
            failures += not ok
    finally:
        temporal_process.terminate()
        temporal_process.wait(timeout=30)
        shutil.rmtree(directory, ignore_errors=True)
    return failures


def make_video(path: Path, seconds: int) -> Path:
    import imageio_ffmpeg

    source = f"testsrc2=size=640x360:rate=25:duration={seconds}"
    subprocess.run(
        [
            imageio_ffmpeg.get_ffmpeg_exe(),
            "-v",
            "error",
            "-y",
            "-f",
            "lavfi",
            "-i",
            source,
            "-c:v",
            "libx264",
            "-pix_fmt",
            "yuv420p",
            "-g",
            "50",
            str(path),
        ],
        check=True,
    )
    return path


def compare_engines(seconds: int, fps: float, workers: list[int], scenarios: list[str] | None = None) -> int:
    """Print both tables; the number of targets missed."""
    folder = Path(tempfile.mkdtemp(prefix="bench-video-"))
    video, warm_up = make_video(folder / "engines.mp4", seconds), make_video(folder / "warm-up.mp4", 5)
    print(f"\nengine comparison: {seconds}s 640x360 video sampled at {fps} fps; cores: {os.cpu_count()}")
    try:
        return asyncio.run(compare(video, warm_up, fps, workers, scenarios or list(SCENARIOS)))
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=int, default=600, help="length of the 640x360 test video")
    parser.add_argument("--fps", type=float, default=2.0, help="frames sampled per second of video")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--scenario", choices=list(SCENARIOS), action="append", help="default: both")
    args = parser.parse_args()
    sys.exit(compare_engines(args.seconds, args.fps, args.workers, args.scenario))


if __name__ == "__main__":
    main()
