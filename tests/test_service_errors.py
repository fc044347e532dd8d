"""Bad input never produces a 500: every error case of the API against a real uvicorn."""

from __future__ import annotations

import base64
import re
import socket
import threading
import time

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from model.audio import SUPPORTED_FORMATS
from service.cursors import encode_cursor
from tests.support.live import API_KEY, LiveServer, add_clip, live_settings, make_clip, upload
from tests.support.synth import VOICES, sing, write

pytestmark = pytest.mark.e2e

LIMIT_MB = 0.5
LIMIT = int(LIMIT_MB * 1024 * 1024)
KEY = {"X-API-Key": API_KEY}


@pytest.fixture(scope="module")
def server(tmp_path_factory, random_checkpoint):
    with LiveServer(
        live_settings(tmp_path_factory, random_checkpoint, max_upload_mb=LIMIT_MB)
    ) as srv:
        with srv.client() as client:
            add_clip(client, make_clip(tmp_path_factory.mktemp("c"), 0, "mono", 0))
        yield srv


@pytest.fixture
def client(server):
    with server.client() as c:
        yield c


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("bad")
    rng = np.random.default_rng(0)
    (d / "noise.wav").write_bytes(rng.integers(0, 256, 50_000, dtype=np.uint8).tobytes())
    (d / "text.mp3").write_text("this is not audio\n" * 100)
    (d / "image.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(1000))
    (d / "empty.wav").write_bytes(b"")
    write(d / "short.wav", sing(VOICES[0], 1.0))
    write(d / "silent.wav", np.zeros(22050 * 5, np.float32))
    nan = sing(VOICES[1], 4.0)
    nan[1000:2000] = np.nan
    write(d / "nan.wav", nan, subtype="FLOAT")
    write(d / "ok.wav", sing(VOICES[2], 4.0), subtype="PCM_16")
    return d


def post(client, endpoint, path, **form):
    headers = KEY if endpoint == "/tracks" else None
    if endpoint == "/tracks":
        form = {"singer": "x", "domain": "mono", **form}
    return upload(client, endpoint, path, headers=headers, **form)


ENDPOINTS = ["/identify", "/search", "/tracks"]


@pytest.mark.parametrize("endpoint", ENDPOINTS)
@pytest.mark.parametrize("name", ["noise.wav", "text.mp3", "image.png"])
def test_undecodable_is_415_naming_the_formats(client, bad_files, endpoint, name):
    r = post(client, endpoint, bad_files / name)
    assert r.status_code == 415, r.text
    body = r.json()
    assert body["code"] == "unsupported_format"
    assert body["supported_formats"] == list(SUPPORTED_FORMATS)
    assert "wav" in body["detail"] and "flac" in body["detail"]
    assert "/tmp" not in body["detail"]  # no server-side path leaks (ffmpeg's temp file)


@pytest.mark.parametrize("endpoint", ENDPOINTS)
@pytest.mark.parametrize(
    ("name", "code"),
    [
        ("short.wav", "audio_too_short"),
        ("silent.wav", "no_voiced_segment"),
        ("empty.wav", "invalid_audio"),
        ("nan.wav", "invalid_audio"),
    ],
)
def test_unusable_audio_is_422_with_the_reason(client, bad_files, endpoint, name, code):
    r = post(client, endpoint, bad_files / name)
    assert r.status_code == 422, r.text
    assert r.json()["code"] == code
    if code == "audio_too_short":
        assert r.json()["duration_s"] == pytest.approx(1.0, abs=0.01)
        assert r.json()["min_duration_s"] == pytest.approx(2.97, abs=0.05)
        assert "1.00 s" in r.json()["detail"]


@pytest.mark.parametrize(
    ("endpoint", "form"),
    [
        ("/identify", {"top_k": 0}),
        ("/identify", {"top_k": 101}),
        ("/identify", {"top_k": "x"}),
        ("/identify", {"domain": "vocals"}),
        ("/identify", {"models": "both"}),
        ("/search", {"target": "songs"}),
        ("/search", {"top_k": -1}),
        ("/tracks", {"singer": ""}),
        ("/tracks", {"singer": "   "}),
        ("/tracks", {"domain": "karaoke"}),
    ],
)
def test_bad_parameters_are_422(client, bad_files, endpoint, form):
    r = post(client, endpoint, bad_files / "ok.wav", **form)
    assert r.status_code == 422, r.text
    assert r.json()["code"] == "invalid_parameters"


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_missing_file_or_not_multipart_is_422(client, endpoint):
    headers = KEY if endpoint == "/tracks" else None
    r = client.post(endpoint, data={"top_k": "3"}, headers=headers)
    assert r.status_code == 422 and r.json()["code"] == "invalid_parameters"
    r = client.post(endpoint, json={"file": "x"}, headers=headers)
    assert r.status_code == 422


def test_early_answers_to_small_bodies_keep_the_connection(client):
    """A JSON body to an upload endpoint is refused before it is read. The rest of a small
    body is read first, so the connection stays open and the next request on it is answered:
    closing with the body in flight made the client's kernel reset the connection, and the
    reset could discard the 422 (an intermittent "connection reset by peer")."""
    for _ in range(20):
        for endpoint in ENDPOINTS:
            headers = KEY if endpoint == "/tracks" else None
            r = client.post(endpoint, json={"file": "x" * 2000}, headers=headers)
            assert r.status_code == 422
            assert r.headers.get("connection") != "close"


def test_unknown_ids_are_404_and_bad_ids_422(client):
    assert client.get("/tracks/999999").status_code == 404
    assert client.get("/tracks/999999").json()["code"] == "track_not_found"
    assert client.delete("/tracks/999999", headers=KEY).status_code == 404
    assert client.get("/tracks/abc").status_code == 422
    assert client.get("/tracks/0").status_code == 422
    assert client.get(f"/tracks/{2**64}").status_code == 422  # beyond SQLite's integers
    assert client.get("/singers", params={"limit": 0}).status_code == 422
    assert client.get("/singers", params={"offset": -1}).status_code == 422
    assert client.get("/no-such-endpoint").json()["code"] == "not_found"
    assert client.put("/tracks/1").status_code == 405


def test_oversized_upload_is_413(client, tmp_path):
    big = write(tmp_path / "big.wav", sing(VOICES[0], 20.0), subtype="PCM_16")
    assert big.stat().st_size > LIMIT
    for endpoint in ENDPOINTS:
        r = post(client, endpoint, big)
        assert r.status_code == 413, r.text
        assert r.json()["code"] == "upload_too_large"
        assert r.json()["max_upload_bytes"] == LIMIT


def _raw_request(port: int, head: str, body_chunks=(), timeout: float = 30.0):
    """Send a request by hand; returns (status line, bytes of body sent before the answer)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    sent = 0
    answered = threading.Event()

    def sender():
        nonlocal sent
        try:
            sock.sendall(head.encode())
            for chunk in body_chunks:
                if answered.is_set():
                    return
                sock.sendall(chunk)
                sent += len(chunk)
        except OSError:  # the server closed the connection after answering
            pass

    thread = threading.Thread(target=sender, daemon=True)
    thread.start()
    try:
        response = b""
        while b"\r\n" not in response:
            data = sock.recv(65536)
            if not data:
                break
            response += data
        answered.set()
        return response.split(b"\r\n")[0].decode(), sent
    finally:
        answered.set()
        thread.join(timeout)
        sock.close()


def test_413_from_declared_length_before_the_body_is_sent(server):
    """Content-Length over the limit: the answer comes without a single body byte sent."""
    head = (
        f"POST /identify HTTP/1.1\r\nHost: x\r\nContent-Length: {100 * LIMIT}\r\n"
        "Content-Type: multipart/form-data; boundary=B\r\n\r\n"
    )
    status, sent = _raw_request(server.port, head)
    assert status.startswith("HTTP/1.1 413"), status
    assert sent == 0


def test_413_while_streaming_a_body_of_unknown_length(server):
    """Chunked upload without a length: cut off once the limit is passed, long before the
    client would have finished (the stream here is 100x the limit)."""
    head = (
        "POST /search HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
        "Content-Type: multipart/form-data; boundary=B\r\n\r\n"
    )
    part = (
        b'--B\r\nContent-Disposition: form-data; name="file"; filename="a.wav"\r\n'
        b"Content-Type: audio/wav\r\n\r\n"
    )
    payload = 64 * 1024

    def chunks():
        yield b"%x\r\n%s\r\n" % (len(part), part)
        for _ in range(100 * LIMIT // payload):
            yield b"%x\r\n" % payload + b"\0" * payload + b"\r\n"
            time.sleep(0.001)

    status, sent = _raw_request(server.port, head, chunks())
    assert status.startswith("HTTP/1.1 413"), status
    assert sent < 20 * LIMIT


def test_no_request_above_ever_got_a_500(client):
    """The metrics count every response of this server by status (/readyz is 503 by design
    while the model loads)."""
    text = client.get("/metrics").text
    lines = [
        ln
        for ln in text.splitlines()
        if ln.startswith("singer_http_requests_total{") and 'route="/readyz"' not in ln
    ]
    assert any('status="4' in ln for ln in lines)
    assert not [ln for ln in lines if 'status="5' in ln]


# -- one error shape, on every route ----------------------------------------------------------
FORM = {"singer": "someone", "domain": "mono"}  # required form fields of the write route


def assert_error_shape(r) -> None:
    """{detail: str, code: str, errors: [{loc, msg, type}, ...]} (+ fields of some codes)."""
    body = r.json()
    assert isinstance(body["detail"], str) and body["detail"], r.text
    assert isinstance(body["code"], str) and body["code"], r.text
    assert isinstance(body["errors"], list), r.text
    for e in body["errors"]:
        assert isinstance(e["loc"], list) and isinstance(e["msg"], str), r.text
        assert isinstance(e["type"], str) and "<class" not in e["msg"], r.text


def error_cases(path: str, method: str, op: dict, ids: dict[str, int], wav: bytes):
    """(what, request kwargs) for each 4xx this operation can produce from its input."""
    names = re.findall(r"\{(\w+)\}", path)
    assert set(names) <= ids.keys(), f"no id for {path}: add one to the walk"

    def with_ids(**given: str) -> str:
        url = path
        for name in names:
            url = url.replace(f"{{{name}}}", given.get(name, str(ids[name])))
        return url

    url = with_ids()
    key = KEY if op.get("security") else {}
    body: dict = {}
    if "requestBody" in op:
        fields = op["requestBody"]["content"]["multipart/form-data"]["schema"]
        body = {"files": {"file": ("a.wav", wav)}, "data": FORM if "singer" in str(fields) else {}}
    cases = [("unknown query parameter", {"url": url + "?zzz=1", "headers": key, **body})]
    for name in names:  # an id not in digits, out of range, unknown
        for bad in ("1.0", "abc", "0", "+1", str(2**64)):
            cases.append((f"{name} {bad}", {"url": with_ids(**{name: bad}), "headers": key}))
        cases.append((f"unknown {name}", {"url": with_ids(**{name: "999999"}), "headers": key}))
    if body:
        data = body["data"]
        cases += [
            (
                "form field typo",
                {"url": url, "headers": key, **body, "data": {**data, "domian": "x"}},
            ),
            (
                "repeated form field",
                {"url": url, "headers": key, **body, "data": {**data, "top_k": ["3", "4"]}},
            ),
            ("missing file", {"url": url, "headers": key, "data": {**data, "top_k": "3"}}),
            ("file as a plain value", {"url": url, "headers": key, "data": {**data, "file": "0"}}),
            (
                "malformed multipart",
                {
                    "url": url,
                    "content": b"garbage",
                    "headers": {**key, "content-type": "multipart/form-data; boundary=X"},
                },
            ),
            (
                "too large",
                {"url": url, "headers": key, "files": {"file": ("a.wav", bytes(LIMIT + 1))}},
            ),
            (
                "not audio",
                {"url": url, "headers": key, **body, "files": {"file": ("a.wav", b"x" * 4000)}},
            ),
        ]
    if key:
        cases.append(("no API key", {"url": url, **{k: v for k, v in body.items()}}))
    return cases


def test_every_route_answers_each_4xx_in_the_one_documented_shape(server, client, tmp_path):
    """Walk every operation of the live schema (every API route), provoke each 4xx its input
    can produce, and check the answer has the one shape and a status the operation
    documents; 404 and 405 of the framework (no route, wrong method) have it too."""
    schema = client.get("/openapi.json").json()
    added = add_clip(client, make_clip(tmp_path, 2, "mono", 7))
    ids = {"track_id": added["id"], "singer_id": added["singer_id"]}
    wav = make_clip(tmp_path, 3, "mono", 8).path.read_bytes()
    operations = [(p, m, op) for p, ops in schema["paths"].items() for m, op in ops.items()]
    assert len(operations) >= 11
    seen = set()
    for path, method, op in operations:
        assert "ErrorOut" in str(op["responses"]["422"]), (method, path)
        for what, kwargs in error_cases(path, method, op, ids, wav):
            r = client.request(method.upper(), **kwargs)
            where = f"{method.upper()} {path} ({what}): {r.status_code} {r.text[:200]}"
            assert 400 <= r.status_code < 500, where
            assert str(r.status_code) in op["responses"], f"undocumented: {where}"
            assert_error_shape(r)
            seen.add(r.json()["code"])
        others = {"get", "post", "delete", "put", "patch"} - set(schema["paths"][path])
        r = client.request(sorted(others)[0].upper(), re.sub(r"\{\w+\}", "1", path))
        assert r.status_code == 405 and r.headers["allow"], (path, r.text)
        assert_error_shape(r)
    r = client.get("/no/such/route")
    assert r.status_code == 404 and r.json()["code"] == "not_found"
    assert_error_shape(r)
    assert {
        "invalid_parameters",
        "track_not_found",
        "malformed_body",
        "upload_too_large",
        "unsupported_format",
        "unauthorized",
    } <= seen, seen


@pytest.mark.parametrize("endpoint", ENDPOINTS)
@pytest.mark.parametrize(
    ("field", "suggestion"), [("domian", "domain"), ("top-k", "top_k"), ("tilte", "title")]
)
def test_a_typo_in_a_form_field_is_422_naming_it_and_the_closest_field(
    client, bad_files, endpoint, field, suggestion
):
    """#35: `-F domian=mixed` was answered 200, as mono. Every endpoint, generically."""
    r = post(client, endpoint, bad_files / "ok.wav", **{field: "mixed"})
    assert r.status_code == 422, r.text
    body = r.json()
    assert body["code"] == "invalid_parameters"
    [err] = body["errors"]
    assert err["loc"] == ["body", field] and err["type"] == "unknown"
    takes = {"/identify": {"domain", "top_k"}, "/search": {"domain", "top_k"}}
    if suggestion not in takes.get(endpoint, {"domain", "title"}):
        assert f"`{suggestion}`" not in err["msg"]  # never a field the endpoint lacks
    else:
        assert f"did you mean `{suggestion}`?" in err["msg"] and field in body["detail"]


def test_a_field_another_endpoint_takes_is_422(client, bad_files):
    """`-F target=mono` on /identify (a /search field) was ignored."""
    r = post(client, "/identify", bad_files / "ok.wav", target="mono")
    assert r.status_code == 422 and r.json()["errors"][0]["loc"] == ["body", "target"]
    assert "it takes: domain, file, models, timeline, top_k" in r.json()["errors"][0]["msg"]


def test_a_file_sent_as_a_plain_value_is_422_without_a_python_repr(client):
    """`-F file=0` answered "Expected UploadFile, received: <class 'str'>"."""
    for endpoint in ENDPOINTS:
        headers = KEY if endpoint == "/tracks" else None
        form = FORM if endpoint == "/tracks" else {}
        # A multipart part named `file` without a file name, as curl -F file=0 sends it.
        r = client.post(endpoint, files={"file": (None, "0")}, data=form, headers=headers)
        assert r.status_code == 422, r.text
        assert "<class" not in r.text and "UploadFile" not in r.text, r.text
        [err] = r.json()["errors"]
        assert err["loc"] == ["body", "file"] and "expected a file" in err["msg"]


@pytest.mark.parametrize("path", ["/tracks/1.0/audio", "/tracks/1.0", "/tracks/+1", "/tracks/1e0"])
def test_an_id_not_written_in_digits_is_422(client, path):
    """/tracks/1.0/audio answered 200 (track 1)."""
    r = client.get(path)
    assert r.status_code == 422 and r.json()["errors"][0]["loc"] == ["path", "track_id"], r.text


CURSORS = st.one_of(
    st.text(max_size=300),
    st.integers(0, 20_000).map(encode_cursor),
    st.binary(max_size=200).map(lambda b: base64.urlsafe_b64encode(b).decode()),
    st.builds(
        lambda n, c: base64.urlsafe_b64encode(c * n).decode(),
        st.sampled_from([1_000, 100_000]),
        st.sampled_from([b"[", b"{"]),
    ),
)
SCALARS = st.one_of(st.integers(-(2**70), 2**70), st.floats(), st.text(max_size=20))


@settings(max_examples=80, deadline=None, derandomize=True, database=None)
@given(
    cursor=CURSORS,
    top_k=st.one_of(st.integers(0, 120), SCALARS),
    target=st.one_of(st.sampled_from(["mono", "mixed", "any"]), st.text(max_size=10)),
    min_score=st.one_of(st.none(), SCALARS),
)
def test_no_cursor_or_parameter_gives_a_5xx(server, bad_files, cursor, top_k, target, min_score):
    """POST /search with random cursors (base64 of 100,000 `[` once reset the connection,
    1,000 answered 500) and parameters: a 200 or a 4xx in the one shape, never a 5xx."""
    form = {"cursor": cursor, "top_k": str(top_k), "target": target}
    if min_score is not None:
        form["min_score"] = str(min_score)
    with server.client() as client:
        r = upload(client, "/search", bad_files / "ok.wav", **form)
    assert r.status_code < 500, r.text
    if r.status_code != 200:
        assert 400 <= r.status_code < 500
        assert_error_shape(r)
