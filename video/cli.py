"""The ``video`` command: ``serve``, ``worker``, ``analyze`` a file in-process, ``describe`` an image,
``eval`` accuracy on a QA file and write the generated ``eval-set``."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from openai import AsyncOpenAI
from pydantic import ValidationError

from video.capabilities import VideoSupport
from video.chat import ChatModel, Question, build_context
from video.clips import ClipPlan
from video.fanout import Describer, fan_out, timestamp_label
from video.probe import VideoRejected, probe
from video.retrieval import query_terms
from video.sampling import SampledFrame, SamplingOptions, SamplingReport, expected_frames, sample
from video.settings import VideoSettings
from video.store import FrameRecord, Session, SQLiteStore, StoreUnavailable, Summary
from video.time_ranges import time_range


def _client(args: argparse.Namespace) -> AsyncOpenAI:
    return AsyncOpenAI(base_url=args.gateway_url, api_key=args.api_key or "unused", max_retries=5, timeout=120)


async def _analyze(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    console = Console(stderr=True)
    path = Path(args.file)
    try:
        info = probe(path)
    except VideoRejected as exc:
        print(f"error: {path}: {exc}", file=sys.stderr)
        return 1
    options = SamplingOptions(fps=args.fps, max_frames=args.max_frames, scene_threshold=args.scene_threshold)
    total = expected_frames(info, options)
    client = _client(args)
    describer = Describer(client, args.vision_model)
    clips = None
    if await VideoSupport(client, args.vision_model, args.clip_mode).takes_video():
        clips = ClipPlan.for_job(args.chunk_seconds, args.fps, info.duration_s)
    chat = ChatModel(client, args.chat_model, budget_tokens=6000)
    results: dict[int, FrameRecord] = {}
    report = SamplingReport()
    columns = (TextColumn("describing frames"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=console) as progress:
        task = progress.add_task("frames", total=total)

        async def on_result(
            batch: list[SampledFrame], clip: tuple[float, float] | None, description: str | None, error: str | None
        ) -> None:
            start, end = clip if clip is not None else (None, None)
            for frame in batch:
                results[frame.index] = FrameRecord(frame.index, frame.timestamp_s, description, error, start, end)
            progress.advance(task, len(batch))

        await fan_out(sample(path, info, options, report), describer, on_result, args.concurrency, clips=clips)
    frames = [results[i] for i in sorted(results)]
    printed: tuple[float, float] | None = None
    for frame in frames:
        if frame.clip is not None and frame.clip == printed:
            continue  # a clip's frames share its description: printed once, with its range
        printed = frame.clip
        text = frame.description if frame.description is not None else f"(failed: {frame.error})"
        when = timestamp_label(frame.timestamp_s) if frame.clip is None else "-".join(map(timestamp_label, frame.clip))
        print(f"[{when}] {text}")
    for warning in report.warnings:
        console.print(f"[yellow]warning:[/yellow] {warning}")
    failed = [f for f in frames if f.description is None]
    if failed:
        console.print(f"[yellow]warning:[/yellow] {len(failed)} frame(s) could not be described")
    report_data: dict[str, Any] = {
        "file": str(path),
        "duration_s": info.duration_s,
        "frames": [frame.__dict__ for frame in frames],
        "warnings": report.warnings,
    }
    if args.question and any(f.description for f in frames):
        batch = 20
        summaries: list[Summary] = []
        described = [f for f in frames if f.description]
        for start in range(0, len(described), batch):
            part = described[start : start + batch]
            summaries.append(
                Summary(
                    start // batch, part[0].timestamp_s, part[-1].timestamp_s, len(part), await chat.summarise(part)
                )
            )
        ranked = _rank(frames, args.question, info.duration_s)
        window = time_range(args.question, info.duration_s)
        answer, _ = await chat.answer(
            Question(args.question, f"The video lasts {timestamp_label(info.duration_s)}."),
            lambda budget, tokens: build_context(
                frames, summaries, args.question, budget, batch, tokens, ranked=ranked, window=window
            ),
        )
        print(f"\nQ: {args.question}\nA: {answer}")
        report_data.update(question=args.question, answer=answer, summaries=[s.__dict__ for s in summaries])
    if args.output:
        Path(args.output).write_text(json.dumps(report_data, indent=2))
        console.print(f"report written to {args.output}")
    await client.close()
    return 0 if len(failed) < len(frames) else 1


def _rank(frames: list[FrameRecord], question: str, duration_s: float) -> list[int]:
    """The frames best matching the question (BM25), from an in-memory index of this run's descriptions."""
    store = SQLiteStore(Path(":memory:"))
    try:
        store.create_session(Session("run", None, "", "", "completed", {}, None, duration_s, len(frames)))
        for frame in frames:
            store.save_frame("run", frame.index, frame.timestamp_s, frame.description, frame.error)
        return store.rank_frames("run", query_terms(question), 400)
    finally:
        store.close()


async def _describe(args: argparse.Namespace) -> int:
    from common.errors import ApiError
    from video.image import describe_image_file

    client = _client(args)
    try:
        result = await describe_image_file(
            Path(args.image),
            args.image,
            Describer(client, args.vision_model),
            ChatModel(client, args.chat_model),
            VideoSettings().max_image_pixels,
        )
    except ApiError as exc:
        print(f"error: {args.image}: {exc.message}", file=sys.stderr)
        return 1
    finally:
        await client.close()
    print(f"Description:\n{result['description']}\n\nInsights:\n{result['insights']}")
    return 0


def _settings(args: argparse.Namespace) -> VideoSettings:
    """Settings from the environment and ``.env``, overridden by the flags given."""
    names = (
        "gateway_url", "api_key", "vision_model", "chat_model", "data_dir", "host", "port", "keys_file", "engine",
        "database_url", "temporal_address", "temporal_namespace", "temporal_task_queue",
    )  # fmt: skip
    overrides = {name: getattr(args, name) for name in names if getattr(args, name, None) is not None}
    if getattr(args, "client_key", None):
        overrides["client_keys"] = args.client_key
    return VideoSettings(**overrides)


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from common.log import configure_logging
    from video.api import create_app

    settings = _settings(args)
    configure_logging(settings.log_level)
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_config=None, access_log=False)
    return 0


def _worker(args: argparse.Namespace) -> int:
    from common.log import configure_logging

    settings = _settings(args)
    configure_logging(settings.log_level)
    if args.processes > 1:
        return _worker_processes(args)
    from video.temporal.worker import run_worker

    try:
        asyncio.run(run_worker(settings, args.concurrency, args.metrics_port, args.metrics_host))
    except (OSError, StoreUnavailable) as exc:
        print(f"error: the worker could not start: {exc}", file=sys.stderr)
        return 1
    except RuntimeError as exc:  # the Temporal client's connection errors
        print(f"error: cannot reach Temporal at {settings.temporal_address}: {exc}", file=sys.stderr)
        return 1
    return 0


def _worker_processes(args: argparse.Namespace) -> int:
    """Start ``--processes`` single-process workers (metrics on consecutive ports); SIGTERM and
    SIGINT are passed on, so each drains; the exit status is the worst of theirs."""
    import signal
    import subprocess
    import time

    argv: list[str] = args.argv  # the same flags, one process each
    children: list[subprocess.Popen[bytes]] = []
    for number in range(args.processes):
        child = _without_option(_without_option(argv, "--processes"), "--metrics-port")
        child += ["--processes", "1"]
        if args.metrics_port is not None:
            child += ["--metrics-port", str(args.metrics_port + number)]
        children.append(subprocess.Popen([sys.executable, "-m", "video", *child]))  # noqa: S603 (our own flags)

    def forward(signum: int, _: object) -> None:
        for process in children:
            if process.poll() is None:
                process.send_signal(signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    # One process failing stops the others, so a supervisor sees the failure instead of fewer workers.
    while any(process.poll() is None for process in children):
        if any(process.returncode not in (None, 0) for process in children):
            forward(signal.SIGTERM, None)
            break
        time.sleep(0.2)
    return max(process.wait() for process in children)


def _without_option(argv: list[str], name: str) -> list[str]:
    out: list[str] = []
    skip = False
    for item in argv:
        if skip:
            skip = False
        elif item == name:
            skip = True
        elif not item.startswith(name + "="):
            out.append(item)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``video`` console script."""
    parser = argparse.ArgumentParser(prog="video", description="Video understanding through the gateway")
    commands = parser.add_subparsers(dest="command", required=True)

    def gateway_options(command: argparse.ArgumentParser, required: bool) -> None:
        command.add_argument("--gateway-url", required=required, help="the gateway's OpenAI base URL, ending in /v1")
        command.add_argument("--api-key", help="the gateway key of this service")
        command.add_argument("--vision-model", default=None if not required else "vision")
        command.add_argument("--chat-model", default=None if not required else "chat")

    def job_options(command: argparse.ArgumentParser) -> None:
        command.add_argument("--data-dir", type=Path, help="uploaded videos (shared by every process when scaled out)")
        command.add_argument("--engine", choices=("local", "temporal"), help="where jobs run (default: local)")
        command.add_argument("--database-url", help="postgresql://... to share the store (default: SQLite)")
        command.add_argument("--temporal-address", help="host:port of Temporal's frontend")
        command.add_argument("--temporal-namespace")
        command.add_argument("--temporal-task-queue")

    serve = commands.add_parser("serve", help="run the HTTP service")
    gateway_options(serve, required=False)
    job_options(serve)
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    serve.add_argument("--client-key", action="append", help="a key clients must send (repeatable)")
    serve.add_argument("--keys-file", type=Path, help="client keys, one a line")

    worker = commands.add_parser("worker", help="run Temporal workers that describe the frames of queued videos")
    gateway_options(worker, required=False)
    job_options(worker)
    worker.add_argument("--concurrency", type=int, default=4, help="activities in flight per process (default 4)")
    worker.add_argument("--processes", type=int, default=1, help="worker processes to start (default 1)")
    worker.add_argument("--metrics-port", type=int, help="Prometheus metrics on this port (+1 per extra process)")
    worker.add_argument("--metrics-host", default="127.0.0.1", help="address the metrics port binds")

    analyze = commands.add_parser("analyze", help="describe a video file and answer a question, in-process")
    analyze.add_argument("file")
    gateway_options(analyze, required=True)
    analyze.add_argument("--fps", type=float, default=1.0)
    analyze.add_argument("--max-frames", type=int)
    analyze.add_argument("--scene-threshold", type=float)
    analyze.add_argument("--concurrency", type=int, default=16)
    analyze.add_argument(
        "--clip-mode",
        choices=("auto", "video", "images"),
        default="auto",
        help="send clips as video items (auto: when the gateway says the vision group takes video)",
    )
    analyze.add_argument("--chunk-seconds", type=float, default=10.0, help="the length of a clip (default 10)")
    analyze.add_argument("--question")
    analyze.add_argument("--output", help="write a JSON report here")

    evaluate = commands.add_parser(
        "eval", help="accuracy on a multiple-choice QA file (Video-MME, EgoSchema layouts) against a running service"
    )
    evaluate.add_argument("qa_file", type=Path, help="CSV or JSON Lines: video, question, options, answer[, task_type]")
    evaluate.add_argument("--url", default="http://127.0.0.1:8080", help="the video service (default: local)")
    evaluate.add_argument("--api-key", help="a client key of the video service")
    evaluate.add_argument("--videos", type=Path, help="where the videos are (default: beside the QA file)")
    evaluate.add_argument("--fps", type=float, default=1.0, help="frames a second sampled (default 1)")
    evaluate.add_argument("--concurrency", type=int, default=4, help="uploads and questions at once (default 4)")
    evaluate.add_argument(
        "--look", choices=("both", "on", "off"), default="both", help="ask looking again, not, or both"
    )
    evaluate.add_argument("--limit", type=int, help="the first N questions only")
    evaluate.add_argument("--output", type=Path, help="write every answer as JSON here")

    eval_set = commands.add_parser("eval-set", help="write the generated QA set (synthetic videos, known answers)")
    eval_set.add_argument("folder", type=Path)
    eval_set.add_argument("--videos", type=int, default=6, help="how many videos (default 6; 4-5 questions each)")
    eval_set.add_argument("--seed", type=int, default=0)

    describe = commands.add_parser("describe", help="describe one image and list insights")
    describe.add_argument("image")
    gateway_options(describe, required=True)

    args = parser.parse_args(argv)
    args.argv = list(argv) if argv is not None else sys.argv[1:]
    try:
        return _command(parser, args)
    except ValidationError as exc:
        first = exc.errors()[0]
        name = "VIDEO_" + "_".join(str(p) for p in first["loc"]).upper()
        print(f"error: {name}: {first['msg']}", file=sys.stderr)
        return 2


def _command(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    if args.command == "serve":
        return _serve(args)
    if args.command == "worker":
        if args.concurrency < 1 or args.processes < 1:
            parser.error("--concurrency and --processes must be at least 1")
        code = _worker(args)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)  # the Temporal SDK can crash at interpreter exit (sdk-python #300)
    if args.command == "analyze":
        if args.fps <= 0 or args.concurrency < 1:
            parser.error("--fps must be positive and --concurrency at least 1")
        return asyncio.run(_analyze(args))
    if args.command == "eval":
        if args.fps <= 0 or args.concurrency < 1 or (args.limit is not None and args.limit < 1):
            parser.error("--fps must be positive, --concurrency and --limit at least 1")
        return asyncio.run(_evaluate(args))
    if args.command == "eval-set":
        if args.videos < 1:
            parser.error("--videos must be at least 1")
        from video.eval_set import generate

        qa = generate(args.folder, args.videos, args.seed)
        print(f"wrote {args.videos} video(s) and {qa}; run: video eval {qa}")
        return 0
    return asyncio.run(_describe(args))


async def _evaluate(args: argparse.Namespace) -> int:
    import httpx
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from video.evaluation import EvalError, Runner, as_json, load, table

    console = Console(stderr=True)

    try:
        items = load(args.qa_file, args.videos)
    except EvalError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    items = items[: args.limit] if args.limit else items
    modes = {"both": (True, False), "on": (True,), "off": (False,)}[args.look]
    videos = len({item.video for item in items})
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=console) as progress:
        tasks = {
            "video": progress.add_task("videos processed", total=videos),
            "question": progress.add_task("questions answered", total=len(items) * len(modes)),
        }
        runner = Runner(
            args.url,
            args.api_key,
            fps=args.fps,
            concurrency=args.concurrency,
            progress=lambda kind, n: progress.advance(tasks[kind], n),
        )
        try:
            report = await runner.run(items, modes)
        except httpx.HTTPError as exc:
            print(f"error: the video service at {args.url} cannot be reached ({type(exc).__name__})", file=sys.stderr)
            return 1
        finally:
            await runner.close()
    print(table(report))
    if args.output:
        args.output.write_bytes(as_json(report))
        console.print(f"every answer written to {args.output}")
    answered = [o for o in report.outcomes if o.error is None]
    return 0 if answered else 1
