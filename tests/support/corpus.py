"""A generated corpus of hostile and edge-case uploads, for the reliability suite.

`make_hostile_corpus(directory)` writes every file into `directory` (nothing is read from the
repository) and returns one `Hostile` per upload: where its bytes are, the file name the
client claims, and what the service may answer:

- "bomb": small bytes that declare or decode to far more audio than any limit admits, or a
  rate/channel count outside the accepted range; must be refused (4xx) quickly.
- "bad": not usable audio (empty, not audio, truncated to nothing, NaN samples...); a 4xx.
- "edge": legitimate but unusual audio (rates, sample formats, channels, lengths, odd file
  names); any documented answer, success included.
- "voice": DC and a clipped square wave: not singing; the voice detector refuses them (422
  `no_voiced_segment`) on every endpoint, `POST /tracks` included.

The m4a and mp4 entries are encoded with PyAV (tests/support/encoded.py): no ffmpeg program.
"""

from __future__ import annotations

import re
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from tests.support.encoded import encode_as, video_only_mp4
from tests.support.synth import VOICES, sing

SR = 22050
#: What no error body may carry: object reprs, tracebacks, source files, temporary paths.
LEAKS = re.compile(r"0x[0-9a-fA-F]{6,}|Traceback|File \"|/tmp/|\.py\b|site-packages")
KINDS = ("bomb", "bad", "edge", "voice")


@dataclass(frozen=True)
class Hostile:
    name: str  # unique label (test ids, reports)
    path: Path  # the bytes to upload
    kind: str  # one of KINDS
    upload_name: str  # file name the client sends in the multipart part


def voice(seconds: float, sr: int = SR, seed: int = 0) -> np.ndarray:
    return sing(VOICES[seed % len(VOICES)], seconds, seed=seed, sr=sr).astype(np.float32)


def wav_bytes(
    samples: bytes,
    *,
    rate: int,
    channels: int = 1,
    bits: int = 16,
    fmt: int = 1,
    data_size: int | None = None,
    riff_size: int | None = None,
) -> bytes:
    """A RIFF/WAVE file with a header that says whatever it is told (sizes, rate, channels)."""
    block = channels * bits // 8
    data_size = len(samples) if data_size is None else data_size
    riff_size = 36 + data_size if riff_size is None else riff_size
    header = b"RIFF" + struct.pack("<I", riff_size & 0xFFFFFFFF) + b"WAVE"
    header += b"fmt " + struct.pack(
        "<IHHIIHH", 16, fmt, channels, rate, (rate * block) & 0xFFFFFFFF, block, bits
    )
    return header + b"data" + struct.pack("<I", data_size & 0xFFFFFFFF) + samples


def pcm16(y: np.ndarray) -> bytes:
    return (np.clip(y, -1, 1) * 32767).astype("<i2").tobytes()


def png_bytes() -> bytes:
    """A valid 4x4 grey PNG."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    raw = b"".join(b"\x00" + bytes([128] * 4) for _ in range(4))
    ihdr = struct.pack(">IIBBBBB", 4, 4, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(raw))
        + chunk(b"IEND", b"")
    )


def _silent_flac(path: Path, seconds: float, rate: int, unknown_length: bool = False) -> Path:
    """A FLAC of digital silence: a few hundred KB that decode to `seconds` of audio.
    `unknown_length`: STREAMINFO says 0 samples ("unknown"), so only decoding finds the size."""
    block = np.zeros(rate * 60, dtype=np.int16)
    with sf.SoundFile(path, "w", rate, 1, "PCM_16", format="FLAC") as f:
        for _ in range(int(seconds // 60)):
            f.write(block)
    if unknown_length:
        data = bytearray(path.read_bytes())
        # fLaC, metadata block header (4 bytes), STREAMINFO: min/max block (4), min/max frame
        # (6), then 20 bits rate, 3 channels-1, 5 bps-1, 36 bits total samples.
        at = 4 + 4 + 10
        packed = int.from_bytes(data[at : at + 8], "big")
        packed &= ~((1 << 36) - 1)  # total samples := 0
        data[at : at + 8] = packed.to_bytes(8, "big")
        path.write_bytes(bytes(data))
    return path


def make_hostile_corpus(directory: Path) -> list[Hostile]:
    """Write the corpus into `directory`; see the module docstring."""
    directory.mkdir(parents=True, exist_ok=True)
    out: list[Hostile] = []

    def add(name: str, data: bytes | Path, kind: str, upload_name: str | None = None) -> Path:
        path = data if isinstance(data, Path) else directory / name
        if not isinstance(data, Path):
            path.write_bytes(data)
        out.append(Hostile(name, path, kind, upload_name or name))
        return path

    def written(name: str, y: np.ndarray, rate: int = SR, **kw) -> Path:
        path = directory / name
        sf.write(str(path), y, rate, **kw)
        return path

    rng = np.random.default_rng(12)
    song = voice(5.0)

    # -- not audio ------------------------------------------------------------------------
    add("empty.wav", b"", "bad")
    for ext in ("wav", "mp3", "flac", "ogg", "m4a"):
        add(f"random.{ext}", rng.bytes(64 * 1024), "bad")
    add("text.wav", b"this is not audio\n" * 200, "bad")
    add("notes.txt", b"lyrics: la la la\n" * 50, "bad")
    add("image.png", png_bytes(), "bad")
    add("image-as.wav", png_bytes(), "bad")
    add("header-only.wav", wav_bytes(b"", rate=SR), "bad")

    # -- truncations ------------------------------------------------------------------------
    encodings = {
        "wav": {"subtype": "PCM_16"},
        "flac": {},
        "mp3": {"format": "MP3"},
        "opus": {"format": "OGG", "subtype": "OPUS"},
    }
    for ext, kw in encodings.items():
        rate = 48000 if ext == "opus" else SR
        full = written(f"full.{ext}", voice(5.0, rate), rate, **kw)
        data = full.read_bytes()
        for cut in (0.02, 0.25, 0.5, 0.9):
            add(
                f"truncated-{int(cut * 100)}pct.{ext}", data[: max(1, int(len(data) * cut))], "edge"
            )

    # -- lying WAV headers ---------------------------------------------------------------------
    one_s = pcm16(voice(1.0))
    add("huge-data-size.wav", wav_bytes(one_s, rate=SR, data_size=0xFFFFFFF0), "edge")
    add("huge-riff-size.wav", wav_bytes(one_s, rate=SR, riff_size=0xFFFFFFF0), "edge")
    add("zero-data-size.wav", wav_bytes(pcm16(song), rate=SR, data_size=0), "edge")
    add("rate-0.wav", wav_bytes(one_s, rate=0), "bomb")
    # The 40 KB file: 20,000 samples at 1 Hz, 5.5 hours once resampled to 22.05 kHz.
    add("rate-1hz.wav", wav_bytes(pcm16(voice(20000 / SR)), rate=1), "bomb")
    add("rate-3999hz.wav", wav_bytes(pcm16(voice(2.0)), rate=3999), "bomb")
    add("rate-10mhz.wav", wav_bytes(pcm16(voice(1.0)), rate=10_000_000), "bomb")
    add("rate-400khz.wav", wav_bytes(pcm16(voice(1.0)), rate=400_000), "bomb")
    add("channels-0.wav", wav_bytes(one_s, rate=SR, channels=0), "bomb")
    add("channels-1000.wav", wav_bytes(one_s[:400] * 1000, rate=SR, channels=1000), "bomb")
    add("bits-7.wav", wav_bytes(one_s, rate=SR, bits=7), "edge")
    add("format-tag-99.wav", wav_bytes(one_s, rate=SR, fmt=99), "bad")

    # -- bombs: small files, hours of audio ----------------------------------------------------
    add("silence-2h-48k.flac", _silent_flac(directory / "silence-2h-48k.flac", 7200, 48000), "bomb")
    bomb = _silent_flac(directory / "silence-1h-unknown-length.flac", 3600, 8000, True)
    add("silence-1h-unknown-length.flac", bomb, "bomb")
    silence = np.zeros(2400 * 8000, np.float32)  # 40 min at 8 kHz, AAC at 8 kbit/s
    add("silence-40min.m4a", encode_as(silence, 8000, "mp4", "aac", bit_rate=8000), "bomb")

    # -- channels, sample formats, rates ---------------------------------------------------------
    add("channels-8.wav", written("channels-8.wav", np.tile(song[:, None], (1, 8)) * 0.5), "edge")
    add("u8.wav", written("u8.wav", song, subtype="PCM_U8"), "edge")
    add("pcm24.wav", written("pcm24.wav", song, subtype="PCM_24"), "edge")
    add("float64.wav", written("float64.wav", song.astype(np.float64), subtype="DOUBLE"), "edge")
    add("rate-4khz.wav", written("rate-4khz.wav", voice(5.0, 4000), 4000), "edge")
    add("rate-384khz.flac", written("rate-384khz.flac", voice(4.0, 384000), 384000), "edge")
    add("aiff.aiff", written("aiff.aiff", song, format="AIFF"), "edge")
    add("vorbis.ogg", written("vorbis.ogg", song, format="OGG", subtype="VORBIS"), "edge")

    # -- sample values ---------------------------------------------------------------------------
    for rate in (SR, 44100):
        for label, value in (("nan", np.nan), ("inf", np.inf)):
            y = voice(4.0, rate)
            y[rate : rate + 100] = value
            add(
                f"{label}-{rate}.wav",
                written(f"{label}-{rate}.wav", y, rate, subtype="FLOAT"),
                "bad",
            )
    y = voice(4.0, 44100) * 1e30
    add("huge-values.wav", written("huge-values.wav", y, 44100, subtype="FLOAT"), "edge")
    add("dc.wav", written("dc.wav", np.full(10 * SR, 0.5, np.float32)), "voice")
    square = np.sign(np.sin(2 * np.pi * 220 * np.arange(10 * SR) / SR)).astype(np.float32)
    add("square-clipped.wav", written("square-clipped.wav", square), "voice")

    # -- lengths ---------------------------------------------------------------------------------
    add("1s.wav", written("1s.wav", voice(1.0)), "bad")
    add("2.97s.wav", written("2.97s.wav", voice(2.97)), "bad")
    add("ok-5s.flac", written("ok-5s.flac", song), "edge")
    ten_min = np.tile(voice(20.0, seed=3), 30)  # 600 s: the query limit, admitted
    add("10min.flac", written("10min.flac", ten_min, subtype="PCM_16"), "edge")

    # -- containers PyAV encodes (the index, moov, last: a truncated m4a has none) ----------
    m4a = encode_as(song, SR, "mp4", "aac")
    add("voice.m4a", m4a, "edge")
    add("voice-truncated.m4a", m4a[: len(m4a) // 2], "edge")
    add("m4a-named.wav", m4a, "edge")
    add("video-only.mp4", video_only_mp4(), "bad")

    # -- hostile file names (the bytes are a good recording) ------------------------------------
    for i, name in enumerate(
        (
            "../../../etc/passwd",
            "/etc/shadow.wav",
            "..\\..\\windows\\win.ini",
            'a"; name="singer.wav',
            "%2e%2e%2f%2e%2e%2fetc.wav",
            "x" * 2000 + ".wav",
            "'; DROP TABLE tracks;--.wav",
            "\u202egnp.wav",
            "CON.wav",
        )
    ):
        data = pcm16(voice(4.0, seed=10 + i))
        add(f"name-{i}.wav", wav_bytes(data, rate=SR), "edge", upload_name=name)
    return out
