"""Fit a checkpoint's score calibration (`python -m model calibrate`): research code.

Data: an evaluation set (MIR-1K recipe or manifest). Known singers' model clips are the
catalogue, their query clips the target queries; every clip of the `impostors` is an impostor
query (without impostors, leave-one-singer-out rotations make them). Queries are runs
of consecutive segments of a recording (`model.evaluation.lengths`), so that each length tier
is calibrated on queries of its length. One calibration per (query domain, model
domain) pair and length tier; see `model.evaluation.openset.fit_tiers`.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from model.calibration import DEFAULT_COHORT_TOP_K, Calibration
from model.domains import DOMAINS
from model.evaluation.lengths import compose_queries
from model.evaluation.openset import fit_calibration
from model.evaluation.runner import collect_segments
from model.evaluation.splits import EvalClip
from model.vectors import normalized_mean


def calibrate(
    clips: Sequence[EvalClip],
    checkpoint: str | Path,
    *,
    impostors: Sequence[str] = (),
    norm: str = "raw",
    dataset: str = "",
    cache_dir: str | Path | None = None,
    all_segments: bool = False,
    device: str | None = None,
    workers: int = 1,
    progress: bool = False,
    top_k: int = DEFAULT_COHORT_TOP_K,
) -> Calibration:
    """Embed the clips (cached) and fit the calibration of `checkpoint`. Raises ValueError
    when a pair has too few trials."""
    clips = list(clips)
    imp = set(impostors)
    unknown = imp - {c.singer for c in clips}
    if unknown:
        raise ValueError(f"impostors not in the data: {', '.join(sorted(unknown))}")
    ckpt_id, segments, failures = collect_segments(
        clips,
        checkpoint,
        cache_dir=cache_dir,
        all_segments=all_segments,
        device=device,
        workers=workers,
        progress=progress,
    )
    pairs = {}
    for qd in DOMAINS:
        for md in DOMAINS:
            t = [
                i
                for i in sorted(segments[md])
                if clips[i].role == "model" and clips[i].singer not in imp
            ]
            known = {clips[i].singer for i in t}
            q = [
                i
                for i in sorted(segments[qd])
                if (clips[i].role == "query" and clips[i].singer in known)
                or clips[i].singer in imp
                or clips[i].role == "impostor"
            ]
            if len(known) < 3 or not q:
                continue
            pairs[(qd, md)] = (
                compose_queries(clips, segments[qd], q),
                np.stack([normalized_mean(segments[md][i]) for i in t]),
                [clips[i].singer for i in t],
            )
    fitted_on = {
        "dataset": dataset,
        "impostors": sorted(imp) or "leave-one-singer-out",
        "impostor_recordings": len({c.singer for c in clips if c.role == "impostor"}),
        "n_clips": len(clips),
        "n_failed_renderings": len(failures),
        "segments": "all" if all_segments else "voiced (the service's selection)",
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    return fit_calibration(pairs, ckpt_id, fitted_on, norm, top_k)
