"""Verification EER on held-out a cappella takes: a dev figure that does not come from MIR-1K.

Each held-out take (the 20 % that `model.training.datasets.split_acappella` keeps out of
training) is cut in two halves; the first half of every take is scored against the second half
of every take (cosine of track vectors, monophonic branch). Same take: target trial; other
takes: non-target trial. The two halves share microphone and room, so the figure is
channel-matched: it can support a choice between models, never make one alone.

Cross-domain variant (the product's main case, a karaoke take against finished songs): the
second half of take i is mixed over background i mod len(backgrounds) (its middle, at a given
vocal-to-accompaniment ratio) and goes through the mixed branch; the first half stays mono.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from model.audio import load_audio
from model.embedding import Embedder
from model.errors import AudioError
from model.mixing import mix_over_middle
from model.track_embedding import track_vector
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


def half_vectors(
    embedder: Embedder, y: np.ndarray, background: np.ndarray | None = None, snr_db: float = 0.0
) -> tuple[np.ndarray, np.ndarray]:
    """Track vectors (dim,) of the first half (mono) and second half of a recording: mono too,
    or mixed over the middle of `background` (same rate) at `snr_db` dB through the mixed
    branch."""
    mid = len(y) // 2
    first, second = y[:mid], y[mid:]
    domain = "mono"
    if background is not None:
        second, domain = mix_over_middle(second, background, snr_db), "mixed"
    out = []
    for half, d in ((first, "mono"), (second, domain)):
        out.append(track_vector(embedder.encode([embedder.select(half)], d)))
    return out[0], out[1]


def take_halves(
    embedder: Embedder,
    paths: list[str | Path],
    backgrounds: list[str | Path] | None = None,
    snr_db: float = 0.0,
) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], int]:
    """{path: (first-half, second-half) track vectors} of the usable takes, and the number of
    takes skipped (halves too short or unvoiced). backgrounds: the cross-domain variant."""
    return take_halves_many([embedder], paths, backgrounds, snr_db)[0]


def take_halves_many(
    embedders: list[Embedder],
    paths: list[str | Path],
    backgrounds: list[str | Path] | None = None,
    snr_db: float = 0.0,
) -> list[tuple[dict[str, tuple[np.ndarray, np.ndarray]], int]]:
    """`take_halves` of several systems (one sample rate), each take and background decoded
    once for all of them."""
    rates = {e.features.sample_rate for e in embedders}
    if len(rates) != 1:
        raise ValueError(f"the systems must share one sample rate, got {sorted(rates)}")
    sr = rates.pop()
    out: list[tuple[dict[str, tuple[np.ndarray, np.ndarray]], int]] = [({}, 0) for _ in embedders]
    for i, p in enumerate(paths):
        try:
            y = load_audio(p, sr)
            bg = load_audio(backgrounds[i % len(backgrounds)], sr) if backgrounds else None
        except AudioError as err:
            log.info("skipped %s", err)
            out = [(halves, skipped + 1) for halves, skipped in out]
            continue
        for k, embedder in enumerate(embedders):
            halves, skipped = out[k]
            try:
                halves[str(p)] = half_vectors(embedder, y, bg, snr_db)
            except AudioError as err:
                log.info("skipped %s", err)
                out[k] = (halves, skipped + 1)
    return out


def halves_eer(halves: list[tuple[np.ndarray, np.ndarray]]) -> dict:
    """{"eer", "n_takes", "n_target", "n_nontarget"}: every first half against every second
    half, the same take's pair being the target trial."""
    if len(halves) < 2:
        raise ValueError("fewer than two usable takes")
    firsts = l2_normalize(np.stack([a for a, _ in halves]))
    seconds = l2_normalize(np.stack([b for _, b in halves]))
    scores = firsts @ seconds.T
    same = np.eye(len(halves), dtype=bool)
    return {
        "eer": equal_error_rate(scores[same], scores[~same]),
        "n_takes": len(halves),
        "n_target": int(same.sum()),
        "n_nontarget": int((~same).sum()),
    }


def acappella_eer(
    embedder: Embedder,
    paths: list[str | Path],
    backgrounds: list[str | Path] | None = None,
    snr_db: float = 0.0,
) -> dict:
    """{"eer", "n_takes", "n_target", "n_nontarget", "skipped"} of first vs second halves.

    `embedder`: a `model.embedding.Embedder` or the evaluation `TeacherEmbedder`;
    backgrounds / snr_db: the cross-domain variant (module docstring)."""
    halves, skipped = take_halves(embedder, paths, backgrounds, snr_db)
    return {**halves_eer(list(halves.values())), "skipped": skipped}
