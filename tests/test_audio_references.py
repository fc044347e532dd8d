"""Uploads and files that reference other files (ffconcat scripts, HLS and DASH playlists,
FFmpeg protocol strings, image2 patterns) are refused as unsupported, name no file, and
never make anything read the file they name: in the library, the indexer, `python -m model
embed` and the service.

A readable recording is planted beside the temporary directory (and named by relative and
absolute paths); Linux inotify (tests/support/file_watch.py) counts every open and read of
it, by any thread or process. A control test shows the watch does see FFmpeg read it when
its concat demuxer is allowed, so a zero is a real zero.
"""

from __future__ import annotations

import io
import subprocess
import sys
import tempfile
from pathlib import Path

import av
import numpy as np
import pytest

from catalog import Catalog
from indexer.run import index_source
from model.audio import load_audio
from model.embedding import Embedder
from model.errors import UnsupportedFormatError
from tests.support.corpus import png_bytes
from tests.support.file_watch import FileWatch
from tests.support.live import LiveServer, live_settings, make_clip
from tests.support.synth import VOICES, sing, write

REPO = Path(__file__).resolve().parents[1]


def payloads(target: Path) -> dict[str, bytes]:
    """Byte strings that name `target` (absolute, and relative to the temp dir beside it)."""
    rel, abs_ = f"../{target.name}", str(target)
    return {
        "ffconcat": f"ffconcat version 1.0\nfile '{rel}'\nfile '{abs_}'\n".encode(),
        "ffconcat-subfile": (
            f"ffconcat version 1.0\nfile 'subfile,,start,0,end,0,,:{abs_}'\n".encode()
        ),
        "hls": (
            "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:10\n#EXT-X-MEDIA-SEQUENCE:0\n"
            f"#EXTINF:10.0,\n{rel}\n#EXTINF:10.0,\n{abs_}\n#EXT-X-ENDLIST\n"
        ).encode(),
        "dash": (
            '<?xml version="1.0"?><MPD xmlns="urn:mpeg:dash:schema:mpd:2011" type="static" '
            'mediaPresentationDuration="PT10S"><Period><AdaptationSet mimeType="audio/wav">'
            f'<Representation id="a" bandwidth="1"><BaseURL>{abs_}</BaseURL></Representation>'
            "</AdaptationSet></Period></MPD>"
        ).encode(),
        "protocols": f"concat:{abs_}|{abs_}\nsubfile,,start,0,end,0,,:{abs_}\nfile:{abs_}".encode(),
        "image2-pattern": f"{target.parent}/planted%d.wav\n".encode(),
        "png": png_bytes(),
    }


@pytest.fixture
def planted(tmp_path, monkeypatch) -> Path:
    """A readable recording beside the temp directory, which is also the working directory."""
    work = tmp_path / "tmp"
    work.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(work))
    monkeypatch.setenv("TMPDIR", str(work))
    monkeypatch.chdir(work)
    return write(tmp_path / "planted.wav", sing(VOICES[1], 4.0), 22050)


def test_the_watch_sees_ffmpeg_read_the_planted_file(planted):
    """The control: FFmpeg's concat demuxer, when allowed, does read it (and we see it)."""
    with FileWatch([planted]) as watch:
        script = io.BytesIO(payloads(planted)["ffconcat"])
        with av.open(script, format="concat", options={"safe": "0"}) as concat:
            samples = sum(frame.samples for frame in concat.decode(audio=0))
        assert samples > 0 and watch.events() > 0


@pytest.mark.parametrize("kind", sorted(payloads(Path("/x/planted.wav"))))
def test_library_refuses_references_and_reads_nothing(planted, kind):
    missing = planted.with_name("absent.wav")
    with FileWatch([planted]) as watch:
        with pytest.raises(UnsupportedFormatError) as named:
            load_audio(payloads(planted)[kind])
        with pytest.raises(UnsupportedFormatError) as absent:
            load_audio(payloads(missing)[kind])
        assert watch.events() == 0
    # No existence oracle: the same answer whether the named file exists or not.
    assert str(named.value) == str(absent.value)
    assert "planted" not in str(named.value) and str(planted.parent) not in str(named.value)


@pytest.fixture(scope="module")
def embedder(random_checkpoint) -> Embedder:
    return Embedder.from_checkpoint(random_checkpoint, "cpu")


def test_indexer_reports_references_and_reads_nothing(planted, embedder, tmp_path):
    src = tmp_path / "library"
    singer = src / "someone"
    singer.mkdir(parents=True)
    make_clip(singer, 0, "mono", 0)
    for kind, data in payloads(planted).items():
        (singer / f"{kind}.wav").write_bytes(data)
    (singer / "hls.m4a").write_bytes(payloads(planted)["hls"] + b"#EXT-X-X\n")  # not a duplicate
    with FileWatch([planted]) as watch:
        with Catalog.open(tmp_path / "index", dim=embedder.embed_dim) as catalog:
            report = index_source(catalog, embedder, src, domain="mono")
        assert watch.events() == 0
    assert report.n_added == 1
    assert len(report.failures) == len(payloads(planted)) + 1
    for failure in report.failures:
        assert "not a decodable audio file" in failure.reason, failure
        assert "planted" not in failure.reason


def test_model_embed_refuses_references_and_reads_nothing(planted, random_checkpoint, tmp_path):
    files = []
    for kind, data in payloads(planted).items():
        files.append(tmp_path / f"{kind}.m4a")
        files[-1].write_bytes(data)
    good = write(tmp_path / "good.wav", sing(VOICES[0], 5.0), 22050)
    cmd = [sys.executable, "-m", "model", "embed", "--domain", "mono"]
    cmd += ["--checkpoint", str(random_checkpoint), "--device", "cpu"]
    with FileWatch([planted]) as watch:
        strict = subprocess.run(
            [*cmd, "--out", str(tmp_path / "a.npy"), str(files[0])],
            cwd=planted.parent / "tmp", capture_output=True, text=True, timeout=300, check=False,
        )  # fmt: skip
        lenient = subprocess.run(
            [*cmd, "--out", str(tmp_path / "b.npy"), "--skip-bad", *map(str, files), str(good)],
            cwd=planted.parent / "tmp", capture_output=True, text=True, timeout=300, check=False,
        )  # fmt: skip
        assert watch.events() == 0
    assert strict.returncode == 1 and "not a decodable audio file" in strict.stderr
    assert lenient.returncode == 0, lenient.stderr
    vectors = np.load(tmp_path / "b.npy")
    assert np.isnan(vectors[:-1]).all() and np.isfinite(vectors[-1]).all()
    for output in (strict.stderr, lenient.stderr):
        # Each refused file is named (the user's own argument); the file it names never is.
        assert str(planted) not in output and "planted.wav" not in output


@pytest.mark.e2e
@pytest.mark.parametrize("processes", [0, 1])  # decoding in threads, in a worker process
def test_service_answers_415_naming_no_file_and_reads_nothing(
    planted, tmp_path_factory, random_checkpoint, processes
):
    settings = live_settings(tmp_path_factory, random_checkpoint, decode_processes=processes)
    missing = planted.with_name("absent.wav")
    with (
        LiveServer(settings) as server,
        server.client() as client,
        FileWatch([planted]) as watch,
    ):
        for kind, data in payloads(planted).items():
            answers = []
            for body in (data, payloads(missing)[kind]):
                for endpoint, form in (
                    ("/identify", {}),
                    ("/search", {}),
                    ("/tracks", {"singer": "x", "domain": "mono"}),
                ):
                    r = client.post(
                        endpoint,
                        files={"file": (f"{kind}.m4a", body)},
                        data=form,
                        headers={"X-API-Key": "test-key"},
                    )
                    assert r.status_code == 415, (kind, endpoint, r.text)
                    assert r.json()["code"] == "unsupported_format"
                    assert "planted" not in r.text and str(planted.parent) not in r.text
                    answers.append(r.json())
            assert answers[:3] == answers[3:]  # no existence oracle
        assert watch.events() == 0
