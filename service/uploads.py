"""Uploads: the request-size limit, enforced while the body streams in, and reading.

`BodySizeLimit` answers 413 from a declared Content-Length over the limit before reading any
of the body, and otherwise counts the bytes as the application pulls them (multipart parsing
streams them to a spooled temporary file) and stops the request the moment the count passes
the limit; a client streaming an endless chunked body is cut off there.
"""

from __future__ import annotations

import json

from fastapi import UploadFile
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartParser
from starlette.types import ASGIApp, Message, Receive, Scope, Send


class UploadTooLargeError(HTTPException):
    """The request body passed the limit. An HTTPException, so the framework's form parser
    lets it through unchanged and the app's handler answers it."""

    def __init__(self, max_bytes: int):
        super().__init__(413, f"request body larger than the limit of {max_bytes} bytes")
        self.max_bytes = max_bytes


def too_large_body(max_bytes: int) -> dict:
    return {
        "detail": f"request body larger than the limit of {max_bytes} bytes",
        "code": "upload_too_large",
        "max_upload_bytes": max_bytes,
    }


class BodySizeLimit:
    """Pure ASGI middleware: no request body may exceed `max_bytes`."""

    def __init__(self, app: ASGIApp, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._reject(send)  # before a single body byte is read
            return
        received = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise UploadTooLargeError(self.max_bytes)
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except UploadTooLargeError:
            if started:
                raise
            await self._reject(send)  # raised where no handler of the app caught it

    async def _reject(self, send: Send) -> None:
        body = json.dumps(too_large_body(self.max_bytes)).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


def keep_uploads_in_memory(max_bytes: int) -> None:
    """Let multipart parsing keep a file part of up to `max_bytes` in memory.

    Starlette spools a part over 1 MiB to a temporary file, writing every later chunk (about
    64 KiB) from a thread-pool thread: a 3-MB song cost some 40 thread hops and a disk write
    and read before decoding, which reads the whole upload into memory anyway. The body is
    size-checked while it streams (`BodySizeLimit`), so memory per request stays bounded.
    """
    MultiPartParser.spool_max_size = max(MultiPartParser.spool_max_size, max_bytes)


async def read_upload(file: UploadFile) -> bytes:
    """The uploaded file's bytes (the body was size-checked while it was received)."""
    return await file.read()
