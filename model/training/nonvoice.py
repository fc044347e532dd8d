"""Generated signals that are not singing: the voice detector's class "none" (model/voice.py).

Silence, DC, steady / gliding / vibrato sine tones, square, clipped-sine and sawtooth waves,
chords of sines, white / pink / brown noise, mains hum, click trains; and, since studio mixes
entered the detector's training (issue 33), the signals a test bench or a broken upload
sends that the first detector heard as a track: square and sawtooth waves synthesised at
another sample rate and resampled (aliased partials: a 220-Hz square at 16 kHz), sine sweeps,
sustained harmonic tones with vibrato (a singer's pitch contour without a voice: no
formants, no breath) and FM tones. `NONVOICE_KINDS` lists them; `nonvoice` makes one at a
random level from -30 dBFS to full scale, with a faint noise floor.
"""

from __future__ import annotations

import numpy as np

from model.audio import resample

NONVOICE_KINDS = (
    "silence",
    "dc",
    "sine",
    "glide",
    "vibrato_sine",
    "square",
    "clipped_sine",
    "sawtooth",
    "chord",
    "white",
    "pink",
    "brown",
    "hum",
    "clicks",
    "aliased_square",
    "sweep",
    "harmonic_vibrato",
    "fm",
)
#: rates an aliased square or sawtooth is synthesised at before resampling
SYNTH_RATES = (8000, 11025, 16000, 22050, 32000, 44100, 48000)


def _phase(inst_hz: np.ndarray, sr: int) -> np.ndarray:
    return 2 * np.pi * np.cumsum(inst_hz) / sr


def _harmonic_vibrato(t: np.ndarray, rng: np.random.Generator, sr: int) -> np.ndarray:
    """One sustained note (or a slow glide) of harmonics under a smooth tilt, with vibrato."""
    f0 = float(np.exp(rng.uniform(np.log(80.0), np.log(1000.0))))
    glide = 2 ** (rng.uniform(-0.5, 0.5) * t / max(t[-1], 1e-9)) if rng.random() < 0.3 else 1.0
    depth = 2 ** (rng.uniform(0.1, 1.0) / 12) - 1  # 0.1 to 1 semitone
    inst = f0 * glide * (1 + depth * np.sin(2 * np.pi * rng.uniform(4.0, 7.5) * t))
    phase = _phase(inst, sr)
    tilt = rng.uniform(0.5, 2.0)
    y = np.zeros_like(t)
    for h in range(1, 41):
        if h * f0 * 1.1 >= sr / 2:
            break
        y += h**-tilt * np.sin(h * phase + rng.uniform(0, 2 * np.pi))
    if rng.random() < 0.5:  # a tremolo with it
        y *= 1 + 0.3 * np.sin(2 * np.pi * rng.uniform(3, 8) * t)
    return y


def nonvoice(kind: str, seconds: float, rng: np.random.Generator, sr: int) -> np.ndarray:
    """One generated non-voice signal of `kind` (see NONVOICE_KINDS): float32 (samples,)."""
    n = int(seconds * sr)
    t = np.arange(n) / sr
    y: np.ndarray
    f = float(np.exp(rng.uniform(np.log(40.0), np.log(6000.0))))
    if kind == "silence":
        y = np.zeros(n)
    elif kind == "dc":
        y = np.full(n, rng.choice([-1, 1]) * rng.uniform(0.01, 0.9))
    elif kind == "sine":
        y = np.sin(2 * np.pi * f * t)
    elif kind == "glide":
        f1 = f * 2 ** rng.uniform(-2, 2)
        y = np.sin(2 * np.pi * np.cumsum(np.geomspace(f, f1, n)) / sr)
    elif kind == "vibrato_sine":
        inst = f * (1 + rng.uniform(0.005, 0.03) * np.sin(2 * np.pi * rng.uniform(4, 7) * t))
        y = np.sin(2 * np.pi * np.cumsum(inst) / sr)
    elif kind == "square":
        y = np.sign(np.sin(2 * np.pi * min(f, 3000.0) * t))
    elif kind == "clipped_sine":
        y = np.clip(rng.uniform(2, 20) * np.sin(2 * np.pi * min(f, 3000.0) * t), -1, 1)
    elif kind == "sawtooth":
        y = 2 * ((t * min(f, 3000.0)) % 1.0) - 1
    elif kind == "chord":
        y = np.sum(
            [np.sin(2 * np.pi * f * 2 ** (rng.integers(0, 13) / 12) * t) for _ in range(3)], 0
        )
    elif kind in ("white", "pink", "brown"):
        w = rng.standard_normal(n)
        if kind != "white":
            spec = np.fft.rfft(w)
            freqs = np.maximum(np.fft.rfftfreq(n, 1 / sr), 1.0)
            spec /= freqs ** (0.5 if kind == "pink" else 1.0)
            w = np.fft.irfft(spec, n)
        y = w
    elif kind == "hum":
        base = rng.choice([50.0, 60.0])
        y = np.sum([rng.uniform(0.1, 1) * np.sin(2 * np.pi * base * h * t) for h in range(1, 8)], 0)
    elif kind == "clicks":
        y = np.zeros(n)
        period = int(sr / rng.uniform(1, 20))
        y[::period] = 1.0
    elif kind == "aliased_square":
        rate = int(rng.choice(SYNTH_RATES))
        tr = np.arange(int(seconds * rate)) / rate
        f0 = float(np.exp(rng.uniform(np.log(60.0), np.log(2000.0))))
        naive = np.sign(np.sin(2 * np.pi * f0 * tr))
        if rng.random() < 0.3:
            naive = 2 * ((tr * f0) % 1.0) - 1  # a naive sawtooth instead
        y = resample(naive.astype(np.float32), rate, sr)[:n]
        y = np.pad(y, (0, n - len(y)))
    elif kind == "sweep":
        lo, hi = sorted(np.exp(rng.uniform(np.log(20.0), np.log(0.45 * sr), 2)))
        span = rng.uniform(0.5, max(0.6, seconds))  # one sweep, or repeated ones
        frac = (t % span) / span
        inst = lo * (hi / lo) ** (frac if rng.random() < 0.7 else 1 - frac)
        y = np.sin(_phase(inst, sr))
    elif kind == "harmonic_vibrato":
        y = _harmonic_vibrato(t, rng, sr)
    elif kind == "fm":
        carrier = float(np.exp(rng.uniform(np.log(100.0), np.log(2000.0))))
        ratio, index = rng.choice([0.5, 1.0, 2.0, 3.0, 3.5]), rng.uniform(0.5, 5.0)
        y = np.sin(2 * np.pi * carrier * t + index * np.sin(2 * np.pi * carrier * ratio * t))
    else:
        raise ValueError(f"unknown non-voice kind {kind!r}")
    y = np.asarray(y, dtype=np.float64)
    peak = np.abs(y).max()
    y = y / peak if peak > 0 else y
    y = y * 10 ** (rng.uniform(-30, 0) / 20) + rng.standard_normal(n) * 10 ** (
        rng.uniform(-100, -60) / 20
    )
    return np.clip(y, -1, 1).astype(np.float32)
