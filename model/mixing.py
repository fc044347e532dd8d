"""Mixing vocals with accompaniment: the nominal karaoke mix, re-mixes and RMS-balanced gains.

The one place where stems are mixed, for datasets, mashups, training and evaluation.

The nominal mix is `(vocals + accompaniment) / 2`: stems are assumed level-matched by whoever
made them (MIR-1K's are, so this is its 0 dB mix, as in the reference notes).

For the SNR sweep the vocal-to-accompaniment ratio is measured, not nominal: the
accompaniment is scaled so that 20 log10(rms(vocals) / rms(accompaniment)) equals the asked
ratio, then the sum is scaled to the RMS of the nominal mix. Only the balance changes with the
ratio, not the loudness (the model's log compression is level dependent, and the paper notes
that loudness alone moves the figures).
"""

from __future__ import annotations

import numpy as np

from model.audio import rms


def _common_length(vocals: np.ndarray, accompaniment: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    n = min(len(vocals), len(accompaniment))  # stems of one clip; a resampler may differ by 1
    return vocals[:n], accompaniment[:n]


def nominal_mix(vocals: np.ndarray, accompaniment: np.ndarray) -> np.ndarray:
    """(vocals + accompaniment) / 2: float32 (samples,), same rate as the stems."""
    v, a = _common_length(vocals, accompaniment)
    return ((v.astype(np.float64) + a) / 2.0).astype(np.float32)


def mix_at_snr(vocals: np.ndarray, accompaniment: np.ndarray, snr_db: float) -> np.ndarray:
    """Re-mix at a vocal-to-accompaniment ratio of `snr_db` dB, at the nominal mix's RMS.

    float32 (samples,). A silent stem cannot be balanced: then the nominal mix comes back.
    """
    v, a = _common_length(vocals, accompaniment)
    v, a = v.astype(np.float64), a.astype(np.float64)
    rv, ra = rms(v), rms(a)
    nominal = (v + a) / 2.0
    if rv == 0.0 or ra == 0.0:
        return nominal.astype(np.float32)
    mix = v + a * (rv / ra) * 10.0 ** (-snr_db / 20.0)
    return (mix * (rms(nominal) / max(rms(mix), 1e-20))).astype(np.float32)


def mix_over_middle(vocals: np.ndarray, background: np.ndarray, snr_db: float) -> np.ndarray:
    """`mix_at_snr` of `vocals` over the middle of a (longer) `background` at the same rate:
    float32, as long as `vocals` where the background is, else cut to the background."""
    off = max(0, (len(background) - len(vocals)) // 2)
    return mix_at_snr(vocals, background[off : off + len(vocals)], snr_db)


def measured_snr_db(vocals: np.ndarray, accompaniment: np.ndarray) -> float:
    """20 log10(rms(vocals) / rms(accompaniment)) in dB (inf / -inf for a silent stem)."""
    v, a = _common_length(vocals, accompaniment)
    rv, ra = rms(v), rms(a)
    if ra == 0.0:
        return float("inf")
    if rv == 0.0:
        return float("-inf")
    return 20.0 * np.log10(rv / ra)


def background_gain(vocal: np.ndarray, background: np.ndarray, snr_db: float) -> float:
    """Gain for `background` so that 20 log10(rms(vocal) / rms(gain * background)) = snr_db."""
    rb = rms(background)
    return 0.0 if rb == 0.0 else rms(vocal) / rb * 10.0 ** (-snr_db / 20.0)


def mix_segment(
    vocal: np.ndarray, background: np.ndarray, snr_db: float, peak: float = 0.99
) -> tuple[np.ndarray, float, float]:
    """RMS-balanced mix of two equal-length signals (samples,).

    Returns (mix float32, vocal gain, background gain): mix = vg * vocal + bg * background with
    rms(vg * vocal) / rms(bg * background) = snr_db in dB; vg < 1 only to keep |mix| <= peak.
    """
    if len(vocal) != len(background):
        raise ValueError(f"lengths differ: vocal {len(vocal)}, background {len(background)}")
    bg = background_gain(vocal, background, snr_db)
    mix = vocal.astype(np.float64) + bg * background.astype(np.float64)
    top = float(np.max(np.abs(mix))) if len(mix) else 0.0
    scale = peak / top if top > peak else 1.0
    return (mix * scale).astype(np.float32), scale, bg * scale
