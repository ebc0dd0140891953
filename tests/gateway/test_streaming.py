"""The SSE relay: event boundaries, model rewrite, usage and [DONE] detection."""

from __future__ import annotations

import orjson
import pytest

from gateway.bodies import replace_model
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


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b'{"model":"vision","messages":[]}', b'{"model":"Qwen/Qwen2.5-VL","messages":[]}'),
        (b'{ "messages": [], "model" :\n "vision" }', b'{ "messages": [], "model" :\n "Qwen/Qwen2.5-VL" }'),
        (
            b'{"messages":[{"content":"\\"model\\":\\"vision\\""}],"model":"vision"}',
            b'{"messages":[{"content":"\\"model\\":\\"vision\\""}],"model":"Qwen/Qwen2.5-VL"}',
        ),
        (b'{"model":"vision","metadata":{"model":"vision"}}', None),
        (b'{"\\u006dodel":"vision"}', None),
        (b'{"model":"vision","model":"gpt-4o"}', None),
        (b'{"model":"gpt-4o"}', None),
        (
            b'{"say \\"model": 1, "model":"vision"}',
            b'{"say \\"model": 1, "model":"Qwen/Qwen2.5-VL"}',
        ),
    ],
)
@pytest.mark.parametrize("padding", [0, 64 * 1024], ids=["small", "large"])
def test_model_is_swapped_in_raw_bytes_only_when_unambiguous(raw: bytes, expected: bytes | None, padding: int) -> None:
    if padding:  # large bodies (images) are searched from quote to quote instead
        raw = raw[:-1] + b',"pad":"' + b"A" * padding + b'"}'
        expected = None if expected is None else expected[:-1] + b',"pad":"' + b"A" * padding + b'"}'
    parts = replace_model(raw, "vision", "Qwen/Qwen2.5-VL")
    swapped = None if parts is None else b"".join(parts)
    assert swapped == expected
    if swapped is not None:
        assert orjson.loads(swapped) == {**orjson.loads(raw), "model": "Qwen/Qwen2.5-VL"}


def test_an_unfinished_event_is_capped_and_costs_linear_time() -> None:
    from gateway.streaming import EventTooLarge

    relay = EventRelay([], max_pending=1000)
    for _ in range(9):
        assert relay.feed(b"x" * 100) == b""
    with pytest.raises(EventTooLarge, match="without ending"):
        relay.feed(b"x" * 200)


@pytest.mark.parametrize("split", range(1, 8))
def test_an_event_end_split_across_chunks_is_found(split: int) -> None:
    data = b'data: {"a":1}\r\n\r\ndata: {"b":2}\n\n'
    relay = EventRelay([])
    head = relay.feed(b"data: {") + relay.feed(data[7 : 7 + split])
    out = head + relay.feed(data[7 + split :]) + relay.finish()
    assert out == data


def test_events_ended_by_cr_alone_are_relayed() -> None:
    relay = EventRelay(model_replacements("up", "asked"))
    out = relay.feed(b'data: {"model":"up","x":1}\r\rdata: {"model":"up"')
    assert out == b'data: {"model":"asked","x":1}\r\r'
    out = relay.feed(b',"usage":{"total_tokens":3}}\r\rdata: [DONE]\r\r')
    assert out == b'data: {"model":"asked","usage":{"total_tokens":3}}\r\rdata: [DONE]\r\r'
    assert relay.done
    assert relay.usage == {"total_tokens": 3}
