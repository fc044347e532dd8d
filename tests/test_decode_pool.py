"""Decoding in worker processes gives what decoding in the calling process gives.

Real spawned processes, real decoding; the references are `model.audio.load_audio`,
`Embedder.embed_many` in threads, the indexer without processes and the service without them.
"""

from __future__ import annotations

import io
import os
import pickle
import subprocess
import sys
import tempfile
import threading

import numpy as np
import pytest
import soundfile as sf

from catalog import Catalog
from indexer.run import index_source
from model.audio import load_audio
from model.decode_pool import DecodePool
from model.embedding import Embedder
from model.errors import (
    AudioError,
    AudioTooLongError,
    AudioTooShortError,
    NoVoicedSegmentError,
    UnsupportedAudioParamsError,
    UnsupportedFormatError,
)
from tests.support.executors import piece_threads
from tests.support.live import LiveServer, add_clip, live_settings, make_clip, render, upload

SR = 22050


@pytest.fixture(scope="module")
def embedder(random_checkpoint) -> Embedder:
    return Embedder.from_checkpoint(random_checkpoint, "cpu")


@pytest.fixture(scope="module")
def flacs() -> list[bytes]:
    """Takes of 4 to 12 s at 44.1 kHz stereo, both domains: decoding resamples and mixes down."""
    out = []
    for i, seconds in enumerate([4.0, 12.0, 7.5, 9.0]):
        y = render(i % 3, ("mono", "mixed")[i % 2], seed=i, seconds=seconds)
        y = np.interp(np.arange(0, len(y), 0.5), np.arange(len(y)), y).astype(np.float32)
        buf = io.BytesIO()
        sf.write(buf, np.stack([y, 0.5 * y], axis=1), 44100, format="FLAC")
        out.append(buf.getvalue())
    return out


@pytest.fixture(scope="module")
def pool() -> DecodePool:
    with DecodePool(2) as p:
        yield p


@pytest.mark.parametrize(
    "err",
    [
        AudioError("bad", "x.wav"),
        UnsupportedFormatError("not audio"),
        UnsupportedAudioParamsError("1 Hz"),
        AudioTooLongError(31.0, 30.0, "x.flac", from_header=True),
        AudioTooShortError(1.0, 3.0),
        NoVoicedSegmentError("silence", None),
    ],
)
def test_errors_cross_a_process_boundary_intact(err):
    back = pickle.loads(pickle.dumps(err))
    assert type(back) is type(err)
    assert str(back) == str(err)
    assert back.__dict__ == err.__dict__


def test_worker_decoding_equals_in_process(pool, flacs, tmp_path):
    path = tmp_path / "take.flac"
    path.write_bytes(flacs[1])
    for source in [*flacs, path]:
        np.testing.assert_array_equal(pool.load_audio(source, SR), load_audio(source, SR))
    np.testing.assert_array_equal(pool.load_audio(path, 16000), load_audio(path, 16000))


def test_file_handoff_equals_the_pipe_and_leaves_no_files(flacs, tmp_path):
    """Uploads and waveforms through the scratch folder: the pipe's samples, no file left
    behind a job (answered or refused), no scratch path in an error, the folder gone on close."""
    path = tmp_path / "take.flac"
    path.write_bytes(flacs[2])
    with DecodePool(1, handoff="files") as files, DecodePool(1, handoff="pipe") as pipe:
        assert pipe.scratch is None
        scratch = files.scratch
        assert scratch is not None and scratch.is_dir()
        assert oct(scratch.stat().st_mode & 0o777) == "0o700"
        for source in [*flacs, path]:
            np.testing.assert_array_equal(files.load_audio(source, SR), pipe.load_audio(source, SR))
        with pytest.raises(UnsupportedFormatError) as caught:
            files.load_audio(b"certainly not audio" * 100, SR)
        assert scratch.name not in str(caught.value)
        with pytest.raises(AudioTooLongError):
            files.load_audio(flacs[1], SR, max_seconds=5.0)
        assert list(scratch.iterdir()) == []
    assert not scratch.exists()


def test_no_temporary_folder_means_the_pipe(flacs, tmp_path, monkeypatch):
    """Where no scratch folder can be made (read-only file system), the pool still decodes."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "missing"))
    with DecodePool(1) as pool:
        assert pool.scratch is None
        np.testing.assert_array_equal(pool.load_audio(flacs[0], SR), load_audio(flacs[0], SR))


def test_a_killed_process_scratch_is_removed_by_the_next_pool(tmp_path, monkeypatch):
    """Folders of pools whose process died unclosed go; live ones, this process's open pools'
    and other names stay."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    gone = [tmp_path / f"singer-decode-{dead.pid}-x", tmp_path / f"singer-decode-{os.getpid()}-y"]
    kept = [tmp_path / f"singer-decode-{os.getppid()}-z", tmp_path / "singer-decode-abc"]
    for folder in gone + kept:
        folder.mkdir()
        (folder / "waveform").write_bytes(b"x" * 100)
    with DecodePool(1) as first, DecodePool(1) as second:
        assert all(not f.exists() for f in gone) and all(f.exists() for f in kept)
        assert first.scratch.is_dir() and second.scratch.is_dir()  # not each other's stale
        assert first.scratch.name.startswith(f"singer-decode-{os.getpid()}-")


def test_worker_decodes_in_pieces_as_whole(flacs):
    """A worker given parts > 1 decodes on threads of its own, to the same samples."""
    with DecodePool(1) as one:
        assert one.call(piece_threads) == 0
        for data in flacs:
            got = one.load_audio(data, SR, 600.0, parts=3)
            np.testing.assert_array_equal(got, load_audio(data, SR, 600.0))
        assert one.call(piece_threads) >= 1  # flacs[1] (12 s at 44.1 kHz) was cut in 3


def test_worker_errors_keep_their_type(pool, flacs):
    with pytest.raises(AudioTooLongError) as caught:
        pool.load_audio(flacs[1], SR, max_seconds=5.0)
    assert caught.value.max_duration_s == 5.0
    with pytest.raises(UnsupportedFormatError):
        pool.load_audio(b"certainly not audio" * 100, SR)


def test_a_worker_that_dies_costs_one_request_not_the_pool(flacs):
    with DecodePool(2) as pool:
        results: list = []

        def innocent() -> None:
            for data in flacs * 3:
                results.append(pool.load_audio(data, SR))

        threads = [threading.Thread(target=innocent) for _ in range(2)]
        for t in threads:
            t.start()
        # os._exit kills its worker every time: retried alone, then refused.
        with pytest.raises(AudioError, match="decoder process died"):
            pool.call(os._exit, 3)
        for t in threads:
            t.join()
        assert pool.restarts == 1
        # Requests in flight when the workers died were retried, none lost.
        assert len(results) == 2 * 3 * len(flacs)
        np.testing.assert_array_equal(pool.load_audio(flacs[0], SR), load_audio(flacs[0], SR))


@pytest.mark.parametrize("features_in_workers", [False, True])
def test_embed_many_in_processes_equals_threads(embedder, flacs, features_in_workers):
    sources = [*flacs, b"garbage" * 50]
    ref = dict(embedder.embed_many(sources, "mono"))
    with embedder.decode_pool(2, features_in_workers) as pool:
        got = dict(embedder.embed_many(sources, "mono", pool=pool))
        assert list(pool.scratch.iterdir()) == []  # uploads handed over as files, all removed
    assert got.keys() == ref.keys()
    assert isinstance(got[len(flacs)], UnsupportedFormatError)
    for i in range(len(flacs)):
        np.testing.assert_array_equal(got[i].vector, ref[i].vector)
        np.testing.assert_array_equal(got[i].starts_s, ref[i].starts_s)
        assert got[i].flags == ref[i].flags


def test_indexer_with_processes_builds_the_same_catalogue(embedder, flacs, tmp_path):
    src = tmp_path / "src"
    for i, data in enumerate(flacs):
        (src / f"singer{i % 2}").mkdir(parents=True, exist_ok=True)
        (src / f"singer{i % 2}" / f"take{i}.flac").write_bytes(data)
    (src / "singer0" / "broken.flac").write_bytes(b"fLaC" + b"\0" * 200)
    reports, vectors = [], []
    for processes in (0, 2):
        with Catalog.open(tmp_path / f"index-{processes}", dim=embedder.embed_dim) as catalog:
            reports.append(index_source(catalog, embedder, src, processes=processes))
            vectors.append({t.path: catalog.get_vector(t.id) for t in catalog.iter_tracks()})
    threads, procs = reports
    assert (procs.n_added, len(procs.failures)) == (threads.n_added, 1) == (len(flacs), 1)
    assert procs.failures[0].path.endswith("broken.flac")
    assert vectors[0].keys() == vectors[1].keys()
    for path, v in vectors[0].items():
        np.testing.assert_array_equal(vectors[1][path], v)


@pytest.mark.e2e
def test_service_decoding_in_processes_answers_as_in_process(tmp_path_factory, random_checkpoint):
    clip = make_clip(tmp_path_factory.mktemp("dec"), 0, "mono", 0)
    answers = []
    for processes in (0, 2):
        settings = live_settings(tmp_path_factory, random_checkpoint, decode_processes=processes)
        with LiveServer(settings) as server, server.client() as client:
            decoder = server.app.state.runtime.inference.decoder
            assert (decoder.processes if decoder else 0) == processes
            add_clip(client, clip)
            r = upload(client, "/identify", clip.path)
            assert r.status_code == 200, r.text
            answers.append(r.json()["singers"])
            bad = client.post("/identify", files={"file": ("x.wav", b"RIFF" + b"\0" * 64)})
            assert (bad.status_code, bad.json()["code"]) == (415, "unsupported_format"), bad.text
    assert answers[1] == answers[0]
