"""What a minute of video costs in model work that does not depend on the machine, and how fast
the soundtrack is transcribed.

Run: ``python -m bench.video_tokens``. Tokens: vLLM (the CPU build) serves the locally built tiny
Qwen2.5-VL with Qwen2.5-VL's own processor at its default pixel limits (the tiny model's context
raised to fit); a minute of 720p video sampled at ``--fps`` (768x432 frames) is described once a
frame as pictures and once a clip as video items, in the same run, and the prompt and completion
tokens vLLM reports are added up per minute of video. Visual tokens are a request's prompt
tokens less those of the same request without its media. Transcription: the soundtrack job sends
windows of a 10-minute soundtrack to a fake ``/v1/audio/transcriptions`` serving C requests at
once with latency L, the frame fan-out's C/L measure (C windows of audio per L seconds at best).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import subprocess
import sys
import tempfile
import time
import wave
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from aiohttp import web
from openai import AsyncOpenAI

from bench.video import CACHE, make_720p
from launch.environment import LaunchError, vllm_python
from launch.profiles import PROFILES, vllm_command
from video.clips import ClipPlan
from video.fanout import Describer
from video.jobs.speech import Soundtrack
from video.probe import probe
from video.sampling import SampledFrame, SamplingOptions, sample
from video.store import Session, SQLiteStore
from video.transcription import Transcriber

ROOT = Path(__file__).resolve().parents[1]
QWEN_MAX_PIXELS = 12_845_056  # Qwen2.5-VL's processor default (16384 patches of 28x28)
TARGET = 0.55  # native clips must cost at most this share of the visual tokens of pictures


def _tiny_model() -> Path:
    model = ROOT / "models" / "tiny-qwen2.5-vl"
    if not (model / "config.json").exists():
        subprocess.run([sys.executable, "-m", "launch.tiny_model", str(model)], check=True, cwd=ROOT)
    return model


def _start_vllm(port: int, log: Path) -> subprocess.Popen[bytes]:
    profile = dataclasses.replace(
        PROFILES["tiny"], max_model_len=4096, max_num_seqs=8, max_pixels=QWEN_MAX_PIXELS,
        limit_mm_per_prompt={"image": 1, "video": 1},
    )  # fmt: skip
    try:
        python = vllm_python(None, os.environ)
    except LaunchError as exc:
        raise SystemExit(str(exc)) from None
    launch = vllm_command(profile, str(_tiny_model()), "vision", python=python, port=port)
    return subprocess.Popen(
        launch.argv, env={**os.environ, **launch.env}, stdout=log.open("wb"), stderr=subprocess.STDOUT
    )


async def _ready(url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    async with httpx.AsyncClient() as http:
        for _ in range(600):
            if process.poll() is not None:
                raise SystemExit(f"vLLM exited; see {log}")
            try:
                if (await http.get(f"{url}/health")).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.5)
    raise SystemExit(f"vLLM did not start; see {log}")


async def _usage(client: AsyncOpenAI, content: list[dict[str, Any]], max_tokens: int) -> tuple[int, int, int]:
    """(prompt tokens, completion tokens, prompt tokens without the media) of one request."""

    async def ask(parts: list[dict[str, Any]], tokens: int) -> Any:
        response = await client.chat.completions.create(
            model="vision",
            messages=[{"role": "user", "content": parts}],  # type: ignore[list-item,misc]
            max_tokens=tokens,
            temperature=0,
        )
        return response.usage

    full = await ask(content, max_tokens)
    text = await ask([p for p in content if p["type"] == "text"], 1)
    return full.prompt_tokens, full.completion_tokens, text.prompt_tokens


async def tokens_per_minute(fps: float, chunk_seconds: float, max_tokens: int) -> dict[str, dict[str, float]]:
    video = make_720p(60)
    frames = list(sample(video, probe(video), SamplingOptions(fps=fps, max_side=768)))
    port = 8000 + os.getpid() % 1000
    log = CACHE / "bench-vllm.log"
    process = _start_vllm(port, log)
    try:
        url = f"http://127.0.0.1:{port}"
        await _ready(url, process, log)
        async with AsyncOpenAI(base_url=f"{url}/v1", api_key="bench", max_retries=0, timeout=600) as client:
            describer = Describer(client, "vision")
            plan = ClipPlan.for_job(chunk_seconds, fps, 60.0)
            clips: dict[int, list[SampledFrame]] = {}
            for frame in frames:
                clips.setdefault(plan.key(frame), []).append(frame)
            requests = {
                "pictures (one a request)": [describer.content([f]) for f in frames],
                f"native clips ({chunk_seconds:g} s)": [
                    describer.content(batch, plan.span(key)) for key, batch in sorted(clips.items())
                ],
            }
            results: dict[str, dict[str, float]] = {}
            for name, contents in requests.items():
                totals = np.zeros(3)
                for content in contents:
                    totals += await _usage(client, content, max_tokens)
                prompt, completion, text = totals
                results[name] = {
                    "requests": len(contents),
                    "prompt": prompt,
                    "visual": prompt - text,
                    "completion": completion,
                }
            return results
    finally:
        process.terminate()
        process.wait(60)


def _soundtrack(path: Path, minutes: int) -> None:
    """Speech-like bursts of noise with pauses, 16 kHz mono."""
    rate, rng = 16_000, np.random.default_rng(7)
    samples = np.zeros(minutes * 60 * rate, np.float32)
    at = 0
    while at < len(samples):
        talk, pause = int(rng.uniform(2, 9) * rate), int(rng.uniform(0.3, 1.5) * rate)
        samples[at : at + talk] = rng.uniform(-0.3, 0.3, min(talk, len(samples) - at))
        at += talk + pause
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes((samples * 32767).astype("<i2").tobytes())


async def transcription_throughput(capacity: int, latency: float, concurrency: int, minutes: int) -> dict[str, float]:
    slots = asyncio.Semaphore(capacity)
    windows: list[float] = []

    async def transcribe(request: web.Request) -> web.Response:
        await request.read()
        async with slots:
            await asyncio.sleep(latency)
        windows.append(time.perf_counter())
        body = {"task": "transcribe", "language": "en", "duration": 30.0, "text": "words", "segments": []}
        return web.json_response(body)

    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_post("/v1/audio/transcriptions", transcribe)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    with tempfile.TemporaryDirectory() as folder:
        audio = Path(folder) / "talk.wav"
        _soundtrack(audio, minutes)
        store = SQLiteStore(Path(folder) / "video.db")
        session = Session("bench", None, "talk.wav", str(audio), "processing", {}, None, minutes * 60.0, 0)
        store.create_session(session)
        async with AsyncOpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="bench", max_retries=0) as client:
            soundtrack = Soundtrack(store, Transcriber(client, "speech"), 30.0, concurrency)
            started = time.perf_counter()
            outcome = await soundtrack.transcribe(session)
            elapsed = time.perf_counter() - started
        stored = store.speech_windows("bench")
        store.close()
    await runner.cleanup()
    assert outcome.failed == 0
    mean_window = sum(w.end_s - w.start_s for w in stored) / len(stored)
    ideal = capacity * mean_window / latency / 60  # audio minutes per second at best
    return {
        "windows": len(stored),
        "mean_window_s": mean_window,
        "audio_min_per_s": minutes / elapsed,
        "ideal": ideal,
    }


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fps", type=float, default=1.0)
    parser.add_argument("--chunk-seconds", type=float, default=10.0)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--skip-tokens", action="store_true", help="transcription only (no vLLM needed)")
    args = parser.parse_args()
    ok = True
    if not args.skip_tokens:
        results = await tokens_per_minute(args.fps, args.chunk_seconds, args.max_tokens)
        print(f"\nGPU work per minute of video ({args.fps:g} frame/s, 768x432 frames, Qwen2.5-VL processor defaults)")
        print(f"{'mode':<26} {'requests':>8} {'prompt tok':>11} {'visual tok':>11} {'completion':>11}")
        for name, row in results.items():
            numbers = f"{row['prompt']:>11.0f} {row['visual']:>11.0f} {row['completion']:>11.0f}"
            print(f"{name:<26} {row['requests']:>8.0f} {numbers}")
        pictures, clips = results.values()
        ratio = clips["visual"] / pictures["visual"]
        print(f"native clips / pictures, visual tokens: {ratio:.2f}x (target <= {TARGET})")
        print(f"native clips / pictures, prompt tokens: {clips['prompt'] / pictures['prompt']:.2f}x")
        ok = ratio <= TARGET
    capacity, latency = 4, 0.5
    speech = await transcription_throughput(capacity, latency, concurrency=4, minutes=10)
    print(f"\nTranscription (fake of capacity C={capacity}, latency L={latency}s, 10 min of audio)")
    print(f"{'windows':>8} {'mean window':>12} {'audio min/s':>12} {'ideal C*w/L':>12} {'efficiency':>11}")
    print(
        f"{speech['windows']:>8.0f} {speech['mean_window_s']:>11.1f}s {speech['audio_min_per_s']:>12.2f}"
        f" {speech['ideal']:>12.2f} {speech['audio_min_per_s'] / speech['ideal']:>10.0%}"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
