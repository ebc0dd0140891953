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


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str
    max_model_len: int | None = Field(default=None, description="context length in tokens, when configured")


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
