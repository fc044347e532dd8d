"""Random recording channels for vocal crops, so that a take's identity is its voice, not its
microphone: two crops of one take get independent channels (issue 11).

`random_channel` applies, each with its own probability: a spectral tilt (first-order shelf),
telephone band-limiting (300-3400 Hz), a synthetic room (exponentially decaying noise impulse
response) and additive noise at 15-40 dB SNR. `codec_round_trip` encodes and decodes a crop
as low-bitrate Opus or MP3, in process (libsndfile). Gain is left to the sampler
(`TrainingPool._gain`).
"""

from __future__ import annotations

import io

import numpy as np
import soundfile as sf
from scipy import signal

from model.audio import rms


def tilt(y: np.ndarray, sr: int, db: float) -> np.ndarray:
    """Shelving tilt: the band above ~1 kHz raised (db > 0) or cut by about `db` dB."""
    b, a = signal.butter(1, 1000.0, btype="highpass", fs=sr)
    high = signal.lfilter(b, a, y)
    return (y + (10.0 ** (db / 20.0) - 1.0) * high).astype(np.float32)


def telephone(y: np.ndarray, sr: int) -> np.ndarray:
    """Band-limit to 300-3400 Hz (4th-order Butterworth, zero phase)."""
    sos = signal.butter(4, [300.0, min(3400.0, 0.45 * sr)], btype="bandpass", fs=sr, output="sos")
    return signal.sosfiltfilt(sos, y).astype(np.float32)


def reverb(
    y: np.ndarray, sr: int, rt60_s: float, wet: float, rng: np.random.Generator
) -> np.ndarray:
    """Convolution with exponentially decaying white noise (RT60 `rt60_s`), mixed `wet`."""
    n = int(rt60_s * sr)
    ir = rng.standard_normal(n) * np.exp(-6.9 * np.arange(n) / n)  # -60 dB at rt60
    ir /= np.sqrt(np.sum(ir**2))
    wet_sig = signal.fftconvolve(y, ir)[: len(y)]
    return ((1.0 - wet) * y + wet * wet_sig).astype(np.float32)


def add_noise(y: np.ndarray, snr_db: float, rng: np.random.Generator) -> np.ndarray:
    """White noise at `snr_db` below the signal's RMS."""
    noise = rng.standard_normal(len(y)) * rms(y) * 10.0 ** (-snr_db / 20.0)
    return (y + noise).astype(np.float32)


def random_channel(y: np.ndarray, sr: int, rng: np.random.Generator) -> np.ndarray:
    """A random channel applied to a crop (samples,) at `sr` Hz; float32, same length."""
    y = tilt(y, sr, rng.uniform(-9.0, 9.0))
    if rng.random() < 0.25:
        y = telephone(y, sr)
    if rng.random() < 0.3:
        y = reverb(y, sr, rng.uniform(0.2, 0.9), rng.uniform(0.1, 0.5), rng)
    if rng.random() < 0.3:
        y = add_noise(y, rng.uniform(15.0, 40.0), rng)
    return y


#: Rates libsndfile's Opus encoder takes; MP3 takes these and the 11.025 kHz family.
OPUS_RATES = (8000, 12000, 16000, 24000, 48000)


def codec_round_trip(y: np.ndarray, sr: int, rng: np.random.Generator) -> np.ndarray:
    """`y` (samples,) at `sr` Hz through Opus (in Ogg) or MP3 at a random compression level
    (0.6-1.0: about 40 down to 24 kbit/s at 16 kHz), back to float32 of the same length.
    About 25 ms (Opus) or 6 ms (MP3) per 3-s crop on one core."""
    opus = sr in OPUS_RATES and rng.random() < 0.5
    fmt, subtype = ("OGG", "OPUS") if opus else ("MP3", "MPEG_LAYER_III")
    buf = io.BytesIO()
    peak = float(np.max(np.abs(y))) if len(y) else 0.0
    scale = 1.0 / peak if peak > 1.0 else 1.0  # the encoders clip at full scale
    level = float(rng.uniform(0.6, 1.0))
    sf.write(buf, y * scale, sr, format=fmt, subtype=subtype, compression_level=level)
    buf.seek(0)
    z = sf.read(buf, dtype="float32")[0] / scale
    out = np.zeros(len(y), dtype=np.float32)
    out[: min(len(y), len(z))] = z[: len(y)]
    return out
