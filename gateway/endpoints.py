"""The API families the gateway serves, what each needs from a body, and how a stream of it ends.

An endpoint's ``name`` is its path below a deployment's ``api_base`` (``.../v1``) and its
``endpoint`` label in metrics: a bounded set, from this table only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Envelope = Literal["openai", "anthropic"]
Answer = Literal["json", "bytes"]


@dataclass(frozen=True)
class Endpoint:
    """One upstream operation: a POST with a JSON (or multipart) body."""

    name: str
    paths: tuple[str, ...]  # the client paths that reach it
    field: str | None  # the body field that must be present and not empty
    summary: str
    required: tuple[str, ...] = ()  # more fields a body must have
    streams: bool = True  # whether ``stream: true`` is accepted
    # Bytes of a stream's last event: a stream that ends without one was cut.
    stream_end: tuple[bytes, ...] = (b"data: [DONE]",)
    answer: Answer = "json"  # a non-streamed answer: JSON (usage read, model renamed), or relayed as is
    envelope: Envelope = "openai"
    multipart: bool = False  # a multipart/form-data body (audio uploads)
    relayed: bool = False  # the answer (audio) is relayed as it arrives, never held whole
    family: str = ""  # the group of endpoints one ``model_info.native_endpoints`` entry names

    def __post_init__(self) -> None:
        if not self.family:
            object.__setattr__(self, "family", self.name.split("/")[0])


CHAT = Endpoint("chat/completions", ("/v1/chat/completions",), "messages", "Create a chat completion")
COMPLETIONS = Endpoint("completions", ("/v1/completions",), "prompt", "Create a completion")
EMBEDDINGS = Endpoint("embeddings", ("/v1/embeddings",), "input", "Create embeddings", streams=False)
RESPONSES = Endpoint(
    "responses",
    ("/v1/responses",),
    "input",
    "Create a model response (OpenAI Responses API)",
    stream_end=(b'"type":"response.completed"', b'"type":"response.incomplete"', b'"type":"response.failed"'),
)
MESSAGES = Endpoint(
    "messages",
    ("/v1/messages",),
    "messages",
    "Create a message (Anthropic Messages API)",
    required=("max_tokens",),
    stream_end=(b'"type":"message_stop"',),
    envelope="anthropic",
)
COUNT_TOKENS = Endpoint(
    "messages/count_tokens",
    ("/v1/messages/count_tokens",),
    "messages",
    "Count the tokens of a message (Anthropic Messages API)",
    streams=False,
    envelope="anthropic",
    family="messages",
)


def _upload(name: str, summary: str) -> Endpoint:
    """An audio upload answered with text (json, text, srt, vtt, verbose_json) or a stream of it."""
    ends = (b"data: [DONE]", b'"type":"transcript.text.done"')
    return Endpoint(name, (f"/v1/{name}",), "file", summary, stream_end=ends, answer="bytes", multipart=True)


TRANSCRIPTIONS = _upload("audio/transcriptions", "Transcribe audio")
TRANSLATIONS = _upload("audio/translations", "Translate audio into English text")
SPEECH = Endpoint(
    "audio/speech", ("/v1/audio/speech",), "input", "Generate speech", streams=False, answer="bytes", relayed=True
)
RERANK = Endpoint(
    "rerank",
    ("/v1/rerank", "/rerank", "/v2/rerank"),
    "documents",
    "Rerank documents for a query",
    required=("query",),
    streams=False,
)
SCORE = Endpoint("score", ("/v1/score", "/score"), None, "Score text pairs", streams=False)

ENDPOINTS: tuple[Endpoint, ...] = (
    CHAT,
    COMPLETIONS,
    EMBEDDINGS,
    RESPONSES,
    MESSAGES,
    COUNT_TOKENS,
    TRANSCRIPTIONS,
    TRANSLATIONS,
    SPEECH,
    RERANK,
    SCORE,
)
BY_NAME = {endpoint.name: endpoint for endpoint in ENDPOINTS}
FAMILIES = frozenset(endpoint.family for endpoint in ENDPOINTS)
# What every OpenAI-compatible server serves; the rest depends on the provider (gateway.providers).
BASE_FAMILIES = frozenset({"chat", "completions", "embeddings"})
