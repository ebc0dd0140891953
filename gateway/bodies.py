"""Reading and checking client request bodies before they are forwarded.

Bodies are parsed with simdjson's lazy documents: validation reads ``model``, ``stream``
and the message part types without materialising megabytes of base64 image strings.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import orjson
import simdjson
from starlette.requests import Request

from gateway.errors import InvalidRequest, PayloadTooLarge

_IMAGE_PART_TYPES = frozenset({"image_url", "input_image", "image", "video_url"})
_MODEL_KEY = b'"model"'
_STREAM_KEY = b'"stream"'
_IMAGE_TOKENS = (b'"image_url"', b'"input_image"', b'"video_url"', b'"type":"image"', b'"type": "image"')
# Bodies larger than this (images) are scanned, not parsed: see scan_facts.
SCAN_ABOVE_BYTES = 256 * 1024
_MAX_QUOTES_SCANNED = 50_000
_MAX_MODEL_TOKENS = 1_000  # a body quoting "model" more often than this is re-serialised instead
_FIND_WORDS_BELOW_BYTES = 16 * 1024
# A reused parser keeps the capacity of the largest body it saw; larger bodies get their own.
_REUSE_PARSER_UP_TO = 4 * 1024 * 1024


@dataclass(frozen=True)
class RequestFacts:
    """What routing needs to know about a request body."""

    model: str
    stream: bool
    has_images: bool
    # Where the top-level model's JSON string lies in the body, when a scan found it (large bodies).
    model_span: tuple[int, int] | None = field(default=None, compare=False)
    user: str | None = None  # OpenAI's ``user`` field (a session key for engine-aware routing), when parsed


def refuse_declared_over(request: Request, limit: int, what: str) -> None:
    """413 at once when the request's Content-Length says it is over ``limit`` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"{what} is larger than the {limit} byte limit")


async def read_body(request: Request, limit: int) -> bytes:
    """The raw body, refusing bodies over ``limit`` bytes without buffering them."""
    refuse_declared_over(request, limit, "request body")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"request body is larger than the {limit} byte limit")
        chunks.append(chunk)
    if not size:
        raise InvalidRequest("request body is empty; send a JSON object")
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


class BodyInspector:
    """Parses request bodies, reusing one simdjson parser (and its buffers) where it can."""

    def __init__(self) -> None:
        self._parser = simdjson.Parser()

    def inspect(self, raw: bytes, field: str | None, required: tuple[str, ...] = ()) -> RequestFacts:
        """Validate ``model``, the endpoint's main ``field``, the ``required`` ones and ``stream``,
        and look for images."""
        if len(raw) > SCAN_ABOVE_BYTES:
            scanned = scan_facts(raw, field, required)
            if scanned is not None:
                return scanned
        parser = self._parser if len(raw) <= _REUSE_PARSER_UP_TO else simdjson.Parser()
        try:
            body = _parse(parser, raw)
        except _ParserBusy:
            # A document of the shared parser is still referenced (an error being reported).
            body = _parse(simdjson.Parser(), raw)
        return _facts(body, field, required)


class _ParserBusy(Exception):
    """The shared parser cannot parse while one of its documents is still referenced."""


def _parse(parser: simdjson.Parser, raw: bytes) -> object:
    try:
        return parser.parse(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        reason = str(exc).split(":", 1)[-1].split(".")[0].strip()
        raise InvalidRequest(f"request body is not valid JSON: {reason}") from None
    except RuntimeError as exc:
        if "BIGINT" in str(exc):
            raise InvalidRequest("request body has an integer beyond the 64-bit range") from None
        raise _ParserBusy from None


def _facts(body: object, field: str | None, required: tuple[str, ...] = ()) -> RequestFacts:
    if not isinstance(body, simdjson.Object):
        raise InvalidRequest("request body must be a JSON object")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise InvalidRequest("'model' is required and must be a non-empty string", param="model")
    value = body.get(field) if field is not None else None
    if field is not None and (value is None or (isinstance(value, simdjson.Array | str) and not len(value))):
        raise InvalidRequest(f"'{field}' is required and must not be empty", param=field)
    if field == "messages" and not isinstance(value, simdjson.Array):
        raise InvalidRequest("'messages' must be a list of message objects", param="messages")
    for name in required:
        if body.get(name) is None:
            raise InvalidRequest(f"'{name}' is required", param=name)
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise InvalidRequest("'stream' must be true or false", param="stream")
    images = field in _ITEM_FIELDS and isinstance(value, simdjson.Array) and _has_images(value)
    user = body.get("user")
    return RequestFacts(model, stream, images, user=user if isinstance(user, str) and user else None)


_ITEM_FIELDS = frozenset({"messages", "input"})  # chat and Anthropic messages, Responses input items


def _has_images(messages: simdjson.Array) -> bool:
    for message in messages:
        content = message.get("content") if isinstance(message, simdjson.Object) else None
        if isinstance(message, simdjson.Object) and message.get("type") in _IMAGE_PART_TYPES:
            return True
        if isinstance(content, simdjson.Array):
            for part in content:
                if isinstance(part, simdjson.Object) and part.get("type") in _IMAGE_PART_TYPES:
                    return True
    return False


def scan_facts(raw: bytes, field: str | None, required: tuple[str, ...] = ()) -> RequestFacts | None:
    """``model``, ``stream`` and images of a large body from one scan of its bytes, without
    parsing megabytes of base64; None when the scan cannot be sure (the caller then parses).

    Such a body is not validated here: the deployment parses it anyway and its 400 is passed on.
    Keys are found as in ``replace_model``; an image part is any image type token.
    """
    names = ((field,) if field is not None else ()) + required
    found = _key_values(raw, (_MODEL_KEY, _STREAM_KEY, *(b'"' + n.encode() + b'"' for n in names)), _IMAGE_TOKENS)
    if found is None:
        return None
    (models, streams, *fields), saw_image = found
    if len(models) != 1 or len(streams) > 1 or not all(fields):
        return None
    string = _json_string_at(raw, models[0])
    if string is None or not string[0]:
        return None
    model, end = string
    stream = False
    if streams:
        if raw.startswith(b"true", streams[0]):
            stream = True
        elif not raw.startswith(b"false", streams[0]):
            return None
    return RequestFacts(model, stream, field in _ITEM_FIELDS and saw_image, (models[0], end))


def _key_values(raw: bytes, keys: tuple[bytes, ...], tokens: tuple[bytes, ...]) -> tuple[list[list[int]], bool] | None:
    """For each key, where the values of its unescaped ``"key":`` occurrences start; and whether
    any of ``tokens`` (each starting with a quote) occurs. One pass from quote to quote (memchr):
    searching megabytes for a word costs ~0.5 ms a MiB, for a quote next to nothing."""
    found: list[list[int]] = [[] for _ in keys]
    saw_token = False
    position, hops = raw.find(b'"'), 0
    while position >= 0:
        hops += 1
        if hops > _MAX_QUOTES_SCANNED:
            return None
        for index, key in enumerate(keys):
            if raw.startswith(key, position) and not escaped(raw, position):
                after = _skip_space(raw, position + len(key))
                if raw[after : after + 1] == b":":
                    found[index].append(_skip_space(raw, after + 1))
        if not saw_token:
            saw_token = any(raw.startswith(token, position) for token in tokens)
        position = raw.find(b'"', position + 1)
    return found, saw_token


def _json_string_at(raw: bytes, start: int) -> tuple[str, int] | None:
    """The JSON string starting at ``start`` and the offset just past it."""
    if raw[start : start + 1] != b'"':
        return None
    end = raw.find(b'"', start + 1)
    while end >= 0 and escaped(raw, end):
        end = raw.find(b'"', end + 1)
    if end < 0:
        return None
    try:
        value = orjson.loads(raw[start : end + 1])
    except orjson.JSONDecodeError:
        return None
    return (value, end + 1) if isinstance(value, str) else None


def replace_model(raw: bytes, current: str, new: str) -> list[bytes | memoryview] | None:
    """Swap the ``model`` value in raw JSON bytes without re-serialising megabytes of images.

    Returns the body as pieces to send one after the other (the payload is not copied),
    or None unless the body has exactly one ``"model"`` key and its value is ``current``;
    the caller then re-serialises. Inside a JSON string every quote is escaped, so an
    unescaped ``"model"`` followed by ``:`` can only be an object key, and a single one is
    the top-level key the parser saw.
    """
    try:
        value = orjson.dumps(current)
    except orjson.JSONEncodeError:
        return None  # not encodable as UTF-8 (a lone surrogate): the caller re-serialises
    positions = _model_tokens(raw)
    if positions is None:
        return None
    span: tuple[int, int] | None = None
    for position in positions:
        if escaped(raw, position):
            continue
        after = _skip_space(raw, position + len(_MODEL_KEY))
        if raw[after : after + 1] == b":":
            if span is not None:
                return None
            start = _skip_space(raw, after + 1)
            if not raw.startswith(value, start):
                return None
            span = (start, start + len(value))
    if span is None:
        return None
    if current == new:
        return [raw]
    view = memoryview(raw)
    return [view[: span[0]], orjson.dumps(new), view[span[1] :]]


def _model_tokens(raw: bytes) -> list[int] | None:
    """Where ``"model"`` occurs; None past a bound (the caller then re-serialises).

    A small body is searched for the token itself; a large one from quote to quote (memchr),
    because base64 has no quotes while searching it for a word costs ~0.5 ms a MiB.
    """
    found: list[int] = []
    if len(raw) <= _FIND_WORDS_BELOW_BYTES:
        position = raw.find(_MODEL_KEY)
        while position >= 0:
            found.append(position)
            if len(found) > _MAX_MODEL_TOKENS:
                return None
            position = raw.find(_MODEL_KEY, position + 1)
        return found
    position, hops = raw.find(b'"'), 0
    while position >= 0:
        hops += 1
        if hops > _MAX_QUOTES_SCANNED:
            return None
        if raw.startswith(_MODEL_KEY, position):
            found.append(position)
        position = raw.find(b'"', position + 1)
    return found


def escaped(raw: bytes, position: int) -> bool:
    """Whether the character at ``position`` is escaped by the backslashes before it."""
    backslashes = 0
    while position - backslashes - 1 >= 0 and raw[position - backslashes - 1] == 0x5C:
        backslashes += 1
    return backslashes % 2 == 1


def _skip_space(raw: bytes, position: int) -> int:
    while raw[position : position + 1] in (b" ", b"\t", b"\n", b"\r"):
        position += 1
    return position
