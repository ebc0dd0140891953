"""APIs answered by a deployment's chat completions: the Responses API and Anthropic's Messages API.

Each bridge translates a client's request into one chat completions request at once (so bad
input is refused before any deployment sees it), then the deployment's answer, whole or as
a stream of chunks, into the client's API. They are written here rather than taken from the
litellm SDK's adapters: those run only with ``litellm`` imported (seconds of start-up and
~180 MiB per process) and through its per-request pipeline, while chat-only deployments
(Nebius and other OpenAI-compatible clouds) are otherwise served by the byte-level fast path.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Iterator
from typing import Any

import orjson

from common.errors import UpstreamFailed, redacted


class StreamFailed(UpstreamFailed):
    """The deployment reported an error inside its chat stream."""


def new_id(prefix: str) -> str:
    """An id in the shape the APIs use (``msg_…``, ``fc_…``)."""
    return f"{prefix}_{os.urandom(12).hex()}"


def sse(event: str, data: dict[str, Any]) -> bytes:
    """One named Server-Sent Event."""
    return b"event: " + event.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


def chat_chunks(events: bytes) -> Iterator[dict[str, Any]]:
    """The chat completion chunks among complete SSE events (``[DONE]`` and comments skipped)."""
    for line in events.splitlines():
        if not line.startswith(b"data:"):
            continue
        payload = line[5:].strip()
        if not payload or payload == b"[DONE]":
            continue
        try:
            chunk = orjson.loads(payload)
        except orjson.JSONDecodeError:
            continue
        if isinstance(chunk, dict):
            yield chunk


def chunk_error(chunk: dict[str, Any]) -> str | None:
    """The message of an error a deployment sent inside its stream, without internals."""
    error = chunk.get("error")
    if error is None:
        return None
    message = error.get("message") if isinstance(error, dict) else error
    return redacted(str(message or "the deployment failed")[:500])


def text_of(content: object) -> str:
    """The text of a content value: a string, or the text parts of a list."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            str(part.get("text", ""))
            for part in content
            if isinstance(part, dict) and isinstance(part.get("text"), str)
        )
    return ""


def first_choice(chat: dict[str, Any]) -> dict[str, Any]:
    """The first choice of a chat completion, or an empty one."""
    choices = chat.get("choices")
    if isinstance(choices, list) and choices and isinstance(choices[0], dict):
        return choices[0]
    return {}


def usage_numbers(usage: object) -> tuple[int, int, int]:
    """(prompt, completion, cached prompt) tokens of a chat usage object."""
    if not isinstance(usage, dict):
        return 0, 0, 0
    details = usage.get("prompt_tokens_details")
    cached = details.get("cached_tokens") if isinstance(details, dict) else None
    prompt, completion = usage.get("prompt_tokens"), usage.get("completion_tokens")
    return (
        prompt if isinstance(prompt, int) else 0,
        completion if isinstance(completion, int) else 0,
        cached if isinstance(cached, int) else 0,
    )


class ChatStream(ABC):
    """What both stream translators do with chat chunks: note usage and the finishing choice,
    raise StreamFailed for an error the deployment sent, and hand each text and tool-call
    delta to the client API's own events; ``_start`` opens the client's stream once."""

    def __init__(self) -> None:
        self._started = False
        self._usage: object = None
        self._choice: dict[str, Any] = {}  # the chunk choice that carried ``finish_reason``

    def _opening(self) -> list[bytes]:
        """The start of the client's stream, the first time only."""
        if self._started:
            return []
        self._started = True
        return [self._start()]

    def feed(self, events: bytes) -> bytes:
        out = self._opening()
        for chunk in chat_chunks(events):
            message = chunk_error(chunk)
            if message is not None:
                raise StreamFailed(message)
            if chunk.get("usage"):
                self._usage = chunk["usage"]
            choice = first_choice(chunk)
            if choice.get("finish_reason"):
                self._choice = choice
            delta = choice.get("delta")
            if not isinstance(delta, dict):
                continue
            text = delta.get("content")
            if isinstance(text, str) and text:
                out.append(self._text(text))
            for call in delta.get("tool_calls") or ():
                if isinstance(call, dict):
                    out.append(self._call(call))
        return b"".join(out)

    @abstractmethod
    def _start(self) -> bytes:
        """The events that open the client's stream."""

    @abstractmethod
    def _text(self, text: str) -> bytes:
        """The events for a piece of text."""

    @abstractmethod
    def _call(self, call: dict[str, Any]) -> bytes:
        """The events for a piece of a tool call."""
