"""Synthetic test audio: singing-like harmonic tones, noise, silence. No files from the repo.

A "singer" is a fundamental range, a vibrato and a formant envelope; two calls with the same
singer give different melodies of the same voice.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

SR = 22050


@dataclass(frozen=True)
class Voice:
    f0: float  # Hz, centre of the melody
    formants: tuple[float, ...]  # Hz, spectral envelope peaks
    vibrato_hz: float = 5.5
    brightness: float = 1.0  # spectral tilt: higher is brighter


VOICES = [
    Voice(110.0, (500.0, 1500.0, 2500.0), 5.0, 0.6),
    Voice(220.0, (800.0, 1200.0, 2800.0), 6.0, 1.0),
    Voice(330.0, (350.0, 2200.0, 3200.0), 4.5, 1.4),
    Voice(165.0, (650.0, 1000.0, 2400.0), 6.5, 0.8),
]


def sing(voice: Voice, seconds: float, seed: int = 0, sr: int = SR) -> np.ndarray:
    """A phrase of sung notes: float32 (samples,), peak about 0.5."""
    rng = np.random.default_rng(seed)
    n = int(seconds * sr)
    t = np.arange(n) / sr
    note_len = int(0.4 * sr)
    steps = rng.choice([-5, -3, -2, 0, 2, 3, 5, 7], size=n // note_len + 1)
    f0 = voice.f0 * 2 ** (np.repeat(steps, note_len)[:n] / 12)
    f0 = f0 * (1 + 0.01 * np.sin(2 * np.pi * voice.vibrato_hz * t))
    phase = 2 * np.pi * np.cumsum(f0) / sr
    y = np.zeros(n)
    for h in range(1, 25):
        fh = h * f0
        gain = (
            h ** (-1.5 / voice.brightness)
            * sum(np.exp(-0.5 * ((fh - f) / 120.0) ** 2) for f in voice.formants)
            + 0.02 * h**-1.0
        )
        y += np.where(fh < sr / 2, gain * np.sin(h * phase), 0.0)
    y += 0.003 * rng.standard_normal(n)
    return (0.5 * y / np.abs(y).max()).astype(np.float32)


def backing(seconds: float, seed: int = 0, sr: int = SR) -> np.ndarray:
    """Drum-like clicks on a 120 bpm grid plus a bass drone: float32 (samples,)."""
    rng = np.random.default_rng(seed)
    n = int(seconds * sr)
    t = np.arange(n) / sr
    y = 0.2 * np.sin(2 * np.pi * 55.0 * t)
    for start in range(0, n, sr // 2):
        k = min(2000, n - start)
        y[start : start + k] += 0.6 * rng.standard_normal(k) * np.exp(-np.arange(k) / 300)
    return (0.4 * y / np.abs(y).max()).astype(np.float32)


def midi_hz(note: float) -> float:
    return 440.0 * 2.0 ** ((note - 69) / 12)


def harmonic_tone(
    f0: float,
    seconds: float,
    sr: int = SR,
    n_harmonics: int = 8,
    vibrato_cents: float = 0.0,
    formant_hz: float | None = None,
) -> np.ndarray:
    """A harmonic tone (samples,) with 1/h partials, optional 5.5-Hz vibrato and a formant-ish
    resonance (partials near `formant_hz` boosted), 20-ms attack and 50-ms release."""
    t = np.arange(int(seconds * sr)) / sr
    depth = 2.0 ** (vibrato_cents / 1200.0) - 1.0
    phase = 2 * np.pi * f0 * (t - depth / (2 * np.pi * 5.5) * np.cos(2 * np.pi * 5.5 * t))
    y = np.zeros_like(t)
    for h in range(1, n_harmonics + 1):
        if h * f0 >= sr / 2:
            break
        amp = 1.0 / h
        if formant_hz:
            amp *= 1.0 + 3.0 * np.exp(-((((h * f0) - formant_hz) / 300.0) ** 2))
        y += amp * np.sin(h * phase)
    env = np.clip(np.minimum(t / 0.02, (seconds - t) / 0.05), 0.0, 1.0)
    return (0.2 * y * env).astype(np.float32)


def chord_progression(chords: list[list[int]], seconds_each: float, sr: int = SR) -> np.ndarray:
    """Chords of MIDI notes, one after another, each note a harmonic tone."""
    return np.concatenate(
        [sum(harmonic_tone(midi_hz(n), seconds_each, sr) for n in ch) / len(ch) for ch in chords]
    ).astype(np.float32)


def write(path: Path, y: np.ndarray, sr: int = SR, **kw) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), y, sr, **kw)
    return path
