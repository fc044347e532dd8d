import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from model.audio import decode, load_audio
from model.errors import AudioError, UnsupportedFormatError
from tests.support.synth import VOICES, sing, write


def tone(freq: float, seconds: float, sr: int) -> np.ndarray:
    return (0.5 * np.sin(2 * np.pi * freq * np.arange(int(seconds * sr)) / sr)).astype(np.float32)


@pytest.mark.parametrize(
    ("ext", "kw"),
    [
        ("wav", {}),
        ("flac", {}),
        ("ogg", {"format": "OGG", "subtype": "VORBIS"}),
        ("opus", {"format": "OGG", "subtype": "OPUS"}),
        ("mp3", {"format": "MP3"}),
    ],
)
def test_decodes_what_soundfile_writes(tmp_path, ext, kw):
    y = sing(VOICES[1], 3.5, sr=48000 if ext == "opus" else 22050)
    path = tmp_path / f"a.{ext}"
    try:
        write(path, y, 48000 if ext == "opus" else 22050, **kw)
    except (sf.LibsndfileError, ValueError, TypeError):
        pytest.skip(f"this libsndfile cannot write {ext}")
    out = load_audio(path)
    assert out.dtype == np.float32 and abs(len(out) - 3.5 * 22050) < 22050 * 0.1
    ref = load_audio(path.read_bytes())  # bytes and path give the same samples
    np.testing.assert_array_equal(out, ref)


def test_stereo_is_downmixed_and_resampled(tmp_path):
    left, right = tone(440, 2.0, 44100), tone(660, 2.0, 44100)
    path = write(tmp_path / "st.wav", np.stack([left, right], 1), 44100)
    y, _sr = decode(path)
    np.testing.assert_allclose(y, (left + right) / 2, atol=1e-4)  # 16-bit wav quantisation
    z = load_audio(path)
    assert len(z) == 44100  # 2 s at 22050 Hz
    spectrum = np.abs(np.fft.rfft(z))
    peaks = sorted(np.argsort(spectrum)[-2:] * 22050 / len(z))
    assert peaks == pytest.approx([440, 660], abs=1.0)


def test_empty_and_missing_files(tmp_path):
    (tmp_path / "empty.wav").write_bytes(b"")
    with pytest.raises(AudioError, match="empty"):
        load_audio(tmp_path / "empty.wav")
    with pytest.raises(AudioError, match="empty"):
        load_audio(b"")
    with pytest.raises(AudioError, match="no such file"):
        load_audio(tmp_path / "missing.wav")


def test_text_file_named_wav(tmp_path):
    path = tmp_path / "notes.wav"
    path.write_text("this is not audio\n" * 100)
    with pytest.raises(UnsupportedFormatError) as err:
        load_audio(path)
    for fmt in ("wav", "flac", "mp3", "opus"):
        assert fmt in str(err.value)
    assert err.value.path == str(path)


def test_truncated_file_gives_audio_or_typed_error(tmp_path):
    full = write(tmp_path / "full.flac", sing(VOICES[0], 5.0), 22050)
    cut = tmp_path / "cut.flac"
    cut.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    try:
        y = load_audio(cut)
    except AudioError:
        return  # a typed error is an acceptable answer
    assert 0 < len(y) < 5 * 22050  # or the readable part is decoded


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="counts /proc/self/fd (Linux)")
def test_decoding_bytes_leaks_no_file_descriptor(tmp_path):
    good = write(tmp_path / "a.flac", sing(VOICES[0], 3.5), 22050).read_bytes()
    before = len(list(Path("/proc/self/fd").iterdir()))
    for _ in range(20):
        assert len(load_audio(good)) > 0
        with pytest.raises(AudioError):
            load_audio(b"fLaC" + bytes(500))  # a FLAC signature and nothing decodable
        with pytest.raises(AudioError):
            load_audio(good, max_seconds=1.0)
    assert len(list(Path("/proc/self/fd").iterdir())) == before


def test_bytes_decode_without_memfd_equals_with_it(tmp_path, monkeypatch):
    """Where the OS or a sandbox refuses in-memory descriptors, bytes decode through a
    BytesIO, to the same samples."""
    data = write(tmp_path / "a.flac", sing(VOICES[2], 4.0), 22050).read_bytes()
    with_memfd = load_audio(data)

    def refused(*args):
        raise OSError(38, "Function not implemented")

    monkeypatch.setattr(os, "memfd_create", refused)
    np.testing.assert_array_equal(load_audio(data), with_memfd)
