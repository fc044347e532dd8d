"""Uploads and ports for the benchmarks, without the test suite (bench/ never imports tests/).

`uploads(n, seconds)` gives `n` FLAC files of `seconds` each at 44.1 kHz: consecutive MIR-1K
vocal clips of one singer concatenated (real singing, from `model.shared.shared_dir()`) when
the data set is there, else a tiny harmonic "singer" rendered here. Either way the service
decodes FLAC and resamples 44.1 -> 22.05 kHz, as it would for a real upload.
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
    """`n` waveforms (float32, `sr` Hz) of `seconds` each, one MIR-1K singer each, cycling
    through the singers; None when MIR-1K is not available."""
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
            y = load_audio(root / "vocals" / f"{row['clip']}.opus", sr)
            parts.append(y)
            total += len(y)
            if total >= seconds * sr:
                break
        y = np.concatenate(parts)
        reps = int(np.ceil(seconds * sr / len(y)))  # a singer with less than `seconds` of clips
        takes.append(np.tile(y, reps)[: int(seconds * sr)])
    return takes


def synthetic_take(seconds: float, seed: int, sr: int = UPLOAD_SR) -> np.ndarray:
    """A sung-like phrase: notes of a harmonic tone with vibrato, float32 peak about 0.5."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    notes = 150.0 * 2 ** (rng.integers(-5, 8, size=int(seconds / 0.4) + 1) / 12)
    f0 = notes[(t / 0.4).astype(int)] * (1 + 0.01 * np.sin(2 * np.pi * 5.5 * t))
    phase = 2 * np.pi * np.cumsum(f0) / sr
    y = sum(np.sin(k * phase) / k for k in range(1, 12))
    return (0.5 * y / np.max(np.abs(y))).astype(np.float32)


def uploads(n: int, seconds: float, real: bool = True) -> tuple[list[bytes], str]:
    """(`n` FLAC uploads of `seconds` s at 44.1 kHz, a description of where they come from).

    real: MIR-1K when available; else (or with real=False) the synthetic voice, voiced
    throughout, so even a few seconds always hold a segment to embed.
    """
    takes = mir1k_takes(n, seconds) if real else None
    source = "MIR-1K vocals, concatenated per singer"
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
