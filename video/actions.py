"""What the video service's endpoints do: receive uploads, answer questions, describe
images, stream progress. ``video.api`` maps HTTP onto these."""

from __future__ import annotations

import asyncio
import logging
import shutil
import uuid
from collections.abc import AsyncIterator
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from common.errors import ApiError, InvalidRequest
from video import answering
from video.answering import Ask
from video.audio import audio_only, probe_audio
from video.chat import Context, Turn
from video.clips import ClipPlan
from video.fanout import timestamp_label
from video.probe import VideoRejected, probe
from video.protocol import ChatRequest
from video.sampling import SamplingOptions, expected_frames
from video.state import ServiceState
from video.store import Moment, Session, SpokenMoment
from video.transcription import joined, srt, webvtt
from video.upload import receive_upload, safe_name

log = logging.getLogger("video")


def form_number(fields: dict[str, str], name: str, default: float | None, low: float, high: float) -> float | None:
    raw = fields.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise InvalidRequest(f"'{name}' must be a number", param=name) from None
    if not low <= value <= high:
        raise InvalidRequest(f"'{name}' must be between {low:g} and {high:g}", param=name)
    return value


async def upload(request: Request, state: ServiceState, owner: str | None) -> dict[str, Any]:
    settings = state.settings
    session_id = str(uuid.uuid4())
    folder = settings.data_dir / "videos" / session_id
    folder.mkdir(parents=True)
    try:
        received = await receive_upload(request, folder / "upload", settings.max_upload_bytes)
        fields = received.fields
        fps = form_number(fields, "fps", settings.default_fps, 0.01, 30) or settings.default_fps
        max_frames = form_number(fields, "max_frames", None, 1, settings.max_frames_limit)
        scene = form_number(fields, "scene_threshold", None, 0.5, 255)
        per_request = form_number(fields, "frames_per_request", settings.frames_per_request, 1, 16)
        chunk_seconds = form_number(fields, "chunk_seconds", settings.chunk_seconds, 1, 300) or settings.chunk_seconds
        path = folder / safe_name(received.filename)
        (folder / "upload").rename(path)
        try:
            info = await asyncio.to_thread(
                probe, path, settings.max_upload_bytes, settings.max_duration_s, settings.max_video_pixels
            )
        except VideoRejected as exc:
            reason = str(exc)
            if await asyncio.to_thread(audio_only, path):
                reason = (
                    "the file has a soundtrack but no video; audio-only files are not analysed here "
                    "(the gateway's /v1/audio/transcriptions transcribes them)"
                )
            raise InvalidRequest(
                f"{safe_name(received.filename)}: {reason}", param="file", code="invalid_video"
            ) from None
        track = await asyncio.to_thread(probe_audio, path)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    options = SamplingOptions(
        fps=fps,
        max_frames=int(max_frames) if max_frames else None,
        max_side=settings.max_side,
        jpeg_quality=settings.jpeg_quality,
        scene_threshold=scene,
    )
    total = expected_frames(info, options)
    clip_mode = "video" if await state.video_support.takes_video() else "images"
    clip_seconds = round(ClipPlan.for_job(chunk_seconds, fps, info.duration_s, settings.max_clip_frames).seconds, 2)
    stored_options = {
        **options.__dict__,
        "frames_per_request": int(per_request or 1),
        "clip_mode": clip_mode,
        "chunk_seconds": chunk_seconds,
        "max_clip_frames": settings.max_clip_frames,
    }
    prompt = fields.get("prompt", "").strip() or None
    audio = "none" if track is None else "transcribing" if settings.transcription_model else "not transcribed"
    session = Session(
        session_id,
        owner,
        received.filename,
        str(path),
        "queued",
        stored_options,
        prompt,
        info.duration_s,
        total,
        audio=audio,
    )
    await asyncio.to_thread(state.store.create_session, session)
    await state.jobs.start(session_id)
    return {
        "session_id": session_id,
        "message": f"processing {received.filename}: {total} frames from {info.duration_s:.1f}s of video"
        + (f", described in clips of {clip_seconds:g}s" if clip_mode == "video" else "")
        + {"none": ", no soundtrack", "not transcribed": ", soundtrack not transcribed"}.get(
            audio, ", soundtrack transcribed"
        ),
        "total_frames": total,
        "workflow_id": f"video-analysis-{session_id}",
        "duration_s": round(info.duration_s, 3),
    }


async def chat(body: ChatRequest, state: ServiceState, owner: str | None) -> Response:
    """``POST /chat``: the answer as JSON, or (``stream``) as Server-Sent Events."""
    ask = Ask(
        body.session_id,
        body.question,
        tuple(Turn(t.role, t.content) for t in body.history),
        body.look,
    )
    prepared = await answering.prepare(state, ask, owner)
    if not body.stream:
        return Response(orjson.dumps(await answering.answer(state, prepared)), media_type="application/json")
    context, pieces = await answering.answer_stream(state, prepared)
    return StreamingResponse(_chat_events(state, prepared, context, pieces), media_type="text/event-stream")


async def _chat_events(
    state: ServiceState, prepared: answering.Prepared, context: Context, pieces: AsyncIterator[str]
) -> AsyncIterator[bytes]:
    """``answer.delta`` events as the answer is written, then ``answer.done`` with the fields of the
    JSON response; ``error`` (OpenAI's envelope) when it fails midway."""
    async for item in answering.written(state, prepared, context, pieces):
        if isinstance(item, str):
            yield b"event: answer.delta\ndata: " + orjson.dumps({"text": item}) + b"\n\n"
        elif isinstance(item, ApiError):
            yield b"event: error\ndata: " + orjson.dumps(item.envelope()) + b"\n\n"
        else:
            yield b"event: answer.done\ndata: " + orjson.dumps(item) + b"\n\n"


async def image(request: Request, state: ServiceState) -> dict[str, Any]:
    from video.image import describe_image_file

    folder = state.settings.data_dir / "images"
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / uuid.uuid4().hex
    try:
        received = await receive_upload(request, target, 50 * 1024 * 1024)
        return await describe_image_file(
            target, received.filename, state.describer, state.chat, state.settings.max_image_pixels
        )
    finally:
        target.unlink(missing_ok=True)


async def event_stream(state: ServiceState, session_id: str) -> AsyncIterator[bytes]:
    queue = state.jobs.events.subscribe(session_id)
    try:
        current = await asyncio.to_thread(state.jobs.progress, session_id)
        yield b"event: status\ndata: " + orjson.dumps(current) + b"\n\n"
        if current.get("status") in ("completed", "failed"):
            return
        while True:
            try:
                event = await asyncio.wait_for(queue.get(), 15)
            except TimeoutError:
                yield b": keep-alive\n\n"
                continue
            yield b"event: " + event["event"].encode() + b"\ndata: " + orjson.dumps(event) + b"\n\n"
            if event["event"] in ("completed", "failed"):
                return
    finally:
        state.jobs.events.unsubscribe(session_id, queue)


async def search(state: ServiceState, owner: str | None, query: str, limit: int) -> dict[str, Any]:
    """The moments across the caller's sessions that best match ``query``: seen and said."""
    sessions = [s.id for s in await asyncio.to_thread(state.store.list_sessions, owner)]
    moments = await state.retriever.search(owner, sessions, query, limit)
    return {"query": query, "results": [await _result(state, m) for m in moments]}


async def _result(state: ServiceState, moment: Moment | SpokenMoment) -> dict[str, Any]:
    if isinstance(moment, SpokenMoment):
        index = await asyncio.to_thread(state.store.frame_at_time, moment.session_id, moment.start_s)
        frame = index if index is not None else 0
        start, text, kind, end = moment.start_s, moment.text, "speech", moment.end_s
    else:
        frame, start, text, kind, end = moment.index, moment.timestamp_s, moment.description, "vision", None
    return {
        "session_id": moment.session_id,
        "filename": moment.filename,
        "index": frame,
        "timestamp_s": start,
        "timestamp": timestamp_label(start),
        "description": text,
        "thumbnail_url": f"/sessions/{moment.session_id}/frames/{frame}.jpg",
        "kind": kind,
        "end_s": end,
    }


def transcript(state: ServiceState, session: Session, kind: str) -> Response:
    """The session's transcript as JSON, WebVTT or SubRip (blocking: a plain handler calls it)."""
    segments = joined(state.store.speech(session.id))
    if kind == "vtt":
        return Response(webvtt(segments), media_type="text/vtt; charset=utf-8")
    if kind == "srt":
        return Response(srt(segments), media_type="application/x-subrip; charset=utf-8")
    failed = [w for w in state.store.speech_windows(session.id) if w.error is not None]
    body = {
        "session_id": session.id,
        "audio": session.audio,
        "segments": [
            {"start_s": s.start_s, "end_s": s.end_s, "start": timestamp_label(s.start_s), "text": s.text}
            for s in segments
        ],
        "failed": [{"start_s": w.start_s, "end_s": w.end_s, "error": w.error} for w in failed],
    }
    return Response(orjson.dumps(body), media_type="application/json")
