"""Distillation from the speaker-encoder teacher (model.training.teacher) into CROSS.

The teacher embeds clean vocals only. Every vocal recording of the training pool gets the
teacher's embeddings of its 1.6-s partials once (cached on disk, keyed by the audio's content);
the target of a crop is the L2-normalised mean of the partials that lie inside it. Both CROSS
branches are pulled towards that target through one learned linear projection (student 256-d
-> teacher 256-d): the mono branch from the vocal crop, the mixed branch from the same kind of
crop mixed over a background. Crops at a speed factor other than 1 have no target (the teacher
never heard the shifted voice) and only take part in the rank loss.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from model.training.data import Recording, TrainingPool
from model.training.teacher import EMBED_DIM, HOP, PARTIAL_FRAMES, Teacher
from model.training.teacher import SAMPLE_RATE as TEACHER_RATE
from model.vectors import l2_normalize

log = logging.getLogger(__name__)

#: Partials per second when targets are precomputed (1-s hop: 1-2 partials inside a 3-s crop).
TARGET_RATE = 1.0


def _content_key(audio: np.ndarray, sr: int) -> str:
    return hashlib.sha1(
        np.ascontiguousarray(audio, np.float32).tobytes() + f"|{sr}".encode()
    ).hexdigest()


def recording_partials(
    teacher: Teacher, audio: np.ndarray, sr: int, cache_dir: Path | None
) -> tuple[np.ndarray, np.ndarray]:
    """Teacher partial embeddings of a recording ((n, 256), start samples at `sr` (n,)),
    memoised in `cache_dir` by the audio's content."""
    file = cache_dir / f"{_content_key(audio, sr)}.npz" if cache_dir else None
    if file is not None and file.is_file():
        with np.load(file) as z:
            return z["emb"], z["starts"]
    emb, starts = teacher.partials(audio, sr, rate=TARGET_RATE)
    if file is not None:
        file.parent.mkdir(parents=True, exist_ok=True)
        tmp = file.with_suffix(".tmp.npz")
        np.savez(tmp, emb=emb, starts=starts)
        tmp.replace(file)
    return emb, starts


def attach_targets(
    pool: TrainingPool,
    teacher: Teacher,
    cache_dir: str | Path | None = None,
    progress: bool = False,
) -> None:
    """Set `teacher` / `teacher_starts` on every vocal recording of the pool."""
    from tqdm import tqdm

    cache = Path(cache_dir) if cache_dir else None
    recs = [r for recs in pool.mono for r in recs]
    for rec in tqdm(recs, desc="teacher", unit="rec", disable=not progress):
        rec.teacher, rec.teacher_starts = recording_partials(
            teacher, rec.audio, pool.cfg.sample_rate, cache
        )


def crop_target(
    rec: Recording, start: int, length: int, speed: float, sr: int
) -> np.ndarray | None:
    """Teacher target (256,) of the crop [start, start + length) samples, or None.

    The partials that lie inside the crop, or failing that the one nearest its centre."""
    if rec.teacher is None or speed != 1.0:
        return None
    span = round(PARTIAL_FRAMES * HOP * sr / TEACHER_RATE)
    starts = rec.teacher_starts
    inside = (starts >= start) & (starts + span <= start + length)
    if not inside.any():
        inside = np.abs(starts + span / 2 - (start + length / 2)) == np.min(
            np.abs(starts + span / 2 - (start + length / 2))
        )
    return l2_normalize(rec.teacher[inside].mean(axis=0)).astype(np.float32)


def batch_targets(pool: TrainingPool) -> tuple[torch.Tensor, torch.Tensor]:
    """Targets of the crops of the pool's last batch: ((batch, 256), mask (batch,) bool)."""
    out = np.zeros((len(pool.drawn), EMBED_DIM), np.float32)
    mask = np.zeros(len(pool.drawn), bool)
    for i, drawn in enumerate(pool.drawn):
        if drawn is None:  # a premixed crop: no clean vocal
            continue
        rec, start, speed = drawn
        t = crop_target(rec, start, pool.cfg.min_samples, speed, pool.cfg.sample_rate)
        if t is not None:
            out[i], mask[i] = t, True
    return torch.from_numpy(out), torch.from_numpy(mask)


def distill_loss(
    student: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, projection: torch.nn.Module
) -> torch.Tensor:
    """Mean over masked examples of 1 - cos(projection(student), target); 0 when none."""
    if not bool(mask.any()):
        return student.sum() * 0.0
    proj = projection(student[mask])
    return (1.0 - F.cosine_similarity(proj, target[mask].to(proj.device), dim=1)).mean()
