"""indexer/cli_support.py: the Qdrant API key of `--catalog qdrant://...` comes from
SINGER_QDRANT_API_KEY (`IndexerSecrets`), reaches the server in the `api-key` header, and
is never on the command line. The "server" is a loopback socket that records each request
head and answers 503, so the command stops after its first request (exit 2)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator

import pytest

from indexer.cli_support import IndexerSecrets
from tests.support import REPO


@pytest.fixture
def recorder() -> Iterator[tuple[int, list[bytes]]]:
    """(port, request heads received so far) of a listening loopback socket."""
    heads: list[bytes] = []
    server = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:  # closed: the test is over
                return
            with conn:
                conn.settimeout(10)
                head = b""
                while b"\r\n\r\n" not in head:
                    chunk = conn.recv(65536)
                    if not chunk:
                        break
                    head += chunk
                heads.append(head)
                conn.sendall(b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\n\r\n")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield server.getsockname()[1], heads
    server.close()
    thread.join(5)


def _stats(port: int, key: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "SINGER_QDRANT_API_KEY": key, "PYTHONPATH": str(REPO)}
    url = f"qdrant://127.0.0.1:{port}/library"
    return subprocess.run(
        [sys.executable, "-m", "indexer", "stats", "--catalog", url],
        env=env, cwd=REPO, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


@pytest.mark.parametrize("key", ["s3cret-key-42", ""])
def test_the_qdrant_key_comes_from_the_environment(recorder, key):
    port, heads = recorder
    done = _stats(port, key)
    assert done.returncode == 2, done.stderr  # the catalogue is not usable: 503
    assert heads, done.stderr
    sent = [line for head in heads for line in head.split(b"\r\n")]
    keys = [line for line in sent if line.lower().startswith(b"api-key:")]
    assert keys == ([f"api-key: {key}".encode()] * len(heads) if key else [])
    assert not key or key not in done.stderr  # the key is not logged


def test_an_empty_key_is_no_key(monkeypatch):
    monkeypatch.setenv("SINGER_QDRANT_API_KEY", "")
    assert IndexerSecrets().qdrant_api_key is None
    monkeypatch.setenv("SINGER_QDRANT_API_KEY", "k")
    key = IndexerSecrets().qdrant_api_key
    assert key is not None and key.get_secret_value() == "k" and "k" not in repr(key)
