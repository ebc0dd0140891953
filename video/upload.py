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
_MAX_PARTS = 32
_MAX_PART_HEADER_BYTES = 16 * 1024
# Everything that is not the file (form fields, part headers, boundaries) fits in this.
_MAX_OVERHEAD_BYTES = _MAX_PARTS * (_MAX_FIELD_BYTES + _MAX_PART_HEADER_BYTES)


@dataclass
class Upload:
    path: Path | None = None
    filename: str = ""
    size: int = 0
    fields: dict[str, str] = field(default_factory=dict)


def safe_name(filename: str) -> str:
    """A file name with no directories, only harmless characters, and never ``.`` or ``..``."""
    name = os.path.basename(filename.replace("\\", "/")).strip()
    name = re.sub(r"[^A-Za-z0-9._-]", "_", name)[:120].lstrip(".")
    return name or "video"


async def receive_upload(request: Request, destination: Path, max_bytes: int) -> Upload:
    """Stream the ``file`` part into ``destination``; other parts become text fields."""
    content_type, params = parse_options_header(request.headers.get("content-type", ""))
    if content_type != b"multipart/form-data" or b"boundary" not in params:
        raise InvalidRequest("send the video as multipart/form-data with a 'file' part", param="file")
    too_large = f"the upload is larger than the {max_bytes} byte limit"
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > max_bytes + _MAX_OVERHEAD_BYTES:
        raise PayloadTooLarge(too_large)
    upload = Upload()
    state: dict[str, object] = {"headers": {}, "field": b"", "name": None, "sink": None}
    header_field = bytearray()
    header_value = bytearray()
    sink: IO[bytes] | None = None
    errors: list[Exception] = []

    parts = 0

    def on_part_begin() -> None:
        nonlocal parts
        parts += 1
        if parts > _MAX_PARTS:
            errors.append(InvalidRequest(f"the form has more than {_MAX_PARTS} parts"))

    def on_header_field(data: bytes, start: int, end: int) -> None:
        header_field.extend(data[start:end])
        if len(header_field) > _MAX_PART_HEADER_BYTES:
            errors.append(InvalidRequest("a form part's headers are too long"))

    def on_header_value(data: bytes, start: int, end: int) -> None:
        header_value.extend(data[start:end])
        if len(header_value) > _MAX_PART_HEADER_BYTES:
            errors.append(InvalidRequest("a form part's headers are too long"))

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
            if upload.path is not None:
                errors.append(InvalidRequest("send one 'file' part, not several", param="file"))
                return
            upload.filename = disposition.get(b"filename", b"video").decode(errors="replace")
            upload.path = destination
            sink = destination.open("wb")
        state["field"] = b""

    def on_part_data(data: bytes, start: int, end: int) -> None:
        chunk = data[start:end]
        if state["name"] == "file":
            upload.size += len(chunk)
            if upload.size > max_bytes:
                errors.append(PayloadTooLarge(too_large))
                return
            if sink is not None:
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
            "on_part_begin": on_part_begin,
            "on_header_field": on_header_field,
            "on_header_value": on_header_value,
            "on_header_end": on_header_end,
            "on_headers_finished": on_headers_finished,
            "on_part_data": on_part_data,
            "on_part_end": on_part_end,
        },
    )
    received = 0
    try:
        async for chunk in request.stream():
            # Chunked uploads declare no length: the total is counted as it arrives.
            received += len(chunk)
            if received > max_bytes + _MAX_OVERHEAD_BYTES:
                raise PayloadTooLarge(too_large)
            parser.write(chunk)
            if errors:
                raise errors[0]
        parser.finalize()
    except BaseException:  # cancelled too (the client left): the file is closed and removed
        if sink is not None:
            sink.close()
        destination.unlink(missing_ok=True)
        raise
    if upload.path is None:
        raise InvalidRequest("the upload has no 'file' part", param="file")
    return upload
