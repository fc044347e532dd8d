"""Decoding one file in pieces on several threads (`load_audio(parts=...)`) gives the serial
decode's samples exactly, and falls back to it wherever a piece could differ."""

import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from model.audio import load_audio
from model.errors import AudioError, AudioTooLongError
from tests.support.executors import CountingExecutor
from tests.support.synth import VOICES, sing, write


@pytest.fixture
def executor():
    ex = CountingExecutor()
    yield ex
    ex.shutdown()


def stereo(seconds: float, sr: int) -> np.ndarray:
    left = sing(VOICES[0], seconds, sr=sr)
    right = sing(VOICES[3], seconds, sr=sr)
    return np.stack([left, right[: len(left)]], 1)


@pytest.mark.parametrize(
    ("ext", "sr", "channels", "seconds", "subtype"),
    [
        ("flac", 44100, 2, 30.0, None),  # the service's benchmark upload
        ("flac", 16000, 1, 20.3, None),  # a length that is no multiple of the block
        ("wav", 48000, 2, 11.0, "PCM_24"),
        ("wav", 22050, 1, 13.0, "FLOAT"),
    ],
)
@pytest.mark.parametrize("parts", [2, 3, 7])
def test_pieces_give_the_serial_samples(
    tmp_path, executor, ext, sr, channels, seconds, subtype, parts
):
    y = stereo(seconds, sr) if channels == 2 else sing(VOICES[1], seconds, sr=sr)
    path = write(tmp_path / f"a.{ext}", y, sr, **({"subtype": subtype} if subtype else {}))
    data = path.read_bytes()
    serial = load_audio(data, 16000, max_seconds=600)
    for source in (data, path):
        split = load_audio(source, 16000, max_seconds=600, parts=parts, executor=executor)
        np.testing.assert_array_equal(split, serial)
    assert executor.submitted >= 2  # the pieces after the first went to the executor
    # At the native rate too (no resampler: the blocks themselves are compared).
    np.testing.assert_array_equal(
        load_audio(data, sr, parts=parts, executor=executor), load_audio(data, sr)
    )


def test_short_and_lossy_files_are_decoded_whole(tmp_path, executor):
    # 2 s at 44.1 kHz: two blocks, under two blocks per piece for a second piece
    short = write(tmp_path / "short.flac", sing(VOICES[2], 2.0, sr=44100), 44100)
    lossy = write(tmp_path / "a.ogg", sing(VOICES[2], 20.0), 22050, format="OGG", subtype="VORBIS")
    for path in (short, lossy):
        np.testing.assert_array_equal(
            load_audio(path, parts=4, executor=executor), load_audio(path)
        )
    assert executor.submitted == 0


def test_long_files_are_decoded_whole(tmp_path, executor, monkeypatch):
    """Beyond MAX_SPLIT_FRAMES the later pieces would wait in memory: read whole instead."""
    import model.sndfile_decoder

    path = write(tmp_path / "a.flac", sing(VOICES[1], 20.0, sr=44100), 44100)
    monkeypatch.setattr(model.sndfile_decoder, "MAX_SPLIT_FRAMES", 19 * 44100)
    np.testing.assert_array_equal(load_audio(path, parts=3, executor=executor), load_audio(path))
    assert executor.submitted == 0
    monkeypatch.setattr(model.sndfile_decoder, "MAX_SPLIT_FRAMES", 21 * 44100)
    np.testing.assert_array_equal(load_audio(path, parts=3, executor=executor), load_audio(path))
    assert executor.submitted == 2


def _set_flac_total_samples(data: bytes, total: int) -> bytes:
    """A FLAC whose STREAMINFO declares `total` samples (the low 36 bits of bytes 18-25)."""
    assert data[:4] == b"fLaC" and data[4] & 0x7F == 0  # STREAMINFO comes first
    word = int.from_bytes(data[18:26], "big")
    word = (word & ~((1 << 36) - 1)) | total
    return data[:18] + word.to_bytes(8, "big") + data[26:]


@pytest.mark.parametrize("declared_s", [6.0, 30.0])
def test_a_header_that_lies_about_the_length_is_decoded_as_serially(tmp_path, executor, declared_s):
    """Under-stated (6 s of 15) or over-stated (30 s of 15): every piece must hold the frames
    the header promised, else the whole file is read through as without pieces."""
    sr = 44100
    data = write(tmp_path / "a.flac", stereo(15.0, sr), sr).read_bytes()
    lying = _set_flac_total_samples(data, int(declared_s * sr))
    with sf.SoundFile(tmp_path / "a.flac") as f:
        assert f.frames == 15 * sr
    serial = load_audio(lying, 16000, max_seconds=600)
    split = load_audio(lying, 16000, max_seconds=600, parts=3, executor=executor)
    np.testing.assert_array_equal(split, serial)
    assert executor.submitted >= 1


def test_limits_and_bad_samples_raise_as_serially(tmp_path, executor):
    sr = 22050
    path = write(tmp_path / "long.flac", sing(VOICES[0], 20.0, sr=sr), sr)
    with pytest.raises(AudioTooLongError):
        load_audio(path, max_seconds=10.0, parts=3, executor=executor)
    y = sing(VOICES[0], 20.0, sr=sr)
    y[15 * sr] = np.nan  # in the last piece
    bad = write(tmp_path / "nan.wav", y, sr, subtype="FLOAT")
    with pytest.raises(AudioError, match="NaN"):
        load_audio(bad, parts=3, executor=executor)
    assert executor.submitted >= 1
    with pytest.raises(ValueError, match="executor"):
        load_audio(path, parts=2)


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="counts /proc/self/fd (Linux)")
def test_pieces_of_uploaded_bytes_leak_no_descriptor(tmp_path, executor):
    sr = 44100
    good = write(tmp_path / "a.flac", stereo(15.0, sr), sr).read_bytes()
    lying = _set_flac_total_samples(good, 6 * sr)
    before = len(list(Path("/proc/self/fd").iterdir()))
    for _ in range(5):
        for data in (good, lying):
            assert len(load_audio(data, 16000, 600, parts=3, executor=executor)) > 0
        with pytest.raises(AudioTooLongError):
            load_audio(good, max_seconds=10.0, parts=3, executor=executor)
    assert executor.submitted >= 10
    assert len(list(Path("/proc/self/fd").iterdir())) == before


@pytest.mark.parametrize("refused", ["memfd_create", "open"])
def test_pieces_without_memfd_or_proc_give_the_same_samples(
    tmp_path, executor, monkeypatch, refused
):
    """Pieces of an upload open the in-memory file again through /proc (no copy); where the
    OS refuses that, or in-memory files altogether, they read a BytesIO of the same bytes."""
    sr = 44100
    data = write(tmp_path / "a.flac", stereo(15.0, sr), sr).read_bytes()
    reference = load_audio(data, 16000)
    real = getattr(os, refused)

    def refuse(*args, **kwargs):
        if refused == "open" and not str(args[0]).startswith("/proc/self/fd/"):
            return real(*args, **kwargs)
        raise OSError(38, "Function not implemented")

    monkeypatch.setattr(os, refused, refuse)
    np.testing.assert_array_equal(load_audio(data, 16000, parts=3, executor=executor), reference)
    assert executor.submitted >= 2
