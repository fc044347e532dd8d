"""Open-set calibration of a checkpoint: scores, a calibrated confidence, a graded verdict.

The file `<checkpoint_id>.calibration.json` beside the checkpoint (`python -m model
calibrate`; docs/open-set.md) holds, per (query domain, model domain) pair:

- the score's kind (`norm`, the pair's own or the file's): raw cosine, or adaptive s-norm
  (`model.score_norm`) against the catalogue's other singers *and* the cohort file shipped
  beside it (`<checkpoint_id>.cohort.npz`: one unit vector per voice and domain), so that a
  catalogue of one singer has a cohort too;
- `confidence`: P(the best singer is the one singing), a logistic regression on the best
  singer's score s, the query's length l = log(segments), s * l and s^2 (right and wrong
  answers' scores spread differently: a quadratic log-likelihood ratio), known and
  impostor queries each half of the weight (`prior_known`); older files have no s^2 term;
- length tiers (by embedded segments): the longer the query, the less noisy its mean vector
  and the higher *every* cosine it scores, a stranger's best one included. Each tier stores
  the quantiles of impostor queries' best scores: "known" above the quantile of the target
  false-alarm rate, "likely" above a looser one's, else "unknown";
- `firm_answer_segments`: the shortest tier whose known queries were answered "known" (1 %
  target) at least 80 % as often as in the best tier: what the service tells a short query.

Per domain, `enrolment` holds the outlier bar of a singer's tracks (`model.enrolment`).
"""

from __future__ import annotations

import hashlib
import io
import json
from dataclasses import dataclass, field, replace
from itertools import pairwise
from pathlib import Path

import numpy as np

from model.errors import SingerRetrievalError

#: 4: a pair may name its own score, which code for 3 would misread: it refuses 4.
CALIBRATION_VERSION = 4
READABLE_VERSIONS = (3, 4)
NORMS = ("raw", "snorm")
#: The target false-alarm rate at which `firm_answer_segments` is measured.
FIRM_TARGET_FA = 0.01


class CalibrationError(SingerRetrievalError):
    """A calibration file is missing fields, has another version, or is unreadable."""


class CalibrationMismatchError(CalibrationError):
    """The calibration file was fitted for another checkpoint than the one loaded."""


def calibration_path(checkpoint_path: str | Path, checkpoint_id: str) -> Path:
    """Where a checkpoint's calibration lives: beside it, named after its checkpoint id."""
    return Path(checkpoint_path).parent / f"{checkpoint_id}.calibration.json"


def cohort_path(checkpoint_path: str | Path, checkpoint_id: str) -> Path:
    """Where a checkpoint's s-norm cohort lives: beside it, named after its checkpoint id."""
    return Path(checkpoint_path).parent / f"{checkpoint_id}.cohort.npz"


def pair_key(query_domain: str, model_domain: str) -> str:
    return f"{query_domain}->{model_domain}"


def sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.asarray(z, dtype=np.float64)))


@dataclass(frozen=True)
class Tier:
    """Verdict thresholds of one pair for queries of at least `min_segments` segments.

    top1_quantiles[i] is the score below which a fraction `quantile_levels[i]` of impostor
    queries' best scores fall, measured against catalogues of `n_candidates` singers;
    identified: share of the calibration's known-singer queries of this tier answered "known"
    and right at FIRM_TARGET_FA.
    """

    quantile_levels: tuple[float, ...]
    top1_quantiles: tuple[float, ...]
    n_candidates: int
    n_known: int
    n_impostor: int
    min_segments: int = 1
    identified: float | None = None

    def threshold(self, target_fa: float, n_candidates: int) -> float:
        """The score the best of `n_candidates` singers must exceed so that a query of a
        singer outside the catalogue passes with probability `target_fa`.

        The impostors' best-score quantile at 1 - target_fa, measured at the calibration's
        catalogue size n0. For another size n, the best of n scores is taken as the best of
        n / n0 independent draws of the best of n0: level (1 - target_fa)^(n0/n).
        """
        level = (1.0 - target_fa) ** (self.n_candidates / max(1, n_candidates))
        return float(np.interp(level, self.quantile_levels, self.top1_quantiles))

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in vars(self).items()}

    @classmethod
    def from_dict(cls, p: dict) -> Tier:
        return cls(
            quantile_levels=tuple(float(x) for x in p["quantile_levels"]),
            top1_quantiles=tuple(float(x) for x in p["top1_quantiles"]),
            n_candidates=int(p["n_candidates"]),
            n_known=int(p["n_known"]),
            n_impostor=int(p["n_impostor"]),
            min_segments=int(p.get("min_segments", 1)),
            identified=None if p.get("identified") is None else float(p["identified"]),
        )


@dataclass(frozen=True)
class PairCalibration:
    """One (query domain, model domain) pair: the confidence model and the length tiers (by
    increasing `min_segments`, the first at 1)."""

    weights: tuple[float, ...]  # on (score s, l = log segments, s * l[, s^2])
    intercept: float
    tiers: tuple[Tier, ...]
    firm_answer_segments: int | None = None
    norm: str | None = None  # the score it is calibrated on; None: the file's `norm`

    def __post_init__(self) -> None:
        starts = [t.min_segments for t in self.tiers]
        if not starts or starts[0] != 1 or any(b <= a for a, b in pairwise(starts)):
            raise CalibrationError(f"length tiers must start at 1 and increase, got {starts}")
        if len(self.weights) not in (3, 4):
            raise CalibrationError(f"confidence weights: 3 or 4 expected, got {len(self.weights)}")

    def confidence(self, scores: np.ndarray | float, n_segments: int) -> np.ndarray:
        """P(same singer) of score(s) of the calibrated kind for a query of `n_segments`
        segments; NaN where a score is NaN. Never falls as the score rises: a quadratic's
        other branch (scores below its vertex, far below any calibration query's) reads as
        the vertex."""
        s = np.asarray(scores, dtype=np.float64)
        a, b, c, q = (*self.weights, 0.0)[:4]
        length = np.log(max(1, n_segments))
        slope = a + c * length
        if q > 0:  # convex: rising right of the vertex
            s = np.maximum(s, -slope / (2 * q))
        elif q < 0:  # concave: rising left of it
            s = np.minimum(s, -slope / (2 * q))
        return sigmoid(q * s * s + slope * s + b * length + self.intercept)

    def tier(self, n_segments: int) -> Tier:
        """The tier of a query of `n_segments` segments: the last one whose start it reaches."""
        return [t for t in self.tiers if t.min_segments <= max(1, n_segments)][-1]

    def to_dict(self) -> dict:
        own = {} if self.norm is None else {"norm": self.norm}
        return {
            **own,
            "confidence": {"weights": list(self.weights), "intercept": self.intercept},
            "firm_answer_segments": self.firm_answer_segments,
            "tiers": [t.to_dict() for t in self.tiers],
        }

    @classmethod
    def from_dict(cls, p: dict) -> PairCalibration:
        w = [float(x) for x in p["confidence"]["weights"]]
        if len(w) not in (3, 4):
            raise ValueError(f"confidence weights: 3 or 4 expected, got {len(w)}")
        firm = p.get("firm_answer_segments")
        return cls(
            weights=tuple(w),
            intercept=float(p["confidence"]["intercept"]),
            tiers=tuple(Tier.from_dict(t) for t in p["tiers"]),
            firm_answer_segments=None if firm is None else int(firm),
            norm=_norm(p["norm"]) if "norm" in p else None,  # version 3: none of its own
        )


#: What an outlier bar applies to (`model.enrolment.outlier_scores`); fits write the last.
OUTLIER_STATISTICS = ("fit", "relative_fit")


@dataclass(frozen=True)
class EnrolmentCalibration:
    """The outlier bar of one domain's singer models: a track whose `statistic` ("fit": its
    leave-one-out score; "relative_fit": that minus the singer's other tracks' mean; see
    `model.enrolment`) is below `outlier_below` is flagged; genuine tracks fell below it at a
    rate `false_flag_rate`, other singers' tracks planted among them at `detection`."""

    outlier_below: float
    false_flag_rate: float
    detection: float | None = None
    statistic: str = "relative_fit"

    @classmethod
    def from_dict(cls, p: dict) -> EnrolmentCalibration:
        det = p.get("detection")
        statistic = p.get("statistic", "fit")  # files before the relative fit: a bar on fit
        if statistic not in OUTLIER_STATISTICS:
            raise CalibrationError(f"unknown outlier statistic {statistic!r}")
        return cls(
            float(p["outlier_below"]),
            float(p["false_flag_rate"]),
            None if det is None else float(det),
            statistic,
        )


@dataclass(frozen=True)
class Calibration:
    """A checkpoint's open-set calibration (see the module docstring).

    cohort: domain -> (C, dim) float32 unit vectors of the shipped s-norm cohort (empty with
    `norm` "raw" or when none ships); its file and SHA-256 are `cohort_file`."""

    checkpoint_id: str
    norm: str  # "raw" (cosine) or "snorm": the score of the pairs without a norm of their own
    cohort_top_k: int
    pairs: dict[str, PairCalibration]
    fitted_on: dict
    prior_known: float = 0.5
    enrolment: dict[str, EnrolmentCalibration] = field(default_factory=dict)
    cohort: dict[str, np.ndarray] = field(default_factory=dict, compare=False, repr=False)
    cohort_file: dict | None = field(default=None, compare=False)

    def pair(self, query_domain: str, model_domain: str) -> PairCalibration | None:
        return self.pairs.get(pair_key(query_domain, model_domain))

    def norm_of(self, query_domain: str, model_domain: str) -> str:
        """The score kind a pair is calibrated on: its own, else the file's."""
        pair = self.pair(query_domain, model_domain)
        return pair.norm if pair is not None and pair.norm is not None else self.norm

    def norms(self) -> dict[str, str]:
        """Pair key -> the score kind it is calibrated on."""
        return {k: p.norm or self.norm for k, p in sorted(self.pairs.items())}

    def cohort_of(self, domain: str) -> np.ndarray | None:
        """The shipped cohort in `domain` (C, dim), or None."""
        c = self.cohort.get(domain)
        return c if c is not None and len(c) else None

    def to_dict(self) -> dict:
        return {
            "version": CALIBRATION_VERSION,
            "checkpoint_id": self.checkpoint_id,
            "method": "logistic confidence on (score, log segments, their product); verdict "
            "on impostors' best-score quantiles per length tier",
            "norm": self.norm,
            "cohort_top_k": self.cohort_top_k,
            "cohort": self.cohort_file,
            "prior_known": self.prior_known,
            "pairs": {k: p.to_dict() for k, p in sorted(self.pairs.items())},
            "enrolment": {d: vars(e) for d, e in sorted(self.enrolment.items())},
            "fitted_on": self.fitted_on,
        }

    def save(self, path: str | Path) -> Path:
        """Write the file (and the cohort beside it, when there is one) atomically."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        data = self.to_dict()
        if self.cohort:
            buf = io.BytesIO()
            arrays: dict[str, np.ndarray] = {"checkpoint_id": np.array(self.checkpoint_id)}
            arrays.update({d: v.astype(np.float16) for d, v in sorted(self.cohort.items())})
            np.savez_compressed(buf, **arrays)  # type: ignore[arg-type]
            blob = buf.getvalue()
            name = f"{self.checkpoint_id}.cohort.npz"
            _write_atomic(path.parent / name, blob)
            data["cohort"] = {
                "file": name,
                "sha256": hashlib.sha256(blob).hexdigest(),
                "voices": {d: len(v) for d, v in sorted(self.cohort.items())},
            }
        _write_atomic(path, (json.dumps(data, indent=1) + "\n").encode())
        return path

    @classmethod
    def from_dict(cls, data: dict, folder: Path | None = None) -> Calibration:
        """The calibration of a file's contents; `folder`: where to find its cohort file."""
        if data.get("version") not in READABLE_VERSIONS:
            raise CalibrationError(
                f"calibration version {data.get('version')!r}, expected {READABLE_VERSIONS}: "
                "refit it with `python -m model calibrate`"
            )
        try:
            cal = cls(
                checkpoint_id=str(data["checkpoint_id"]),
                norm=_norm(data["norm"]),
                cohort_top_k=int(data["cohort_top_k"]),
                pairs={k: PairCalibration.from_dict(p) for k, p in data["pairs"].items()},
                fitted_on=dict(data.get("fitted_on", {})),
                prior_known=float(data.get("prior_known", 0.5)),
                enrolment={
                    d: EnrolmentCalibration.from_dict(e)
                    for d, e in data.get("enrolment", {}).items()
                },
                cohort_file=data.get("cohort"),
            )
        except (KeyError, TypeError, ValueError) as err:
            raise CalibrationError(f"malformed calibration: {err!r}") from err
        if cal.cohort_file and folder is not None:
            cal = replace(cal, cohort=_read_cohort(folder, cal))
        return cal


def _write_atomic(path: Path, blob: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(blob)
    tmp.replace(path)


def _read_cohort(folder: Path, cal: Calibration) -> dict[str, np.ndarray]:
    """The cohort file a calibration names, checked against its SHA-256 and checkpoint."""
    ref = cal.cohort_file or {}
    path = folder / Path(str(ref.get("file", ""))).name  # never a path outside the folder
    try:
        blob = path.read_bytes()
    except OSError as err:
        raise CalibrationError(f"cohort file: {err}") from err
    if hashlib.sha256(blob).hexdigest() != ref.get("sha256"):
        raise CalibrationError(f"{path.name} is not the cohort the calibration was fitted with")
    with np.load(io.BytesIO(blob), allow_pickle=False) as z:
        if str(z["checkpoint_id"]) != cal.checkpoint_id:
            raise CalibrationMismatchError(f"{path.name} belongs to another checkpoint")
        out = {d: np.asarray(z[d], dtype=np.float32) for d in z.files if d != "checkpoint_id"}
    return {d: v / np.linalg.norm(v, axis=1, keepdims=True) for d, v in out.items()}


def _norm(value: object) -> str:
    if value not in NORMS:
        raise ValueError(f"norm must be one of {NORMS}, got {value!r}")
    return str(value)


def load_calibration(path: str | Path, checkpoint_id: str) -> Calibration:
    """Read a calibration file (and its cohort) and check it belongs to `checkpoint_id`.

    Raises CalibrationMismatchError when it was fitted for another checkpoint (its scores
    would be calibrated for other weights), CalibrationError when unreadable.
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise CalibrationError(f"{path}: {err}") from err
    if isinstance(data, dict) and data.get("checkpoint_id") not in (None, checkpoint_id):
        raise CalibrationMismatchError(
            f"{path} calibrates checkpoint {data.get('checkpoint_id')}, not the loaded "
            f"checkpoint {checkpoint_id}; refit it with `python -m model calibrate`"
        )
    if not isinstance(data, dict):
        raise CalibrationError(f"{path}: not a calibration object")
    return Calibration.from_dict(data, path.parent)


def find_calibration(checkpoint_path: str | Path, checkpoint_id: str) -> Calibration | None:
    """The calibration stored beside a checkpoint, or None when there is none."""
    path = calibration_path(checkpoint_path, checkpoint_id)
    return load_calibration(path, checkpoint_id) if path.is_file() else None


@dataclass(frozen=True)
class Reading:
    """Open-set reading of one ranked list of singers (best first).

    verdict: "known" (best score above `threshold`), "likely" (above `likely_threshold`),
    "unknown", or None (score undefined)."""

    confidence: np.ndarray  # (n,) P(same singer)
    verdict: str | None
    threshold: float
    likely_threshold: float


def read_scores(
    scores: np.ndarray,
    n_candidates: int,
    n_segments: int,
    pair: PairCalibration,
    target_fa: float,
    likely_fa: float,
) -> Reading:
    """Confidence of each ranked hit and the verdict on the best one.

    scores: (n,) calibrated-kind scores (raw cosine or s-norm, as `Calibration.norm_of`), best
    first; n_candidates: singers the query competed against (the catalogue's singers in the
    models' domain); n_segments: the query's embedded segments; target_fa / likely_fa: wanted
    rates of "known" / "known or likely" verdicts for singers not in the catalogue.
    """
    scores = np.asarray(scores, dtype=np.float64)
    tier = pair.tier(n_segments)
    known_t = tier.threshold(target_fa, n_candidates)
    likely_t = min(known_t, tier.threshold(likely_fa, n_candidates))
    confidence = pair.confidence(scores, n_segments)
    if len(scores) == 0 or not np.isfinite(scores[0]):
        return Reading(confidence, None, known_t, likely_t)
    best = scores[0]
    verdict = "known" if best > known_t else "likely" if best > likely_t else "unknown"
    return Reading(confidence, verdict, known_t, likely_t)
