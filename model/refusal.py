"""When a recording is refused for holding no singing, and what the refusal says.

- A vocal take (`mono`, and `auto`, chosen as mono): refused when the voice detector hears
  under `min_voice_s` seconds of singing (frames with P(voice) above `singing_threshold`).
- A finished song (`mixed`, the indexer's default): refused only when it is not music at all
  (`NotMusicError`): silence or DC, or audio the detector hears as neither voice nor
  instruments (P(none)) in most of its frames. Music in which it hears little voice is
  embedded and flagged `low_voice` (`model.segment_selection`).
- Either: a steady signal (a tone, a chord of tones, a sweep, white noise) is refused
  whatever the detector hears. Its loudness, read every quarter second, hardly changes over
  the recording. A vocal take is judged by that alone. Mastered music can be as level over
  quarter seconds (a limiter's work), but its beats and notes still move its loudness read
  every 23 ms and its spectrum: a finished song is steady only when one of those is still
  too. A brick-walled master can be nearly as level every 23 ms as white noise is; its
  instruments still move the level of each mel band from one quarter second to the next,
  which noise's bands do not (measured in docs/refusal.md).
  The detector shipped before this rule hears some steady signals as instruments, or even
  as singing (square waves and noise recorded at 16 kHz): this cheap guard catches them.

Without a voice detector (the energy rule) a recording is refused when no segment is voiced
enough; that is `model.segment_selection`'s, as before.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from model.detector_frames import FrameVerdict
from model.errors import NotMusicError, NoVoicedSegmentError
from model.features import FeatureConfig, mel_magnitude

#: RMS (the waveform less its mean, dBFS) below which a recording is silence or DC.
SILENT_DB = -60.0
#: Loudness spread (dB, see `signal_stats`) below which a finished song is a steady signal:
#: tones, chords of tones, sweeps and white noise measured 0.02-0.34 dB, music from 0.93
#: (a karaoke backing alone; songs from 3.0), docs/refusal.md.
STEADY_SONG_DB = 0.6
#: The same for a vocal take, lower: the steady signals the shipped detector hears as
#: singing measured 0.02-0.34 dB (a square-wave sweep), sustained sung vowels from 0.6.
STEADY_TAKE_DB = 0.4
#: A song under its spread above is steady only if its loudness read every
#: block (23 ms at 22.05 kHz) also spreads under this (dB): white noise and square waves
#: measured up to 0.78, studio mixes from 1.15 and sung vowels from 1.0 (docs/refusal.md).
STEADY_SHORT_DB = 0.9
#: ... or if its spectrum hardly changes: the mean absolute change of its log-mel from one
#: frame to the next under this (the features' log10 units). Chords of sines beat (their
#: short reads spread 1.7 dB) but measured 0.0017; music from 0.026.
STEADY_FLUX = 0.005
#: Under STEADY_SHORT_DB, a song is steady outright when its 23-ms reads spread under this
#: (dB): tones, squares and sweeps measured 0.00-0.34; studio mixes from 0.80.
STEADY_TONE_SHORT_DB = 0.5
#: ... and otherwise only when its mel bands' levels hardly move either: the median over
#: bands of each band's quarter-second level spread (dB, `band_spread_db`) under this. White
#: noise measured 2.1-2.4, the 2339 studio mixes of issue 33 from 6.5 (docs/refusal.md).
STEADY_BAND_DB = 4.0
#: Bands this far (dB) under the loudest band are left out of `band_spread_db`.
BAND_RANGE_DB = 80.0
#: Samples per loudness block, and blocks averaged into one reading (about 0.26 s).
BLOCK = 512
BLOCKS_PER_READING = 11
#: Readings this far (dB) under the loudest are left out of the spread (silences).
LOUDNESS_RANGE_DB = 40.0


@dataclass(frozen=True)
class SignalStats:
    """What the guard knows of a recording: rms_db, the RMS of the waveform less its mean
    (dBFS); spread_db, the 10th-to-90th percentile range (dB) of its loudness, read as the
    mean square of `BLOCKS_PER_READING` blocks of `BLOCK` samples, over the readings within
    `LOUDNESS_RANGE_DB` of the loudest; short_spread_db, the same range over single blocks;
    flux, the mean absolute change of its log-mel from one frame to the next; band_spread_db,
    the median over mel bands (those within `BAND_RANGE_DB` of the loudest band) of the
    same range of each band's level (its mel magnitude, 20 log10) read over successive runs
    of `BLOCKS_PER_READING` frames. Recordings
    measured without the later ones (None) are judged by the earlier ones."""

    rms_db: float
    spread_db: float
    short_spread_db: float | None = None
    flux: float | None = None
    band_spread_db: float | None = None

    def steady_song(self) -> bool:
        """Whether a finished song is a steady signal (see the module's docstring)."""
        if self.spread_db >= STEADY_SONG_DB:
            return False
        if self.short_spread_db is None or self.flux is None:
            return True
        if self.flux < STEADY_FLUX or self.short_spread_db < STEADY_TONE_SHORT_DB:
            return True
        if self.short_spread_db >= STEADY_SHORT_DB:
            return False
        return self.band_spread_db is None or self.band_spread_db < STEADY_BAND_DB


def signal_stats(
    ys: Sequence[torch.Tensor], mels: Sequence[torch.Tensor], log_scale: float
) -> list[SignalStats]:
    """`SignalStats` of each waveform (samples,) and its log-mel (n_mels, frames; the
    features' `log10(1 + log_scale * mel)`), computed where they are (no copy of them), with
    one copy to the host for all of them (on CUDA, a copy per recording stalls the thread
    that chooses a batch's segments)."""
    if not ys:
        return []
    rows = []
    for y, mel in zip(ys, mels, strict=True):
        y = y.float()
        blocks = y[: len(y) - len(y) % BLOCK].view(-1, BLOCK)
        energy = torch.linalg.vector_norm(blocks, dim=1).square() / BLOCK  # (blocks,)
        readings = energy
        if len(energy) >= BLOCKS_PER_READING:
            readings = torch.nn.functional.avg_pool1d(energy[None, None], BLOCKS_PER_READING, 1)
            readings = readings[0, 0]
        change = (mel[:, 1:] - mel[:, :-1]).abs().mean(dim=0)  # (frames - 1,)
        flux = change.mean() if change.numel() else change.new_zeros(())
        bands = _band_spread(mel, log_scale)
        rows.append(
            torch.stack([y.var(correction=0), _spread(readings), _spread(energy), flux, bands])
        )
    host = torch.stack([r.to(rows[0].device) for r in rows]).cpu().numpy()
    return [SignalStats(float(10.0 * np.log10(r[0] + 1e-20)), *map(float, r[1:])) for r in host]


def _spread(energy: torch.Tensor) -> torch.Tensor:
    """10th-to-90th percentile range (dB) of mean squares, over those within
    `LOUDNESS_RANGE_DB` of the loudest."""
    db = 10.0 * torch.log10(energy + 1e-20)
    kept = db[db >= db.max() - LOUDNESS_RANGE_DB]
    q = torch.quantile(kept, torch.tensor([0.1, 0.9], device=kept.device))
    return q[1] - q[0]


def _band_spread(mel: torch.Tensor, log_scale: float) -> torch.Tensor:
    """`SignalStats.band_spread_db` of a log-mel (n_mels, frames) in the features' units."""
    magnitude = mel_magnitude(mel, log_scale)
    k = min(BLOCKS_PER_READING, magnitude.shape[1])
    # side by side, not sliding: a tenth of the values to sort, for the same percentiles
    readings = torch.nn.functional.avg_pool1d(magnitude[None], k)[0]  # (n_mels, frames // k)
    level = 20.0 * torch.log10(magnitude.mean(dim=1) + 1e-20)
    db = 20.0 * torch.log10(readings[level >= level.max() - BAND_RANGE_DB] + 1e-20)
    q = torch.tensor([0.1, 0.9], device=db.device)
    # bands in slices: torch.quantile takes at most 2**24 values (a 30-min song is 10M)
    spreads = torch.cat([part.quantile(q, dim=1).diff(dim=0)[0] for part in db.split(32)])
    return spreads.median()


def refusal(
    domain: str | None,
    verdict: FrameVerdict,
    stats: SignalStats,
    rule: Any,
    cfg: FeatureConfig,
    any_voiced: bool,
    path: str | None = None,
) -> NoVoicedSegmentError | None:
    """Why a recording declared `domain` is refused (the error to raise), or None.

    verdict: the detector's per-frame probabilities; rule: its `model.voice.DetectorRule`;
    any_voiced: whether some segment holds a frame above the detector's `threshold`.
    """
    frame_s = cfg.hop_length / cfg.sample_rate
    duration_s = len(verdict.voice) * frame_s
    if domain == "mixed":
        return _not_music(verdict, stats, rule, frame_s, duration_s, path)
    if stats.rms_db < SILENT_DB or stats.spread_db < STEADY_TAKE_DB:
        return NoVoicedSegmentError(
            f"no singing voice: the {duration_s:.1f}-s recording is "
            + ("silent" if stats.rms_db < SILENT_DB else "a steady tone or noise")
            + f" ({_steadiness(stats)})",
            path,
        )
    sung_s = float((verdict.voice > rule.singing_threshold).sum()) * frame_s
    if sung_s < rule.min_voice_s or not any_voiced:
        return NoVoicedSegmentError(
            f"no singing voice detected: {sung_s:.1f} s of the {duration_s:.1f}-s recording "
            f"sound like singing, at least {rule.min_voice_s:.1f} s is needed (silence, tones, "
            "noise or instrumental music only)",
            path,
        )
    return None


def _not_music(
    verdict: FrameVerdict,
    stats: SignalStats,
    rule: Any,
    frame_s: float,
    duration_s: float,
    path: str | None,
) -> NotMusicError | None:
    if stats.rms_db < SILENT_DB:
        return NotMusicError(
            f"not music: the {duration_s:.1f}-s recording is silent or a constant (DC) signal "
            f"({_steadiness(stats)})",
            path,
        )
    if stats.steady_song():
        return NotMusicError(
            f"not music: the {duration_s:.1f}-s recording is a steady tone or noise "
            f"({_steadiness(stats)})",
            path,
        )
    music = verdict.music > rule.music_threshold
    music_s = float(music.sum()) * frame_s
    share = float(music.mean()) if len(music) else 0.0
    if music_s < rule.min_music_s or share < rule.min_music_share:
        return NotMusicError(
            f"not music: {music_s:.1f} s of the {duration_s:.1f}-s recording ({share:.0%}) "
            f"sound like voice or instruments, at least {rule.min_music_s:.1f} s and "
            f"{rule.min_music_share:.0%} are needed (silence, noise or tones)",
            path,
        )
    return None


def _steadiness(stats: SignalStats) -> str:
    return f"RMS {stats.rms_db:.0f} dBFS, loudness varies by {stats.spread_db:.1f} dB"
