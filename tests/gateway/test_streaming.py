"""The SSE relay: event boundaries, model rewrite, usage and [DONE] detection."""

from __future__ import annotations

import pytest

from gateway.errors import rejected_from_upstream
from gateway.streaming import EventRelay, model_replacements

pytestmark = pytest.mark.unit

EVENTS = (
    b'data: {"id":"1","model":"Qwen/Qwen2.5-VL","choices":[{"delta":{"content":"say \\"model\\":\\"x\\""}}]}\n\n'
    b'data: {"id":"1","model":"Qwen/Qwen2.5-VL","choices":[],"usage":{"prompt_tokens":5,"completion_tokens":2}}\n\n'
    b"data: [DONE]\n\n"
)


@pytest.mark.parametrize("size", [1, 3, 7, 64, len(EVENTS)])
def test_relay_rewrites_model_whatever_the_chunking(size: int) -> None:
    relay = EventRelay(model_replacements("Qwen/Qwen2.5-VL", "vision"))
    out = b"".join(relay.feed(EVENTS[i : i + size]) for i in range(0, len(EVENTS), size)) + relay.finish()
    assert out == EVENTS.replace(b'"model":"Qwen/Qwen2.5-VL"', b'"model":"vision"')
    assert relay.usage == {"prompt_tokens": 5, "completion_tokens": 2}
    assert relay.done


def test_relay_passes_partial_events_only_when_complete() -> None:
    relay = EventRelay([])
    assert relay.feed(b'data: {"a":') == b""
    assert relay.feed(b"1}\n\ndata: {") == b'data: {"a":1}\n\n'
    assert relay.finish() == b"data: {"


def test_generated_text_that_mentions_done_is_not_the_end() -> None:
    relay = EventRelay([])
    relay.feed(b'data: {"choices":[{"delta":{"content":"data: [DONE]"}}]}\n\n')
    assert not relay.done
    relay.feed(b"data: [DONE]\r\n\r\n")
    assert relay.done


def test_same_name_needs_no_rewrite() -> None:
    assert model_replacements("chat", "chat") == []


def test_upstream_4xx_keeps_message_and_drops_the_rest() -> None:
    error = rejected_from_upstream(
        400, b'{"error":{"message":"bad","type":"BadRequestError","param":"n","code":400,"trace":"/srv/x.py"}}'
    )
    assert error.envelope() == {
        "error": {"message": "bad", "type": "invalid_request_error", "param": "n", "code": "400"}
    }
    plain = rejected_from_upstream(422, b"<html>oops</html>")
    assert plain.status_code == 422
    assert "oops" not in plain.message
