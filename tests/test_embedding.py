import subprocess
import sys
import threading

import numpy as np
import pytest

from model.audio import load_audio
from model.embedding import Embedder, TrackEmbedding
from model.errors import AudioTooShortError, NoVoicedSegmentError, UnsupportedFormatError
from tests.support import REPO
from tests.support.synth import VOICES, sing, write


@pytest.fixture(scope="module")
def embedder(random_checkpoint):
    return Embedder.from_checkpoint(random_checkpoint, device="cpu")


@pytest.fixture(scope="module")
def songs(tmp_path_factory):
    d = tmp_path_factory.mktemp("songs")
    return [write(d / f"s{i}.flac", sing(VOICES[i % 4], 4.0 + i, seed=i)) for i in range(6)]


def test_track_vector_is_normalised_mean_of_segments(embedder, songs):
    y = load_audio(songs[5])
    segs = embedder.segments(y, all_segments=True)  # every segment: 3, whatever the detector
    raw = embedder.embed_segments(segs, "mixed")
    t = embedder.embed_audio(y, "mixed", all_segments=True)
    expected = raw.mean(0) / np.linalg.norm(raw.mean(0))
    np.testing.assert_allclose(t.vector, expected, rtol=1e-5, atol=1e-6)
    assert t.n_segments == len(raw) == 3 and t.duration_s == pytest.approx(9.0, abs=0.01)


def test_path_and_array_input_agree(embedder, songs):
    a = embedder.embed_file(songs[2], "mono")
    b = embedder.embed_audio(load_audio(songs[2]), "mono")
    c = embedder.embed_file(songs[2].read_bytes(), "mono")
    np.testing.assert_array_equal(a.vector, b.vector)
    np.testing.assert_array_equal(a.vector, c.vector)


def test_batch_equals_one_by_one(embedder, songs):
    many = dict(embedder.embed_many(songs, "mono", workers=3, batch_size=4))
    assert sorted(many) == list(range(len(songs)))
    for i, path in enumerate(songs):
        single = embedder.embed_file(path, "mono")
        np.testing.assert_allclose(many[i].vector, single.vector, rtol=1e-4, atol=1e-5)
        assert many[i].n_segments == single.n_segments


def test_embed_many_gathers_while_a_batch_encodes(embedder, songs, tmp_path, monkeypatch):
    """The encoder has a thread of its own: while one batch encodes, the next file is still
    decoded and its segments chosen. (With the encoder in the gathering thread, nothing beyond
    the files already in flight was: on a GPU the decoders idled for every batch.)"""
    paths = [tmp_path / f"take-{i}.flac" for i in range(4)]
    for path, song in zip(paths, songs, strict=False):
        path.write_bytes(song.read_bytes())
    chosen: list[str | None] = []
    third_chosen = threading.Event()
    select, encode = embedder.select, embedder.encode

    def spy_select(y, all_segments=False, path=None, domain=None):
        out = select(y, all_segments, path, domain)
        chosen.append(path)
        if path == str(paths[2]):
            third_chosen.set()
        return out

    first: list[bool] = []

    def slow_encode(selections, domain, *args):
        if not first:  # the first batch (file 0) waits for file 2 to be chosen meanwhile
            first.append(third_chosen.wait(timeout=20))
        return encode(selections, domain, *args)

    monkeypatch.setattr(embedder, "select", spy_select)
    monkeypatch.setattr(embedder, "encode", slow_encode)
    got = dict(embedder.embed_many(paths, "mono", workers=1, batch_size=1))
    assert first == [True], "file 2 was not decoded while file 0's batch was encoded"
    assert sorted(got) == [0, 1, 2, 3] and sorted(chosen) == sorted(map(str, paths))
    monkeypatch.undo()
    for i, path in enumerate(paths):
        assert isinstance(got[i], TrackEmbedding)
        np.testing.assert_allclose(
            got[i].vector, embedder.embed_file(path, "mono").vector, rtol=1e-4, atol=1e-5
        )


def test_branches_differ(embedder, songs):
    a, b = embedder.embed_file(songs[0], "mono"), embedder.embed_file(songs[0], "mixed")
    assert float(a.vector @ b.vector) < 0.999


def test_embed_many_yields_errors_instead_of_raising(embedder, songs, tmp_path):
    text = tmp_path / "x.wav"
    text.write_text("hello")
    short = write(tmp_path / "short.wav", sing(VOICES[0], 1.0))
    silent = write(tmp_path / "silent.wav", np.zeros(22050 * 4, np.float32))
    out = dict(embedder.embed_many([songs[0], text, short, silent], "mono"))
    assert isinstance(out[0], TrackEmbedding)
    assert isinstance(out[1], UnsupportedFormatError)
    assert isinstance(out[2], AudioTooShortError)
    assert isinstance(out[3], NoVoicedSegmentError)
    assert str(short) in str(out[2])


def run_cli(*args):
    return subprocess.run(
        [sys.executable, "-m", "model", *map(str, args)],
        check=False,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_embed_cli_end_to_end(random_checkpoint, songs, embedder, tmp_path):
    listing = tmp_path / "list.txt"
    listing.write_text("\n".join(map(str, songs[3:])) + "\n")
    out = tmp_path / "e.npy"
    res = run_cli(
        "embed",
        "--checkpoint",
        random_checkpoint,
        "--domain",
        "mixed",
        "--out",
        out,
        "--files-from",
        listing,
        *songs[:3],
    )
    assert res.returncode == 0, res.stderr
    arr = np.load(out)
    assert arr.shape == (6, 256) and arr.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(arr, axis=1), 1.0, rtol=1e-5)
    for i, p in enumerate(songs):  # row i is file i, in input order
        np.testing.assert_allclose(
            arr[i], embedder.embed_file(p, "mixed").vector, rtol=1e-4, atol=1e-5
        )


def test_embed_cli_bad_file(random_checkpoint, songs, tmp_path):
    bad = write(tmp_path / "short.wav", sing(VOICES[0], 1.0))
    out = tmp_path / "e.npy"
    res = run_cli(
        "embed", "--checkpoint", random_checkpoint, "--domain", "mono", "--out", out, songs[0], bad
    )
    assert res.returncode != 0 and str(bad) in res.stderr and "at least 2.97 s" in res.stderr
    assert not out.exists()
    res = run_cli(
        "embed",
        "--checkpoint",
        random_checkpoint,
        "--domain",
        "mono",
        "--out",
        out,
        "--skip-bad",
        songs[0],
        bad,
    )
    assert res.returncode == 0 and str(bad) in res.stderr
    arr = np.load(out)
    assert np.isfinite(arr[0]).all() and np.isnan(arr[1]).all()
