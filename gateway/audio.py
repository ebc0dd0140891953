"""Audio uploads (``multipart/form-data``): read to a spooled file, sent on with ``model`` renamed.

Starlette's form parser (python-multipart) keeps a part in memory up to 1 MiB and on disk past
it; the body is counted as it arrives and refused past ``max_audio_bytes``. The file goes
upstream from a memory map of its spool file, so a 100 MiB upload costs page cache, not heap,
and a retry sends it again without reading it twice.
"""

from __future__ import annotations

import mmap
import os
import re
from dataclasses import dataclass, field
from typing import Any, BinaryIO

from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException
from starlette.requests import Request
from starlette.types import Message

from gateway.bodies import refuse_declared_over
from gateway.errors import InvalidRequest, PayloadTooLarge

_MAX_FIELDS = 100
_INLINE_BYTES = 1024 * 1024  # smaller files are sent from memory
_FIELD_NAME = re.compile(r"[A-Za-z0-9_.\[\]-]{1,100}")  # what OpenAI's fields look like (timestamp_granularities[])


@dataclass
class Upload:
    """One audio request: its form fields and its file."""

    fields: list[tuple[str, str]]
    file: UploadFile
    model: str
    stream: bool
    _boundary: str = field(default_factory=lambda: "gateway-" + os.urandom(12).hex())

    @property
    def content_type(self) -> bytes:
        return f"multipart/form-data; boundary={self._boundary}".encode()

    def encoded_for(self, upstream_model: str) -> list[bytes | memoryview]:
        """The multipart body with ``model`` set to ``upstream_model``."""
        boundary = self._boundary.encode()
        parts: list[bytes | memoryview] = []
        for name, value in [("model", upstream_model), *((n, v) for n, v in self.fields if n != "model")]:
            parts.append(b"--" + boundary + b"\r\nContent-Disposition: form-data; name=" + _quoted(name) + b"\r\n\r\n")
            parts.append(value.encode() + b"\r\n")
        filename = _quoted(self.file.filename or "audio")
        media_type = (self.file.content_type or "application/octet-stream").encode("latin-1", "replace")
        parts.append(
            b"--" + boundary + b'\r\nContent-Disposition: form-data; name="file"; filename=' + filename + b"\r\n"
            b"Content-Type: " + media_type + b"\r\n\r\n"
        )
        parts.append(_contents(self.file))
        parts.append(b"\r\n--" + boundary + b"--\r\n")
        return parts

    def values(self) -> dict[str, Any]:
        """The form's fields as SDK arguments: numbers parsed, ``timestamp_granularities[]`` a list."""
        values: dict[str, Any] = {}
        for name, value in self.fields:
            if name.endswith("[]"):
                values.setdefault(name[:-2], []).append(value)
            elif name == "temperature":
                try:
                    values[name] = float(value)
                except ValueError:
                    raise InvalidRequest("'temperature' must be a number", param="temperature") from None
            else:
                values[name] = value
        return values

    def file_part(self) -> tuple[str, BinaryIO, str]:
        """The file as an HTTP client takes it (name, readable file, media type), from its start."""
        self.file.file.seek(0)
        return self.file.filename or "audio", self.file.file, self.file.content_type or "application/octet-stream"

    async def close(self) -> None:
        await self.file.close()


def _quoted(value: str) -> bytes:
    escaped = value.replace("\\", "\\\\").replace('"', "%22").replace("\r", "%0D").replace("\n", "%0A")
    return b'"' + escaped.encode() + b'"'


def _contents(upload: UploadFile) -> bytes | memoryview:
    spool = upload.file
    spool.seek(0, os.SEEK_END)
    size = spool.tell()
    spool.seek(0)
    if size == 0:
        return b""
    if size <= _INLINE_BYTES:
        return spool.read()
    # fileno() moves a spool still in memory to disk; the map outlives the file's closing.
    return memoryview(mmap.mmap(spool.fileno(), 0, access=mmap.ACCESS_READ))


async def read_upload(request: Request, limit: int) -> Upload:
    """The audio request, or 400 (not multipart, no file, no model) / 413 (past ``limit`` bytes)."""
    refuse_declared_over(request, limit, "audio upload")
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        raise InvalidRequest("send the audio as multipart/form-data with a 'file' part", param="file")
    received = 0
    receive = request.receive

    async def counted() -> Message:
        nonlocal received
        message = await receive()
        received += len(message.get("body", b""))
        if received > limit:
            raise PayloadTooLarge(f"audio upload is larger than the {limit} byte limit")
        return message

    counting = Request(request.scope, counted)
    try:
        form = await counting.form(max_files=1, max_fields=_MAX_FIELDS)
    except MultiPartException as exc:
        raise InvalidRequest(f"the multipart body cannot be read: {exc.message}") from None
    fields: list[tuple[str, str]] = []
    upload: UploadFile | None = None
    for name, value in form.multi_items():
        if not _FIELD_NAME.fullmatch(name):
            await form.close()
            raise InvalidRequest(f"form field name {name[:40]!r} is not valid", param=name[:40])
        if isinstance(value, UploadFile):
            if name == "file":
                upload = value
            else:
                await value.close()
        else:
            fields.append((name, value))
    if upload is None:
        raise InvalidRequest("'file' is required: the audio to transcribe, as a file part", param="file")
    values = dict(fields)
    model = values.get("model", "")
    if not model:
        await upload.close()
        raise InvalidRequest("'model' is required and must be a non-empty string", param="model")
    stream = values.get("stream", "false").lower()
    if stream not in ("true", "false"):
        await upload.close()
        raise InvalidRequest("'stream' must be true or false", param="stream")
    return Upload(fields, upload, model, stream == "true")
