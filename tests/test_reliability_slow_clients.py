"""Slow clients against a real uvicorn (issue 39, finding 6): request bodies trickled a byte
at a time, bodies slower than the rate floor, and the lock-out they caused.

Before: 16 clients sending a multipart header and then a byte every 2 s took every upload
slot for 60 s, and every genuine /identify got 503 `too_many_uploads` (they reconnected at
once after their 408, so the lock-out could last for good). Now a body holds a slot only past
64 KiB, the rate floor closes tricklers after the grace period, and the reserve keeps slots
for fast bodies (service/uploads.py, service/upload_slots.py).
"""

from __future__ import annotations

import socket
import threading
import time

import httpx
import pytest

from tests.support.live import LiveServer, live_settings, make_clip, upload

pytestmark = pytest.mark.e2e

PART = (
    b'--B\r\nContent-Disposition: form-data; name="file"; filename="a.wav"\r\n'
    b"Content-Type: audio/wav\r\n\r\n"
)


def _trickler(port: int, length: int = 100_000) -> socket.socket:
    """A connection that sends an upload's headers and its first body bytes, then stalls."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    sock.sendall(
        b"POST /identify HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n"
        b"Content-Type: multipart/form-data; boundary=B\r\n\r\n%sR" % (length, PART)
    )
    return sock


def _read_all(sock: socket.socket) -> bytes:
    """Everything until the server closes the connection (raises on the 30 s timeout)."""
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except ConnectionResetError:
        pass
    return data


def _trickle(sock: socket.socket, every_s: float, stop: threading.Event) -> bytes:
    """Send a byte every `every_s` until the server answers and closes; the answer."""
    sock.settimeout(every_s)
    data = b""
    while not stop.is_set():
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            try:
                sock.sendall(b"I")
            except OSError:
                break
            continue
        except OSError:
            break
        if not chunk:
            break
        data += chunk
    return data


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return make_clip(tmp_path_factory.mktemp("clip"), 1, "mono", 3, seconds=4.0)


def test_a_trickling_body_is_answered_408_after_the_grace_period(
    tmp_path_factory, random_checkpoint
):
    """A byte every half second is below the rate floor: 408 `body_too_slow` once the grace
    period is over, long before the 60-s body deadline."""
    settings = live_settings(tmp_path_factory, random_checkpoint, upload_grace_s=1.0)
    with LiveServer(settings) as server:
        sock = _trickler(server.port)
        started = time.monotonic()
        try:
            answer = _trickle(sock, 0.5, threading.Event())
        finally:
            sock.close()
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    assert b'"code":"body_too_slow"' in answer and b"connection: close" in answer.lower()
    assert time.monotonic() - started < settings.body_timeout_s / 2


def test_a_body_over_its_deadline_is_answered_408(tmp_path_factory, random_checkpoint):
    """Above the rate floor but not done by the body deadline: 408 `body_timeout`."""
    settings = live_settings(
        tmp_path_factory, random_checkpoint, body_timeout_s=1.5, min_upload_rate_kib=0
    )
    with LiveServer(settings) as server:
        sock = _trickler(server.port)
        try:
            answer = _trickle(sock, 0.5, threading.Event())
        finally:
            sock.close()
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    assert b'"code":"body_timeout"' in answer


def test_trickling_clients_no_longer_lock_out_uploads(tmp_path_factory, random_checkpoint, clip):
    """The issue's lock-out: 16 clients trickle a byte every 2 s and reconnect at once when
    closed, against 4 upload slots; meanwhile every genuine /identify is answered 200."""
    settings = live_settings(
        tmp_path_factory, random_checkpoint, max_concurrent_uploads=4, upload_grace_s=1.0
    )
    stop = threading.Event()
    answers: list[bytes] = []

    def attacker(port: int) -> None:
        while not stop.is_set():
            sock = _trickler(port)
            try:
                answers.append(_trickle(sock, 2.0, stop))
            finally:
                sock.close()

    with LiveServer(settings) as server:
        threads = [threading.Thread(target=attacker, args=(server.port,)) for _ in range(16)]
        for t in threads:
            t.start()
        try:
            time.sleep(1.0)  # every attacker is connected and has sent its first bytes
            with server.client() as client:
                statuses = [upload(client, "/identify", clip.path).status_code for _ in range(8)]
            time.sleep(2.0)  # the first round of attackers has been closed
            with server.client() as client:
                statuses += [upload(client, "/identify", clip.path).status_code for _ in range(4)]
        finally:
            stop.set()
            for t in threads:
                t.join(30)
    assert statuses == [200] * 12, statuses
    assert answers and all(a.startswith(b"HTTP/1.1 408") for a in answers if a), answers[:3]


def _slow_upload(url: str, path, first: int, sent: threading.Event, go: threading.Event, out):
    """POST /identify with the file's multipart body (chunked): its first `first` bytes at
    40 KiB/s, then (`sent` set) nothing until `go` is set, then the rest; appends the
    status to `out`."""
    data = path.read_bytes()

    def content():
        yield PART.replace(b"a.wav", b"slow.wav")
        for i in range(0, first, 4096):
            yield data[i : min(i + 4096, first)]
            time.sleep(0.1)
        sent.set()
        go.wait(60)
        yield data[first:]
        yield b"\r\n--B--\r\n"

    headers = {"content-type": "multipart/form-data; boundary=B"}
    with httpx.Client(timeout=120) as client:
        out.append(client.post(f"{url}/identify", content=content(), headers=headers).status_code)


def test_slow_uploads_above_the_floor_leave_the_reserve_to_fast_ones(
    tmp_path_factory, random_checkpoint, clip
):
    """Three uploads that send 80 KiB at 40 KiB/s and then pause (above the 1 KiB/s floor
    for 80 s more, but past the 0.5-s grace period before their first 64 KiB: "slow")
    against 3 slots with a reserve of 1: two take the shared slots, the third waits for
    one. A genuine /identify sent meanwhile takes the reserve and is answered 200 (before:
    503 `too_many_uploads`). Then the slow ones finish, each answered 200 too.
    The floor is 1 KiB/s, not the default 4, so that the pause outlasts a fast /identify
    on a loaded machine: at 4 KiB/s it left 20 s, and a loaded CI run once closed one slow
    upload 408 within them."""
    settings = live_settings(
        tmp_path_factory,
        random_checkpoint,
        max_concurrent_uploads=3,
        upload_reserve=1,
        max_uploads_per_client=3,
        upload_grace_s=0.5,
        min_upload_rate_kib=1.0,
    )
    go = threading.Event()
    sent = [threading.Event() for _ in range(3)]
    statuses: list[int] = []
    with LiveServer(settings) as server:
        slow = [
            threading.Thread(
                target=_slow_upload,
                args=(server.url, clip.path, 80 * 1024, sent[i], go, statuses),
            )
            for i in range(3)
        ]
        for t in slow:
            t.start()
        try:
            assert all(e.wait(60) for e in sent)
            time.sleep(0.5)  # the server has read what was sent
            with server.client() as client:
                fast = upload(client, "/identify", clip.path)
            assert not statuses  # every slow upload is still waiting to send the rest
        finally:
            go.set()
            for t in slow:
                t.join(120)
    assert fast.status_code == 200, fast.text
    assert statuses == [200, 200, 200], statuses
