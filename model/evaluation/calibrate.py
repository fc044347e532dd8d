"""Fit a checkpoint's open-set calibration (`python -m model calibrate`): research code.

Data: an evaluation set (MIR-1K recipe or manifest). Known singers' model clips, joined per
song (one track per song, as the service's catalogue holds whole songs), are the catalogue,
their query clips the target queries; every clip of the `impostors` is an impostor query,
and leave-one-singer-out rotations add the known singers' own (see
`model.evaluation.openset`). Queries are runs of consecutive segments of a recording
(`model.evaluation.lengths`), so that each length tier is calibrated on queries of its
length. Clips of role "cohort" (the training takes) become the s-norm cohort shipped beside
the checkpoint. Per domain, the known singers' recordings (clips of one song joined) fit the
outlier bar of singer models (`model.evaluation.enrolment_fit`).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from model.calibration import Calibration
from model.domains import DOMAINS
from model.evaluation.enrolment_fit import DEFAULT_FALSE_FLAG_RATE, fit_enrolment
from model.evaluation.lengths import compose_queries
from model.evaluation.openset import fit_calibration, song_tracks
from model.evaluation.runner import collect_segments
from model.evaluation.splits import ROLES, EvalClip
from model.score_norm import DEFAULT_COHORT_TOP_K
from model.vectors import normalized_mean


def recordings_by_singer(
    clips: Sequence[EvalClip], segments: dict[int, np.ndarray], singers: set[str]
) -> dict[str, list[np.ndarray]]:
    """singer -> unit vector of each of their recordings (a song's clips, joined in clip
    order; a clip without a song alone), for the `singers` given."""
    groups: dict[tuple[str, str], list[int]] = defaultdict(list)
    for i, seg in segments.items():
        c = clips[i]
        if c.singer in singers and c.role in ROLES and len(seg):
            groups[(c.singer, c.song or c.clip_id)].append(i)
    out: dict[str, list[np.ndarray]] = defaultdict(list)
    for (singer, _), members in sorted(groups.items()):
        members.sort(key=lambda i: clips[i].clip_id)
        out[singer].append(normalized_mean(np.concatenate([segments[i] for i in members])))
    return dict(out)


def calibrate(
    clips: Sequence[EvalClip],
    checkpoint: str | Path,
    *,
    impostors: Sequence[str] = (),
    norm: str = "auto",
    dataset: str = "",
    cache_dir: str | Path | None = None,
    all_segments: bool = False,
    device: str | None = None,
    workers: int = 1,
    progress: bool = False,
    top_k: int = DEFAULT_COHORT_TOP_K,
    prior_known: float = 0.5,
    false_flag_rate: float = DEFAULT_FALSE_FLAG_RATE,
) -> Calibration:
    """Embed the clips (cached) and fit the calibration of `checkpoint`; `norm`: "raw",
    "snorm" or "auto" (each pair the score that identifies more, `fit_pair`). Raises
    ValueError when a pair has too few queries."""
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
    # The cohort: voices in both renderings, so that each side of a pair has its own.
    c_idx = [
        i
        for i in sorted(segments[DOMAINS[0]])
        if clips[i].role == "cohort" and all(len(segments[d].get(i, ())) for d in DOMAINS)
    ]
    cohort = (
        {d: np.stack([normalized_mean(segments[d][i]) for i in c_idx]) for d in DOMAINS}
        if c_idx
        else {}
    )
    pairs = {}
    known_singers: set[str] = set()
    for qd in DOMAINS:
        for md in DOMAINS:
            t = [
                i
                for i in sorted(segments[md])
                if clips[i].role == "model" and clips[i].singer not in imp
            ]
            known = {clips[i].singer for i in t}
            known_singers |= known
            q = [
                i
                for i in sorted(segments[qd])
                if (clips[i].role == "query" and clips[i].singer in known)
                or clips[i].singer in imp
                or clips[i].role == "impostor"
            ]
            if len(known) < 3 or not q:
                continue
            # The catalogue as the service holds it: one track per song (joined clips).
            pairs[(qd, md)] = (
                compose_queries(clips, segments[qd], q),
                *song_tracks(clips, segments[md], t),
            )
    enrolment = {}
    for d in DOMAINS:
        try:
            recordings = recordings_by_singer(clips, segments[d], known_singers)
            enrolment[d] = fit_enrolment(recordings, false_flag_rate)
        except ValueError:  # too few recordings in this domain: no outlier bar there
            continue
    fitted_on = {
        "dataset": dataset,
        "impostors": sorted(imp) or "leave-one-singer-out only",
        "impostor_recordings": len({c.singer for c in clips if c.role == "impostor"}),
        "cohort_recordings": len(c_idx) if norm != "raw" else 0,
        "n_clips": len(clips),
        "n_failed_renderings": len(failures),
        "segments": "all" if all_segments else "voiced (the service's selection)",
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    return fit_calibration(pairs, ckpt_id, fitted_on, norm, top_k, cohort, enrolment, prior_known)
