"""Encoded test uploads made in memory: WAV or FLAC bytes of a waveform."""

from __future__ import annotations

import io

import numpy as np
import soundfile as sf

from tests.support.synth import SR


def encoded(y: np.ndarray, sr: int = SR, fmt: str = "WAV", subtype: str | None = None) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, y, sr, format=fmt, subtype=subtype)
    return buf.getvalue()


def silence(seconds: float, sr: int = SR) -> bytes:
    return encoded(np.zeros(int(seconds * sr), np.float32), sr, subtype="PCM_16")
