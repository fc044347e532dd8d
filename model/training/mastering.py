"""A mix mastered as records are: bus compression, EQ, then a limiter to modern loudness.

`draw_master(rng)` draws the settings (`Master`). `band_bus(y, sr, m)` is the band's own
bus before the vocal joins it: compression, then a soft clipper a few dB above its RMS (MIDI
drums rendered raw have a crest factor near 20 dB; a finished band's is near 10, and a
limiter asked to close that gap alone pumps the vocal up by several dB). `master(y, sr, m)`
applies the rest with
pedalboard: a linear EQ (`master_eq`), then the dynamics (`master_dynamics`: bus
compressor, limiter) that bring the integrated loudness (ITU-R BS.1770, pyloudnorm) to the
target, -9..-7 LUFS by default, under a ceiling; the gain into the limiter is corrected until
the measured loudness is within `LUFS_TOLERANCE` of the target. `gain_curve` recovers the
dynamics' gain over time from their input and output, so that stems can be taken through
the same master (EQ'd, then multiplied by the curve): they then add up to the record.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np
import pedalboard as pb
import pyloudnorm

from model.audio import rms

#: the loudness a master ends within of its target, LU (searched to 0.8 of it)
LUFS_TOLERANCE = 0.5
#: output ceiling, dBFS (sample peak)
CEILING_DB = -0.3


@dataclass(frozen=True)
class Master:
    """Settings of one master: bus compressor threshold relative to the mix's RMS (dB), ratio,
    attack / release (ms); low and high shelf gains (dB) and corners (Hz); limiter release
    (ms); target integrated loudness (LUFS)."""

    bus_over_rms_db: float
    bus_ratio: float
    bus_attack_ms: float
    bus_release_ms: float
    low_hz: float
    low_db: float
    high_hz: float
    high_db: float
    limiter_release_ms: float
    target_lufs: float
    band_over_rms_db: float = 2.0  # the band bus compressor's threshold over the band's RMS
    band_ratio: float = 3.0
    band_clip_over_rms_db: float = 9.0  # the band's soft clipper, over its RMS

    def to_dict(self) -> dict:
        return asdict(self)


def draw_master(rng: np.random.Generator, lufs: tuple[float, float] = (-9.0, -7.0)) -> Master:
    """Random mastering settings: gentle glue compression, small shelves, a loud target."""
    return Master(
        bus_over_rms_db=float(rng.uniform(0, 6)),
        bus_ratio=float(rng.uniform(1.5, 4)),
        bus_attack_ms=float(rng.uniform(5, 30)),
        bus_release_ms=float(rng.uniform(80, 300)),
        low_hz=float(rng.uniform(70, 150)),
        low_db=float(rng.uniform(-2, 3)),
        high_hz=float(rng.uniform(5000, 9000)),
        high_db=float(rng.uniform(-1, 4)),
        limiter_release_ms=float(rng.uniform(30, 200)),
        target_lufs=float(rng.uniform(*lufs)),
        band_over_rms_db=float(rng.uniform(0, 4)),
        band_ratio=float(rng.uniform(2, 4)),
        band_clip_over_rms_db=float(rng.uniform(7, 11)),
    )


def loudness(y: np.ndarray, sr: int) -> float:
    """Integrated loudness of (samples,) at `sr`, LUFS (-inf for silence; needs >= 0.4 s)."""
    return float(pyloudnorm.Meter(sr).integrated_loudness(np.asarray(y, np.float64)))


def band_bus(y: np.ndarray, sr: int, m: Master) -> np.ndarray:
    """The band (samples,) through its bus: compressor, then `t tanh(y / t)` with t the
    clipper's level; float32, same length and about the same RMS."""
    y = np.asarray(y, np.float32)
    level = rms(y)
    if level == 0.0:
        return y.copy()
    comp = pb.Compressor(
        threshold_db=20 * np.log10(level) + m.band_over_rms_db,
        ratio=m.band_ratio,
        attack_ms=5.0,
        release_ms=100.0,
    )(y[None], sr)[0]
    t = rms(comp) * 10.0 ** (m.band_clip_over_rms_db / 20.0)
    out = t * np.tanh(comp / t)
    return (out * (level / max(rms(out), 1e-12))).astype(np.float32)


def _limit(y: np.ndarray, sr: int, gain_db: float, release_ms: float) -> np.ndarray:
    """Gain, a limiter at the ceiling, then a hard ceiling for its overshoots."""
    boosted = (y * 10.0 ** (gain_db / 20.0)).astype(np.float32)
    limited = pb.Limiter(threshold_db=CEILING_DB, release_ms=release_ms)(boosted[None], sr)[0]
    ceiling = 10.0 ** (CEILING_DB / 20.0)
    return np.clip(limited, -ceiling, ceiling)


def master_eq(y: np.ndarray, sr: int, m: Master) -> np.ndarray:
    """The master's shelves (linear and time-invariant: the EQ of a sum is the sum of the
    EQs): float32 (samples,)."""
    shelves = pb.Pedalboard(
        [
            pb.LowShelfFilter(m.low_hz, m.low_db),
            pb.HighShelfFilter(min(m.high_hz, 0.45 * sr), m.high_db),
        ]
    )
    return shelves(np.asarray(y, np.float32)[None], sr)[0]


def master_dynamics(y: np.ndarray, sr: int, m: Master, passes: int = 12) -> np.ndarray:
    """Bus compressor and limiter on an EQ'd mix (samples,): float32, same length, peak <=
    CEILING_DB, loudness within LUFS_TOLERANCE of `m.target_lufs` (after at most `passes`
    gain corrections; a signal too short or too quiet to measure is only compressed and
    limited).

    Loudness grows ever more slowly with the gain into the limiter (a few tenths of a LU per
    dB once it works hard): the gain is found by `solve_monotone`."""
    y = np.asarray(y, np.float32)
    level = rms(y)
    if level == 0.0:
        return y.copy()
    bus = pb.Compressor(
        threshold_db=20 * np.log10(level) + m.bus_over_rms_db,
        ratio=m.bus_ratio,
        attack_ms=m.bus_attack_ms,
        release_ms=m.bus_release_ms,
    )(y[None], sr)[0]
    if not np.isfinite(loudness(bus, sr)):
        return _limit(bus, sr, 0.0, m.limiter_release_ms)
    gain = solve_monotone(
        lambda g: loudness(_limit(bus, sr, g, m.limiter_release_ms), sr),
        m.target_lufs,
        m.target_lufs - loudness(bus, sr),
        0.8 * LUFS_TOLERANCE,
        passes,
        (-40.0, 48.0),
    )
    return _limit(bus, sr, gain, m.limiter_release_ms)


def solve_monotone(
    f: Callable[[float], float],
    target: float,
    x0: float,
    tol: float,
    passes: int,
    bounds: tuple[float, float],
) -> float:
    """x within `bounds` with |f(x) - target| <= tol for an increasing f, after at most
    `passes` evaluations (else the best one): secant steps, kept inside the bracket of the
    points on either side of the target seen so far, bisecting when a step would leave it.
    The first step from x0 assumes slope 1 (dB in, dB out)."""
    lo, hi = bounds
    best, best_miss = x0, float("inf")
    x, prev = x0, None
    for _ in range(passes):
        y = f(x)
        miss = target - y
        if abs(miss) < best_miss:
            best, best_miss = x, abs(miss)
        if abs(miss) <= tol:
            break
        if miss > 0:
            lo = max(lo, x)
        else:
            hi = min(hi, x)
        slope = 1.0
        if prev is not None and x != prev[0] and (y - prev[1]) / (x - prev[0]) > 0:
            slope = (y - prev[1]) / (x - prev[0])
        prev = (x, y)
        step = x + miss / max(slope, 0.05)
        x = step if lo < step < hi else (lo + hi) / 2
    return best


def master(y: np.ndarray, sr: int, m: Master) -> np.ndarray:
    """Master a mix (samples,) at `sr`: `master_dynamics(master_eq(y))`."""
    return master_dynamics(master_eq(y, sr, m), sr, m)


def gain_curve(before: np.ndarray, after: np.ndarray, frame: int = 256) -> np.ndarray:
    """The gain over time (samples,) that turns `before` into `after` (both (samples,)):
    per frame of `frame` samples the least-squares gain <after, before> / <before, before>
    (a silent frame takes its neighbours'), linearly interpolated between frame centres."""
    n = len(before)
    k = max(1, n // frame)
    x = np.asarray(before[: k * frame], np.float64).reshape(k, frame)
    z = np.asarray(after[: k * frame], np.float64).reshape(k, frame)
    energy = np.sum(x * x, axis=1)
    floor = 1e-6 * max(float(energy.max()), 1e-30)
    gains = np.sum(x * z, axis=1) / np.maximum(energy, floor)
    ok = energy > floor
    centres = (np.arange(k) + 0.5) * frame
    if not ok.any():
        return np.ones(n)
    return np.interp(np.arange(n), centres[ok], gains[ok])
