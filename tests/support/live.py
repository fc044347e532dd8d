"""Helpers for the service tests: a real uvicorn on a free port, and a synthetic corpus.

`LiveServer` runs `create_app(settings)` under uvicorn in a thread of the test process (real
sockets, real HTTP); `ServiceProcess` runs a command (`python -m service`, the container's
entry point) as a subprocess, for crash and entry-point tests.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Self

import httpx
import numpy as np

from tests.support.synth import VOICES, backing, sing, write

API_KEY = "test-key"


def live_settings(tmp_path_factory, checkpoint, **overrides):
    """Settings of a test server: a fresh catalogue, `checkpoint`, CPU, writes behind API_KEY."""
    from service.settings import Settings

    return Settings(
        index_dir=tmp_path_factory.mktemp("svc") / "index",
        checkpoint=checkpoint,
        device="cpu",
        api_key=API_KEY,
        **overrides,
    )


def service_env(checkpoint: Path, index_dir: Path, port: int, **settings: str) -> dict[str, str]:
    """Environment of a `python -m service` subprocess: CPU, API_KEY, one torch thread, plus
    `settings` as SINGER_<NAME> variables."""
    return {
        **os.environ,
        "SINGER_CHECKPOINT": str(checkpoint),
        "SINGER_INDEX_DIR": str(index_dir),
        "SINGER_PORT": str(port),
        "SINGER_DEVICE": "cpu",
        "SINGER_API_KEY": API_KEY,
        "OMP_NUM_THREADS": "1",
        **{f"SINGER_{k.upper()}": v for k, v in settings.items()},
    }


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LiveServer:
    """uvicorn serving `create_app(settings)` in a background thread, on a bound socket."""

    def __init__(self, settings, ready_timeout: float = 60.0):
        import uvicorn

        from service.app import create_app

        self.app = create_app(settings)
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        from service.__main__ import uvicorn_options

        options = {**uvicorn_options(settings), "log_level": "warning"}
        config = uvicorn.Config(self.app, lifespan="on", **options)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True
        )
        self.ready_timeout = ready_timeout

    def start(self, wait_loaded: bool = True) -> Self:
        """Serve; return once loading has finished (or, if not `wait_loaded`, once the
        server answers at all)."""
        self.thread.start()
        wait_ready(self.url, self.ready_timeout, expect_loaded=wait_loaded)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(30)
        self.sock.close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def client(self, **kw) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=60.0, **kw)


def wait_ready(url: str, timeout: float, expect_loaded: bool = True, proc=None) -> None:
    """Poll /readyz until the runtime has left 'loading' (any answer if not expect_loaded)."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            r = httpx.get(f"{url}/readyz", timeout=2.0)
            last = r
            if not expect_loaded or r.status_code == 200 or r.json().get("state") != "loading":
                return
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    raise TimeoutError(f"{url} not ready after {timeout} s (last: {last and last.text})")


class ServiceProcess:
    """A server command run as a subprocess; `kill()` is SIGKILL (a crash)."""

    def __init__(self, cmd: list[str], env: dict[str, str], port: int, cwd: Path):
        self.cmd, self.env, self.cwd = cmd, env, cwd
        self.url = f"http://127.0.0.1:{port}"
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 90.0) -> ServiceProcess:
        # Output to a file, not a pipe: a full pipe would block the server's logging.
        self.log = (self.cwd / "server.log").open("a")
        self.proc = subprocess.Popen(
            self.cmd,
            env=self.env,
            cwd=self.cwd,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            wait_ready(self.url, timeout, proc=self.proc)
        except (RuntimeError, TimeoutError):
            self.kill()
            raise RuntimeError(f"{self.cmd} did not start:\n{self.output()}") from None
        return self

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
            self.log.close()

    def output(self) -> str:
        return (self.cwd / "server.log").read_text()


# -- synthetic corpus ----------------------------------------------------------------------
SECONDS = 7.0  # two 3-s segments per track


@dataclass(frozen=True)
class Clip:
    path: Path
    singer: str
    domain: str


def singer_name(voice_index: int) -> str:
    return f"singer-{voice_index}"


def render(voice_index: int, domain: str, seed: int, seconds: float = SECONDS) -> np.ndarray:
    """One take of a synthetic singer: the voice alone (mono) or over a backing (mixed)."""
    y = sing(VOICES[voice_index], seconds, seed=seed)
    if domain == "mixed":
        y = 0.7 * y + 0.3 * backing(seconds, seed=100 + seed)
    return y.astype(np.float32)


def make_clip(directory: Path, voice_index: int, domain: str, seed: int, **kw) -> Clip:
    path = write(
        directory / f"{singer_name(voice_index)}-{domain}-{seed}.wav",
        render(voice_index, domain, seed, **kw),
        subtype="PCM_16",
    )
    return Clip(path, singer_name(voice_index), domain)


def make_corpus(directory: Path, seeds=(0, 1)) -> list[Clip]:
    """Every voice in both domains, one take per seed."""
    return [
        make_clip(directory, v, d, s)
        for v in range(len(VOICES))
        for d in ("mono", "mixed")
        for s in seeds
    ]


def upload(client: httpx.Client, endpoint: str, path: Path, headers=None, **form):
    with open(path, "rb") as fh:
        return client.post(
            endpoint,
            files={"file": (path.name, fh, "audio/wav")},
            data={k: str(v) for k, v in form.items()},
            headers=headers,
        )


def add_clip(client: httpx.Client, clip: Clip, key: str | None = API_KEY) -> dict:
    headers = {"X-API-Key": key} if key else None
    r = upload(
        client, "/tracks", clip.path, headers=headers, singer=clip.singer, domain=clip.domain
    )
    assert r.status_code == 201, r.text
    return r.json()
