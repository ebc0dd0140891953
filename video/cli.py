"""The ``video`` command: ``serve``, ``analyze`` a file in-process, ``describe`` an image."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from openai import AsyncOpenAI

from video.chat import ChatModel, build_context
from video.fanout import Describer, fan_out, timestamp_label
from video.probe import VideoRejected, probe
from video.retrieval import query_terms
from video.sampling import SampledFrame, SamplingOptions, SamplingReport, expected_frames, sample
from video.settings import VideoSettings
from video.store import FrameRecord, Session, SQLiteStore, Summary
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
    chat = ChatModel(client, args.chat_model, budget_tokens=6000)
    results: dict[int, FrameRecord] = {}
    report = SamplingReport()
    columns = (TextColumn("describing frames"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=console) as progress:
        task = progress.add_task("frames", total=total)

        async def on_result(batch: list[SampledFrame], description: str | None, error: str | None) -> None:
            for frame in batch:
                results[frame.index] = FrameRecord(frame.index, frame.timestamp_s, description, error)
            progress.advance(task, len(batch))

        await fan_out(sample(path, info, options, report), describer, on_result, args.concurrency)
    frames = [results[i] for i in sorted(results)]
    for frame in frames:
        text = frame.description if frame.description is not None else f"(failed: {frame.error})"
        print(f"[{timestamp_label(frame.timestamp_s)}] {text}")
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
            args.question,
            f"The video lasts {timestamp_label(info.duration_s)}.",
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


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from common.log import configure_logging
    from video.api import create_app

    overrides = {
        k: v
        for k, v in {
            "gateway_url": args.gateway_url,
            "api_key": args.api_key,
            "vision_model": args.vision_model,
            "chat_model": args.chat_model,
            "data_dir": args.data_dir,
            "host": args.host,
            "port": args.port,
            "keys_file": args.keys_file,
        }.items()
        if v is not None
    }
    if args.client_key:
        overrides["client_keys"] = args.client_key
    settings = VideoSettings(**overrides)
    configure_logging(settings.log_level)
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_config=None, access_log=False)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``video`` console script."""
    parser = argparse.ArgumentParser(prog="video", description="Video understanding through the gateway")
    commands = parser.add_subparsers(dest="command", required=True)

    def gateway_options(command: argparse.ArgumentParser, required: bool) -> None:
        command.add_argument("--gateway-url", required=required, help="the gateway's OpenAI base URL, ending in /v1")
        command.add_argument("--api-key", help="the gateway key of this service")
        command.add_argument("--vision-model", default=None if not required else "vision")
        command.add_argument("--chat-model", default=None if not required else "chat")

    serve = commands.add_parser("serve", help="run the HTTP service")
    gateway_options(serve, required=False)
    serve.add_argument("--data-dir", type=Path)
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    serve.add_argument("--client-key", action="append", help="a key clients must send (repeatable)")
    serve.add_argument("--keys-file", type=Path, help="client keys, one a line")

    analyze = commands.add_parser("analyze", help="describe a video file and answer a question, in-process")
    analyze.add_argument("file")
    gateway_options(analyze, required=True)
    analyze.add_argument("--fps", type=float, default=1.0)
    analyze.add_argument("--max-frames", type=int)
    analyze.add_argument("--scene-threshold", type=float)
    analyze.add_argument("--concurrency", type=int, default=16)
    analyze.add_argument("--question")
    analyze.add_argument("--output", help="write a JSON report here")

    describe = commands.add_parser("describe", help="describe one image and list insights")
    describe.add_argument("image")
    gateway_options(describe, required=True)

    args = parser.parse_args(argv)
    if args.command == "serve":
        return _serve(args)
    if args.command == "analyze":
        if args.fps <= 0 or args.concurrency < 1:
            parser.error("--fps must be positive and --concurrency at least 1")
        return asyncio.run(_analyze(args))
    return asyncio.run(_describe(args))
