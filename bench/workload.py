"""Uploads and ports for the benchmarks, without the test suite (bench/ never imports tests/).

`uploads(n, seconds)` gives `n` stereo FLAC files of `seconds` each at 44.1 kHz: consecutive
MIR-1K clips of one singer concatenated, voice on the left and accompaniment on the right as
MIR-1K distributes them (real singing, from `model.shared.shared_dir()`), when the data set is
there, else a tiny harmonic "singer" over a drone rendered here. Either way the service
decodes a 2-3 MB FLAC, mixes it down and resamples 44.1 -> 22.05 kHz, as for a real song.
"""

from __future__ import annotations

import csv
import io
import socket
from itertools import groupby

import numpy as np
import soundfile as sf

from model.audio import load_audio
from model.shared import shared_dir

UPLOAD_SR = 44100


def mir1k_takes(n: int, seconds: float, sr: int = UPLOAD_SR) -> list[np.ndarray] | None:
    """`n` stereo takes (float32 (samples, 2): voice, accompaniment; `sr` Hz) of `seconds`
    each, one MIR-1K singer each, cycling through the singers; None without MIR-1K."""
    root = shared_dir() / "data" / "mir1k"
    if not (root / "index.csv").is_file():
        return None
    with (root / "index.csv").open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    singers = [list(g) for _, g in groupby(rows, key=lambda r: r["singer"])]
    takes = []
    for i in range(n):
        parts, total = [], 0
        for row in singers[i % len(singers)]:
            voice = load_audio(root / "vocals" / f"{row['clip']}.opus", sr)
            backing = load_audio(root / "accompaniment" / f"{row['clip']}.opus", sr)
            m = min(len(voice), len(backing))
            parts.append(np.stack([voice[:m], backing[:m]], axis=1))
            total += m
            if total >= seconds * sr:
                break
        y = np.concatenate(parts)
        reps = int(np.ceil(seconds * sr / len(y)))  # a singer with less than `seconds` of clips
        takes.append(np.tile(y, (reps, 1))[: int(seconds * sr)])
    return takes


def synthetic_take(seconds: float, seed: int, sr: int = UPLOAD_SR) -> np.ndarray:
    """A sung-like phrase (syllables of a harmonic tone with vibrato, peak about 0.5) on the left,
    a quiet drone on the right: float32 (samples, 2)."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    notes = 150.0 * 2 ** (rng.integers(-5, 8, size=int(seconds / 0.4) + 1) / 12)
    f0 = notes[(t / 0.4).astype(int)] * (1 + 0.01 * np.sin(2 * np.pi * 5.5 * t))
    phase = 2 * np.pi * np.cumsum(f0) / sr
    # Each note swells and fades as a sung syllable does: a steady tone is refused as not
    # singing (model/refusal.py's loudness guard), and a voice is not steady.
    syllable = 0.35 + 0.65 * np.sin(np.pi * ((t / 0.4) % 1.0)) ** 2
    y = syllable * sum(np.sin(k * phase) / k for k in range(1, 12))
    drone = sum(np.sin(2 * np.pi * f * t) for f in (110.0, 165.0, 220.0)) / 3
    y = np.stack([0.5 * y / np.max(np.abs(y)), 0.2 * drone], axis=1)
    return y.astype(np.float32)


def uploads(n: int, seconds: float, real: bool = True) -> tuple[list[bytes], str]:
    """(`n` FLAC uploads of `seconds` s at 44.1 kHz, a description of where they come from).

    real: MIR-1K when available; else (or with real=False) the synthetic voice, voiced
    throughout, so even a few seconds always hold a segment to embed.
    """
    takes = mir1k_takes(n, seconds) if real else None
    source = "MIR-1K voice + accompaniment (stereo), concatenated per singer"
    if takes is None:
        takes, source = [synthetic_take(seconds, i) for i in range(n)], "synthetic harmonic voice"
    out = []
    for y in takes:
        buf = io.BytesIO()
        sf.write(buf, y, UPLOAD_SR, format="FLAC")
        out.append(buf.getvalue())
    return out, source


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
