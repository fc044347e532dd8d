"""Write access: the X-API-Key header when a key is configured; with none, writes are refused
unless SINGER_ALLOW_UNAUTHENTICATED_WRITES is set. Reads and queries never need a key."""

from __future__ import annotations

import socket

import pytest
from pydantic import ValidationError

from service.settings import Settings
from tests.support.live import API_KEY, LiveServer, make_clip, upload

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return make_clip(tmp_path_factory.mktemp("auth"), 1, "mono", 0)


def start(tmp_path, random_checkpoint, **kw) -> LiveServer:
    settings = Settings(
        index_dir=tmp_path / "index", checkpoint=random_checkpoint, device="cpu", **kw
    )
    return LiveServer(settings)


def add(client, clip, headers=None):
    return upload(client, "/tracks", clip.path, headers=headers, singer="s", domain="mono")


def test_api_key_is_required_for_writes_only(tmp_path, random_checkpoint, clip):
    with start(tmp_path, random_checkpoint, api_key=API_KEY) as srv, srv.client() as client:
        for headers in (None, {"X-API-Key": "wrong"}, {"X-API-Key": ""}):
            r = add(client, clip, headers)
            assert r.status_code == 401, r.text
            assert r.json()["code"] == "unauthorized"
            assert r.headers["www-authenticate"] == "X-API-Key"
        assert client.get("/singers").json()["total"] == 0  # nothing was written

        r = add(client, clip, {"X-API-Key": API_KEY})
        assert r.status_code == 201
        track = r.json()["id"]
        assert client.delete(f"/tracks/{track}").status_code == 401
        assert client.delete(f"/tracks/{track}", headers={"X-API-Key": "x"}).status_code == 401
        # Reads and queries are open.
        assert client.get(f"/tracks/{track}").status_code == 200
        assert upload(client, "/identify", clip.path).status_code == 200
        assert upload(client, "/search", clip.path, target="mono").status_code == 200
        assert client.delete(f"/tracks/{track}", headers={"X-API-Key": API_KEY}).status_code == 200


def test_key_is_checked_before_the_upload_is_read(tmp_path, random_checkpoint):
    """An unauthenticated client announcing a large (allowed) body is answered 401 before it
    sends any of it: the server does not wait for the upload."""
    with (
        start(tmp_path, random_checkpoint, api_key=API_KEY) as srv,
        socket.create_connection(("127.0.0.1", srv.port), timeout=30) as sock,
    ):
        sock.sendall(
            b"POST /tracks HTTP/1.1\r\nHost: x\r\nContent-Length: 9999999\r\n"
            b"Content-Type: multipart/form-data; boundary=B\r\n\r\n"
        )
        assert sock.recv(1024).startswith(b"HTTP/1.1 401")


def test_without_a_key_writes_are_refused(tmp_path, random_checkpoint, clip):
    with start(tmp_path, random_checkpoint) as srv, srv.client() as client:
        r = add(client, clip, {"X-API-Key": "anything"})
        assert r.status_code == 403
        assert r.json()["code"] == "writes_disabled"
        assert "SINGER_ALLOW_UNAUTHENTICATED_WRITES" in r.json()["detail"]
        assert client.delete("/tracks/1").status_code == 403
        assert upload(client, "/identify", clip.path).status_code == 200


def test_unauthenticated_writes_when_explicitly_allowed(tmp_path, random_checkpoint, clip):
    with (
        start(tmp_path, random_checkpoint, allow_unauthenticated_writes=True) as srv,
        srv.client() as client,
    ):
        r = add(client, clip)
        assert r.status_code == 201
        assert client.delete(f"/tracks/{r.json()['id']}").status_code == 200


def test_settings_from_environment(monkeypatch, tmp_path):
    for name in ("API_KEY", "CHECKPOINT", "INDEX_DIR", "DEVICE", "MAX_UPLOAD_MB"):
        monkeypatch.delenv(f"SINGER_{name}", raising=False)
    s = Settings()
    assert s.index_dir.as_posix() == "data/index" and s.checkpoint is None
    assert s.device == "auto" and not s.writes_enabled
    monkeypatch.setenv("SINGER_API_KEY", "")  # what compose passes for an unset variable
    monkeypatch.setenv("SINGER_ALLOW_UNAUTHENTICATED_WRITES", "true")
    monkeypatch.setenv("SINGER_MAX_UPLOAD_MB", "1.5")
    monkeypatch.setenv("SINGER_INDEX_DIR", str(tmp_path))
    s = Settings()
    assert s.api_key is None and s.writes_enabled
    assert s.max_upload_bytes == 1536 * 1024 and s.index_dir == tmp_path
    monkeypatch.setenv("SINGER_API_KEY", "s3cr3t-value")
    assert Settings().api_key.get_secret_value() == "s3cr3t-value"
    assert "s3cr3t" not in repr(Settings())
    monkeypatch.setenv("SINGER_DEVICE", "tpu")
    with pytest.raises(ValidationError):
        Settings()


LOCAL_OK = [
    {},  # curl, scripts: no Origin
    {"Origin": "{url}"},  # the service's own page
    {"Origin": "{url}", "Sec-Fetch-Site": "same-origin"},
    {"Host": "localhost:{port}", "Origin": "http://localhost:{port}"},
    {"Host": "[::1]:{port}"},
    {"Sec-Fetch-Site": "none"},  # typed into the address bar
]
LOCAL_REFUSED = [
    {"Origin": "http://evil.example"},  # a cross-site form or fetch
    {"Origin": "null"},  # a sandboxed frame, a file:// page
    {"Origin": "http://127.0.0.1:1"},  # another port is another origin
    {"Sec-Fetch-Site": "cross-site"},
    {"Sec-Fetch-Site": "same-site"},
    {"Host": "evil.example:{port}"},  # DNS rebinding: the name now points at 127.0.0.1
    {"Host": "evil.example:{port}", "Origin": "http://evil.example:{port}"},
    {"Host": "127.0.0.1.evil.example"},
    {"Host": "192.168.1.20:{port}"},  # not loopback: a machine on the network
]


def _headers(template: dict, srv: LiveServer) -> dict:
    return {k: v.format(url=srv.url, port=srv.port) for k, v in template.items()}


def test_local_mode_accepts_only_local_same_origin_writes(tmp_path, random_checkpoint, clip):
    """With SINGER_ALLOW_UNAUTHENTICATED_WRITES and no key, a write is accepted only when
    addressed to a loopback Host from the same origin (or no browser page): a cross-site
    POST /tracks got 201 and a DELETE with a rebound Host got 200 (issue 39, finding 9)."""
    with (
        start(tmp_path, random_checkpoint, allow_unauthenticated_writes=True) as srv,
        srv.client() as client,
    ):
        for template in LOCAL_REFUSED:
            headers = _headers(template, srv)
            r = add(client, clip, headers)
            assert r.status_code == 403, (headers, r.text)
            assert r.json()["code"] == "local_only" and r.json()["errors"] == []
        assert client.get("/singers").json()["total"] == 0  # nothing was written
        ids = []
        for template in LOCAL_OK:
            r = add(client, clip, _headers(template, srv))
            assert r.status_code in (200, 201), (template, r.text)
            ids.append(r.json()["id"])
        for template in LOCAL_REFUSED:
            r = client.delete(f"/tracks/{ids[0]}", headers=_headers(template, srv))
            assert r.status_code == 403, (template, r.text)
        r = client.delete(f"/tracks/{ids[0]}", headers={"Origin": srv.url})
        assert r.status_code == 200
        # Reads stay open to anyone.
        assert client.get("/singers", headers={"Origin": "http://evil.example"}).status_code == 200


def test_a_key_lets_any_host_and_origin_write(tmp_path, random_checkpoint, clip):
    """Local mode's checks apply without a key only: with one, the key decides."""
    with start(tmp_path, random_checkpoint, api_key=API_KEY) as srv, srv.client() as client:
        headers = {"X-API-Key": API_KEY, "Host": "api.example", "Origin": "http://a.example"}
        assert add(client, clip, headers).status_code == 201
