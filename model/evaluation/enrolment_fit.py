"""The outlier bar of singer models (`model.enrolment`), fitted on known singers' recordings.

Research code for `python -m model calibrate`. Catalogues are drawn at random: one singer's
MIN_TRACKS to MAX_TRACKS recordings with one recording of another singer planted among them.
The bar is the `false_flag_rate` quantile of the genuine recordings' relative fits (their
leave-one-out scores minus the other recordings' mean); `detection` is the share of planted
recordings below it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from model.calibration import EnrolmentCalibration
from model.enrolment import MIN_TRACKS, leave_one_out_scores, outlier_scores

#: Most genuine recordings of a drawn singer: small catalogues are where a bar is hardest.
MAX_TRACKS = 8
DEFAULT_FALSE_FLAG_RATE = 0.02


def planted_trials(
    recordings: Mapping[str, Sequence[np.ndarray]],
    trials: int = 1000,
    seed: int = 0,
    statistic: str = "relative_fit",
) -> tuple[np.ndarray, np.ndarray]:
    """(`statistic` of genuine recordings, of planted ones) over `trials` draws
    (`model.enrolment.outlier_scores`).

    recordings: singer -> unit vectors (dim,) of their recordings in one domain; singers with
    fewer than MIN_TRACKS recordings only lend planted ones. Raises ValueError with fewer than
    two singers or none with MIN_TRACKS recordings."""
    rng = np.random.default_rng(seed)
    singers = sorted(recordings)
    hosts = [s for s in singers if len(recordings[s]) >= MIN_TRACKS]
    if len(singers) < 2 or not hosts:
        raise ValueError(f"need two singers, one with {MIN_TRACKS} recordings or more")
    genuine, planted = [], []
    for _ in range(trials):
        host = hosts[int(rng.integers(len(hosts)))]
        own = recordings[host]
        n = int(rng.integers(MIN_TRACKS, min(MAX_TRACKS, len(own)) + 1))
        other = [s for s in singers if s != host][int(rng.integers(len(singers) - 1))]
        guest = recordings[other][int(rng.integers(len(recordings[other])))]
        picked = [own[i] for i in rng.choice(len(own), n, replace=False)]
        scores = outlier_scores(leave_one_out_scores(np.stack([*picked, guest])), statistic)
        genuine.append(scores[:-1])
        planted.append(scores[-1])
    return np.concatenate(genuine), np.array(planted)


def fit_enrolment(
    recordings: Mapping[str, Sequence[np.ndarray]],
    false_flag_rate: float = DEFAULT_FALSE_FLAG_RATE,
    trials: int = 1000,
    seed: int = 0,
) -> EnrolmentCalibration:
    """The outlier bar of one domain (module docstring)."""
    genuine, planted = planted_trials(recordings, trials, seed)
    bar = float(np.quantile(genuine, false_flag_rate))
    return EnrolmentCalibration(
        bar, false_flag_rate, float(np.mean(planted < bar)), statistic="relative_fit"
    )
