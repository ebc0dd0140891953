"""What the API and the workers build the same way from settings: the gateway client, the
describer, the chat model, the embedder, the summariser and the soundtrack's transcriber."""

from __future__ import annotations

from dataclasses import dataclass

from openai import AsyncOpenAI

from video.chat import ChatModel
from video.fanout import Describer
from video.jobs import JobSettings, Summariser
from video.jobs.speech import Soundtrack
from video.look import Looker
from video.retrieval import Embedder
from video.settings import VideoSettings
from video.store import Store
from video.transcription import Transcriber


@dataclass
class Components:
    client: AsyncOpenAI
    describer: Describer
    chat: ChatModel
    embedder: Embedder | None
    summariser: Summariser
    job_settings: JobSettings
    looker: Looker  # looks again at the moments a question is about (video.look)
    soundtrack: Soundtrack | None = None  # when a transcription group is configured

    async def close(self) -> None:
        await self.client.close()


def build_components(settings: VideoSettings, store: Store) -> Components:
    client = AsyncOpenAI(
        base_url=settings.gateway_url,
        api_key=settings.api_key,
        max_retries=settings.max_retries,
        timeout=settings.request_timeout_s,
    )
    chat = ChatModel(
        client,
        settings.chat_model,
        max_tokens=settings.answer_max_tokens,
        context_tokens=settings.chat_context_tokens,
        budget_tokens=settings.context_token_budget,
    )
    embedder = Embedder(client, settings.embedding_model) if settings.embedding_model else None
    job_settings = JobSettings(
        max_concurrency=settings.max_concurrency,
        max_jobs=settings.max_jobs,
        max_video_pixels=settings.max_video_pixels,
        frames_per_request=settings.frames_per_request,
        summary_batch_size=settings.summary_batch_size,
        max_video_bytes=settings.max_upload_bytes,
        max_duration_s=settings.max_duration_s,
    )
    soundtrack = None
    if settings.transcription_model:
        transcriber = Transcriber(client, settings.transcription_model)
        soundtrack = Soundtrack(store, transcriber, settings.transcription_window_s, settings.transcription_concurrency)
    return Components(
        client,
        Describer(client, settings.vision_model, max_tokens=settings.description_max_tokens),
        chat,
        embedder,
        Summariser(store, chat, settings.summary_batch_size, embedder),
        job_settings,
        Looker(client, settings.vision_model, settings.look_max_tokens),
        soundtrack,
    )
