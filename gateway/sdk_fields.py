"""The request fields a client may send to a deployment served through the ``litellm`` SDK.

Every keyword of ``litellm.acompletion`` is an SDK argument, and many of them steer the SDK
itself rather than the model: ``api_base``, ``base_url``, ``api_key``, ``custom_llm_provider``,
AWS and Vertex credentials and endpoints, callbacks. A client that could set them would choose
where the operator's provider key is sent. So only the fields of OpenAI's request for each
endpoint (and a few model parameters LiteLLM maps for every provider) go through; any other
field is refused with a 400 naming it, or dropped when ``litellm_settings.drop_params`` is on.
"""

from __future__ import annotations

from typing import Any

from gateway.errors import InvalidRequest

CHAT_FIELDS = frozenset(
    {
        "messages",
        "audio",
        "frequency_penalty",
        "function_call",
        "functions",
        "logit_bias",
        "logprobs",
        "max_completion_tokens",
        "max_tokens",
        "modalities",
        "n",
        "parallel_tool_calls",
        "prediction",
        "presence_penalty",
        "reasoning_effort",
        "response_format",
        "seed",
        "service_tier",
        "stop",
        "stream_options",
        "temperature",
        "tool_choice",
        "tools",
        "top_logprobs",
        "top_p",
        "user",
        "web_search_options",
        # model parameters LiteLLM maps for every provider that has them
        "top_k",
        "thinking",
    }
)
COMPLETION_FIELDS = frozenset(
    {
        "prompt",
        "best_of",
        "echo",
        "frequency_penalty",
        "logit_bias",
        "logprobs",
        "max_tokens",
        "n",
        "presence_penalty",
        "seed",
        "stop",
        "stream_options",
        "suffix",
        "temperature",
        "top_p",
        "user",
    }
)
EMBEDDING_FIELDS = frozenset({"input", "dimensions", "encoding_format", "user"})
RERANK_FIELDS = frozenset({"query", "documents", "top_n", "rank_fields", "return_documents", "max_chunks_per_doc"})
TRANSCRIPTION_FIELDS = frozenset({"language", "prompt", "response_format", "temperature", "timestamp_granularities"})
SPEECH_FIELDS = frozenset({"input", "voice", "response_format", "speed", "instructions"})
# OpenAI fields that mean something only to OpenAI's own storage: accepted, never passed on
# (LiteLLM reads ``metadata`` as its own logging settings).
IGNORED_FIELDS = frozenset({"metadata", "store", "prompt_cache_key", "safety_identifier", "verbosity"})
# Handled by the gateway itself.
GATEWAY_FIELDS = frozenset({"model", "stream"})

ALLOWED: dict[str, frozenset[str]] = {
    "chat/completions": CHAT_FIELDS,
    "completions": COMPLETION_FIELDS,
    "embeddings": EMBEDDING_FIELDS,
    "rerank": RERANK_FIELDS,
    "audio/transcriptions": TRANSCRIPTION_FIELDS,
    "audio/speech": SPEECH_FIELDS,
}
# What every SDK provider serves, and the endpoints LiteLLM serves for some providers only (its
# rerank, transcription and speech functions); for any other provider they are refused with 400.
SDK_BASE_ENDPOINTS = frozenset({"chat/completions", "completions", "embeddings"})
SDK_PROVIDERS_BY_ENDPOINT: dict[str, frozenset[str]] = {
    "rerank": frozenset(
        {
            "cohere",
            "azure_ai",
            "infinity",
            "together_ai",
            "jina_ai",
            "nvidia_nim",
            "bedrock",
            "deepinfra",
            "fireworks_ai",
            "voyage",
            "watsonx",
        }
    ),
    "audio/transcriptions": frozenset({"azure", "azure_ai", "groq", "fireworks_ai", "deepgram", "elevenlabs", "xai"}),
    "audio/speech": frozenset({"azure", "azure_ai", "elevenlabs", "vertex_ai", "gemini"}),
}


def sdk_endpoints(provider: str) -> frozenset[str]:
    """The endpoints an SDK deployment of ``provider`` serves through LiteLLM."""
    extra = {endpoint for endpoint, providers in SDK_PROVIDERS_BY_ENDPOINT.items() if provider in providers}
    return SDK_BASE_ENDPOINTS | extra


def sdk_arguments(endpoint: str, body: dict[str, Any], drop_unknown: bool) -> dict[str, Any]:
    """The client's fields that may become SDK arguments for ``endpoint``.

    Raises InvalidRequest for a field outside the allow-list unless ``drop_unknown``.
    """
    allowed = ALLOWED[endpoint]
    arguments: dict[str, Any] = {}
    for name, value in body.items():
        if name in allowed:
            arguments[name] = value
        elif name in GATEWAY_FIELDS or name in IGNORED_FIELDS or drop_unknown:
            continue
        else:
            shown = name if len(name) <= 64 and name.isprintable() else name[:64].encode("unicode_escape").decode()
            raise InvalidRequest(
                f"unsupported parameter '{shown}' for this model (it is served through the LiteLLM SDK, "
                "which takes only OpenAI's request fields)",
                param=shown,
                code="unsupported_parameter",
            )
    return arguments
