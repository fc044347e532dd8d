"""Request bodies: their size, the time they may take to arrive, and how many arrive at once.

`BodyLimits` is a pure ASGI middleware that guards every request body before the application
reads it:
- size: a declared Content-Length over `max_bytes` is answered 413 before any of the body is
  read; otherwise the bytes are counted as the application pulls them (multipart parsing
  streams them to a spooled temporary file) and the request stops the moment the count passes
  the limit, so an endless chunked body is cut off there;
- time: the whole body must arrive within `timeout_s` of the request's start; a client that
  trickles bytes gets 408 and the connection is closed (a per-read idle timeout would let a
  byte every few seconds hold a connection forever). An answer given before the body has
  been read first reads the rest of a small body (`DRAIN_MAX_BYTES`), else closes the
  connection: the server would otherwise keep reading the rest;
- concurrency: at most `max_concurrent` bodies are being received at once; beyond that the
  request is answered 503 at once without reading its body, so slow uploads cannot take every
  connection slot and worker.
"""

from __future__ import annotations

import asyncio
import json

from fastapi import UploadFile
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartParser
from starlette.types import ASGIApp, Message, Receive, Scope, Send

#: An answer given before a body was read first reads the rest of a body up to this size
#: (declared by Content-Length): closing with unread bytes in flight makes the client's
#: kernel reset the connection, and the reset can discard the answer before the client
#: reads it (an intermittent "connection reset by peer" instead of the 4xx). Larger or
#: chunked bodies are not read: the connection is closed instead.
DRAIN_MAX_BYTES = 64 * 1024


class UploadTooLargeError(HTTPException):
    """The request body passed the limit. An HTTPException, so the framework's form parser
    lets it through unchanged and the app's handler answers it."""

    def __init__(self, max_bytes: int):
        super().__init__(413, f"request body larger than the limit of {max_bytes} bytes")
        self.max_bytes = max_bytes


class BodyTimeoutError(HTTPException):
    """The request body did not arrive in time (an HTTPException for the same reason)."""

    def __init__(self, timeout_s: float):
        super().__init__(408, f"the request body did not arrive within {timeout_s:g} s")


def too_large_body(max_bytes: int) -> dict:
    return {
        "detail": f"request body larger than the limit of {max_bytes} bytes",
        "code": "upload_too_large",
        "max_upload_bytes": max_bytes,
    }


def _has_body(scope: Scope) -> bool:
    headers = dict(scope["headers"])
    length = headers.get(b"content-length")
    return (length is not None and length.strip() not in (b"", b"0")) or (
        b"chunked" in headers.get(b"transfer-encoding", b"").lower()
    )


class BodyLimits:
    """Pure ASGI middleware: bounded size, arrival time and concurrency of request bodies."""

    def __init__(self, app: ASGIApp, max_bytes: int, timeout_s: float, max_concurrent: int):
        self.app = app
        self.max_bytes = max_bytes
        self.timeout_s = timeout_s
        self.max_concurrent = max_concurrent
        self.receiving = 0  # bodies being received now

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not _has_body(scope):
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await _reject(send, 413, too_large_body(self.max_bytes))  # before any body byte
            return
        if self.receiving >= self.max_concurrent:
            body = {
                "detail": f"{self.receiving} uploads are being received; retry later",
                "code": "too_many_uploads",
            }
            await _reject(send, 503, body, [(b"retry-after", b"1")])
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout_s
        received = 0
        receiving = True
        started = False
        self.receiving += 1

        def done_receiving() -> None:
            nonlocal receiving
            if receiving:
                receiving = False
                self.receiving -= 1

        async def limited_receive() -> Message:
            nonlocal received
            if not receiving:
                return await receive()  # body complete: only the disconnect is left to wait for
            try:
                # A deadline on this await, not wait_for: that wraps every body chunk in a task.
                async with asyncio.timeout_at(deadline):
                    message = await receive()
            except TimeoutError:
                done_receiving()
                raise BodyTimeoutError(self.timeout_s) from None
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    done_receiving()
                    raise UploadTooLargeError(self.max_bytes)
                if not message.get("more_body", False):
                    done_receiving()
            else:
                done_receiving()
            return message

        async def drain() -> bool:
            """Read the rest of a small declared body (within the deadline): True when it
            is all read, so the connection stays usable."""
            if declared is None or not declared.isdigit() or int(declared) > DRAIN_MAX_BYTES:
                return False
            try:
                while receiving:
                    if (await limited_receive())["type"] != "http.request":
                        return False
            except (BodyTimeoutError, UploadTooLargeError):
                return False
            return True

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                if receiving and not await drain():
                    # Answered before the body was read (an error): close the connection, or
                    # the server would go on reading the rest of the body with no deadline.
                    headers = [(k, v) for k, v in message.get("headers", []) if k != b"connection"]
                    message = {**message, "headers": [*headers, (b"connection", b"close")]}
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except UploadTooLargeError:
            if started:
                raise
            await _reject(send, 413, too_large_body(self.max_bytes))  # no handler caught it
        except BodyTimeoutError as err:
            if started:
                raise
            await _reject(send, 408, {"detail": err.detail, "code": "body_timeout"})
        finally:
            done_receiving()


async def _reject(send: Send, status: int, body: dict, headers: list | None = None) -> None:
    """A JSON answer that closes the connection (the unread body makes it unusable)."""
    data = json.dumps(body).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(data)).encode()),
                (b"connection", b"close"),
                *(headers or []),
            ],
        }
    )
    await send({"type": "http.response.body", "body": data})


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
