"""Request bodies (service/uploads.py) in process: a body that takes too long or arrives too
slowly is a 408 with its code, and a body that finds no upload slot in time is a 503. The
app's lifespan is not run: the limits act before any route needs the model."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest

from service import uploads
from service.app import create_app
from tests.service.conftest import app_settings

BOUNDARY = "limits"
HEAD = (
    f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="a.wav"\r\n'
    "Content-Type: audio/wav\r\n\r\n"
).encode()


async def trickle(first: bytes, then_every_s: float, stop: asyncio.Event) -> AsyncIterator[bytes]:
    """`first`, then a byte every `then_every_s` until `stop` (never a complete body)."""
    yield first
    while not stop.is_set():
        await asyncio.sleep(then_every_s)
        yield b"x"


async def post(app, body: AsyncIterator[bytes]) -> httpx.Response:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test", timeout=30) as c:
        headers = {"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}
        return await c.post("/identify", content=body, headers=headers)


def refused(app, first: bytes, every_s: float) -> httpx.Response:
    async def run() -> httpx.Response:
        stop = asyncio.Event()
        try:
            return await post(app, trickle(first, every_s, stop))
        finally:
            stop.set()

    return asyncio.run(run())


def test_a_body_that_takes_too_long_is_a_408(tmp_path_factory, random_checkpoint):
    settings = app_settings(
        tmp_path_factory, random_checkpoint, body_timeout_s=0.5, upload_grace_s=30.0
    )
    r = refused(create_app(settings), HEAD, 0.05)
    assert r.status_code == 408 and r.json()["code"] == "body_timeout", r.text
    assert r.headers["connection"] == "close"


def test_a_body_that_arrives_too_slowly_is_a_408(tmp_path_factory, random_checkpoint):
    settings = app_settings(
        tmp_path_factory, random_checkpoint, upload_grace_s=0.2, min_upload_rate_kib=64.0
    )
    r = refused(create_app(settings), HEAD, 0.05)
    assert r.status_code == 408 and r.json()["code"] == "body_too_slow", r.text


def test_a_body_without_a_slot_in_time_is_a_503(tmp_path_factory, random_checkpoint, monkeypatch):
    """One slot, held by a body past 64 KiB that stalls; the next such body waits for the
    slot, then is refused with Retry-After."""
    monkeypatch.setattr(uploads, "SLOT_WAIT_S", 0.3)
    settings = app_settings(tmp_path_factory, random_checkpoint, max_concurrent_uploads=1)
    app = create_app(settings)
    big = HEAD + b"\0" * (128 * 1024)

    async def run() -> httpx.Response:
        stop = asyncio.Event()
        holder = asyncio.ensure_future(post(app, trickle(big, 0.05, stop)))
        await asyncio.sleep(0.2)  # the first body has its slot
        try:
            return await post(app, trickle(big, 0.05, stop))
        finally:
            stop.set()
            holder.cancel()

    r = asyncio.run(run())
    assert r.status_code == 503 and r.json()["code"] == "too_many_uploads", r.text
    assert "retry-after" in r.headers


@pytest.mark.parametrize(
    ("host", "origin", "code"),
    [
        ("evil.example", None, "local_only"),  # a rebound DNS name
        ("127.0.0.1:8000", "https://evil.example", "local_only"),  # another site's page
        ("127.0.0.1:8000", None, "not_ready"),  # local: let through (then: nothing loaded)
    ],
)
def test_local_mode_writes_only_from_this_machine(
    tmp_path_factory, random_checkpoint, host, origin, code
):
    settings = app_settings(
        tmp_path_factory, random_checkpoint, api_key=None, allow_unauthenticated_writes=True
    )

    async def run() -> httpx.Response:
        transport = httpx.ASGITransport(app=create_app(settings))
        async with httpx.AsyncClient(transport=transport, base_url=f"http://{host}") as c:
            headers = {"Origin": origin} if origin else {}
            return await c.delete("/tracks/1", headers=headers)

    r = asyncio.run(run())
    assert r.json()["code"] == code, r.text
    assert r.status_code == (403 if code == "local_only" else 503)
