"""The fast tier of the HTTP service: the app in process through FastAPI's `TestClient`.

Real model (random weights, the shipped voice detector), real decoding, a real catalogue in
tmp_path, real HTTP semantics (status, headers, bodies) without sockets. One app serves the
whole package (`client`, with `catalog` filled through `POST /tracks`); tests that change it
put it back. Tests that need other settings start an app of their own (`serving`).
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from service.app import create_app
from service.runtime import Runtime
from service.settings import Settings
from tests.support.live import API_KEY, Clip, make_clip, make_corpus

with warnings.catch_warnings():  # starlette would rather have httpx2; httpx is what we have
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

KEY = {"X-API-Key": API_KEY}
QUERY_SEED = 5  # a take that is not in the catalogue


def app_settings(tmp_path_factory, checkpoint: Path, **overrides) -> Settings:
    """A fresh catalogue, `checkpoint` on the CPU, writes behind API_KEY, one torch thread."""
    values = {
        "index_dir": tmp_path_factory.mktemp("svc") / "index",
        "checkpoint": checkpoint,
        "device": "cpu",
        "api_key": API_KEY,
        "torch_threads": 1,
        **overrides,
    }
    return Settings(**values)


@contextmanager
def serving(settings: Settings, wait_loaded: bool = True) -> Iterator[TestClient]:
    """A TestClient on `create_app(settings)`, its lifespan run (loading in the background);
    returns once loading has finished (ready or failed) unless not `wait_loaded`."""
    with TestClient(create_app(settings)) as client:
        deadline = time.monotonic() + 120
        while wait_loaded and runtime_of(client).state == "loading":
            if time.monotonic() > deadline:
                raise TimeoutError("the app did not load within 120 s")
            time.sleep(0.02)
        yield client


def runtime_of(client: TestClient) -> Runtime:
    return client.app.state.runtime  # type: ignore[attr-defined]


def post_audio(client: TestClient, endpoint: str, audio: Path | bytes, headers=None, **form):
    """POST a multipart upload: `file` (a path's bytes, named after it, or raw bytes) and the
    form fields, as strings."""
    if isinstance(audio, Path):
        name, data = audio.name, audio.read_bytes()
    else:
        name, data = "upload.wav", audio
    return client.post(
        endpoint,
        files={"file": (name, data, "audio/wav")},
        data={k: str(v) for k, v in form.items()},
        headers=headers,
    )


def add(client: TestClient, clip: Clip, **form) -> dict:
    r = post_audio(
        client, "/tracks", clip.path, KEY, singer=clip.singer, domain=clip.domain, **form
    )
    assert r.status_code == 201, r.text
    return r.json()


@pytest.fixture(scope="package")
def library(tmp_path_factory) -> Path:
    """A folder the app may play files from (SINGER_AUDIO_ROOTS)."""
    return tmp_path_factory.mktemp("library")


@pytest.fixture(scope="package")
def client(tmp_path_factory, random_checkpoint, library) -> Iterator[TestClient]:
    settings = app_settings(tmp_path_factory, random_checkpoint, audio_roots=[library])
    with serving(settings) as c:
        assert runtime_of(c).state == "ready", runtime_of(c).error
        yield c


@pytest.fixture(scope="package")
def catalog(client, tmp_path_factory) -> dict[Clip, dict]:
    """Every synthetic voice in both domains, two takes each, added through POST /tracks:
    {clip: the track as POST answered it}."""
    clips = make_corpus(tmp_path_factory.mktemp("corpus"))
    return {clip: add(client, clip) for clip in clips}


@pytest.fixture(scope="package")
def queries(tmp_path_factory) -> dict[tuple[int, str], Clip]:
    """Takes not in the catalogue: {(voice, domain): clip}."""
    from tests.support.synth import VOICES

    d = tmp_path_factory.mktemp("queries")
    return {
        (v, dom): make_clip(d, v, dom, QUERY_SEED)
        for v in range(len(VOICES))
        for dom in ("mono", "mixed")
    }
