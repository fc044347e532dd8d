"""Request bodies: their size, the time and rate at which they arrive, and fair upload slots.

`BodyLimits` is a pure ASGI middleware that guards every request body before the application
reads it:
- size: a declared Content-Length over `max_bytes` is answered 413 before any of the body is
  read; otherwise the bytes are counted as the application pulls them (multipart parsing
  streams them into memory) and the request stops the moment the count passes the limit,
  so an endless chunked body is cut off there;
- time: the whole body must arrive within `timeout_s` of the request's start (408
  `body_timeout`): a per-read idle timeout would let a byte every few seconds hold a
  connection for good;
- rate: after `grace_s`, the body must have kept an average of `min_rate` bytes/s since
  the start (408 `body_too_slow`), so a client trickling a byte every 2 s is closed after
  the grace period, not after `timeout_s`;
- slots (`service.upload_slots`): a body past 64 KiB needs one of `max_concurrent` slots,
  the last `reserve` of them only for bodies that got there within the grace period, at
  most `per_client` per client address; a body that finds none waits (up to
  `SLOT_WAIT_S`, then 503 `too_many_uploads`), and its time waiting does not count
  against its rate.
An answer given before the body has been read first reads the rest of a small body
(`DRAIN_MAX_BYTES`), else closes the connection (lingering: `service.http_server`).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from fastapi import UploadFile
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartParser
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.upload_slots import SLOT_AFTER_BYTES, UploadSlots

#: An answer given before a body was read first reads the rest of a body up to this size
#: (declared by Content-Length), so the connection stays usable; larger or chunked bodies
#: are not read: the connection is closed instead.
DRAIN_MAX_BYTES = 64 * 1024
#: Longest a body waits for an upload slot before 503 `too_many_uploads`.
SLOT_WAIT_S = 10.0


class BodyRefusedError(HTTPException):
    """A request body stopped by a limit: status, stable code, message, extra fields. An
    HTTPException, so the framework's form parser lets it through unchanged and the app's
    handler answers it (`body()` is the answer)."""

    code = "body_refused"

    def __init__(
        self, status: int, detail: str, headers: dict[str, str] | None = None, **extra: Any
    ):
        super().__init__(status, detail, headers={"Connection": "close", **(headers or {})})
        self.extra = extra

    def body(self) -> dict[str, Any]:
        return {"detail": self.detail, "code": self.code, "errors": [], **self.extra}


class UploadTooLargeError(BodyRefusedError):
    code = "upload_too_large"

    def __init__(self, max_bytes: int):
        detail = f"request body larger than the limit of {max_bytes} bytes"
        super().__init__(413, detail, max_upload_bytes=max_bytes)
        self.max_bytes = max_bytes


class BodyTimeoutError(BodyRefusedError):
    code = "body_timeout"

    def __init__(self, timeout_s: float):
        super().__init__(408, f"the request body did not arrive within {timeout_s:g} s")


class BodyTooSlowError(BodyRefusedError):
    code = "body_too_slow"

    def __init__(self, min_rate: float, grace_s: float):
        super().__init__(
            408,
            f"the request body arrived slower than {min_rate / 1024:g} KiB/s after the first "
            f"{grace_s:g} s",
        )


class UploadsBusyError(BodyRefusedError):
    code = "too_many_uploads"

    def __init__(self, waited_s: float):
        super().__init__(
            503,
            f"no upload slot came free within {waited_s:g} s; retry later",
            headers={"Retry-After": "1"},
        )


def too_large_body(max_bytes: int) -> dict:
    return UploadTooLargeError(max_bytes).body()


def _has_body(scope: Scope) -> bool:
    headers = dict(scope["headers"])
    length = headers.get(b"content-length")
    return (length is not None and length.strip() not in (b"", b"0")) or (
        b"chunked" in headers.get(b"transfer-encoding", b"").lower()
    )


class BodyLimits:
    """Pure ASGI middleware: bounded size, arrival time and rate of request bodies, and
    fair upload slots."""

    def __init__(
        self,
        app: ASGIApp,
        max_bytes: int,
        timeout_s: float,
        max_concurrent: int,
        *,
        grace_s: float = 2.0,
        min_rate: float = 4096.0,
        per_client: int = 4,
        reserve: int = 4,
    ):
        self.app = app
        self.max_bytes = max_bytes
        self.timeout_s = timeout_s
        self.grace_s = grace_s
        self.min_rate = min_rate
        self.slots = UploadSlots(max_concurrent, reserve, per_client)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not _has_body(scope):
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await _reject(send, UploadTooLargeError(self.max_bytes))  # before any body byte
            return
        body = _Body(self, scope, receive)
        started = False

        async def drain() -> bool:
            """Read the rest of a small declared body (within the deadline): True when it
            is all read, so the connection stays usable."""
            if declared is None or not declared.isdigit() or int(declared) > DRAIN_MAX_BYTES:
                return False
            try:
                while body.receiving:
                    if (await body.receive())["type"] != "http.request":
                        return False
            except BodyRefusedError:
                return False
            return True

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                if body.receiving and not await drain():
                    # Answered before the body was read (an error): close the connection, or
                    # the server would go on reading the rest of the body with no deadline.
                    headers = [(k, v) for k, v in message.get("headers", []) if k != b"connection"]
                    message = {**message, "headers": [*headers, (b"connection", b"close")]}
            await send(message)

        try:
            await self.app(scope, body.receive, tracking_send)
        except BodyRefusedError as err:
            if started:
                raise
            await _reject(send, err)  # no handler caught it
        finally:
            body.done()


class _Body:
    """One request body as the application pulls it, under the limits of `limits`."""

    def __init__(self, limits: BodyLimits, scope: Scope, receive: Receive):
        self.limits = limits
        self.client = (scope.get("client") or ("?", 0))[0]
        self._receive = receive
        self.loop = asyncio.get_running_loop()
        self.start = self.loop.time()  # moved on by the time spent waiting for a slot
        self.deadline = self.start + limits.timeout_s
        self.received = 0
        self.receiving = True
        self.slot = False
        self.fast = False  # the slot's kind (service.upload_slots)

    def done(self) -> None:
        """The body is complete, refused or abandoned: give back its slot."""
        self.receiving = False
        if self.slot:
            self.slot = False
            self.limits.slots.release(self.client, self.fast)

    def _rate_deadline(self) -> float:
        """When the body falls below the rate floor if nothing more arrives."""
        limits = self.limits
        if limits.min_rate <= 0:
            return float("inf")
        return self.start + limits.grace_s + self.received / limits.min_rate

    async def receive(self) -> Message:
        limits = self.limits
        if not self.receiving:
            return await self._receive()  # body complete: only the disconnect is left
        wait_until = min(self.deadline, self._rate_deadline())
        try:
            # A deadline on this await, not wait_for: that wraps every body chunk in a task.
            async with asyncio.timeout_at(wait_until):
                message = await self._receive()
        except TimeoutError:
            self.done()
            if wait_until >= self.deadline:
                raise BodyTimeoutError(limits.timeout_s) from None
            raise BodyTooSlowError(limits.min_rate, limits.grace_s) from None
        if message["type"] != "http.request":
            self.done()
            return message
        self.received += len(message.get("body", b""))
        if self.received > limits.max_bytes:
            self.done()
            raise UploadTooLargeError(limits.max_bytes)
        if not message.get("more_body", False):
            self.done()
        elif not self.slot and self.received > SLOT_AFTER_BYTES:
            await self._take_slot()
        return message

    async def _take_slot(self) -> None:
        now = self.loop.time()
        self.fast = now - self.start <= self.limits.grace_s
        wait_s = max(0.0, min(SLOT_WAIT_S, self.deadline - now))
        if not await self.limits.slots.acquire(self.client, self.fast, wait_s):
            self.done()
            raise UploadsBusyError(round(wait_s, 1))
        self.slot = True
        waited = self.loop.time() - now
        self.start += waited  # the wait was the server's: neither the rate nor the deadline
        self.deadline += waited


async def _reject(send: Send, err: BodyRefusedError) -> None:
    """A JSON answer that closes the connection (the unread body makes it unusable)."""
    data = json.dumps(err.body()).encode()
    headers = [(k.lower().encode(), v.encode()) for k, v in (err.headers or {}).items()]
    await send(
        {
            "type": "http.response.start",
            "status": err.status_code,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(data)).encode()),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": data})


def keep_uploads_in_memory(max_bytes: int) -> None:
    """Let multipart parsing keep a file part of up to `max_bytes` in memory.

    Starlette spools a part over 1 MiB to a temporary file, writing every later chunk (about
    64 KiB) from a thread-pool thread: a 3-MB song cost some 40 thread hops and a disk write
    and read before decoding, which reads the whole upload into memory anyway. The body is
    size-checked while it streams (`BodyLimits`), so memory per request stays bounded.
    """
    MultiPartParser.spool_max_size = max(MultiPartParser.spool_max_size, max_bytes)


async def read_upload(file: UploadFile) -> bytes:
    """The uploaded file's bytes (the body was size-checked while it was received)."""
    return await file.read()
