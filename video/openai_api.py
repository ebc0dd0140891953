"""Chat with a video from any OpenAI client: ``POST /v1/chat/completions`` where ``model`` is
``video/<session_id>``, and ``GET /v1/models`` listing the caller's sessions as models.

The last user message is the question and the earlier user and assistant messages are the
conversation (system messages are the service's own and are not taken from clients). Only the
fields below are read; ``look`` (``extra_body``) turns looking again on or off. The answer's cited
moments are in the message text and, with everything ``POST /chat`` returns, in a ``video`` field
(the last chunk's, when streamed).
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from starlette.responses import Response, StreamingResponse

from common.errors import ApiError, InvalidRequest, NotFound
from video import answering
from video.answering import Ask, Prepared
from video.chat import Context, Turn
from video.fanout import timestamp_label
from video.protocol import MAX_QUESTION_CHARS, MAX_TURN_CHARS
from video.state import ServiceState

log = logging.getLogger("video.openai")
MODEL_PREFIX = "video/"
_UNSUPPORTED = ("tools", "functions", "tool_choice", "response_format", "audio", "modalities", "prediction")


class TextPart(BaseModel):
    type: Literal["text"]
    text: str


class ChatMessage(BaseModel):
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[TextPart] | None = None

    def text(self) -> str:
        if isinstance(self.content, list):
            return "\n".join(part.text for part in self.content)
        return self.content or ""

    @model_validator(mode="after")
    def _bounded(self) -> ChatMessage:
        if len(self.text()) > MAX_TURN_CHARS:
            raise ValueError(f"a message may hold at most {MAX_TURN_CHARS} characters")
        return self


class StreamOptions(BaseModel):
    include_usage: bool = False


class CompletionRequest(BaseModel):
    """The fields read from a chat completion request; the sampling fields OpenAI clients send
    (temperature, top_p, ...) are accepted and not used: the service chooses how it answers."""

    model_config = ConfigDict(extra="allow")

    model: str
    messages: list[ChatMessage] = Field(min_length=1, max_length=400)
    stream: bool = False
    stream_options: StreamOptions | None = None
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    n: int = Field(default=1, ge=1, le=1)
    look: bool | None = None

    @field_validator("messages")
    @classmethod
    def _ends_with_a_question(cls, messages: list[ChatMessage]) -> list[ChatMessage]:
        if messages[-1].role != "user" or not messages[-1].text().strip():
            raise ValueError("the last message must be the user's question")
        if len(messages[-1].text()) > MAX_QUESTION_CHARS:
            raise ValueError(f"the question is longer than {MAX_QUESTION_CHARS} characters")
        return messages


def session_of(model: str) -> str:
    """The session a ``video/<session_id>`` model names; 404 in OpenAI's envelope otherwise."""
    session_id = model.removeprefix(MODEL_PREFIX)
    if not model.startswith(MODEL_PREFIX) or not session_id:
        raise NotFound(
            f"model '{model}' is not served here; video models are named video/<session_id>",
            param="model",
            code="model_not_found",
        )
    return session_id


def ask_of(body: CompletionRequest) -> Ask:
    extra = sorted(set(body.model_extra or {}) & set(_UNSUPPORTED))
    if extra:
        raise InvalidRequest(f"'{extra[0]}' is not supported by video models", param=extra[0])
    *earlier, last = body.messages
    history = tuple(Turn(m.role, m.text()) for m in earlier if m.role in ("user", "assistant") and m.text().strip())
    return Ask(
        session_of(body.model), last.text().strip(), history, body.look, body.max_completion_tokens or body.max_tokens
    )


async def prepared_or_404(state: ServiceState, ask: Ask, owner: str | None, model: str) -> Prepared:
    try:
        return await answering.prepare(state, ask, owner)
    except NotFound:
        # The session is unknown, or another key's: the model does not exist for this caller.
        raise NotFound(f"model '{model}' does not exist", param="model", code="model_not_found") from None


async def completions(body: CompletionRequest, state: ServiceState, owner: str | None) -> Response:
    prepared = await prepared_or_404(state, ask_of(body), owner, body.model)
    completion_id = f"chatcmpl-{uuid.uuid4().hex}"
    created = int(time.time())
    if not body.stream:
        video = await answering.answer(state, prepared)
        message = {"role": "assistant", "content": message_text(video)}
        response = {
            "id": completion_id,
            "object": "chat.completion",
            "created": created,
            "model": body.model,
            "choices": [{"index": 0, "message": message, "finish_reason": "stop", "logprobs": None}],
            "usage": video["usage"],
            "video": video,
        }
        return Response(orjson.dumps(response), media_type="application/json")
    context, pieces = await answering.answer_stream(state, prepared)
    include_usage = body.stream_options is not None and body.stream_options.include_usage
    chunks = _chunks(state, prepared, context, pieces, completion_id, created, body.model, include_usage)
    return StreamingResponse(chunks, media_type="text/event-stream")


def message_text(video: dict[str, Any]) -> str:
    """The answer, with the moments it rests on named when it cites none itself."""
    answer = str(video["answer"])
    if video["cited"]:
        return answer
    moments = video["looked_at"] or video["retrieved"]
    if not moments:
        return answer
    return answer + "\n\nMoments: " + ", ".join(f"[{m['timestamp']}]" for m in moments[:8])


async def _chunks(
    state: ServiceState,
    prepared: Prepared,
    context: Context,
    pieces: AsyncIterator[str],
    completion_id: str,
    created: int,
    model: str,
    include_usage: bool,
) -> AsyncIterator[bytes]:
    def chunk(choices: list[dict[str, Any]], **more: Any) -> bytes:
        body = {"id": completion_id, "object": "chat.completion.chunk", "created": created, "model": model}
        return b"data: " + orjson.dumps({**body, "choices": choices, **more}) + b"\n\n"

    yield chunk([{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}])
    async for item in answering.written(state, prepared, context, pieces):
        if isinstance(item, str):
            yield chunk([{"index": 0, "delta": {"content": item}, "finish_reason": None}])
        elif isinstance(item, ApiError):
            yield b"data: " + orjson.dumps(item.envelope()) + b"\n\n"
            return
        else:
            tail = message_text(item)[len(item["answer"]) :]
            if tail:
                yield chunk([{"index": 0, "delta": {"content": tail}, "finish_reason": None}])
            yield chunk([{"index": 0, "delta": {}, "finish_reason": "stop"}], video=item)
            if include_usage:
                yield chunk([], usage=item["usage"])
    yield b"data: [DONE]\n\n"


async def models(state: ServiceState, owner: str | None) -> dict[str, Any]:
    """The caller's sessions as models (``video/<session_id>``), newest first."""
    sessions = await asyncio.to_thread(state.store.list_sessions, owner)
    return {
        "object": "list",
        "data": [
            {
                "id": f"{MODEL_PREFIX}{s.id}",
                "object": "model",
                "created": int(s.created_at),
                "owned_by": "video",
                "filename": s.filename,
                "status": s.status,
                "duration": timestamp_label(s.duration_s),
            }
            for s in sessions
        ],
    }
