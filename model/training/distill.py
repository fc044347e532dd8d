"""Distillation from the speaker-encoder teacher (model.speaker) into CROSS.

The teacher embeds clean vocals only. Every vocal recording of the training pool gets the
teacher's embeddings of up to `MAX_PARTIALS` evenly spaced 1.6-s partials once (cached on disk,
keyed by the audio's content; on 2 CPU cores all partials of 4 hours of audio would take most of
the time budget); the target of a crop is the L2-normalised mean of the partials that lie
inside it, or of all the recording's partials (its utterance embedding) when none does. Both CROSS
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

from model.speaker import EMBED_DIM, HOP, PARTIAL_FRAMES, SpeakerEncoder
from model.speaker import SAMPLE_RATE as TEACHER_RATE
from model.training.data import Recording, TrainingPool
from model.vectors import l2_normalize

log = logging.getLogger(__name__)

#: Partials per second when targets are precomputed (1-s hop), and the most kept per recording.
TARGET_RATE = 1.0
MAX_PARTIALS = 4


def _content_key(audio: np.ndarray, sr: int) -> str:
    """Cache key: the audio's samples and rate, and how its partials are chosen."""
    settings = f"|{sr}|{TARGET_RATE}|{MAX_PARTIALS}".encode()
    return hashlib.sha1(np.ascontiguousarray(audio, np.float32).tobytes() + settings).hexdigest()


def attach_targets(
    pool: TrainingPool,
    teacher: SpeakerEncoder,
    cache_dir: str | Path | None = None,
    progress: bool = False,
    batch_size: int = 512,
) -> None:
    """Set `teacher` / `teacher_starts` on every vocal recording of the pool.

    Partials of many recordings go through the teacher together (batches of `batch_size`);
    each recording's result is cached in `cache_dir` under a hash of its audio."""
    from tqdm import tqdm

    sr = pool.cfg.sample_rate
    cache = Path(cache_dir) if cache_dir else None
    recs = [r for recs in pool.mono for r in recs]
    todo: list[tuple[Recording, Path | None]] = []
    for rec in recs:
        file = cache / f"{_content_key(rec.audio, sr)}.npz" if cache else None
        if file is not None and file.is_file():
            with np.load(file) as z:
                rec.teacher, rec.teacher_starts = z["emb"], z["starts"]
        else:
            todo.append((rec, file))
    log.info("teacher targets: %d cached, %d to compute", len(recs) - len(todo), len(todo))
    bar = tqdm(total=len(todo), desc="teacher", unit="rec", disable=not progress)
    for i in range(0, len(todo), batch_size // MAX_PARTIALS):
        chunk = todo[i : i + batch_size // MAX_PARTIALS]
        mels = [teacher.partial_mels(r.audio, sr, TARGET_RATE, MAX_PARTIALS) for r, _ in chunk]
        emb = teacher.embed_mels(torch.cat([m for m, _ in mels]), batch_size)
        offset = 0
        for (rec, file), (m, starts) in zip(chunk, mels, strict=True):
            rec.teacher, rec.teacher_starts = emb[offset : offset + len(m)], starts
            offset += len(m)
            if file is not None:
                file.parent.mkdir(parents=True, exist_ok=True)
                tmp = file.with_suffix(".tmp.npz")
                np.savez(tmp, emb=rec.teacher, starts=starts)
                tmp.replace(file)
        bar.update(len(chunk))
    bar.close()


def crop_target(
    rec: Recording, start: int, length: int, speed: float, sr: int
) -> np.ndarray | None:
    """Teacher target (256,) of the crop [start, start + length) samples, or None.

    The partials that lie inside the crop, or failing that all the recording's partials."""
    if rec.teacher is None or speed != 1.0:
        return None
    span = round(PARTIAL_FRAMES * HOP * sr / TEACHER_RATE)
    starts = rec.teacher_starts
    assert starts is not None  # set together with rec.teacher
    inside: np.ndarray = (starts >= start) & (starts + span <= start + length)
    if not inside.any():
        inside[:] = True
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
    # Targets are built on the host; index on the student's device, wherever the mask is.
    mask, target = mask.to(student.device), target.to(student.device)
    proj = projection(student[mask])
    return (1.0 - F.cosine_similarity(proj, target[mask], dim=1)).mean()
