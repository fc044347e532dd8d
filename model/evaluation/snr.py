"""Mixing vocal and accompaniment stems: the nominal karaoke mix and re-mixes at a chosen ratio.

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

#: Vocal-to-accompaniment ratios of the default sweep, in dB.
DEFAULT_SNRS_DB: tuple[float, ...] = (-10.0, -5.0, 0.0, 5.0, 10.0)


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


def measured_snr_db(vocals: np.ndarray, accompaniment: np.ndarray) -> float:
    """20 log10(rms(vocals) / rms(accompaniment)) in dB (inf / -inf for a silent stem)."""
    v, a = _common_length(vocals, accompaniment)
    rv, ra = rms(v), rms(a)
    if ra == 0.0:
        return float("inf")
    if rv == 0.0:
        return float("-inf")
    return 20.0 * np.log10(rv / ra)
