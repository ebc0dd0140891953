"""What the video service's handlers share: its state, request shapes, session lookup."""

from __future__ import annotations

from dataclasses import dataclass

from common.errors import NotFound
from video.capabilities import VideoSupport
from video.chat import ChatModel
from video.fanout import Describer
from video.jobs import JobEngine
from video.look import Looker
from video.retrieval import Retriever
from video.settings import VideoSettings
from video.store import Session, Store


@dataclass
class ServiceState:
    settings: VideoSettings
    store: Store
    jobs: JobEngine
    describer: Describer
    chat: ChatModel
    key_digests: list[bytes]
    retriever: Retriever
    video_support: VideoSupport
    looker: Looker


def session_or_404(state: ServiceState, session_id: str, owner: str | None) -> Session:
    session = state.store.get_session(session_id)
    if session is None or session.owner != owner:
        raise NotFound(f"no session '{session_id}'", param="session_id", code="session_not_found")
    return session
