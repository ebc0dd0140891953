"""Receives a multipart upload straight to disk, refusing it once it passes the size limit."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import Request

from common.errors import InvalidRequest, PayloadTooLarge

_MAX_FIELD_BYTES = 64 * 1024


@dataclass
class Upload:
    path: Path | None = None
    filename: str = ""
    size: int = 0
    fields: dict[str, str] = field(default_factory=dict)


def safe_name(filename: str) -> str:
    """A file name with no directories and only harmless characters."""
    name = os.path.basename(filename.replace("\\", "/")).strip() or "video"
    return re.sub(r"[^A-Za-z0-9._-]", "_", name)[:120]


async def receive_upload(request: Request, destination: Path, max_bytes: int) -> Upload:
    """Stream the ``file`` part into ``destination``; other parts become text fields."""
    content_type, params = parse_options_header(request.headers.get("content-type", ""))
    if content_type != b"multipart/form-data" or b"boundary" not in params:
        raise InvalidRequest("send the video as multipart/form-data with a 'file' part", param="file")
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > max_bytes + _MAX_FIELD_BYTES:
        raise PayloadTooLarge(f"the upload is larger than the {max_bytes} byte limit")
    upload = Upload()
    state: dict[str, object] = {"headers": {}, "field": b"", "name": None, "sink": None}
    header_field = bytearray()
    header_value = bytearray()
    sink: IO[bytes] | None = None
    errors: list[Exception] = []

    def on_header_field(data: bytes, start: int, end: int) -> None:
        header_field.extend(data[start:end])

    def on_header_value(data: bytes, start: int, end: int) -> None:
        header_value.extend(data[start:end])

    def on_header_end() -> None:
        headers = state["headers"]
        assert isinstance(headers, dict)
        headers[bytes(header_field).lower()] = bytes(header_value)
        header_field.clear()
        header_value.clear()

    def on_headers_finished() -> None:
        nonlocal sink
        headers = state["headers"]
        assert isinstance(headers, dict)
        _, disposition = parse_options_header(headers.get(b"content-disposition", b""))
        name = disposition.get(b"name", b"").decode(errors="replace")
        state["name"] = name
        if name == "file":
            upload.filename = disposition.get(b"filename", b"video").decode(errors="replace")
            upload.path = destination
            sink = destination.open("wb")
        state["field"] = b""

    def on_part_data(data: bytes, start: int, end: int) -> None:
        chunk = data[start:end]
        if state["name"] == "file":
            upload.size += len(chunk)
            if upload.size > max_bytes:
                errors.append(PayloadTooLarge(f"the upload is larger than the {max_bytes} byte limit"))
                return
            assert sink is not None
            sink.write(chunk)
        else:
            value = state["field"]
            assert isinstance(value, bytes)
            if len(value) + len(chunk) > _MAX_FIELD_BYTES:
                errors.append(InvalidRequest(f"form field '{state['name']}' is too long"))
                return
            state["field"] = value + chunk

    def on_part_end() -> None:
        nonlocal sink
        name = state["name"]
        if name == "file" and sink is not None:
            sink.close()
            sink = None
        elif isinstance(name, str) and name:
            value = state["field"]
            assert isinstance(value, bytes)
            upload.fields[name] = value.decode(errors="replace")
        state["headers"] = {}

    parser = MultipartParser(
        params[b"boundary"],
        {
            "on_header_field": on_header_field,
            "on_header_value": on_header_value,
            "on_header_end": on_header_end,
            "on_headers_finished": on_headers_finished,
            "on_part_data": on_part_data,
            "on_part_end": on_part_end,
        },
    )
    try:
        async for chunk in request.stream():
            parser.write(chunk)
            if errors:
                raise errors[0]
        parser.finalize()
    except Exception:
        if sink is not None:
            sink.close()
        destination.unlink(missing_ok=True)
        raise
    if upload.path is None:
        raise InvalidRequest("the upload has no 'file' part", param="file")
    return upload
