"""Open-set figures: trial EER and minDCF, DIR curves, operating points, reliability (ECE).

Research code: `model.evaluation.openset` computes them per scenario, `openset_markdown` and
`reliability_diagram` show them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from model.calibration import PairCalibration

DCF_P_TARGET = 0.01
FA_POINTS = (0.01, 0.05)
RELIABILITY_BINS = 10


@dataclass
class Scores:
    """Scores of queries against the singer models of one catalogue.

    names: (N,) singer names; raw / snormed: (Q, N); truth: (Q,) index of each query's singer
    in names, -1 for an impostor.
    """

    names: list[str]
    raw: np.ndarray
    snormed: np.ndarray
    truth: np.ndarray

    def get(self, norm: str) -> np.ndarray:
        return self.snormed if norm == "snorm" else self.raw

    def subset(self, mask: np.ndarray) -> Scores:
        return Scores(self.names, self.raw[mask], self.snormed[mask], self.truth[mask])

    def best(self, norm: str) -> tuple[np.ndarray, np.ndarray]:
        """(Q,) best score and whether it is the query's own singer (False for impostors)."""
        m = self.get(norm)
        known = self.truth >= 0
        return m.max(axis=1), known & (m.argmax(axis=1) == np.where(known, self.truth, 0))


def trial_scores(sc: Scores, norm: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(target scores, non-target scores of known queries, non-target scores of impostors)."""
    m = sc.get(norm)
    known = sc.truth >= 0
    target_mask = np.zeros_like(m, dtype=bool)
    target_mask[np.flatnonzero(known), sc.truth[known]] = True
    return m[target_mask], m[known][~target_mask[known]], m[~known].ravel()


def eer_min_dcf(target: np.ndarray, nontarget: np.ndarray) -> dict[str, float]:
    """Equal error rate and normalised minimum detection cost (P_target 0.01) of trials."""
    from sklearn.metrics import roc_curve

    target, nontarget = target[np.isfinite(target)], nontarget[np.isfinite(nontarget)]
    y = np.concatenate([np.ones(len(target)), np.zeros(len(nontarget))])
    fpr, tpr, _ = roc_curve(y, np.concatenate([target, nontarget]))
    fnr = 1.0 - tpr
    i = int(np.nanargmin(np.abs(fnr - fpr)))
    dcf = DCF_P_TARGET * fnr + (1 - DCF_P_TARGET) * fpr
    norm = min(DCF_P_TARGET, 1 - DCF_P_TARGET)
    return {"eer": float((fnr[i] + fpr[i]) / 2), "min_dcf": float(dcf.min() / norm)}


def open_set_curve(sc: Scores, norm: str) -> tuple[np.ndarray, np.ndarray]:
    """(false-alarm rate, detection-and-identification rate) over every top-1 threshold."""
    top, correct = sc.best(norm)
    top = np.where(np.isfinite(top), top, -np.inf)
    known = sc.truth >= 0
    imp = np.sort(top[~known])
    thresholds = np.unique(np.concatenate([top[np.isfinite(top)], [np.inf]]))
    fa = 1.0 - np.searchsorted(imp, thresholds, side="right") / max(1, len(imp))
    dir_ = np.array([(correct & (top > t)).sum() for t in thresholds]) / max(1, known.sum())
    # threshold t accepts scores strictly above t; also allow accepting everything
    return np.concatenate([[1.0], fa]), np.concatenate(
        [[correct.sum() / max(1, known.sum())], dir_]
    )


def dir_at_fa(fa: np.ndarray, dir_: np.ndarray, target: float) -> float:
    """Best detection-and-identification rate with a false-alarm rate at most `target`."""
    ok = fa <= target + 1e-12
    return float(dir_[ok].max()) if ok.any() else 0.0


def operating_point(
    sc: Scores, n_segments: np.ndarray, pair: PairCalibration, norm: str, target_fa: float
) -> dict:
    """The calibration's verdict thresholds (each query at its length tier) applied to the
    queries: false-alarm rate on impostors, detection (accepted) and identification (accepted
    and right) rates of known queries."""
    n = len(sc.names)
    t = np.array([pair.tier(int(k)).threshold(target_fa, n) for k in n_segments])
    top, correct = sc.best(norm)
    known = sc.truth >= 0
    accepted = np.where(np.isfinite(top), top, -np.inf) > t
    return {
        "target_fa": target_fa,
        "false_alarm_rate": float(accepted[~known].mean()) if (~known).any() else None,
        "detection_rate": float(accepted[known].mean()) if known.any() else None,
        "identification_rate": float((accepted & correct)[known].mean()) if known.any() else None,
        "n_known": int(known.sum()),
        "n_impostor": int((~known).sum()),
    }


def prior_weights(known: np.ndarray, prior_known: float) -> np.ndarray:
    """(Q,) weights that give the known queries `prior_known` of the total, impostors the rest."""
    known = np.asarray(known, dtype=bool)
    w = np.where(
        known, prior_known / max(1, known.sum()), (1 - prior_known) / max(1, (~known).sum())
    )
    return w / w.sum() * len(w)


def reliability(
    confidence: np.ndarray,
    correct: np.ndarray,
    weights: np.ndarray | None = None,
    bins: int = RELIABILITY_BINS,
) -> dict:
    """Expected calibration error and the reliability diagram's bins of a confidence.

    confidence: (Q,) predicted P(correct); correct: (Q,) bool outcomes; weights: per query
    (None: equal). Bins of equal width over [0, 1]; ECE = sum over bins of (bin weight share) x
    |mean confidence - accuracy|. Returns {"ece", "bins": [{lo, hi, weight, confidence,
    accuracy, n}]} (empty bins left out)."""
    p = np.asarray(confidence, dtype=np.float64)
    y = np.asarray(correct, dtype=np.float64)
    w = np.ones_like(p) if weights is None else np.asarray(weights, dtype=np.float64)
    ok = np.isfinite(p)
    p, y, w = p[ok], y[ok], w[ok]
    idx = np.minimum((p * bins).astype(int), bins - 1)
    out, ece = [], 0.0
    for b in range(bins):
        m = idx == b
        if not m.any():
            continue
        conf = float(np.average(p[m], weights=w[m]))
        acc = float(np.average(y[m], weights=w[m]))
        share = float(w[m].sum() / w.sum())
        ece += share * abs(conf - acc)
        out.append(
            {
                "lo": b / bins,
                "hi": (b + 1) / bins,
                "weight": share,
                "confidence": conf,
                "accuracy": acc,
                "n": int(m.sum()),
            }
        )
    return {"ece": float(ece), "bins": out}


def reliability_diagram(curves: dict[str, dict], path: str | Path) -> Path:
    """Save a reliability diagram: per label, each bin's accuracy against its mean confidence
    (`reliability` outputs), with the diagonal of perfect calibration. Returns the PNG path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 6), dpi=110)
    ax.plot([0, 1], [0, 1], color="0.6", linestyle="--", linewidth=1, label="perfect")
    for label, rel in curves.items():
        xs = [b["confidence"] for b in rel["bins"]]
        ys = [b["accuracy"] for b in rel["bins"]]
        ax.plot(xs, ys, marker="o", markersize=4, label=f"{label} (ECE {rel['ece']:.3f})")
    ax.set_xlabel("confidence of the best singer")
    ax.set_ylabel("share right (known singer, best singer correct)")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_title("Open set: reliability of the confidence")
    ax.legend(fontsize=7, loc="upper left")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def _f(x: float | None) -> str:
    return "–" if x is None else f"{x:.3f}"


def _op(p: dict | None) -> str:
    return "–" if not p else f"{_f(p['false_alarm_rate'])} / {_f(p['identification_rate'])}"


def openset_markdown(result: dict) -> list[str]:
    """The open-set tables of an `evaluate` result (empty when not evaluated)."""
    from model.domains import SCENARIO_TITLES

    cells = [
        (m["name"], SCENARIO_TITLES.get(s, s), f)
        for m in result["models"]
        for s, f in (m.get("open_set") or {}).items()
        if f
    ]
    if not cells:
        return []
    cfg = result["settings"]["open_set"]
    rows = []
    for name, title, f in cells:
        c = f["clips"]
        rows.append(
            f"| {name} | {title} | {_f(c['raw']['eer'])} / {_f(c['snorm']['eer'])} | "
            f"{_f(c['raw']['min_dcf'])} / {_f(c['snorm']['min_dcf'])} | "
            f"{_f(c['raw']['dir@0.01'])} / {_f(c['snorm']['dir@0.01'])} | "
            f"{_f(c['raw']['dir@0.05'])} / {_f(c['snorm']['dir@0.05'])} | "
            f"{_op(c['operating_point'])} | {_op(c['likely_point'])} | "
            f"{_f(c['reliability']['ece'])} |"
        )
    lengths = [
        f"| {name} | {title} | {q} | {g['n_impostor']} / {g['n_known']} | "
        f"{_op(g['operating_point'])} | {_op(g['likely_point'])} | {_f(g['reliability']['ece'])} |"
        for name, title, f in cells
        for q, g in (("all lengths", f.get("composed")), (">= 10 s of singing", f.get("long")))
        if g
    ]
    bands = [
        f"| {name} | {title} | {band} | {p['n_impostor']} / {p['n_known']} | {_op(p)} |"
        for name, title, f in cells
        for band, p in (f.get("by_length") or {}).items()
    ]
    out = [
        "",
        f"Open set: impostors {', '.join(cfg['impostors'])} (every clip); calibration "
        f"impostors {', '.join(cfg['calibration_impostors'])}, leave-one-singer-out rotations"
        + (
            f" and {n} other recordings"
            if (n := result["dataset"].get("n_calibration_impostor_clips"))
            else ""
        )
        + f"; score {cfg['norm']}; 'known' at {cfg['target_fa']:g} false alarm, 'known or "
        f"likely' at {cfg['likely_fa']:g}; confidence prior {cfg['prior_known']:g}. Pairs are "
        "raw / s-norm; DIR = detection and identification rate at that false alarm (oracle "
        "threshold); FA / identified: impostor queries accepted / known queries accepted and "
        "right, at the calibration's thresholds; ECE of the confidence of the best singer, "
        "known and impostor queries weighted to the prior.",
        "",
        "| model | scenario | EER | minDCF | DIR@1% | DIR@5% | known: FA / identified | "
        "known or likely | ECE |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
        *rows,
    ]
    if lengths:
        out += [
            "",
            "Queries of several lengths (the evaluation recordings cut into runs of 1 to 32 "
            "segments of 3 s, and whole):",
            "",
            "| model | scenario | queries | impostor / known | known: FA / identified | "
            "known or likely | ECE |",
            "|---|---|---|---:|---:|---:|---:|",
            *lengths,
            "",
            "| model | scenario | segments | impostor / known | known: FA / identified |",
            "|---|---|---|---:|---:|",
            *bands,
        ]
    return out
