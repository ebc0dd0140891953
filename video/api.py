"""The video service's HTTP API: ``create_app(settings)``; handlers stay thin."""

from __future__ import annotations

import asyncio
import logging
import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import Depends, FastAPI, Query, Request
from starlette.responses import FileResponse, Response, StreamingResponse
from starlette.staticfiles import StaticFiles

from common.auth import bearer_token, digest, find_key
from common.errors import (
    AuthenticationFailed,
    InvalidRequest,
    NotFound,
    ServiceUnavailable,
    error_response,
    install_error_handlers,
)
from video import actions, openai_api
from video.capabilities import VideoSupport
from video.components import Components, build_components
from video.fanout import timestamp_label
from video.jobs import EventHub, JobEngine, LocalEngine
from video.openai_api import CompletionRequest
from video.protocol import (
    ChatRequest,
    ChatResponse,
    DeleteResponse,
    FramesResponse,
    Health,
    ImageResponse,
    Progress,
    SearchResponse,
    SessionListItem,
    SummariesResponse,
    TranscriptResponse,
    UploadResponse,
)
from video.retrieval import Retriever
from video.settings import VideoSettings
from video.state import ServiceState, session_or_404
from video.store import Store, StoreUnavailable, open_store

log = logging.getLogger("video")
STATIC_DIR = Path(__file__).parent / "static"
STORE_RETRY_AFTER_S = 5


async def get_state(request: Request) -> ServiceState:
    state: ServiceState = request.state.video
    return state


StateDep = Annotated[ServiceState, Depends(get_state)]


async def get_owner(request: Request, state: StateDep) -> str | None:
    """The caller's key digest (sessions belong to it), or None when the service is open."""
    if not state.key_digests:
        return None
    found = find_key(bearer_token(request.headers.get("authorization")), state.key_digests)
    if found is None:
        raise AuthenticationFailed("invalid API key")
    return found.hex()


OwnerDep = Annotated[str | None, Depends(get_owner)]


def create_app(settings: VideoSettings) -> FastAPI:
    """Build the service; jobs left running by a previous process resume at start."""

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[dict[str, Any]]:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        (settings.data_dir / "videos").mkdir(exist_ok=True)
        store = open_store(settings.database_url, settings.data_dir)
        parts = build_components(settings, store)
        jobs = await _engine(settings, store, parts)
        keys = settings.all_client_keys()
        if not keys:
            log.warning("no client keys configured: the video service is open to anyone who can reach it")
        state = ServiceState(
            settings,
            store,
            jobs,
            parts.describer,
            parts.chat,
            [digest(k) for k in keys],
            Retriever(store, parts.embedder),
            VideoSupport(parts.client, settings.vision_model, settings.clip_mode),
            parts.looker,
        )
        resumed = await jobs.resume_all()
        if resumed:
            log.info("resumed %d job(s)", resumed)
        try:
            yield {"video": state}
        finally:
            await jobs.shutdown()
            await parts.close()
            store.close()

    app = FastAPI(title="Video analysis", summary="Timestamped frame descriptions you can chat with", lifespan=lifespan)
    _add_error_handlers(app)

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", media_type="text/html")

    @app.get("/health", tags=["operations"], response_model=Health)
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/metrics", tags=["operations"])
    async def metrics(state: StateDep) -> Response:
        return Response(state.jobs.metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

    # Handlers that only read the store are plain functions: FastAPI runs them in its thread pool,
    # so a slow or busy database never holds up the event loop (the others send their store
    # calls to threads themselves).
    @app.post("/upload", tags=["video"], response_model=UploadResponse)
    async def upload(request: Request, state: StateDep, owner: OwnerDep) -> dict[str, Any]:
        return await actions.upload(request, state, owner)

    @app.get("/status/{session_id}", tags=["video"], response_model=Progress)
    def status(session_id: str, state: StateDep, owner: OwnerDep) -> dict[str, Any]:
        session_or_404(state, session_id, owner)
        return state.jobs.progress(session_id)

    @app.get("/sessions", tags=["video"], response_model=list[SessionListItem])
    def sessions(state: StateDep, owner: OwnerDep) -> list[dict[str, Any]]:
        return [
            {
                **state.jobs.progress(s.id),
                "filename": s.filename,
                "created_at": s.created_at,
                "duration_s": s.duration_s,
            }
            for s in state.store.list_sessions(owner)
        ]

    @app.get("/sessions/{session_id}/frames", tags=["video"], response_model=FramesResponse)
    def frames(session_id: str, state: StateDep, owner: OwnerDep) -> dict[str, Any]:
        session_or_404(state, session_id, owner)
        return {
            "session_id": session_id,
            "frames": [
                {
                    "index": f.index,
                    "timestamp_s": f.timestamp_s,
                    "timestamp": timestamp_label(f.timestamp_s),
                    "description": f.description,
                    "error": f.error,
                    "thumbnail_url": f"/sessions/{session_id}/frames/{f.index}.jpg",
                    "clip_start_s": f.clip_start_s,
                    "clip_end_s": f.clip_end_s,
                }
                for f in state.store.frames(session_id)
            ],
        }

    @app.get(
        "/sessions/{session_id}/transcript",
        tags=["video"],
        response_model=None,
        responses={200: {"model": TranscriptResponse, "content": {"text/vtt": {}, "application/x-subrip": {}}}},
    )
    def transcript(
        session_id: str, state: StateDep, owner: OwnerDep, format: Literal["json", "vtt", "srt"] = "json"
    ) -> Response:
        """What was said, with times: JSON segments, or subtitles (``?format=vtt`` or ``srt``)."""
        return actions.transcript(state, session_or_404(state, session_id, owner), format)

    @app.get("/sessions/{session_id}/frames/{index}.jpg", tags=["video"])
    def thumbnail(session_id: str, index: int, state: StateDep, owner: OwnerDep) -> Response:
        session_or_404(state, session_id, owner)
        data = state.store.thumbnail(session_id, index)
        if data is None:
            raise NotFound(f"no thumbnail for frame {index}", code="frame_not_found")
        return Response(data, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=86400"})

    @app.get("/sessions/{session_id}/events", tags=["video"])
    async def events(session_id: str, state: StateDep, owner: OwnerDep) -> StreamingResponse:
        await asyncio.to_thread(session_or_404, state, session_id, owner)
        return StreamingResponse(actions.event_stream(state, session_id), media_type="text/event-stream")

    @app.get("/summaries/{session_id}", tags=["video"], response_model=SummariesResponse)
    def summaries(session_id: str, state: StateDep, owner: OwnerDep) -> dict[str, Any]:
        session_or_404(state, session_id, owner)
        return {
            "session_id": session_id,
            "summaries": [
                {
                    "batch_index": s.batch_index,
                    "start_s": s.start_s,
                    "end_s": s.end_s,
                    "time_range": f"{timestamp_label(s.start_s)}-{timestamp_label(s.end_s)}",
                    "frame_count": s.frame_count,
                    "summary": s.summary,
                }
                for s in state.store.summaries(session_id)
            ],
            "overview": [
                {
                    "level": s.level,
                    "index": s.batch_index,
                    "start_s": s.start_s,
                    "end_s": s.end_s,
                    "time_range": f"{timestamp_label(s.start_s)}-{timestamp_label(s.end_s)}",
                    "frame_count": s.frame_count,
                    "summary": s.summary,
                }
                for s in state.store.overviews(session_id)
            ],
        }

    @app.get("/search", tags=["video"], response_model=SearchResponse)
    async def search(
        state: StateDep, owner: OwnerDep, q: Annotated[str, Query(min_length=1, max_length=500)], limit: int = 20
    ) -> dict[str, Any]:
        if not 1 <= limit <= 100:
            raise InvalidRequest("'limit' must be between 1 and 100", param="limit")
        return await actions.search(state, owner, q, limit)

    @app.post(
        "/chat",
        tags=["video"],
        response_model=None,
        responses={200: {"model": ChatResponse, "content": {"text/event-stream": {}}}},
    )
    async def chat(body: ChatRequest, state: StateDep, owner: OwnerDep) -> Response:
        """An answer about the session's video; ``stream: true`` sends it as it is written (SSE)."""
        return await actions.chat(body, state, owner)

    @app.post("/v1/chat/completions", tags=["openai"], response_model=None)
    async def chat_completions(body: CompletionRequest, state: StateDep, owner: OwnerDep) -> Response:
        """Chat about the video of session ``<id>`` as the model ``video/<id>`` (OpenAI's shapes)."""
        return await openai_api.completions(body, state, owner)

    @app.get("/v1/models", tags=["openai"])
    async def models(state: StateDep, owner: OwnerDep) -> dict[str, Any]:
        """The caller's sessions, as the models ``video/<session_id>``."""
        return await openai_api.models(state, owner)

    @app.delete("/sessions/{session_id}", tags=["video"], response_model=DeleteResponse)
    async def delete(session_id: str, state: StateDep, owner: OwnerDep) -> dict[str, Any]:
        session = await asyncio.to_thread(session_or_404, state, session_id, owner)
        await state.jobs.cancel(session_id)
        await asyncio.to_thread(state.store.delete_session, session_id)
        await asyncio.to_thread(shutil.rmtree, Path(session.video_path).parent, ignore_errors=True)
        return {"session_id": session_id, "deleted": True}

    @app.post("/image", tags=["video"], response_model=ImageResponse)
    async def image(request: Request, state: StateDep, owner: OwnerDep) -> dict[str, Any]:
        return await actions.image(request, state)

    return app


async def _engine(settings: VideoSettings, store: Store, parts: Components) -> JobEngine:
    """The configured engine: in this process (``local``) or on Temporal workers (``temporal``)."""
    if settings.engine == "temporal":
        from video.temporal.engine import TemporalEngine

        return await TemporalEngine.connect(settings, store)
    return LocalEngine(
        store, parts.describer, parts.summariser, EventHub(), parts.job_settings, soundtrack=parts.soundtrack
    )


def _add_error_handlers(app: FastAPI) -> None:
    async def on_store_unavailable(request: Request, exc: Exception) -> Response:
        # A database restart or outage: the client may retry; the job itself resumes on its own.
        return error_response(
            ServiceUnavailable(f"{exc}; try again shortly", code="store_unavailable", retry_after=STORE_RETRY_AFTER_S)
        )

    install_error_handlers(app, lambda _, error: error_response(error), log)
    app.add_exception_handler(StoreUnavailable, on_store_unavailable)
