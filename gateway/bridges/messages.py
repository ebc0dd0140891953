"""Anthropic's Messages API answered by chat completions (gateway.bridges)."""

from __future__ import annotations

from typing import Any

import orjson

from common.errors import ApiError, InvalidRequest
from gateway.bridges import ChatStream, first_choice, new_id, sse, text_of, usage_numbers
from gateway.errors import anthropic_envelope

_STOP_REASONS = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use", "content_filter": "refusal"}


def _image(block: dict[str, Any]) -> dict[str, Any]:
    source = block.get("source")
    if not isinstance(source, dict):
        raise InvalidRequest("an image block needs a source", param="messages")
    if source.get("type") == "base64":
        url = f"data:{source.get('media_type', 'image/png')};base64,{source.get('data', '')}"
    elif source.get("type") == "url" and isinstance(source.get("url"), str):
        url = source["url"]
    else:
        raise InvalidRequest("an image source must be base64 or url", param="messages")
    return {"type": "image_url", "image_url": {"url": url}}


def _tool_result(block: dict[str, Any]) -> dict[str, Any]:
    content = block.get("content")
    text = content if isinstance(content, str) else text_of(content)
    if block.get("is_error"):
        text = f"Error: {text}"
    return {"role": "tool", "tool_call_id": str(block.get("tool_use_id", "")), "content": text}


def _turn(message: object) -> list[dict[str, Any]]:
    """One Anthropic message as chat messages (tool results become tool messages)."""
    if not isinstance(message, dict) or message.get("role") not in ("user", "assistant"):
        raise InvalidRequest("each message needs role 'user' or 'assistant'", param="messages")
    role, content = message["role"], message.get("content")
    if isinstance(content, str):
        return [{"role": role, "content": content}]
    if not isinstance(content, list):
        raise InvalidRequest("message content must be a string or a list of blocks", param="messages")
    tools: list[dict[str, Any]] = []
    parts: list[dict[str, Any]] = []
    calls: list[dict[str, Any]] = []
    for block in content:
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "text":
            parts.append({"type": "text", "text": str(block.get("text", ""))})
        elif kind == "image":
            parts.append(_image(block))
        elif kind == "tool_use" and role == "assistant":
            arguments = orjson.dumps(block.get("input") or {}).decode()
            calls.append(
                {
                    "id": str(block.get("id", "")),
                    "type": "function",
                    "function": {"name": str(block.get("name", "")), "arguments": arguments},
                }
            )
        elif kind == "tool_result" and role == "user":
            tools.append(_tool_result(block))
        elif kind in ("thinking", "redacted_thinking"):
            continue
        else:
            raise InvalidRequest(f"content block type {kind!r} is not supported by this model", param="messages")
    turns = list(tools)
    if role == "assistant":
        text = "".join(p["text"] for p in parts if p["type"] == "text")
        if text or calls:
            turn: dict[str, Any] = {"role": "assistant", "content": text or None}
            if calls:
                turn["tool_calls"] = calls
            turns.append(turn)
    elif parts:
        turns.append({"role": "user", "content": parts})
    return turns


def _tools(tools: object) -> list[dict[str, Any]]:
    if not isinstance(tools, list):
        raise InvalidRequest("'tools' must be a list", param="tools")
    converted = []
    for tool in tools:
        if not isinstance(tool, dict) or "input_schema" not in tool:
            raise InvalidRequest("only client tools with an input_schema are supported by this model", param="tools")
        function = {"name": tool.get("name"), "parameters": tool["input_schema"]}
        if tool.get("description"):
            function["description"] = tool["description"]
        converted.append({"type": "function", "function": function})
    return converted


def _tool_choice(choice: object, chat: dict[str, Any]) -> None:
    if not isinstance(choice, dict):
        raise InvalidRequest("'tool_choice' must be an object", param="tool_choice")
    kind = choice.get("type")
    if kind == "auto":
        chat["tool_choice"] = "auto"
    elif kind == "any":
        chat["tool_choice"] = "required"
    elif kind == "none":
        chat["tool_choice"] = "none"
    elif kind == "tool":
        chat["tool_choice"] = {"type": "function", "function": {"name": choice.get("name")}}
    else:
        raise InvalidRequest("'tool_choice' type must be auto, any, tool or none", param="tool_choice")
    if choice.get("disable_parallel_tool_use"):
        chat["parallel_tool_calls"] = False


class MessagesBridge:
    """One Messages request, translated once; answers translated per attempt."""

    def __init__(self, body: dict[str, Any], requested_model: str) -> None:
        self.requested_model = requested_model
        max_tokens = body.get("max_tokens")
        if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
            raise InvalidRequest("'max_tokens' must be a positive integer", param="max_tokens")
        messages: list[dict[str, Any]] = []
        system = body.get("system")
        if system:
            text = system if isinstance(system, str) else text_of(system)
            messages.append({"role": "system", "content": text})
        raw = body.get("messages")
        if not isinstance(raw, list) or not raw:
            raise InvalidRequest("'messages' must be a non-empty list", param="messages")
        for message in raw:
            messages.extend(_turn(message))
        chat: dict[str, Any] = {"messages": messages, "max_tokens": max_tokens}
        for name in ("temperature", "top_p", "top_k"):
            if body.get(name) is not None:
                chat[name] = body[name]
        stop = body.get("stop_sequences")
        if stop:
            if not isinstance(stop, list) or not all(isinstance(s, str) for s in stop):
                raise InvalidRequest("'stop_sequences' must be a list of strings", param="stop_sequences")
            chat["stop"] = stop
        if body.get("tools"):
            chat["tools"] = _tools(body["tools"])
        if body.get("tool_choice") is not None:
            _tool_choice(body["tool_choice"], chat)
        metadata = body.get("metadata")
        if isinstance(metadata, dict) and isinstance(metadata.get("user_id"), str):
            chat["user"] = metadata["user_id"]
        if body.get("stream"):
            chat["stream"] = True
            chat["stream_options"] = {"include_usage": True}
        self._chat = chat
        self._stops = stop or []

    def chat_body(self, upstream_model: str) -> dict[str, Any]:
        return {"model": upstream_model, **self._chat}

    def stop(self, choice: dict[str, Any]) -> tuple[str | None, str | None]:
        """Anthropic's (stop_reason, stop_sequence) for a chat choice."""
        finish = choice.get("finish_reason")
        matched = choice.get("stop_reason")  # vLLM names the stop string that ended the text
        if finish == "stop" and isinstance(matched, str) and matched in self._stops:
            return "stop_sequence", matched
        if finish is None:
            return None, None
        return _STOP_REASONS.get(str(finish), "end_turn"), None

    def answer(self, chat: dict[str, Any]) -> bytes:
        choice = first_choice(chat)
        found = choice.get("message")
        message: dict[str, Any] = found if isinstance(found, dict) else {}
        content: list[dict[str, Any]] = []
        text = message.get("content")
        if isinstance(text, str) and text:
            content.append({"type": "text", "text": text})
        for call in message.get("tool_calls") or ():
            function = call.get("function") or {}
            content.append(
                {
                    "type": "tool_use",
                    "id": str(call.get("id") or new_id("toolu")),
                    "name": function.get("name", ""),
                    "input": _arguments(function.get("arguments")),
                }
            )
        reason, sequence = self.stop(choice)
        prompt, completion, cached = usage_numbers(chat.get("usage"))
        return orjson.dumps(
            {
                "id": new_id("msg"),
                "type": "message",
                "role": "assistant",
                "model": self.requested_model,
                "content": content,
                "stop_reason": reason,
                "stop_sequence": sequence,
                "usage": {"input_tokens": prompt, "output_tokens": completion, "cache_read_input_tokens": cached},
            }
        )

    def stream(self) -> MessagesStream:
        return MessagesStream(self)


def _arguments(arguments: object) -> object:
    if not isinstance(arguments, str) or not arguments:
        return {}
    try:
        return orjson.loads(arguments)
    except orjson.JSONDecodeError:
        return {"arguments": arguments}


class MessagesStream(ChatStream):
    """Chat chunks in, Anthropic's events out: message_start, content blocks, message_delta, message_stop."""

    def __init__(self, bridge: MessagesBridge) -> None:
        super().__init__()
        self._bridge = bridge
        self._block: int | None = None  # the index of the open content block
        self._block_kind: str | None = None
        self._blocks = 0
        self._calls: dict[int, int] = {}  # chat tool index -> block index

    def _start(self) -> bytes:
        message: dict[str, Any] = {
            "id": new_id("msg"),
            "type": "message",
            "role": "assistant",
            "model": self._bridge.requested_model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": 0, "output_tokens": 0},
        }
        return sse("message_start", {"type": "message_start", "message": message})

    def _close_block(self) -> bytes:
        if self._block is None:
            return b""
        index, self._block, self._block_kind = self._block, None, None
        return sse("content_block_stop", {"type": "content_block_stop", "index": index})

    def _open(self, kind: str, block: dict[str, Any]) -> bytes:
        out = self._close_block()
        self._block, self._block_kind = self._blocks, kind
        self._blocks += 1
        event = {"type": "content_block_start", "index": self._block, "content_block": block}
        return out + sse("content_block_start", event)

    def _text(self, text: str) -> bytes:
        out = self._open("text", {"type": "text", "text": ""}) if self._block_kind != "text" else b""
        delta = {"type": "text_delta", "text": text}
        return out + sse("content_block_delta", {"type": "content_block_delta", "index": self._block, "delta": delta})

    def _call(self, call: dict[str, Any]) -> bytes:
        out = b""
        index = call.get("index", 0)
        function = call.get("function") or {}
        if index not in self._calls:
            block: dict[str, Any] = {
                "type": "tool_use",
                "id": str(call.get("id") or new_id("toolu")),
                "name": function.get("name") or "",
                "input": {},
            }
            out += self._open("tool_use", block)
            self._calls[index] = self._blocks - 1
        arguments = function.get("arguments")
        if isinstance(arguments, str) and arguments:
            delta = {"type": "input_json_delta", "partial_json": arguments}
            event = {"type": "content_block_delta", "index": self._calls[index], "delta": delta}
            out += sse("content_block_delta", event)
        return out

    def finish(self) -> bytes:
        out = self._opening()
        out.append(self._close_block())
        reason, sequence = self._bridge.stop(self._choice) if self._choice else ("end_turn", None)
        prompt, completion, _ = usage_numbers(self._usage)
        delta = {"stop_reason": reason, "stop_sequence": sequence}
        usage = {"input_tokens": prompt, "output_tokens": completion}
        out.append(sse("message_delta", {"type": "message_delta", "delta": delta, "usage": usage}))
        out.append(sse("message_stop", {"type": "message_stop"}))
        return b"".join(out)

    def error(self, error: ApiError) -> bytes:
        return b"".join([*self._opening(), sse("error", anthropic_envelope(error))])
