"""OpenAI request and response shapes, ordered as in the OpenAI API reference.

The data plane does not parse bodies into these models: requests are forwarded as the
client sent them. The models document the API (OpenAPI at ``/docs``) and shape the
gateway's own responses. Unknown fields are allowed through.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow")


class ChatMessage(_Open):
    role: str
    content: str | list[dict[str, Any]] | None = None


class ChatCompletionRequest(_Open):
    """``POST /v1/chat/completions``; any further field is passed to the deployment."""

    model: str = Field(description="A model group name such as 'vision' or 'chat', or a wildcard match")
    messages: list[ChatMessage] = Field(min_length=1)
    stream: bool = False
    stream_options: dict[str, Any] | None = None
    max_tokens: int | None = None
    max_completion_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    n: int | None = None
    stop: str | list[str] | None = None
    response_format: dict[str, Any] | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = None
    seed: int | None = None
    user: str | None = None
    # vLLM extensions
    top_k: int | None = None
    mm_processor_kwargs: dict[str, Any] | None = None


class CompletionRequest(_Open):
    """``POST /v1/completions``."""

    model: str
    prompt: str | list[str] | list[int] | list[list[int]]
    stream: bool = False
    max_tokens: int | None = None


class EmbeddingRequest(_Open):
    """``POST /v1/embeddings``."""

    model: str
    input: str | list[str] | list[int] | list[list[int]]


class ResponsesRequest(_Open):
    """``POST /v1/responses`` (OpenAI's Responses API)."""

    model: str
    input: str | list[dict[str, Any]]
    instructions: str | None = None
    previous_response_id: str | None = Field(default=None, description="continue from an earlier response")
    stream: bool = False
    store: bool = Field(default=True, description="false: the response is not kept")
    max_output_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    text: dict[str, Any] | None = Field(default=None, description="text.format: text, json_object or json_schema")


class AnthropicMessagesRequest(_Open):
    """``POST /v1/messages`` (Anthropic's Messages API); the key may come as ``x-api-key``."""

    model: str
    max_tokens: int = Field(gt=0)
    messages: list[dict[str, Any]] = Field(min_length=1)
    system: str | list[dict[str, Any]] | None = None
    stop_sequences: list[str] | None = None
    stream: bool = False
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: dict[str, Any] | None = None


class AnthropicCountTokensRequest(_Open):
    """``POST /v1/messages/count_tokens``."""

    model: str
    messages: list[dict[str, Any]] = Field(min_length=1)
    system: str | list[dict[str, Any]] | None = None
    tools: list[dict[str, Any]] | None = None


class AudioRequest(_Open):
    """``POST /v1/audio/transcriptions`` and ``/translations``: ``multipart/form-data``."""

    model: str
    file: bytes = Field(json_schema_extra={"format": "binary"})
    language: str | None = None
    prompt: str | None = None
    response_format: Literal["json", "text", "srt", "verbose_json", "vtt"] | None = None
    temperature: float | None = None
    stream: bool = False


class SpeechRequest(_Open):
    """``POST /v1/audio/speech``: the audio comes back as it is made."""

    model: str
    input: str
    voice: str | None = None
    response_format: str | None = None
    speed: float | None = None


class RerankRequest(_Open):
    """``POST /v1/rerank`` (also ``/rerank`` and ``/v2/rerank``: Jina's and Cohere's shapes)."""

    model: str
    query: str | dict[str, Any]
    documents: list[str] | list[dict[str, Any]] = Field(min_length=1)
    top_n: int | None = None


class ScoreRequest(_Open):
    """``POST /v1/score``: similarity of text pairs (``text_1``/``text_2``, or ``queries``/``documents``)."""

    model: str
    text_1: str | list[str] | None = None
    text_2: str | list[str] | None = None
    queries: str | list[str] | None = None
    documents: str | list[str] | None = None


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str
    max_model_len: int | None = Field(default=None, description="context length in tokens, when configured")
    supports_video: bool | None = Field(default=None, description="every deployment takes video_url parts")


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class ErrorBody(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorEnvelope(BaseModel):
    error: ErrorBody
