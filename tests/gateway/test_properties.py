"""Property tests of the body inspector and the zero-copy model rewrite against a JSON round trip."""

from __future__ import annotations

import json
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.bodies import BodyInspector, RequestFacts, replace_model
from gateway.errors import InvalidRequest

pytestmark = pytest.mark.unit
# Derandomized, so that CI sees the same examples every run.
PROPERTY = settings(max_examples=400, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])

# Text with everything JSON can carry, lone UTF-16 surrogates included.
any_text = st.text(st.characters(codec=None, exclude_categories=()), max_size=12)
plain_text = st.text(max_size=12)
scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | any_text
)
values = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(any_text | st.just("model"), children, max_size=3)
    ),
    max_leaves=12,
)
bodies = st.builds(
    lambda extra, fields: {**extra, **fields},
    st.dictionaries(any_text, values, max_size=3),
    st.fixed_dictionaries({}, optional={"model": values, "messages": values, "stream": values}),
)


def _serialise(body: dict[str, Any], style: int) -> bytes:
    if style == 0:
        return json.dumps(body).encode()
    if style == 1:
        return json.dumps(body, indent=2, separators=(" , ", " : ")).encode()
    return json.dumps(body, ensure_ascii=False).encode("utf-8", "surrogatepass")


def _unparseable(value: Any) -> bool:
    """Lone surrogates and integers beyond 64 bits: valid for Python's parser, refused with a 400 by ours."""
    if isinstance(value, str):
        return any(0xD800 <= ord(c) <= 0xDFFF for c in value)
    if isinstance(value, int) and not isinstance(value, bool):
        return not -(2**63) <= value < 2**64
    if isinstance(value, list):
        return any(_unparseable(v) for v in value)
    if isinstance(value, dict):
        return any(_unparseable(k) or _unparseable(v) for k, v in value.items())
    return False


def _reference(body: dict[str, Any]) -> RequestFacts | None:
    """What the inspector must find, worked out on the parsed body; None where it must refuse."""
    model, messages, stream = body.get("model"), body.get("messages"), body.get("stream", False)
    if not isinstance(model, str) or not model or messages is None:
        return None
    if not isinstance(messages, list) or not messages or not isinstance(stream, bool):
        return None
    images = any(
        isinstance(m, dict)
        and isinstance(m.get("content"), list)
        and any(
            isinstance(p, dict) and p.get("type") in ("image_url", "input_image", "image", "video_url")
            for p in m["content"]
        )
        for m in messages
    )
    return RequestFacts(model, stream, images)


@PROPERTY
@given(body=bodies, style=st.integers(0, 2))
def test_the_inspector_agrees_with_a_json_parser_or_refuses_with_400(body: dict[str, Any], style: int) -> None:
    raw = _serialise(body, style)
    expected = None if _unparseable(body) else _reference(body)
    try:
        facts = BodyInspector().inspect(raw, "messages")
    except InvalidRequest:
        assert expected is None
        return
    assert facts == expected


@PROPERTY
@given(body=bodies, new=plain_text, style=st.integers(0, 2))
def test_replace_model_matches_a_round_trip(body: dict[str, Any], new: str, style: int) -> None:
    model = body.get("model")
    if not isinstance(model, str):
        return
    raw = _serialise(body, style)
    pieces = replace_model(raw, model, new)
    if pieces is None:
        return  # the caller then re-serialises the parsed body
    rewritten = json.loads(b"".join(bytes(p) for p in pieces))
    assert rewritten == {**json.loads(raw), "model": new}


@PROPERTY
@given(model=plain_text.filter(bool), new=plain_text, messages=st.lists(values, min_size=1, max_size=3))
def test_replace_model_rewrites_in_place_when_model_is_the_only_model_key(
    model: str, new: str, messages: list[Any]
) -> None:
    if _unparseable(messages) or "model" in json.dumps(messages) or not -(2**63) <= _max_int(messages) < 2**63:
        return
    raw = orjson.dumps({"model": model, "messages": messages})
    pieces = replace_model(raw, model, new)
    assert pieces is not None
    assert orjson.loads(b"".join(bytes(p) for p in pieces)) == {"model": new, "messages": messages}


def _max_int(value: Any) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return abs(value)
    if isinstance(value, list):
        return max((_max_int(v) for v in value), default=0)
    if isinstance(value, dict):
        return max((_max_int(v) for v in value.values()), default=0)
    return 0


@PROPERTY
@given(body=bodies, style=st.integers(0, 2), with_image=st.booleans())
def test_the_scan_of_large_bodies_agrees_with_the_parser_whenever_it_answers(
    body: dict[str, Any], style: int, with_image: bool
) -> None:
    from gateway.bodies import scan_facts

    if with_image and isinstance(body.get("messages"), list):
        image = {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,AAAA"}}
        body["messages"] = [*body["messages"], {"role": "user", "content": [image]}]
    raw = _serialise(body, style)
    scanned = scan_facts(raw, "messages")
    expected = None if _unparseable(body) else _reference(body)
    if scanned is not None and expected is not None:
        assert scanned.model == expected.model
        assert scanned.stream == expected.stream
        assert scanned.has_images or not expected.has_images, "an image is never missed"


def test_a_large_image_body_is_scanned_not_parsed() -> None:
    from gateway.bodies import SCAN_ABOVE_BYTES, scan_facts

    image = "A" * (SCAN_ABOVE_BYTES + 1)
    raw = orjson.dumps(
        {
            "model": "vision",
            "stream": True,
            "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": image}}]}],
            "tools": [{"type": "function", "function": {"name": "f", "parameters": {"properties": {}}}}],
        }
    )
    assert BodyInspector().inspect(raw, "messages") == RequestFacts("vision", True, True)
    assert scan_facts(raw, "messages") == RequestFacts("vision", True, True)
    # Two "stream" keys (one in a tool's schema): the scan is unsure, the parser decides.
    nested = raw.replace(b'"properties":{}', b'"properties":{"stream":{"type":"boolean"}}')
    assert scan_facts(nested, "messages") is None
    assert BodyInspector().inspect(nested, "messages") == RequestFacts("vision", True, True)


@pytest.mark.parametrize("model_token", [b'"vision"', b'"vi\\u0073ion"'])
def test_a_scanned_body_is_rewritten_at_the_model_it_found(model_token: bytes) -> None:
    from gateway.bodies import SCAN_ABOVE_BYTES, scan_facts
    from gateway.forwarding import Call

    image = b"A" * (SCAN_ABOVE_BYTES + 1)
    raw = (
        b'{"messages":[{"role":"user","content":[{"type":"text","text":"say \\"model\\": x"},'
        b'{"type":"image_url","image_url":{"url":"' + image + b'"}}]}],"model" : ' + model_token + b"}"
    )
    facts = scan_facts(raw, "messages")
    assert facts == RequestFacts("vision", False, True)
    assert facts.model_span is not None
    call = Call("chat/completions", raw, "vision", False, True, "id", accounting=None, model_span=facts.model_span)  # type: ignore[arg-type]
    rewritten = b"".join(bytes(part) for part in call.encoded_for("Qwen/Qwen2.5-VL"))
    assert orjson.loads(rewritten) == {**orjson.loads(raw), "model": "Qwen/Qwen2.5-VL"}
