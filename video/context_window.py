"""How much text fits the chat model: its context length, and a token estimate that learns.

The context length comes from a setting, else from ``GET /v1/models`` (vLLM and the gateway
report ``max_model_len``), else from the first overflow error the model answers with. Tokens
are estimated from characters, starting conservatively; when the model reports how many
tokens a prompt really had, the estimate follows it.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import openai

_WINDOW = re.compile(r"maximum context length is (\d+)", re.IGNORECASE)
_PROMPT_TOKENS = re.compile(
    r"(?:contains (?:at least )?|resulted in |requested |has |prompt is )(\d+) (?:input )?tokens", re.IGNORECASE
)
_OVERFLOW = re.compile(
    r"context length|context window|max_model_len|maximum input length|prompt is too long|too many tokens|"
    r"reduce the length",
    re.IGNORECASE,
)
TEMPLATE_TOKENS = 16  # what a chat template adds around two messages
SAFETY = 0.9  # of a measured characters-per-token ratio, to stay on the safe side


class ContextTooSmall(Exception):
    """What must be sent (instructions and question) does not fit the chat model's context."""


@dataclass
class TokenEstimate:
    """Characters per token, lowered whenever the model reports a real count."""

    chars_per_token: float = 3.0

    def count(self, text: str) -> int:
        return math.ceil(len(text) / self.chars_per_token) + 1

    def learn(self, chars: int, tokens: int) -> None:
        if tokens > 0 and chars > 0:
            self.chars_per_token = min(self.chars_per_token, SAFETY * chars / tokens)
        else:
            self.chars_per_token /= 2

    def chars_for(self, tokens: int) -> int:
        return max(0, int(tokens * self.chars_per_token))


@dataclass(frozen=True)
class Overflow:
    """What an upstream context-overflow error tells: the window and the prompt's real size."""

    window: int | None
    prompt_tokens: int | None


def overflow_of(exc: Exception) -> Overflow | None:
    """The overflow an error reports, or None when it is another error."""
    if not isinstance(exc, openai.APIStatusError) or exc.status_code not in (400, 413, 422):
        return None
    message = _message(exc)
    if not _OVERFLOW.search(message):
        return None
    window = _WINDOW.search(message)
    prompt = _PROMPT_TOKENS.search(message)
    return Overflow(int(window.group(1)) if window else None, int(prompt.group(1)) if prompt else None)


def _message(exc: openai.APIStatusError) -> str:
    body = exc.body
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict) and isinstance(inner.get("message"), str):
            return str(inner["message"])
        if isinstance(body.get("message"), str):
            return str(body["message"])
    return str(exc.message)
