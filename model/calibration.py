"""Open-set answers: adaptive s-norm of cosine scores, calibrated confidence and a verdict.

A raw cosine score says little on its own: how high a "match" scores depends on the query (a
breathy take scores low against everyone) and on the singer model (a generic voice scores high
against everyone). Adaptive s-norm (Matejka et al., Interspeech 2017) rescales each score by
both sides' scores against a cohort of other singers:

    s = ((c - mean_q) / std_q + (c - mean_m) / std_m) / 2

where mean_q, std_q are over the top-K cosine scores of the query against the *other* singer
models of the catalogue, and mean_m, std_m over the top-K scores of the singer model against
the catalogue's tracks of *other* singers (same domain). The catalogue is the cohort: it is
what a query competes against, and it needs nothing shipped with the checkpoint.

A calibration file (fitted by `python -m model calibrate`, stored next to the checkpoint as
`<checkpoint_id>.calibration.json`) holds, per (query domain, model domain) pair, a logistic
regression from s to P(same singer) and the distribution of non-target s; the verdict is
"known" when the best singer's s exceeds the threshold for the target false-alarm rate.

Each pair is calibrated per query length (tiers by number of embedded segments): a track
vector is the normalised mean of its segments, and the longer the query, the less noise that
mean carries and the higher *every* cosine it scores, an unknown singer's best one included.
Calibrated on MIR-1K clips (1-4 segments) alone, the verdict let through 4-20 % of unknown
singers' queries of 12+ segments at a 1 % target (default model, README "Open set"). A query
is read at the tier of the longest queries it is at least as long as.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path

import numpy as np

from model.errors import SingerRetrievalError

CALIBRATION_VERSION = 2
#: Versions `Calibration.from_dict` reads; version 1 had one tier per pair.
READABLE_VERSIONS = (1, 2)
#: Scores against the cohort averaged on each side (the K of adaptive s-norm).
DEFAULT_COHORT_TOP_K = 50
#: Fewest cohort scores a side needs for a standard deviation worth dividing by.
MIN_COHORT = 2
NORMS = ("raw", "snorm")


class CalibrationError(SingerRetrievalError):
    """A calibration file is missing fields, has another version, or is unreadable."""


class CalibrationMismatchError(CalibrationError):
    """The calibration file was fitted for another checkpoint than the one loaded."""


def calibration_path(checkpoint_path: str | Path, checkpoint_id: str) -> Path:
    """Where a checkpoint's calibration lives: beside it, named after its checkpoint id."""
    return Path(checkpoint_path).parent / f"{checkpoint_id}.calibration.json"


def pair_key(query_domain: str, model_domain: str) -> str:
    return f"{query_domain}->{model_domain}"


def cohort_moments(cohort_scores: np.ndarray, top_k: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean and std of the `top_k` highest scores along the last axis.

    cohort_scores: (..., n) cosine scores against the cohort (the candidate itself excluded;
    NaN entries are ignored). Returns two (...,) arrays; std is NaN where fewer than MIN_COHORT
    scores exist (s-norm is undefined there).
    """
    s = np.asarray(cohort_scores, dtype=np.float64)
    s = np.where(np.isnan(s), -np.inf, s)
    k = max(1, min(top_k, s.shape[-1]))
    top = -np.sort(-s, axis=-1)[..., :k]
    valid = np.isfinite(top)
    n = valid.sum(axis=-1)
    top = np.where(valid, top, 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = top.sum(axis=-1) / n
        var = (np.where(valid, top - mean[..., None], 0.0) ** 2).sum(axis=-1) / (n - 1)
    std = np.sqrt(var)
    return mean, np.where(n >= MIN_COHORT, np.maximum(std, 1e-6), np.nan)


def snorm(
    raw: np.ndarray | float,
    query_mean: np.ndarray | float,
    query_std: np.ndarray | float,
    model_mean: np.ndarray | float,
    model_std: np.ndarray | float,
) -> np.ndarray:
    """Adaptive s-norm of cosine scores `raw` given both sides' cohort moments (broadcast)."""
    return 0.5 * (
        (np.asarray(raw) - query_mean) / query_std + (np.asarray(raw) - model_mean) / model_std
    )


@dataclass(frozen=True)
class PairCalibration:
    """Calibration of one (query domain, model domain) pair for queries of at least
    `min_segments` embedded segments (one length tier), on the calibrated kind of score.

    confidence = sigmoid(slope * s + intercept); top1_quantiles[i] is the score below which a
    fraction `quantile_levels[i]` of impostor queries' best scores fall, measured against
    catalogues of `n_candidates` singers.
    """

    slope: float
    intercept: float
    quantile_levels: tuple[float, ...]
    top1_quantiles: tuple[float, ...]
    n_candidates: int
    n_target: int
    n_nontarget: int
    min_segments: int = 1

    def confidence(self, s: np.ndarray | float) -> np.ndarray:
        """P(same singer) for score(s) of the calibrated kind; NaN where s is NaN."""
        z = self.slope * np.asarray(s, dtype=np.float64) + self.intercept
        return 1.0 / (1.0 + np.exp(-z))

    def threshold(self, target_fa: float, n_candidates: int) -> float:
        """The s the best of `n_candidates` singers must exceed for a "known" verdict, so that a
        query of a singer outside the catalogue is accepted with probability `target_fa`.

        The threshold is the impostors' best-score quantile at 1 - target_fa, measured at the
        calibration's catalogue size n0. For another size n, the best of n scores is taken as
        the best of n / n0 independent draws of the best of n0: level (1 - target_fa)^(n0/n).
        """
        level = (1.0 - target_fa) ** (self.n_candidates / max(1, n_candidates))
        return float(np.interp(level, self.quantile_levels, self.top1_quantiles))

    def to_dict(self) -> dict:
        return {
            "slope": self.slope,
            "intercept": self.intercept,
            "quantile_levels": list(self.quantile_levels),
            "top1_quantiles": list(self.top1_quantiles),
            "n_candidates": self.n_candidates,
            "n_target": self.n_target,
            "n_nontarget": self.n_nontarget,
            "min_segments": self.min_segments,
        }

    @classmethod
    def from_dict(cls, p: dict) -> PairCalibration:
        return cls(
            slope=float(p["slope"]),
            intercept=float(p["intercept"]),
            quantile_levels=tuple(float(x) for x in p["quantile_levels"]),
            top1_quantiles=tuple(float(x) for x in p["top1_quantiles"]),
            n_candidates=int(p["n_candidates"]),
            n_target=int(p["n_target"]),
            n_nontarget=int(p["n_nontarget"]),
            min_segments=int(p.get("min_segments", 1)),
        )


def tier_for(tiers: Sequence[PairCalibration], n_segments: int) -> PairCalibration:
    """The tier of a query of `n_segments` segments: the last of `tiers` (by increasing
    `min_segments`, the first at 1) whose `min_segments` it reaches."""
    return [t for t in tiers if t.min_segments <= max(1, n_segments)][-1]


@dataclass(frozen=True)
class Calibration:
    """A checkpoint's score calibration (see the module docstring).

    pairs: pair key -> length tiers, by increasing `min_segments`, the first at 1.
    """

    checkpoint_id: str
    norm: str  # "raw" (cosine) or "snorm": the score the pairs are calibrated on
    cohort_top_k: int
    pairs: dict[str, tuple[PairCalibration, ...]]
    fitted_on: dict

    def __post_init__(self) -> None:
        for key, tiers in self.pairs.items():
            starts = [t.min_segments for t in tiers]
            if not starts or starts[0] != 1 or any(b <= a for a, b in pairwise(starts)):
                raise CalibrationError(
                    f"{key}: length tiers must start at 1 segment and increase, got {starts}"
                )

    def pair(
        self, query_domain: str, model_domain: str, n_segments: int = 1
    ) -> PairCalibration | None:
        """The calibration of a query of `n_segments` embedded segments against singer models
        of `model_domain`: its pair's longest tier the query reaches; None without the pair."""
        tiers = self.pairs.get(pair_key(query_domain, model_domain))
        return tier_for(tiers, n_segments) if tiers else None

    def to_dict(self) -> dict:
        return {
            "version": CALIBRATION_VERSION,
            "checkpoint_id": self.checkpoint_id,
            "method": "logistic regression on the score; verdict on impostors' best score",
            "norm": self.norm,
            "cohort_top_k": self.cohort_top_k,
            "pairs": {k: [t.to_dict() for t in p] for k, p in sorted(self.pairs.items())},
            "fitted_on": self.fitted_on,
        }

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.to_dict(), indent=1) + "\n", encoding="utf-8")
        tmp.replace(path)
        return path

    @classmethod
    def from_dict(cls, data: dict) -> Calibration:
        if data.get("version") not in READABLE_VERSIONS:
            raise CalibrationError(
                f"calibration version {data.get('version')!r}, expected one of {READABLE_VERSIONS}"
            )
        try:
            pairs = {
                # version 1: one calibration per pair, for queries of any length
                k: tuple(PairCalibration.from_dict(t) for t in ([p] if isinstance(p, dict) else p))
                for k, p in data["pairs"].items()
            }
            return cls(
                checkpoint_id=str(data["checkpoint_id"]),
                norm=_norm(data["norm"]),
                cohort_top_k=int(data["cohort_top_k"]),
                pairs=pairs,
                fitted_on=dict(data.get("fitted_on", {})),
            )
        except (KeyError, TypeError, ValueError) as err:
            raise CalibrationError(f"malformed calibration: {err!r}") from err


def _norm(value: object) -> str:
    if value not in NORMS:
        raise ValueError(f"norm must be one of {NORMS}, got {value!r}")
    return str(value)


def load_calibration(path: str | Path, checkpoint_id: str) -> Calibration:
    """Read a calibration file and check it belongs to `checkpoint_id`.

    Raises CalibrationMismatchError when it was fitted for another checkpoint (its scores
    would be calibrated for other weights), CalibrationError when unreadable.
    """
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise CalibrationError(f"{path}: {err}") from err
    calibration = Calibration.from_dict(data)
    if calibration.checkpoint_id != checkpoint_id:
        raise CalibrationMismatchError(
            f"{path} calibrates checkpoint {calibration.checkpoint_id}, not the loaded "
            f"checkpoint {checkpoint_id}; refit it with `python -m model calibrate`"
        )
    return calibration


def find_calibration(checkpoint_path: str | Path, checkpoint_id: str) -> Calibration | None:
    """The calibration stored beside a checkpoint, or None when there is none."""
    path = calibration_path(checkpoint_path, checkpoint_id)
    return load_calibration(path, checkpoint_id) if path.is_file() else None


def snorm_hits(
    raw: np.ndarray,
    query_cohort: list[np.ndarray],
    model_cohort: list[np.ndarray],
    top_k: int = DEFAULT_COHORT_TOP_K,
) -> np.ndarray:
    """S-norm of ranked hits: raw (n,) cosine scores; query_cohort[i] / model_cohort[i] the
    cohort scores of hit i's query and singer model (hit i's own singer excluded)."""
    out = np.full(len(raw), np.nan)
    for i, (qc, mc) in enumerate(zip(query_cohort, model_cohort, strict=True)):
        qm, qs = cohort_moments(np.asarray(qc, dtype=np.float64), top_k)
        mm, ms = cohort_moments(np.asarray(mc, dtype=np.float64), top_k)
        out[i] = snorm(float(raw[i]), qm, qs, mm, ms)
    return out


@dataclass(frozen=True)
class Reading:
    """Open-set reading of one ranked list of singers (best first)."""

    confidence: np.ndarray  # (n,) P(same singer)
    verdict: str | None  # "known" | "unknown" | None (score undefined)
    threshold: float  # score the best singer had to exceed


def read_scores(
    scores: np.ndarray, n_candidates: int, pair: PairCalibration, target_fa: float
) -> Reading:
    """Confidence of each ranked hit and the verdict on the best one.

    scores: (n,) calibrated-kind scores (raw cosine or s-norm, as `Calibration.norm`), best
    first; n_candidates: singers the query competed against (the catalogue's singers in the
    models' domain); target_fa: wanted rate of "known" verdicts for singers not in it.
    """
    scores = np.asarray(scores, dtype=np.float64)
    t = pair.threshold(target_fa, n_candidates)
    if len(scores) == 0 or not np.isfinite(scores[0]):
        return Reading(pair.confidence(scores), None, t)
    return Reading(pair.confidence(scores), "known" if scores[0] > t else "unknown", t)
