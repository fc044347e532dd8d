"""Every whitelisted container decodes, chosen by its bytes, with no `ffmpeg` program, and
PyAV's path keeps the bounds and the samples of libsndfile's.

Fixtures are encoded with PyAV in tmp_path (tests/support/encoded.py); the references are
libsndfile's decoding of the same lossless file and the signal's own spectrum.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np
import pytest
import soundfile as sf

from model.audio import decode, load_audio
from model.audio_containers import MP4, OGG, WAV, sniff
from model.errors import (
    AudioError,
    AudioTooLongError,
    UnsupportedAudioParamsError,
    UnsupportedFormatError,
)
from model.pyav_decoder import decode_av
from model.sndfile_decoder import SndfileRefused, decode_sndfile
from tests.support.corpus import pcm16, png_bytes, wav_bytes
from tests.support.encoded import ENCODINGS, encode, encode_as, video_only_mp4
from tests.support.live import ServiceProcess, free_port, service_env
from tests.support.synth import VOICES, sing, write

REPO = Path(__file__).resolve().parents[1]


def two_tones(seconds: float, sr: int) -> np.ndarray:
    """(samples, 2) float32: 440 Hz on the left, 660 Hz on the right."""
    t = np.arange(int(seconds * sr)) / sr
    return np.stack([0.4 * np.sin(2 * np.pi * 440 * t), 0.4 * np.sin(2 * np.pi * 660 * t)], 1)


@pytest.mark.parametrize("ext", sorted(ENCODINGS))
def test_every_container_decodes_from_bytes_and_path(tmp_path, ext):
    data = encode(two_tones(4.0, 44100), 44100, ext)
    path = tmp_path / f"take.{ext}"
    path.write_bytes(data)
    y = load_audio(path)
    np.testing.assert_array_equal(load_audio(data), y)  # bytes and path: the same samples
    assert abs(len(y) / 22050 - 4.0) < 0.1  # codec delay and padding at most
    # Both channels are in the mono mix, at their frequencies.
    spectrum = np.abs(np.fft.rfft(y[2205:-2205]))
    peaks = sorted(np.argsort(spectrum)[-2:] * 22050 / (len(y) - 4410))
    assert peaks == pytest.approx([440, 660], abs=1.5)


def test_the_bytes_choose_the_container_never_the_name(tmp_path):
    y = two_tones(3.0, 44100)
    for real, claimed in [("m4a", "wav"), ("flac", "mp3"), ("webm", "m4a"), ("wav", "ogg")]:
        data = encode(y, 44100, real)
        (tmp_path / f"a.{claimed}").write_bytes(data)
        np.testing.assert_array_equal(load_audio(tmp_path / f"a.{claimed}"), load_audio(data))


@pytest.mark.parametrize(
    ("subtype", "ext"),
    [("PCM_16", "wav"), ("PCM_24", "wav"), ("FLOAT", "wav"), ("PCM_U8", "wav"),
     ("PCM_16", "flac"), ("PCM_24", "flac"), ("PCM_16", "aiff")],
)  # fmt: skip
def test_lossless_through_pyav_equals_libsndfile(subtype, ext):
    """The two decoders give the same float samples, so which one reads a WAV or FLAC file
    (libsndfile first, PyAV for what it refuses) never changes a vector."""
    y = np.stack([sing(VOICES[0], 5.0, sr=44100), sing(VOICES[2], 5.0, sr=44100)], 1)
    buf = io.BytesIO()
    sf.write(buf, y, 44100, subtype=subtype, format=ext.upper())
    data = buf.getvalue()
    container = sniff(io.BytesIO(data))
    assert container is not None and container.sndfile
    for sr in (None, 22050):
        ref, rate = decode_sndfile(data, sr, 600.0, None)
        got, got_rate = decode_av(io.BytesIO(data), container, sr, 600.0, None)
        assert got_rate == rate
        np.testing.assert_array_equal(got, ref)


def test_what_libsndfile_refuses_in_its_containers_pyav_decodes():
    """A WAV of Yamaha ADPCM (libsndfile lacks that codec) goes to PyAV, pinned to wav."""
    data = encode_as(two_tones(3.0, 44100)[:, 0], 44100, "wav", "adpcm_yamaha")
    assert sniff(io.BytesIO(data)) == WAV
    with pytest.raises(SndfileRefused):
        decode_sndfile(data, None, None, None)
    y = load_audio(data)
    assert abs(len(y) / 22050 - 3.0) < 0.05
    assert np.argmax(np.abs(np.fft.rfft(y))) * 22050 / len(y) == pytest.approx(440, abs=1.5)


def test_mp3_through_either_decoder_gives_about_the_same_samples():
    """MP3 goes to libsndfile (cheaper); PyAV's float decoder agrees to rounding."""
    data = encode(two_tones(4.0, 44100), 44100, "mp3")
    container = sniff(io.BytesIO(data))
    assert container is not None and container.sndfile
    ref, rate = decode_sndfile(data, None, 600.0, None)
    got, got_rate = decode_av(io.BytesIO(data), container, None, 600.0, None)
    assert got_rate == rate and len(got) == len(ref)
    np.testing.assert_allclose(got, ref, atol=1e-5)
    np.testing.assert_array_equal(decode(data)[0], ref)


@pytest.mark.parametrize(
    ("channels", "muxer", "codec", "options"),
    [(8, "mp4", "aac", None), (12, "ogg", "libopus", {"mapping_family": "255"})],
)
def test_many_channels_are_all_in_the_mix(channels, muxer, codec, options):
    """Planar frames of 8 or more channels (7.1 AAC; 12-channel Opus), which PyAV's own
    plane reading gets wrong: every channel's tone at 1/channels of its level."""
    t = np.arange(3 * 48000) / 48000
    freqs = [50.0 + 6 * i for i in range(channels)]  # low: 7.1 AAC band-limits its LFE
    y = np.stack([0.2 * np.sin(2 * np.pi * f * t) for f in freqs], 1).astype(np.float32)
    data = encode_as(y, 48000, muxer, codec, 48000, 64_000 * channels, codec_options=options)
    mono, rate = decode(data)
    mono = mono[4800:-4800]  # away from codec delay and padding
    spectrum = 2 * np.abs(np.fft.rfft(mono * np.hanning(len(mono)))) / (len(mono) / 2)
    bins = np.fft.rfftfreq(len(mono), 1 / rate)
    levels = [spectrum[np.argmin(np.abs(bins - f))] for f in freqs]
    np.testing.assert_allclose(levels, 0.2 / channels, rtol=0.25)


def _nan_wav() -> bytes:
    y = sing(VOICES[1], 4.0)
    y[30000:30100] = np.nan
    buf = io.BytesIO()
    sf.write(buf, y, 22050, subtype="FLOAT", format="WAV")
    return buf.getvalue()


@pytest.mark.parametrize("decoder", ["sndfile", "pyav"])
def test_both_decoders_apply_the_same_bounds(decoder):
    def run(data: bytes, max_seconds: float | None = None) -> np.ndarray:
        if decoder == "sndfile":
            return decode_sndfile(data, 22050, max_seconds, "x.wav")[0]
        return decode_av(io.BytesIO(data), WAV, 22050, max_seconds, "x.wav")[0]

    with pytest.raises(AudioError, match="NaN or infinite"):
        run(_nan_wav())
    with pytest.raises(UnsupportedAudioParamsError, match="sample rate 1 Hz"):
        run(wav_bytes(pcm16(sing(VOICES[0], 1.0)), rate=1))
    with pytest.raises(UnsupportedAudioParamsError, match="sample rate 400000 Hz"):
        run(wav_bytes(pcm16(sing(VOICES[0], 1.0)), rate=400_000))
    with pytest.raises(AudioTooLongError) as caught:
        run(wav_bytes(pcm16(sing(VOICES[0], 12.0)), rate=22050), max_seconds=10.0)
    assert caught.value.from_header and caught.value.path == "x.wav"
    # A header that under-states the length: stopped while decoding.
    lying = wav_bytes(pcm16(sing(VOICES[0], 12.0)), rate=22050, data_size=0xFFFFFFF0)
    with pytest.raises(AudioTooLongError):
        run(lying, max_seconds=10.0)


def test_compressed_lengths_declared_or_not_are_bounded():
    """An m4a declares its length: refused before decoding. ADTS AAC and Opus in WebM
    (a browser's recording) declare none: stopped at the limit while decoding."""
    y = two_tones(14.0, 22050)
    with pytest.raises(AudioTooLongError) as caught:
        load_audio(encode(y, 22050, "m4a", bit_rate=32_000), max_seconds=10.0)
    assert caught.value.from_header
    for ext in ("aac", "webm"):
        data = encode(y, 22050, ext, bit_rate=32_000, live=True)
        with pytest.raises(AudioTooLongError) as caught:
            load_audio(data, max_seconds=10.0)
        assert not caught.value.from_header and caught.value.duration_s > 10.0
        assert len(load_audio(data, max_seconds=15.0)) > 13.9 * 22050


def test_mp3_behind_a_large_id3_tag():
    data = encode(two_tones(3.0, 44100), 44100, "mp3")
    n = 300_000  # e.g. cover art: more than the sniffer's first read
    syncsafe = bytes((n >> shift) & 0x7F for shift in (21, 14, 7, 0))
    tagged = b"ID3\x04\x00\x00" + syncsafe + bytes(n) + data
    assert sniff(io.BytesIO(tagged)) == sniff(io.BytesIO(data))
    np.testing.assert_allclose(load_audio(tagged), load_audio(data), atol=1e-6)


def test_truncated_and_video_only_files():
    webm = encode(two_tones(6.0, 44100), 44100, "webm")
    half = load_audio(webm[: len(webm) // 2])  # the readable part, as libsndfile does
    assert 2.0 * 22050 < len(half) < 4.0 * 22050
    np.testing.assert_allclose(half[:22050], load_audio(webm)[:22050], atol=1e-6)
    m4a = encode(two_tones(6.0, 44100), 44100, "m4a")  # the index (moov) is written last
    with pytest.raises(UnsupportedFormatError, match=r"\[unreadable mp4\]"):
        load_audio(m4a[: len(m4a) // 2])
    with pytest.raises(UnsupportedFormatError, match="no audio stream"):
        load_audio(video_only_mp4())


@pytest.mark.parametrize("ext", ["m4a", "webm", "opus", "wma", "aac", "mka", "mp3", "flac"])
def test_mutated_files_decode_or_raise_an_audio_error(ext):
    """Flipped bytes, cut and spliced files: audio (finite, bounded) or an AudioError, never
    another exception (which the service would answer with a 500)."""
    data = encode(two_tones(3.0, 44100), 44100, ext)
    rng = np.random.default_rng(sum(map(ord, ext)))
    for _ in range(40):
        mutant = np.frombuffer(data, np.uint8).copy()
        at = rng.integers(0, len(mutant), size=rng.integers(1, 40))
        mutant[at] = rng.integers(0, 256, size=len(at))
        flipped, cut = mutant.tobytes(), int(rng.integers(len(data) // 4, len(data) + 1))
        for candidate in (flipped, flipped[:cut], data[:cut] + data):
            try:
                y = load_audio(candidate, max_seconds=10.0)
            except AudioError:
                continue
            assert y.dtype == np.float32 and np.isfinite(y).all() and len(y) <= 10 * 22050 + 1


def test_sniffing_names_only_whitelisted_containers():
    rng = np.random.default_rng(3)
    assert all(sniff(io.BytesIO(rng.bytes(65536))) is None for _ in range(200))
    for data in (
        b"ffconcat version 1.0\nfile a.wav\n",
        b"#EXTM3U\n#EXTINF:10,\na.wav\n",
        png_bytes(),
        b'<?xml version="1.0"?><MPD xmlns="urn:mpeg:dash:schema:mpd:2011"></MPD>',
        b"this is not audio\n" * 100,
        b"\xff\xfb",
    ):
        assert sniff(io.BytesIO(data)) is None
    assert sniff(io.BytesIO(encode(two_tones(1.0, 48000), 48000, "opus"))) == OGG
    assert sniff(io.BytesIO(encode(two_tones(1.0, 44100), 44100, "m4a"))) == MP4


def test_m4a_and_webm_decode_with_no_ffmpeg_on_path(tmp_path):
    """A subprocess whose PATH holds no ffmpeg or ffprobe decodes a MediaRecorder-like WebM
    (Opus) and an m4a (AAC) to the samples this process gets."""
    files = {}
    for ext in ("m4a", "webm"):
        files[ext] = tmp_path / f"take.{ext}"
        files[ext].write_bytes(encode(two_tones(3.0, 44100), 44100, ext))
    empty = tmp_path / "bin"
    empty.mkdir()
    script = (
        "import json, shutil, sys; from model.audio import load_audio\n"
        "assert shutil.which('ffmpeg') is None and shutil.which('ffprobe') is None\n"
        "print(json.dumps({p: load_audio(p).tolist() for p in sys.argv[1:]}))\n"
    )
    env = {"PATH": str(empty), "PYTHONPATH": str(REPO), "HOME": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-c", script, *map(str, files.values())],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    got = json.loads(done.stdout)
    for path in files.values():
        np.testing.assert_array_equal(np.asarray(got[str(path)], np.float32), load_audio(path))


def test_decoded_rate_is_the_stream_rate():
    y, rate = decode(encode(two_tones(2.0, 44100), 44100, "webm"))
    assert rate == 48000 and abs(len(y) - 2 * 48000) < 48000 * 0.05


@pytest.mark.e2e
def test_service_without_ffmpeg_answers_m4a_and_webm(tmp_path, random_checkpoint):
    """`python -m service` with no ffmpeg on PATH identifies an m4a (the README's first
    example) and a browser-like WebM recording (Opus, no duration): 200, not 415."""
    empty = tmp_path / "bin"
    empty.mkdir()
    port = free_port()
    env = service_env(random_checkpoint, tmp_path / "index", port)
    env |= {"PATH": str(empty), "PYTHONPATH": str(REPO)}
    take = np.stack([sing(VOICES[1], 8.0, sr=44100)] * 2, 1)
    uploads = {
        "take.m4a": encode(take, 44100, "m4a"),
        "rec.webm": encode(take, 44100, "webm", live=True),
    }
    server = ServiceProcess([sys.executable, "-m", "service"], env, port, tmp_path).start()
    try:
        with httpx.Client(base_url=server.url, timeout=120) as client:
            wav = write(tmp_path / "take.wav", take, 44100).read_bytes()
            control = client.post("/identify", files={"file": ("take.wav", wav)})
            assert control.status_code == 200, control.text
            for name, data in uploads.items():
                r = client.post("/identify", files={"file": (name, data)})
                assert r.status_code == 200, (name, r.text)
                assert abs(r.json()["duration_s"] - control.json()["duration_s"]) < 0.1
    finally:
        server.kill()
