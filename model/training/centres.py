"""Each domain's centres for a fused checkpoint (`model.fusion.DomainCentres`), estimated on
training material.

The centre of a domain is the mean of the unit CROSS vectors, and of the unit speaker vectors,
of every segment the service's own selection keeps from that domain's training recordings:

- mono: the vocal stems of the MIR-1K training singers and the training a cappella takes;
- mixed: those stems' 0 dB karaoke mixes, and each take over an instrumental track at a
  vocal-to-background ratio drawn from -5..+10 dB (the training mixes' range).

Held-out and validation singers and the held-out a cappella takes never enter, so the
evaluations and the calibration impostors stay unseen.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from functools import lru_cache, partial
from pathlib import Path

import numpy as np
from tqdm import tqdm

from model.audio import load_audio
from model.domains import DOMAINS
from model.embedding import Embedder
from model.errors import AudioError
from model.fusion import DomainCentres, fuse_checkpoint, unit_parts
from model.mixing import mix_over_middle
from model.speaker import EMBED_DIM as SPEAKER_DIM
from model.training.datasets import (
    acappella_rows,
    load_row_audio,
    mir1k_rows,
    split_acappella,
    split_singers,
)
from model.training.mashup import read_backgrounds

log = logging.getLogger(__name__)

#: vocal-to-background ratios of the takes' mixed renderings, dB (uniform)
TAKE_SNR_DB = (-5.0, 10.0)


#: A recording of the material: a function that decodes it (raises AudioError), and its domain.
Recording = tuple[Callable[[], np.ndarray], str]


def training_recordings(
    data_dir: str | Path,
    sr: int,
    holdout: Sequence[str] = (),
    val_singers: Sequence[str] = (),
    seed: int = 0,
) -> list[Recording]:
    """The centres' material under a `../shared/data` layout (module docstring), each
    decoded to float32 (samples,) at `sr` only when called."""
    data = Path(data_dir)
    rows, _ = split_singers(mir1k_rows(data / "mir1k"), [*holdout, *val_singers])
    takes = split_acappella(acappella_rows(data / "acappella"))[0]
    backgrounds = read_backgrounds(data / "instrumental")
    snrs = np.random.default_rng(seed).uniform(*TAKE_SNR_DB, size=len(takes))
    out: list[Recording] = [(partial(load_row_audio, row, sr), str(row.domain)) for row in rows]
    out += [(partial(load_audio, str(take.path), sr), "mono") for take in takes]
    if not backgrounds:
        return out
    # Each background decoded once (about 1 s for a 4-min track): the mixed renderings go
    # background by background through a cache of one, not take by take.
    background = lru_cache(maxsize=1)(partial(load_audio, sr=sr))
    by_background = sorted(range(len(takes)), key=lambda i: i % len(backgrounds))
    for i in by_background:
        bg = str(backgrounds[i % len(backgrounds)])
        out.append(
            (partial(_over, str(takes[i].path), bg, float(snrs[i]), sr, background), "mixed")
        )
    return out


def _over(
    vocal: str, bg: str, snr_db: float, sr: int, background: Callable[[str], np.ndarray]
) -> np.ndarray:
    """`vocal` mixed over the middle of background `bg` (decoded by `background`) at `snr_db`
    dB, float32 at `sr`."""
    return mix_over_middle(load_audio(vocal, sr), background(bg), snr_db)


def estimate_centres(
    embedder: Embedder, recordings: Sequence[Recording], progress: bool = False
) -> DomainCentres:
    """The domain centres of a fused `embedder` over its material: per domain, the mean unit
    CROSS and speaker vector of the selected segments, as the embedder computes them before
    any centring. Recordings that cannot be decoded or hold no usable segment are logged and
    skipped. Raises ValueError when a domain has no segment at all."""
    if embedder.speaker is None:
        raise ValueError("domain centres need a fused checkpoint (a speaker encoder)")
    dims = (embedder.net.dims.embed_dim, SPEAKER_DIM)
    sums = {d: [np.zeros(dim) for dim in dims] for d in DOMAINS}  # float64
    counts = dict.fromkeys(DOMAINS, 0)
    sr = embedder.features.sample_rate
    for load, domain in tqdm(recordings, disable=not progress, desc="centres", unit="rec"):
        try:
            selection = embedder.select(load(), domain=domain)
        except AudioError as err:
            log.info("skipped: %s", err)
            continue
        assert selection.audio is not None  # a fused checkpoint keeps the segments' audio
        cross = embedder.embed_segments(selection.features, domain)
        voices = embedder.speaker.embed_crops(selection.audio, sr)
        for k, part in enumerate(unit_parts(cross, voices)):
            sums[domain][k] += part.sum(0, dtype=np.float64)
        counts[domain] += len(cross)
    empty = [d for d in DOMAINS if not counts[d]]
    if empty:
        raise ValueError(f"no segment of the {', '.join(empty)} domain to estimate its centre")
    log.info("centres from %s segments", ", ".join(f"{counts[d]} {d}" for d in DOMAINS))
    return DomainCentres(
        {d: (sums[d][0] / counts[d]).astype(np.float32) for d in DOMAINS},
        {d: (sums[d][1] / counts[d]).astype(np.float32) for d in DOMAINS},
    )


def centre_checkpoint(
    checkpoint: str | Path,
    data_dir: str | Path,
    out: str | Path,
    holdout: Sequence[str] = (),
    val_singers: Sequence[str] = (),
    device: str | None = None,
    progress: bool = False,
) -> Path:
    """Write `out`: the fused `checkpoint` with its domain centres estimated on the training
    material of `data_dir` (`training_recordings`); its weights, fusion weight and everything
    else unchanged. Raises CheckpointError, ValueError."""
    embedder = Embedder.from_checkpoint(checkpoint, device)
    material = training_recordings(data_dir, embedder.features.sample_rate, holdout, val_singers)
    centres = estimate_centres(embedder, material, progress=progress)
    return fuse_checkpoint(checkpoint, out, embedder.fusion_weight, centres)
