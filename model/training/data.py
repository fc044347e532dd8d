"""In-memory training material and the sampler that draws 3-s crops from it.

Every recording is decoded once at the feature rate and kept as float32. A training example
is a crop of exactly one segment (`FeatureConfig.min_samples` samples, 129 frames):
- monophonic: a crop of a singer's vocals that passes the voice-activity rule;
- mixed: a pre-mixed recording (e.g. a mashup), or a vocal crop mixed on the fly over its own
  aligned accompaniment or over a random background crop, at a vocal-to-background RMS ratio
  drawn from a range (the paper's default is equal RMS).

Pseudo-singers (optional): each speed factor r resamples a singer's crops by r (pitch and
formants shift together, as when a tape runs faster), and each (singer, r) counts as its own
identity, as in speed-perturbation recipes for speaker recognition. Labels are
`singer_index * len(speeds) + speed_index`.
"""

from __future__ import annotations

import concurrent.futures as cf
import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Self

import numpy as np
import torch

from model.audio import load_audio
from model.energy_vad import voiced_segment_starts
from model.errors import AudioError
from model.features import FeatureConfig
from model.files import atomic_write
from model.manifest import ManifestRow
from model.mixing import background_gain

log = logging.getLogger(__name__)


@dataclass
class Recording:
    """One recording of a singer: waveform(s) at the feature rate and voiced crop starts."""

    singer: int
    audio: np.ndarray  # (samples,) vocals, or the mix when premixed
    accompaniment: np.ndarray | None = None  # aligned with audio, same length
    song: str | None = None
    starts: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # samples
    # Teacher embeddings of 1.6-s partials (n, 256) and their start samples (n,), when distilling
    teacher: np.ndarray | None = None
    teacher_starts: np.ndarray | None = None


@dataclass(frozen=True)
class MixConfig:
    """How mixed examples are made. Ratios in dB (vocal RMS over background RMS)."""

    snr_db: tuple[float, float] = (-5.0, 5.0)
    own_accompaniment: float = 0.5  # probability of using the aligned accompaniment when present
    premixed: float = 0.5  # probability of using a premixed recording when the singer has one
    gain_db: tuple[float, float] = (-12.0, 3.0)  # level of every example (recording conditions)
    # probability that a random background is another recording's aligned accompaniment (e.g.
    # MIR-1K karaoke tracks of other songs) rather than a background file
    other_accompaniment: float = 0.0
    channel_augment: float = 0.0  # probability of a random channel (model.training.augment)
    codec: float = 0.0  # probability of a low-bitrate Opus or MP3 round trip (after the channel)


def voiced_starts(y: np.ndarray, cfg: FeatureConfig) -> np.ndarray:
    """Start samples (multiples of the hop) of crops with >= vad_min_voiced voiced frames."""
    return voiced_segment_starts(y, cfg, hop=1) * cfg.hop_length


def cached_load(path: str, sr: int, cache_dir: Path | None) -> np.ndarray:
    """load_audio, memoised on disk as .npy keyed by path, size, mtime and rate (decoding and
    resampling the whole training set takes minutes; reading it back takes seconds)."""
    if cache_dir is None:
        return load_audio(path, sr)
    st = Path(path).stat()
    key = hashlib.sha1(
        f"{Path(path).resolve()}|{st.st_size}|{st.st_mtime_ns}|{sr}".encode()
    ).hexdigest()
    file = cache_dir / f"{key}.npy"
    if file.is_file():
        return np.load(file)
    y = load_audio(path, sr)
    with atomic_write(file) as fh:
        np.save(fh, y)
    return y


def _load(
    item: tuple[str, str | None, bool], sr: int, cache_dir: Path | None
) -> tuple[np.ndarray, np.ndarray | None]:
    """(audio, aligned accompaniment or None) of (path, accompaniment path, premixed)."""
    path, acc_path, _ = item
    audio = cached_load(path, sr, cache_dir)
    if acc_path is None:
        return audio, None
    acc = cached_load(acc_path, sr, cache_dir)
    n = min(len(audio), len(acc))
    return audio[:n], acc[:n]


def _recordings(rows: list[ManifestRow]) -> dict[tuple[str, str | None, bool], ManifestRow]:
    """One entry per recording: a vocal take (with the accompaniment that some row pairs it
    with) or a premixed file. A `mixed` row given as stems only adds its accompaniment to the
    vocal take: its mix is made on the fly."""
    acc_of = {r.vocal_path: r.accompaniment_path for r in rows if not r.path and r.vocal_path}
    out: dict[tuple[str, str | None, bool], ManifestRow] = {}
    seen: set[str] = set()
    for r in rows:
        premixed = bool(r.path) and r.domain == "mixed"
        vocal = r.path or r.vocal_path
        assert vocal is not None, r  # read_manifest: a row has `path` or `vocal_path`
        if not premixed and vocal in seen:
            continue
        seen.add(vocal)
        out[(vocal, None if premixed else acc_of.get(vocal, r.accompaniment_path), premixed)] = r
    return out


class TrainingPool:
    """Recordings grouped by singer, plus background material, ready for crop sampling."""

    def __init__(
        self, cfg: FeatureConfig, speeds: tuple[float, ...] = (1.0,), mix: MixConfig = MixConfig()
    ):
        self.cfg = cfg
        self.speeds = tuple(speeds)
        self.mix = mix
        self.singers: list[str] = []
        self.mono: list[list[Recording]] = []  # per singer: vocal recordings
        self.premixed: list[list[Recording]] = []  # per singer: mixes made elsewhere
        self.backgrounds: list[np.ndarray] = []
        self.accompaniments: list[np.ndarray] = []  # aligned accompaniments, as backgrounds
        # Provenance of the crops of the last sample_mono / sample_mixed call, in batch order:
        # (recording, start sample, speed); premixed crops have none (None).
        self.drawn: list[tuple[Recording, int, float] | None] = []

    @property
    def n_classes(self) -> int:
        return len(self.singers) * len(self.speeds)

    def load(
        self,
        rows: list[ManifestRow],
        backgrounds: Sequence[str | Path] = (),
        workers: int = 2,
        progress: bool = False,
        cache_dir: str | Path | None = None,
    ) -> Self:
        """Decode the rows' recordings (see `_recordings`) and the background files.
        Unusable files and takes with no voiced crop are logged and skipped."""
        from tqdm import tqdm

        sr = self.cfg.sample_rate
        cache = Path(cache_dir) if cache_dir else None
        recordings = _recordings(rows)
        names = sorted({r.singer for r in recordings.values()})
        index = {s: i for i, s in enumerate(names)}
        self.singers = names
        self.mono = [[] for _ in names]
        self.premixed = [[] for _ in names]
        skipped = 0
        loaded: dict[tuple, Recording] = {}
        with cf.ThreadPoolExecutor(max(1, workers)) as pool:
            futs = {pool.submit(_load, key, sr, cache): key for key in recordings}
            bg_futs = [pool.submit(cached_load, str(b), sr, cache) for b in backgrounds]
            for fut in tqdm(
                cf.as_completed(futs),
                total=len(futs),
                unit="rec",
                disable=not progress,
                desc="loading",
            ):
                key = futs[fut]
                row, premixed = recordings[key], key[2]
                try:
                    audio, acc = fut.result()
                except AudioError as err:
                    log.warning("skipped %s", err)
                    skipped += 1
                    continue
                if premixed:
                    starts = np.arange(
                        0, max(1, len(audio) - self.cfg.min_samples), self.cfg.hop_length
                    )
                else:
                    starts = voiced_starts(audio, self.cfg)
                if len(starts) == 0:
                    skipped += 1
                    continue
                loaded[key] = Recording(index[row.singer], audio, acc, starts=starts, song=row.song)
            for key in recordings:  # manifest order, whatever order decoding finished in
                if key in loaded:
                    rec = loaded[key]
                    (self.premixed if key[2] else self.mono)[rec.singer].append(rec)
            for fut in bg_futs:
                try:
                    self.backgrounds.append(fut.result())
                except AudioError as err:
                    log.warning("skipped background %s", err)
        if self.mix.other_accompaniment > 0:
            self.accompaniments = [
                r.accompaniment for recs in self.mono for r in recs if r.accompaniment is not None
            ]
        empty = [s for s, recs in zip(self.singers, self.mono) if not recs]
        if empty:
            raise ValueError(f"singers without usable vocal recordings: {empty}")
        log.info(
            "pool: %d singers, %d vocal and %d premixed recordings, %d backgrounds, %d skipped",
            len(self.singers),
            sum(map(len, self.mono)),
            sum(map(len, self.premixed)),
            len(self.backgrounds),
            skipped,
        )
        return self

    # -- sampling ---------------------------------------------------------------------------

    def _crop(
        self, rec: Recording, speed: float, rng: np.random.Generator, tracks: list[np.ndarray]
    ) -> list[np.ndarray]:
        """Crop the same span of each array in `tracks`, resampled by `speed`: list of (L,)."""
        length = self.cfg.min_samples
        span = int(np.ceil(length * speed)) + 1
        n = len(tracks[0])
        start = int(rng.choice(rec.starts)) if len(rec.starts) else 0
        start = max(0, min(start, n - span))
        self.drawn.append((rec, start, speed))
        out = []
        for t in tracks:
            piece = t[start : start + span]
            if len(piece) < span:
                piece = np.pad(piece, (0, span - len(piece)))
            if speed != 1.0:  # linear interpolation: cheap, and the crop is band-limited enough
                piece = np.interp(np.arange(length) * speed, np.arange(span), piece)
            out.append(piece[:length].astype(np.float32))
        return out

    def _split(self, label: int) -> tuple[int, float]:
        return label // len(self.speeds), self.speeds[label % len(self.speeds)]

    def _gain(self, y: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        y = (
            y
            * 10 ** (rng.uniform(*self.mix.gain_db) / 20)
            / max(float(np.abs(y).max()), 1e-6)
            * 0.5
        )
        return np.clip(y, -1.0, 1.0)

    def _channel(self, y: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """A random recording channel for one vocal crop (MixConfig.channel_augment)."""
        if self.mix.channel_augment > 0 and rng.random() < self.mix.channel_augment:
            from model.training.augment import random_channel

            return random_channel(y, self.cfg.sample_rate, rng)
        return y

    def _codec(self, y: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """A lossy round trip of one finished crop, vocal or mix (MixConfig.codec)."""
        if self.mix.codec > 0 and rng.random() < self.mix.codec:
            from model.training.augment import codec_round_trip

            return codec_round_trip(y, self.cfg.sample_rate, rng)
        return y

    def sample_mono(self, labels: np.ndarray, rng: np.random.Generator) -> torch.Tensor:
        """Vocal crops for pseudo-singer labels: (batch, samples)."""
        out = []
        self.drawn = []
        for label in labels:
            singer, speed = self._split(int(label))
            rec = self.mono[singer][rng.integers(len(self.mono[singer]))]
            crop = self._channel(self._crop(rec, speed, rng, [rec.audio])[0], rng)
            out.append(self._gain(self._codec(crop, rng), rng))
        return torch.from_numpy(np.stack(out))

    def sample_mixed(self, labels: np.ndarray, rng: np.random.Generator) -> torch.Tensor:
        """Mixed crops for pseudo-singer labels: (batch, samples)."""
        out = []
        self.drawn = []
        for label in labels:
            singer, speed = self._split(int(label))
            if self.premixed[singer] and rng.random() < self.mix.premixed:
                rec = self.premixed[singer][rng.integers(len(self.premixed[singer]))]
                out.append(self._gain(self._crop(rec, speed, rng, [rec.audio])[0], rng))
                self.drawn[-1] = None  # no clean vocal, no teacher target
                continue
            rec = self.mono[singer][rng.integers(len(self.mono[singer]))]
            own = rec.accompaniment is not None and rng.random() < self.mix.own_accompaniment
            if own or not (self.backgrounds or self.accompaniments):
                tracks = [rec.audio] + (
                    [rec.accompaniment] if rec.accompaniment is not None else []
                )
                pieces = self._crop(rec, speed, rng, tracks)
                vocal, bg = pieces[0], (pieces[1] if len(pieces) > 1 else None)
            else:
                vocal = self._crop(rec, speed, rng, [rec.audio])[0]
                bg = self._background(rng, exclude=rec.accompaniment)
            vocal = self._channel(vocal, rng)
            if bg is None:
                out.append(self._gain(vocal, rng))
                continue
            g = background_gain(vocal, bg, rng.uniform(*self.mix.snr_db))
            out.append(self._gain(self._codec(vocal + g * bg, rng), rng))
        return torch.from_numpy(np.stack(out))

    def _background(
        self, rng: np.random.Generator, exclude: np.ndarray | None = None
    ) -> np.ndarray:
        """A random crop of a background file or (with probability `other_accompaniment`) of
        another recording's accompaniment (not `exclude`, the vocal's own)."""
        length = self.cfg.min_samples
        use_acc = bool(self.accompaniments) and (
            not self.backgrounds or rng.random() < self.mix.other_accompaniment
        )
        source = self.accompaniments if use_acc else self.backgrounds
        i = int(rng.integers(len(source)))
        if use_acc and source[i] is exclude:
            i = (i + 1) % len(source)
        bg = source[i]
        start = rng.integers(max(1, len(bg) - length))
        piece = bg[start : start + length]
        return np.pad(piece, (0, length - len(piece))).astype(np.float32)

    def sample_labels(self, n: int, rng: np.random.Generator, distinct: bool = True) -> np.ndarray:
        """n pseudo-singer labels, distinct when the pool has enough."""
        return rng.choice(self.n_classes, size=n, replace=not distinct or n > self.n_classes)
