"""A fused checkpoint's domain correction, estimated on training material: each domain's
centres (`model.fusion.DomainCentres`) and the nuisance projection (`NuisanceProjection`).

The centre of a domain is the mean of the unit CROSS vectors, and of the unit speaker vectors,
of every segment the service's own selection keeps from that domain's training recordings:

- mono: the vocal stems of the MIR-1K training singers and the training a cappella takes;
- mixed: those stems' 0 dB karaoke mixes, and each take over an instrumental track at a
  vocal-to-background ratio drawn from -5..+10 dB (the training mixes' range).

- with a studio-mix manifest (`python -m model studio-mix --split train`, issue 33): each
  training take's clean crop (mono) and its first studio mix (mixed): the finished songs
  the service meets, a voice under a dense, mastered band.

Every performance is thus heard in both domains. The nuisance directions are the top
principal axes of the differences between a performance's two track vectors (centred and
fused as the service computes them): what the accompaniment moves, the same for every voice
(Solomonoff et al., "Nuisance attribute projection", 2005).

Held-out and validation singers and the held-out a cappella takes never enter, so the
evaluations and the calibration impostors stay unseen.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache, partial
from pathlib import Path
from typing import NamedTuple

import numpy as np
from tqdm import tqdm

from model.audio import load_audio
from model.domains import DOMAINS
from model.embedding import Embedder
from model.errors import AudioError
from model.fusion import DomainCentres, NuisanceProjection, fuse_checkpoint, unit_parts
from model.mixing import mix_over_middle
from model.training.datasets import (
    acappella_rows,
    load_row_audio,
    mir1k_rows,
    split_acappella,
    split_singers,
)
from model.training.mashup import read_backgrounds
from model.vectors import fuse, normalized_mean

log = logging.getLogger(__name__)

#: vocal-to-background ratios of the takes' mixed renderings, dB (uniform)
TAKE_SNR_DB = (-5.0, 10.0)
#: nuisance directions removed by default: chosen on training material only, fitting on one
#: source (a cappella takes or MIR-1K) and scoring across domains on the other (model card)
NUISANCE_DIMS = 5


class Recording(NamedTuple):
    """A recording of the material: a function that decodes it (raises AudioError), its
    domain, and the performance it renders (the same name in both domains)."""

    load: Callable[[], np.ndarray]
    domain: str
    performance: str


@dataclass(frozen=True)
class RecordingParts:
    """The unit CROSS (n, cross_dim) and speaker (n, SPEAKER_DIM) vectors of the segments the
    selection keeps from one recording, before any centring."""

    performance: str
    domain: str
    cross: np.ndarray
    speaker: np.ndarray


def studio_recordings(manifest: str | Path, sr: int) -> list[Recording]:
    """Each source take of a training studio-mix manifest heard twice: its clean crop (mono)
    and its first mix (mixed), performance `studio:<take>`."""
    from model.training.speaker_tune import studio_rows

    out: list[Recording] = []
    seen: set[str] = set()
    for row in studio_rows(manifest):
        take = row.extra.get("take", "")
        if take in seen:
            continue
        seen.add(take)
        crop = (str(row.source), float(row.extra.get("offset_s") or 0.0), str(row.path))
        out.append(Recording(partial(_clean_crop, *crop, sr), "mono", f"studio:{take}"))
        out.append(Recording(partial(load_audio, str(row.path), sr), "mixed", f"studio:{take}"))
    return out


def _clean_crop(source: str, offset_s: float, mix: str, sr: int) -> np.ndarray:
    """The clean take under a studio mix: `source` from `offset_s`, as long as `mix`."""
    import soundfile as sf

    start = round(offset_s * sr)
    frames = round(sf.info(mix).duration * sr)
    return load_audio(source, sr)[start : start + frames]


def training_recordings(
    data_dir: str | Path,
    sr: int,
    holdout: Sequence[str] = (),
    val_singers: Sequence[str] = (),
    seed: int = 0,
    studio: str | Path | None = None,
) -> list[Recording]:
    """The centres' material under a `../shared/data` layout (module docstring), each
    decoded to float32 (samples,) at `sr` only when called; `studio`: a training studio-mix
    manifest whose pairs join it."""
    data = Path(data_dir)
    rows, _ = split_singers(mir1k_rows(data / "mir1k"), [*holdout, *val_singers])
    takes = split_acappella(acappella_rows(data / "acappella"))[0]
    backgrounds = read_backgrounds(data / "instrumental")
    snrs = np.random.default_rng(seed).uniform(*TAKE_SNR_DB, size=len(takes))
    out = [
        Recording(partial(load_row_audio, row, sr), str(row.domain), f"mir1k:{row.external_id}")
        for row in rows
    ]
    out += [
        Recording(partial(load_audio, str(take.path), sr), "mono", take.singer) for take in takes
    ]
    if studio is not None:
        out += studio_recordings(studio, sr)
    if not backgrounds:
        return out
    # Each background decoded once (about 1 s for a 4-min track): the mixed renderings go
    # background by background through a cache of one, not take by take.
    background = lru_cache(maxsize=1)(partial(load_audio, sr=sr))
    by_background = sorted(range(len(takes)), key=lambda i: i % len(backgrounds))
    for i in by_background:
        bg = str(backgrounds[i % len(backgrounds)])
        mixed = partial(_over, str(takes[i].path), bg, float(snrs[i]), sr, background)
        out.append(Recording(mixed, "mixed", takes[i].singer))
    return out


def _over(
    vocal: str, bg: str, snr_db: float, sr: int, background: Callable[[str], np.ndarray]
) -> np.ndarray:
    """`vocal` mixed over the middle of background `bg` (decoded by `background`) at `snr_db`
    dB, float32 at `sr`."""
    return mix_over_middle(load_audio(vocal, sr), background(bg), snr_db)


def embed_parts(
    embedder: Embedder, recordings: Sequence[Recording], progress: bool = False
) -> list[RecordingParts]:
    """Each recording's selected segments through both systems of a fused `embedder`, unit
    vectors before any centring. Recordings that cannot be decoded or hold no usable segment
    are logged and skipped."""
    if embedder.speaker is None:
        raise ValueError("domain centres need a fused checkpoint (a speaker encoder)")
    out = []
    sr = embedder.features.sample_rate
    for rec in tqdm(recordings, disable=not progress, desc="centres", unit="rec"):
        try:
            selection = embedder.select(rec.load(), domain=rec.domain)
        except AudioError as err:
            log.info("skipped: %s", err)
            continue
        views = [selection] + ([selection.without_band] if selection.without_band else [])
        cross, voices = [], []
        for view in views:  # the blend: both views are samples of the domain
            assert view.audio is not None  # a fused checkpoint keeps the segments' audio
            c, v = unit_parts(
                embedder.embed_segments(view.features, rec.domain),
                embedder.speaker.embed_crops(view.audio, sr, domain=rec.domain),
            )
            cross.append(c)
            voices.append(v)
        out.append(
            RecordingParts(
                rec.performance, rec.domain, np.concatenate(cross), np.concatenate(voices)
            )
        )
    return out


def centres_of(parts: Sequence[RecordingParts]) -> DomainCentres:
    """Per domain, the mean unit CROSS and speaker vector over all segments (not per
    recording). Raises ValueError when a domain has no segment at all."""
    empty = [d for d in DOMAINS if not any(p.domain == d for p in parts)]
    if empty:
        raise ValueError(f"no segment of the {', '.join(empty)} domain to estimate its centre")

    def mean(domain: str, part: str) -> np.ndarray:
        rows = np.concatenate([getattr(p, part) for p in parts if p.domain == domain])
        return rows.mean(0, dtype=np.float64).astype(np.float32)

    log.info(
        "centres from %s segments",
        ", ".join(f"{sum(len(p.cross) for p in parts if p.domain == d)} {d}" for d in DOMAINS),
    )
    return DomainCentres(
        {d: mean(d, "cross") for d in DOMAINS}, {d: mean(d, "speaker") for d in DOMAINS}
    )


def nuisance_of(
    parts: Sequence[RecordingParts], centres: DomainCentres, weight: float, k: int
) -> NuisanceProjection:
    """The `k` nuisance directions of the fused space: principal axes of (mono - mixed track
    vector) over the performances heard in both domains, each track vector centred and fused
    at CROSS weight `weight` as `Embedder.encode_segments` does. Raises ValueError."""
    tracks: dict[tuple[str, str], np.ndarray] = {}
    for p in parts:
        fused = fuse(*centres.centre(p.cross, p.speaker, p.domain), weight)
        tracks[p.performance, p.domain] = normalized_mean(fused)
    both = sorted({perf for perf, _ in tracks if all((perf, d) in tracks for d in DOMAINS)})
    log.info("nuisance directions from %d performances heard in both domains", len(both))
    return NuisanceProjection.fit(
        np.stack([tracks[perf, "mono"] - tracks[perf, "mixed"] for perf in both]), k
    )


def centre_checkpoint(
    checkpoint: str | Path,
    data_dir: str | Path,
    out: str | Path,
    holdout: Sequence[str] = (),
    val_singers: Sequence[str] = (),
    device: str | None = None,
    progress: bool = False,
    nuisance_dims: int = NUISANCE_DIMS,
    studio: str | Path | None = None,
) -> Path:
    """Write `out`: the fused `checkpoint` with its domain centres and `nuisance_dims`
    nuisance directions (0: none) estimated on the training material of `data_dir`
    (`training_recordings`, with the studio-mix manifest `studio` if given); its weights,
    fusion weight and everything else unchanged. Raises CheckpointError, ValueError."""
    embedder = Embedder.from_checkpoint(checkpoint, device)
    material = training_recordings(
        data_dir, embedder.features.sample_rate, holdout, val_singers, studio=studio
    )
    parts = embed_parts(embedder, material, progress)
    centres = centres_of(parts)
    weight = embedder.fusion_weight
    nuisance = nuisance_of(parts, centres, weight, nuisance_dims) if nuisance_dims else None
    return fuse_checkpoint(checkpoint, out, weight, centres, nuisance)
