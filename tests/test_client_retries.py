"""singer_client's retries against a live service: 503 `overloaded` (a real inference queue
of one worker and no waiting room) retried after the service's Retry-After, connection
failures retried for calls safe to repeat and not for DELETE, and the error shapes read
(the unified one, FastAPI's older list, a proxy's HTML page, Retry-After as a date)."""

from __future__ import annotations

import asyncio
import threading
from email.utils import format_datetime

import pytest

from singer_client import (
    AsyncClient,
    Client,
    ClientConnectionError,
    InvalidParametersError,
    Retry,
    ServerError,
    ServiceUnavailableError,
)
from singer_client.errors import api_error, retry_after_s
from tests.support.live import API_KEY, LiveServer, live_settings, make_clip

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def busy_server(tmp_path_factory, random_checkpoint):
    """One inference worker and no queue: a second upload while one embeds gets 503."""
    settings = live_settings(
        tmp_path_factory, random_checkpoint, inference_workers=1, max_pending=0
    )
    with LiveServer(settings) as srv:
        yield srv


@pytest.fixture(scope="module")
def take(tmp_path_factory):
    return make_clip(tmp_path_factory.mktemp("take"), 1, "mono", 0, seconds=12.0).path


def at_once(n: int, call) -> list:
    """`call()` from `n` threads released together: results or exceptions, in order."""
    barrier, out = threading.Barrier(n), [None] * n

    def run(i: int) -> None:
        barrier.wait()
        try:
            out[i] = call()
        except Exception as err:  # collected for the assertions
            out[i] = err

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return out


def test_overloaded_is_raised_without_retries_and_retried_with_them(busy_server, take):
    with Client(busy_server.url, retry=Retry(attempts=1)) as api:
        refused = []
        for _ in range(5):  # until uploads overlap on this (shared, loaded) machine
            refused = [
                r for r in at_once(4, lambda: api.identify(take)) if isinstance(r, Exception)
            ]
            if refused:
                break
    assert refused, "four simultaneous uploads never overlapped"
    assert all(isinstance(e, ServiceUnavailableError) for e in refused), refused
    assert {(e.code, e.retry_after) for e in refused} == {("overloaded", 1.0)}

    events = []
    with Client(busy_server.url, retry=Retry(attempts=20), on_retry=events.append) as api:
        answers = at_once(4, lambda: api.identify(take))
    assert all(not isinstance(a, Exception) for a in answers), answers
    assert len({tuple(s.name for s in a.singers) for a in answers}) == 1
    assert events, "no request was refused, so none was retried"
    assert {(e.status, e.code, e.delay_s, e.path) for e in events} == {
        (503, "overloaded", 1.0, "/identify")
    }


def test_async_client_retries_overloaded(busy_server, take):
    events = []

    async def run():
        async with AsyncClient(
            busy_server.url, retry=Retry(attempts=20), on_retry=events.append
        ) as api:
            return await asyncio.gather(*(api.identify(take) for _ in range(4)))

    answers = asyncio.run(run())
    assert len({tuple(s.name for s in a.singers) for a in answers}) == 1
    assert events and {(e.code, e.delay_s) for e in events} == {("overloaded", 1.0)}


def test_connection_failures_are_retried_only_where_safe(tmp_path_factory, random_checkpoint):
    """The server's socket is bound but not yet listening (connections refused)."""
    server = LiveServer(live_settings(tmp_path_factory, random_checkpoint))
    events = []
    retry = Retry(attempts=30, backoff_s=0.2, max_backoff_s=1.0)
    try:
        with Client(server.url, api_key=API_KEY, retry=retry, on_retry=events.append) as api:
            with pytest.raises(ClientConnectionError, match="not idempotent"):
                api.delete_track(1)
            assert events == []  # DELETE: not sent again
            starter = threading.Timer(1.0, server.start)
            starter.start()
            assert api.health() is True  # refused at first, then answered
            starter.join()
            assert api.ready().status == "ready"
        assert events and all(e.error == "ConnectError" and e.status is None for e in events)
        assert [e.retry for e in events] == list(range(1, len(events) + 1))
    finally:
        server.stop()


def test_error_shapes_are_read():
    fastapi_list = (
        b'{"detail": [{"loc": ["body", "file"], "msg": "Field required", "type": "missing"}]}'
    )
    err = api_error(422, fastapi_list)
    assert isinstance(err, InvalidParametersError) and err.code == "invalid_parameters"
    assert err.detail == "body.file: Field required" and err.errors[0].loc == ["body", "file"]
    unified = (
        b'{"detail": "invalid parameter: domian", "code": "invalid_parameters", "errors": '
        b'[{"loc": ["body", "domian"], "msg": "did you mean `domain`?", "type": "unknown"}]}'
    )
    err = api_error(422, unified)
    assert err.detail == "invalid parameter: domian" and err.errors[0].type == "unknown"
    proxy = api_error(502, b"<html><body>502 Bad Gateway</body></html>")
    assert isinstance(proxy, ServerError) and proxy.code is None and "502" in proxy.detail
    from datetime import UTC, datetime, timedelta

    soon = format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)
    assert 25 < retry_after_s(soon) <= 30
    assert retry_after_s("2") == 2.0 and retry_after_s("soon") is None
    assert Retry(attempts=3).delay_s(3) is None and Retry().delay_s(1, 120.0) is None
