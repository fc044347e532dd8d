"""A lead vocal produced as in a studio: EQ, compression, doubles and harmonies made from the
same take, now and then saturation or a band-limited "telephone" sound, then a room or plate
reverb (and sometimes a delay throw).

`draw_vocal_chain(rng)` draws the settings (`VocalChain`, JSON-able for the manifest);
`produce_vocal(y, sr, chain)` applies them with pedalboard (Spotify's C++ effects: JUCE
filters, compressor, Freeverb, Rubber Band pitch shifting) and returns a signal as long as
the take, aligned with it (the lead is never delayed; the doubles are, as real doubles are).
The levels are relative: the mix sets the vocal's level (`model.training.studio_mix`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import pedalboard as pb

from model.audio import rms


@dataclass(frozen=True)
class VocalChain:
    """Settings of one produced vocal. Frequencies in Hz, gains and levels in dB, times in
    ms; `harmonies` and `doubles` are (semitones, delay ms, gain dB) per copy."""

    highpass_hz: float
    mud_hz: float  # low-mid cut (boxiness)
    mud_db: float
    presence_hz: float
    presence_db: float
    air_hz: float
    air_db: float
    comp_over_rms_db: float  # compressor threshold relative to the take's RMS
    comp_ratio: float
    comp_attack_ms: float
    comp_release_ms: float
    doubles: tuple[tuple[float, float, float], ...]
    harmonies: tuple[tuple[float, float, float], ...]
    saturation_db: float  # drive of a parallel saturation, 0: none
    telephone: bool
    reverb: str  # "room" or "plate"
    reverb_size: float  # Freeverb room size 0..1 (longer tails higher)
    reverb_damping: float
    reverb_wet: float  # wet level against a dry level of 1
    predelay_ms: float
    delay_ms: float  # delay throw time, 0: none
    delay_feedback: float

    def to_dict(self) -> dict:
        return asdict(self)


def draw_vocal_chain(rng: np.random.Generator) -> VocalChain:
    """Random studio settings: every vocal gets EQ, compression and a reverb; 40 % doubles,
    30 % harmonies, 15 % saturation, 6 % telephone band, 20 % a delay throw."""
    doubles = tuple(
        (
            float(rng.choice([-1, 1]) * rng.uniform(0.06, 0.2)),
            float(rng.uniform(12, 40)),
            float(rng.uniform(-12, -5)),
        )
        for _ in range(int(rng.integers(1, 3)) if rng.random() < 0.4 else 0)
    )
    intervals = (3.0, 4.0, 5.0, 7.0, -5.0, -8.0, -12.0, 12.0)
    harmonies = tuple(
        (float(rng.choice(intervals)), float(rng.uniform(0, 15)), float(rng.uniform(-15, -7)))
        for _ in range(int(rng.integers(1, 3)) if rng.random() < 0.3 else 0)
    )
    plate = bool(rng.random() < 0.5)
    return VocalChain(
        highpass_hz=float(rng.uniform(60, 130)),
        mud_hz=float(rng.uniform(200, 500)),
        mud_db=float(rng.uniform(-5, 0)),
        presence_hz=float(rng.uniform(2000, 5000)),
        presence_db=float(rng.uniform(0, 5)),
        air_hz=float(rng.uniform(6000, 9000)),
        air_db=float(rng.uniform(0, 6)),
        comp_over_rms_db=float(rng.uniform(-3, 6)),
        comp_ratio=float(rng.uniform(2.5, 8)),
        comp_attack_ms=float(rng.uniform(1, 15)),
        comp_release_ms=float(rng.uniform(40, 200)),
        doubles=doubles,
        harmonies=harmonies,
        saturation_db=float(rng.uniform(6, 18)) if rng.random() < 0.15 else 0.0,
        telephone=bool(rng.random() < 0.06),
        reverb="plate" if plate else "room",
        reverb_size=float(rng.uniform(0.6, 0.92) if plate else rng.uniform(0.15, 0.55)),
        reverb_damping=float(rng.uniform(0.1, 0.4) if plate else rng.uniform(0.3, 0.8)),
        reverb_wet=float(rng.uniform(0.05, 0.35)),
        predelay_ms=float(rng.uniform(0, 60)),
        delay_ms=float(rng.uniform(180, 500)) if rng.random() < 0.2 else 0.0,
        delay_feedback=float(rng.uniform(0.1, 0.4)),
    )


def _delayed(y: np.ndarray, samples: int) -> np.ndarray:
    """`y` (samples,) delayed by `samples`, same length."""
    if samples <= 0:
        return y
    return np.concatenate([np.zeros(samples, y.dtype), y[: len(y) - samples]])


def _pitched(y: np.ndarray, sr: int, semitones: float) -> np.ndarray:
    out = pb.PitchShift(semitones=semitones)(y[None], sr)[0]
    return np.pad(out, (0, max(0, len(y) - len(out))))[: len(y)]


def _db(x: float) -> float:
    return float(10.0 ** (x / 20.0))


def produce_vocal(y: np.ndarray, sr: int, chain: VocalChain) -> np.ndarray:
    """The take `y` (samples,) at `sr` Hz through `chain`: float32 (samples,), aligned with
    `y`, at about the take's RMS (before the reverb's tail and the added copies)."""
    y = np.asarray(y, np.float32)
    level = rms(y)
    if level == 0.0:
        return y.copy()
    nyquist = 0.45 * sr
    tone = pb.Pedalboard(
        [
            pb.HighpassFilter(chain.highpass_hz),
            pb.PeakFilter(chain.mud_hz, chain.mud_db, q=1.0),
            pb.PeakFilter(min(chain.presence_hz, nyquist), chain.presence_db, q=0.8),
            pb.HighShelfFilter(min(chain.air_hz, nyquist), chain.air_db),
            pb.Compressor(
                threshold_db=20 * np.log10(level) + chain.comp_over_rms_db,
                ratio=chain.comp_ratio,
                attack_ms=chain.comp_attack_ms,
                release_ms=chain.comp_release_ms,
            ),
        ]
    )
    lead = tone(y[None], sr)[0]
    lead = lead * (level / max(rms(lead), 1e-12))
    if chain.saturation_db > 0:
        driven = pb.Distortion(drive_db=chain.saturation_db)(lead[None], sr)[0]
        lead = 0.7 * lead + 0.3 * driven * (rms(lead) / max(rms(driven), 1e-12))
    if chain.telephone:
        lead = pb.Pedalboard(
            [pb.HighpassFilter(450.0), pb.LowpassFilter(min(3200.0, nyquist)), pb.Distortion(8.0)]
        )(lead[None], sr)[0]
        lead = lead * (level / max(rms(lead), 1e-12))
    voice = lead.astype(np.float64)
    for semitones, delay_ms, gain_db in chain.doubles + chain.harmonies:
        copy = _delayed(_pitched(lead, sr, semitones), int(delay_ms * sr / 1000))
        voice = voice + _db(gain_db) * copy
    wet_in = _delayed(voice.astype(np.float32), int(chain.predelay_ms * sr / 1000))
    space = pb.Reverb(
        room_size=chain.reverb_size,
        damping=chain.reverb_damping,
        wet_level=1.0,
        dry_level=0.0,
        width=0.0,
    )(wet_in[None], sr)[0]
    voice = voice + chain.reverb_wet * space
    if chain.delay_ms > 0:
        throw = pb.Delay(chain.delay_ms / 1000, chain.delay_feedback, mix=1.0)(
            voice.astype(np.float32)[None], sr
        )[0]
        voice = voice + 0.15 * throw
    return np.asarray(voice, np.float32)
