"""The OpenAI Responses API answered by chat completions (gateway.bridges)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import orjson

from common.errors import ApiError, InvalidRequest
from gateway.bridges import (
    ChatStream,
    first_choice,
    new_id,
    sse,
    text_of,
    usage_numbers,
)

# Fields with a chat counterpart, and those that change nothing a chat deployment does.
_SAME_NAME = ("temperature", "top_p", "parallel_tool_calls", "user", "top_logprobs")
Keep = Callable[[dict[str, Any], list[dict[str, Any]]], None]


def input_items(value: object) -> list[dict[str, Any]]:
    """``input`` as a list of items (a string is one user message)."""
    if isinstance(value, str):
        return [{"type": "message", "role": "user", "content": value}]
    if not isinstance(value, list) or not all(isinstance(item, dict) for item in value):
        raise InvalidRequest("'input' must be a string or a list of input items", param="input")
    return list(value)


def _part(part: object) -> dict[str, Any]:
    if not isinstance(part, dict):
        raise InvalidRequest("a content part must be an object", param="input")
    kind = part.get("type")
    if kind in ("input_text", "output_text", "text", "refusal"):
        return {"type": "text", "text": str(part.get("text", part.get("refusal", "")))}
    if kind == "input_image":
        url = part.get("image_url")
        if not isinstance(url, str):
            raise InvalidRequest("input_image needs an image_url (file ids are not supported here)", param="input")
        image: dict[str, Any] = {"url": url}
        if isinstance(part.get("detail"), str):
            image["detail"] = part["detail"]
        return {"type": "image_url", "image_url": image}
    raise InvalidRequest(f"content part type {kind!r} is not supported by this model", param="input")


def _message(item: dict[str, Any]) -> dict[str, Any]:
    role = item.get("role")
    if role not in ("user", "assistant", "system", "developer"):
        raise InvalidRequest(f"input message role {role!r} is not supported", param="input")
    content = item.get("content")
    chat_role = "system" if role == "developer" else str(role)
    if isinstance(content, str):
        return {"role": chat_role, "content": content}
    if not isinstance(content, list):
        raise InvalidRequest("an input message needs content: a string or a list of parts", param="input")
    parts = [_part(part) for part in content]
    if chat_role != "user":  # only user turns carry images; others are text
        return {"role": chat_role, "content": "".join(p.get("text", "") for p in parts)}
    return {"role": chat_role, "content": parts}


def chat_messages(items: list[dict[str, Any]], instructions: object) -> list[dict[str, Any]]:
    """Responses input items as chat messages."""
    messages: list[dict[str, Any]] = []
    if isinstance(instructions, str) and instructions:
        messages.append({"role": "system", "content": instructions})
    for item in items:
        kind = item.get("type", "message")
        if kind == "message":
            messages.append(_message(item))
        elif kind == "function_call":
            call = {
                "id": str(item.get("call_id") or item.get("id") or new_id("call")),
                "type": "function",
                "function": {"name": str(item.get("name", "")), "arguments": str(item.get("arguments", ""))},
            }
            last = messages[-1] if messages else None
            if last is not None and last["role"] == "assistant":
                last.setdefault("tool_calls", []).append(call)
            else:
                messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
        elif kind == "function_call_output":
            output = item.get("output")
            messages.append(
                {
                    "role": "tool",
                    "tool_call_id": str(item.get("call_id", "")),
                    "content": output if isinstance(output, str) else text_of(output),
                }
            )
        elif kind == "reasoning":
            continue
        else:
            raise InvalidRequest(f"input item type {kind!r} is not supported by this model", param="input")
    if not messages:
        raise InvalidRequest("'input' must not be empty", param="input")
    return messages


def _tools(tools: object) -> list[dict[str, Any]]:
    if not isinstance(tools, list):
        raise InvalidRequest("'tools' must be a list", param="tools")
    converted = []
    for tool in tools:
        if not isinstance(tool, dict) or tool.get("type") != "function":
            kind = tool.get("type") if isinstance(tool, dict) else tool
            raise InvalidRequest(
                f"tool type {kind!r} is not supported by this model; use function tools", param="tools"
            )
        function = {"name": tool.get("name"), "parameters": tool.get("parameters") or {"type": "object"}}
        if tool.get("description") is not None:
            function["description"] = tool["description"]
        if tool.get("strict") is not None:
            function["strict"] = tool["strict"]
        converted.append({"type": "function", "function": function})
    return converted


def _tool_choice(choice: object) -> object:
    if isinstance(choice, str):
        return choice
    if isinstance(choice, dict) and choice.get("type") == "function":
        return {"type": "function", "function": {"name": choice.get("name")}}
    raise InvalidRequest("'tool_choice' must be auto, none, required or a function", param="tool_choice")


def _response_format(text: object) -> dict[str, Any] | None:
    if text is None:
        return None
    fmt = text.get("format") if isinstance(text, dict) else None
    if fmt is None:
        return None
    kind = fmt.get("type") if isinstance(fmt, dict) else None
    if kind == "text":
        return None
    if kind == "json_object":
        return {"type": "json_object"}
    if kind == "json_schema" and isinstance(fmt, dict):
        schema = {"name": fmt.get("name", "response"), "schema": fmt.get("schema", {})}
        if fmt.get("strict") is not None:
            schema["strict"] = fmt["strict"]
        return {"type": "json_schema", "json_schema": schema}
    raise InvalidRequest("'text.format' must be text, json_object or json_schema", param="text.format")


class ResponsesBridge:
    """One Responses request, translated once; answers translated per attempt."""

    def __init__(
        self,
        body: dict[str, Any],
        requested_model: str,
        history: list[dict[str, Any]] | None = None,
        keep: Keep | None = None,
        response_id: str | None = None,
    ) -> None:
        if body.get("background"):
            raise InvalidRequest("background responses are not supported by this model", param="background")
        self.body = body
        self.requested_model = requested_model
        self.items = input_items(body.get("input"))
        self.history = history or []
        self._keep = keep
        self.response_id = response_id or new_id("resp")
        chat: dict[str, Any] = {"messages": chat_messages(self.history + self.items, body.get("instructions"))}
        for name in _SAME_NAME:
            if body.get(name) is not None:
                chat[name] = body[name]
        if body.get("max_output_tokens") is not None:
            chat["max_tokens"] = body["max_output_tokens"]
        if body.get("tools"):
            chat["tools"] = _tools(body["tools"])
        if body.get("tool_choice") is not None:
            chat["tool_choice"] = _tool_choice(body["tool_choice"])
        response_format = _response_format(body.get("text"))
        if response_format is not None:
            chat["response_format"] = response_format
        if body.get("stream"):
            chat["stream"] = True
            chat["stream_options"] = {"include_usage": True}
        self._chat = chat

    def chat_body(self, upstream_model: str) -> dict[str, Any]:
        return {"model": upstream_model, **self._chat}

    def response(self, status: str, output: list[dict[str, Any]], usage: object, finish: object) -> dict[str, Any]:
        """The response object in the Responses API's shape."""
        body = self.body
        prompt, completion, cached = usage_numbers(usage)
        incomplete = status == "completed" and finish == "length"
        return {
            "id": self.response_id,
            "object": "response",
            "created_at": int(time.time()),
            "status": "incomplete" if incomplete else status,
            "error": None,
            "incomplete_details": {"reason": "max_output_tokens"} if incomplete else None,
            "instructions": body.get("instructions"),
            "max_output_tokens": body.get("max_output_tokens"),
            "metadata": body.get("metadata") or {},
            "model": self.requested_model,
            "output": output,
            "parallel_tool_calls": body.get("parallel_tool_calls", True),
            "previous_response_id": body.get("previous_response_id"),
            "store": body.get("store", True) is not False,
            "temperature": body.get("temperature"),
            "text": body.get("text") or {"format": {"type": "text"}},
            "tool_choice": body.get("tool_choice", "auto"),
            "tools": body.get("tools") or [],
            "top_p": body.get("top_p"),
            "truncation": body.get("truncation", "disabled"),
            "usage": (
                {
                    "input_tokens": prompt,
                    "input_tokens_details": {"cached_tokens": cached},
                    "output_tokens": completion,
                    "output_tokens_details": {"reasoning_tokens": 0},
                    "total_tokens": prompt + completion,
                }
                if usage is not None or status != "in_progress"
                else None
            ),
            "user": body.get("user"),
        }

    def done(self, response: dict[str, Any]) -> None:
        """Hand a finished response to the store (unless the client said ``store: false``)."""
        if self._keep is not None and self.body.get("store", True) is not False:
            self._keep(response, self.history + self.items)

    def answer(self, chat: dict[str, Any]) -> bytes:
        choice = first_choice(chat)
        found = choice.get("message")
        message: dict[str, Any] = found if isinstance(found, dict) else {}
        output: list[dict[str, Any]] = []
        text = message.get("content")
        if isinstance(text, str) and text:
            output.append(_text_item(new_id("msg"), text, "completed"))
        for call in message.get("tool_calls") or ():
            function = call.get("function") or {}
            output.append(
                _call_item(new_id("fc"), str(call.get("id") or new_id("call")), function.get("name", ""), "completed")
                | {"arguments": function.get("arguments") or ""}
            )
        response = self.response("completed", output, chat.get("usage") or {}, choice.get("finish_reason"))
        self.done(response)
        return orjson.dumps(response)

    def stream(self) -> ResponsesStream:
        return ResponsesStream(self)


def _text_item(item_id: str, text: str, status: str) -> dict[str, Any]:
    content = [{"type": "output_text", "text": text, "annotations": []}] if status == "completed" else []
    return {"type": "message", "id": item_id, "status": status, "role": "assistant", "content": content}


def _call_item(item_id: str, call_id: str, name: str, status: str) -> dict[str, Any]:
    return {"type": "function_call", "id": item_id, "call_id": call_id, "name": name, "arguments": "", "status": status}


class ResponsesStream(ChatStream):
    """Chat chunks in, Responses events out: created, items and deltas, completed."""

    def __init__(self, bridge: ResponsesBridge) -> None:
        super().__init__()
        self._bridge = bridge
        self._sequence = 0
        self._output: list[dict[str, Any]] = []
        self._message: dict[str, Any] | None = None  # the message item being written
        self._text_parts: list[str] = []
        self._calls: dict[int, tuple[int, dict[str, Any], list[str]]] = {}  # tool index -> (output index, item, args)

    def _event(self, kind: str, **data: Any) -> bytes:
        data = {"type": kind, "sequence_number": self._sequence, **data}
        self._sequence += 1
        return sse(kind, data)

    def _start(self) -> bytes:
        response = self._bridge.response("in_progress", [], None, None)
        return self._event("response.created", response=response) + self._event(
            "response.in_progress", response=response
        )

    def _text(self, text: str) -> bytes:
        out = b""
        if self._message is None:
            self._message = _text_item(new_id("msg"), "", "in_progress")
            self._output.append(self._message)
            index = len(self._output) - 1
            out += self._event("response.output_item.added", output_index=index, item=self._message)
            part = {"type": "output_text", "text": "", "annotations": []}
            out += self._event(
                "response.content_part.added",
                item_id=self._message["id"],
                output_index=index,
                content_index=0,
                part=part,
            )
        self._text_parts.append(text)
        return out + self._event(
            "response.output_text.delta",
            item_id=self._message["id"],
            output_index=self._output.index(self._message),
            content_index=0,
            delta=text,
            logprobs=[],
        )

    def _call(self, call: dict[str, Any]) -> bytes:
        out = b""
        index = call.get("index", 0)
        function = call.get("function") or {}
        known = self._calls.get(index)
        if known is None:
            item = _call_item(
                new_id("fc"), str(call.get("id") or new_id("call")), function.get("name") or "", "in_progress"
            )
            self._output.append(item)
            known = self._calls[index] = (len(self._output) - 1, item, [])
            out += self._event("response.output_item.added", output_index=known[0], item=dict(item))
        arguments = function.get("arguments")
        if isinstance(arguments, str) and arguments:
            known[2].append(arguments)
            out += self._event(
                "response.function_call_arguments.delta", item_id=known[1]["id"], output_index=known[0], delta=arguments
            )
        return out

    def finish(self) -> bytes:
        out = self._opening()
        if self._message is not None:
            index = self._output.index(self._message)
            text = "".join(self._text_parts)
            done = _text_item(self._message["id"], text, "completed")
            self._output[index] = done
            out.append(
                self._event(
                    "response.output_text.done",
                    item_id=done["id"],
                    output_index=index,
                    content_index=0,
                    text=text,
                    logprobs=[],
                )
            )
            out.append(
                self._event(
                    "response.content_part.done",
                    item_id=done["id"],
                    output_index=index,
                    content_index=0,
                    part=done["content"][0],
                )
            )
            out.append(self._event("response.output_item.done", output_index=index, item=done))
        for output_index, item, arguments in self._calls.values():
            item.update(arguments="".join(arguments), status="completed")
            out.append(
                self._event(
                    "response.function_call_arguments.done",
                    item_id=item["id"],
                    output_index=output_index,
                    arguments=item["arguments"],
                    name=item["name"],
                )
            )
            out.append(self._event("response.output_item.done", output_index=output_index, item=item))
        response = self._bridge.response(
            "completed", self._output, self._usage or {}, self._choice.get("finish_reason")
        )
        out.append(self._event(f"response.{response['status']}", response=response))
        self._bridge.done(response)
        return b"".join(out)

    def error(self, error: ApiError) -> bytes:
        out = b"".join(self._opening())
        return out + self._event(
            "error", code=error.code, message=error.message, param=error.param, error=error.envelope()["error"]
        )
