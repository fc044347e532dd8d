"""Verification EER on held-out a cappella takes: a dev figure that does not come from MIR-1K.

Each held-out take (the 20 % that `model.training.datasets.split_acappella` keeps out of
training) is cut in two halves; the first half of every take is scored against the second half
of every take (cosine of track vectors, monophonic branch). Same take: target trial; other
takes: non-target trial. The two halves share microphone and room, so the figure is
channel-matched: it can support a choice between models, never make one alone.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from model.audio import load_audio
from model.embedding import track_vector
from model.errors import AudioError
from model.vectors import l2_normalize

log = logging.getLogger(__name__)


def equal_error_rate(target: np.ndarray, nontarget: np.ndarray) -> float:
    """EER of two score sets (higher = same source), via sklearn's ROC, interpolated where
    the false-accept and false-reject rates cross."""
    from sklearn.metrics import roc_curve

    y = np.r_[np.ones(len(target)), np.zeros(len(nontarget))]
    fpr, tpr, _ = roc_curve(y, np.r_[target, nontarget])
    fnr = 1.0 - tpr
    i = int(np.nanargmin(np.abs(fnr - fpr)))
    return float((fpr[i] + fnr[i]) / 2.0)


def half_vectors(embedder, y: np.ndarray, domain: str = "mono") -> tuple[np.ndarray, np.ndarray]:
    """Track vectors (dim,) of the first and second halves of a recording."""
    mid = len(y) // 2
    out = []
    for half in (y[:mid], y[mid:]):
        segs = embedder.segments(half, False)
        out.append(track_vector(embedder.embed_segments(segs, domain)))
    return out[0], out[1]


def acappella_eer(embedder, paths: list[str | Path], domain: str = "mono") -> dict:
    """{"eer", "n_takes", "n_target", "n_nontarget", "skipped"} of first vs second halves.

    `embedder`: a `model.embedding.Embedder` or the evaluation `TeacherEmbedder`. Takes whose
    halves are too short or unvoiced are skipped and counted."""
    firsts, seconds, skipped = [], [], 0
    sr = embedder.features.sample_rate
    for p in paths:
        try:
            a, b = half_vectors(embedder, load_audio(p, sr), domain)
        except AudioError as err:
            log.info("skipped %s", err)
            skipped += 1
            continue
        firsts.append(a)
        seconds.append(b)
    if len(firsts) < 2:
        raise ValueError("fewer than two usable takes")
    scores = l2_normalize(np.stack(firsts)) @ l2_normalize(np.stack(seconds)).T
    same = np.eye(len(firsts), dtype=bool)
    return {
        "eer": equal_error_rate(scores[same], scores[~same]),
        "n_takes": len(firsts),
        "n_target": int(same.sum()),
        "n_nontarget": int((~same).sum()),
        "skipped": skipped,
    }
