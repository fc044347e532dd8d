"""Every figure of issue #34's "Done when", in one run, for any checkpoint.

    python bench/bench_verdict.py [--checkpoint model/weights/cross-default.pt]
        [--calibration FILE] [--trials 200] [--json docs/benchmarks/verdict.json]

Protocol: docs/open-set.md (MIR-1K cross-song split; the default model's 5 held-out singers
are the impostors, never in a catalogue; the known singers' query clips split by song into a
calibration half and an evaluation half). Embeddings come from the evaluation cache
(`python -m model evaluate` / `calibrate` fill it; a new checkpoint is embedded once, about
25 min on 2 busy cores). Per scenario (Mono2Mono, Mix2Mix, Mono2Mix):

1. oracle DIR at 1 % false alarm on clips, raw cosine and the shipped scoring (AS-norm against
   the catalogue and the cohort shipped beside the checkpoint): the table of docs/open-set.md;
2. the calibrated verdict on queries of >= 10 s of singing (>= 4 segments; a query joins
   consecutive clips of one song): impostors answered "known" (false alarm) and known
   singers answered "known" and right (identified), and the same for "known or likely";
3. the ECE of `confidence` (known and impostor queries weighted 1:1, as the calibration's
   prior), on clips and on queries of every length;

each with (a) the calibration fitted on the protocol's calibration half (ariel, stool, the
a cappella takes and leave-one-singer-out rotations as impostors: honest, it never saw the
evaluated impostors) and (b) the shipped calibration file, which `python -m model calibrate`
fits with the 5 held-out singers among its impostors (so (b) measures it on singers it saw).

4. The issue's own test, repeated `--trials` times: 8 of the 11 known singers' finished songs
   (mixed renderings of their model clips, one track per song) are the catalogue; 24 karaoke
   takes of other songs (mono query clips, 4-13 s; 3 per singer) and 15 impostor takes (3 of
   each held-out singer) are identified as the service does (AS-norm, `read_scores` at
   SINGER_TARGET_FALSE_ALARM 0.01 and SINGER_LIKELY_FALSE_ALARM, the service's defaults or
   --likely-false-alarm). Reported: the right
   singer accepted ("known" or "likely" and right) of 24, impostors accepted of 15 (mean,
   10th and 90th percentile over trials) and the share of trials meeting both targets
   (>= 12 of 24, <= 3 of 15).

5. Planted outliers: a held-out singer's songs with another held-out singer's song planted
   (1,000 draws per domain): share flagged by the shipped outlier bar, and of own songs.

Writes JSON (--json) and prints a summary. Not part of the test suite.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from model.calibration import (
    Calibration,
    PairCalibration,
    find_calibration,
    load_calibration,
    pair_key,
    read_scores,
)
from model.cli.evaluate import take_impostors
from model.cli.options import HELD_OUT_SINGERS, VALIDATION_SINGERS
from model.domains import SCENARIO_TITLES, SCENARIOS
from model.evaluation.cache import default_cache_dir
from model.evaluation.calibrate import recordings_by_singer
from model.evaluation.enrolment_fit import planted_trials
from model.evaluation.openset import OpenSetConfig, open_set_scenario, score_queries
from model.evaluation.runner import collect_segments
from model.evaluation.splits import EvalClip, mir1k_split
from model.shared import shared_dir
from model.vectors import normalized_mean
from service.settings import Settings

#: The service's defaults (SINGER_TARGET_FALSE_ALARM, SINGER_LIKELY_FALSE_ALARM).
TARGET_FA, LIKELY_FA = (
    Settings.model_fields[name].default for name in ("target_false_alarm", "likely_false_alarm")
)
#: The issue's test: catalogue singers, takes per singer, impostor takes per held-out singer.
N_CATALOGUE, TAKES_PER_SINGER, IMPOSTOR_TAKES = 8, 3, 3


def summary(got: dict) -> dict:
    """The "Done when" figures of one `open_set_scenario` result."""
    long, clips, composed = got["long"], got["clips"], got["composed"]
    return {
        "dir@1%_clips_raw": clips["raw"]["dir@0.01"],
        "dir@1%_clips_snorm": clips["snorm"]["dir@0.01"],
        "long_known": long["operating_point"],
        "long_known_or_likely": long["likely_point"],
        "clips_known": clips["operating_point"],
        "ece_clips": clips["reliability"]["ece"],
        "ece_all_lengths": composed["reliability"]["ece"],
        "ece_long": long["reliability"]["ece"],
        "reliability_all_lengths": composed["reliability"]["bins"],
        "firm_answer_segments": got["calibration"]["firm_answer_segments"],
    }


def issue_test(
    clips: list[EvalClip],
    vectors: dict[str, dict[int, np.ndarray]],
    segments: dict[str, dict[int, np.ndarray]],
    calibrations: dict[str, Calibration],
    trials: int,
    seed: int = 0,
    likely_fa: float = LIKELY_FA,
) -> dict:
    """The issue's 8-singer test (module docstring, 4), under each calibration."""
    rng = np.random.default_rng(seed)
    known = sorted(
        {
            c.singer
            for c in clips
            if c.role == "model" and c.singer not in {*HELD_OUT_SINGERS, *VALIDATION_SINGERS}
        }
    )
    songs: dict[str, dict[str, list[int]]] = {}
    for i, c in enumerate(clips):
        if c.role == "model" and c.singer in known and i in segments["mixed"]:
            songs.setdefault(c.singer, {}).setdefault(c.song or c.clip_id, []).append(i)
    song_vecs = {
        s: [
            normalized_mean(np.concatenate([segments["mixed"][i] for i in sorted(members)]))
            for _, members in sorted(by_song.items())
        ]
        for s, by_song in songs.items()
    }
    takes = {
        s: [
            i
            for i, c in enumerate(clips)
            if c.singer == s and c.role == "query" and len(segments["mono"].get(i, ()))
        ]
        for s in [*known, *HELD_OUT_SINGERS]
    }
    cohort_idx = [
        i
        for i, c in enumerate(clips)
        if c.role == "cohort" and i in vectors["mono"] and i in vectors["mixed"]
    ]
    out: dict = {}
    for name, cal in calibrations.items():
        pair = cal.pair("mono", "mixed")
        if pair is None:
            continue
        norm = cal.norm_of("mono", "mixed")
        cohort = None
        if norm == "snorm" and cohort_idx:
            cohort = (
                np.stack([vectors["mixed"][i] for i in cohort_idx]),
                np.stack([vectors["mono"][i] for i in cohort_idx]),
            )
        right, impostors_in = [], []
        trial_rng = np.random.default_rng(rng.integers(2**32))
        for _ in range(trials):
            chosen = sorted(trial_rng.choice(known, N_CATALOGUE, replace=False).tolist())
            t_vecs = np.stack([v for s in chosen for v in song_vecs[s]])
            t_singers = [s for s in chosen for _ in song_vecs[s]]
            q_idx = [
                int(i) for s in chosen for i in trial_rng.choice(takes[s], TAKES_PER_SINGER, False)
            ] + [
                int(i)
                for s in HELD_OUT_SINGERS
                for i in trial_rng.choice(takes[s], IMPOSTOR_TAKES, False)
            ]
            sc = score_queries(
                np.stack([vectors["mono"][i] for i in q_idx]),
                [clips[i].singer for i in q_idx],
                t_vecs,
                t_singers,
                cal.cohort_top_k,
                cohort,
            )
            scores = sc.get(norm)
            accepted, correct = [], []
            for row, i, truth in zip(scores, q_idx, sc.truth, strict=True):
                order = np.argsort(-np.where(np.isfinite(row), row, -np.inf))
                reading = read_scores(
                    row[order],
                    len(sc.names),
                    len(segments["mono"][i]),
                    pair,
                    TARGET_FA,
                    likely_fa,
                )
                accepted.append(reading.verdict in ("known", "likely"))
                correct.append(int(order[0]) == int(truth))
            accepted_arr, correct_arr = np.array(accepted), np.array(correct)
            is_known = sc.truth >= 0
            right.append(int((accepted_arr & correct_arr)[is_known].sum()))
            impostors_in.append(int(accepted_arr[~is_known].sum()))
        r, m = np.array(right), np.array(impostors_in)
        out[name] = {
            "trials": trials,
            "right_accepted_of_24": {
                "mean": float(r.mean()),
                "p10": float(np.percentile(r, 10)),
                "p90": float(np.percentile(r, 90)),
            },
            "impostors_accepted_of_15": {
                "mean": float(m.mean()),
                "p10": float(np.percentile(m, 10)),
                "p90": float(np.percentile(m, 90)),
            },
            "share_of_trials_meeting_both": float(((r >= 12) & (m <= 3)).mean()),
        }
    return out


def planted_outliers(
    clips: list[EvalClip], segments: dict[str, dict[int, np.ndarray]], shipped: Calibration
) -> dict:
    """Per domain: one held-out singer's songs with a song of another held-out singer planted
    (singers the calibration's outlier bar was not fitted on), 1000 draws: share of planted
    songs flagged by the shipped bar, and of the singer's own songs."""
    out = {}
    for domain, bar in shipped.enrolment.items():
        songs = recordings_by_singer(clips, segments[domain], set(HELD_OUT_SINGERS))
        genuine, planted = planted_trials(songs, statistic=bar.statistic)
        out[domain] = {
            "outlier_bar": bar.outlier_below,
            "statistic": bar.statistic,
            "planted_flagged": float(np.mean(planted < bar.outlier_below)),
            "own_flagged": float(np.mean(genuine < bar.outlier_below)),
            "trials": len(planted),
        }
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", type=Path, default=REPO / "model/weights/cross-default.pt")
    p.add_argument(
        "--calibration",
        type=Path,
        help="shipped calibration file (default: the one beside the checkpoint)",
    )
    p.add_argument("--trials", type=int, default=200, help="draws of the issue's test")
    p.add_argument(
        "--likely-false-alarm",
        type=float,
        default=LIKELY_FA,
        help="the 'likely' operating point (SINGER_LIKELY_FALSE_ALARM)",
    )
    p.add_argument("--workers", type=int, default=1, help="decoding threads when embedding")
    p.add_argument("--json", type=Path, help="write the figures here")
    p.add_argument("--markdown", action="store_true", help="also print docs/open-set.md's tables")
    args = p.parse_args()

    ns = argparse.Namespace(calibration_takes=True, cohort_takes=True)
    clips = mir1k_split(shared_dir() / "data" / "mir1k") + take_impostors(ns)
    t0 = time.perf_counter()
    ckpt_id, segments, failures = collect_segments(
        clips, args.checkpoint, cache_dir=default_cache_dir(), workers=args.workers, progress=True
    )
    embed_s = time.perf_counter() - t0
    vectors = {
        d: {i: normalized_mean(s) for i, s in by.items() if len(s)} for d, by in segments.items()
    }
    shipped = (
        load_calibration(args.calibration, ckpt_id)
        if args.calibration
        else find_calibration(args.checkpoint, ckpt_id)
    )
    if shipped is None:
        print(f"no calibration for checkpoint {ckpt_id}", file=sys.stderr)
        return 2
    result: dict = {
        "checkpoint": str(args.checkpoint),
        "checkpoint_id": ckpt_id,
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": " ".join(["python", *sys.argv]),
        "likely_false_alarm": args.likely_false_alarm,
        "shipped_calibration": {"norm": shipped.norms(), "fitted_on": shipped.fitted_on},
        "n_failed_renderings": len(failures),
        "embed_s": round(embed_s, 1),
        "scenarios": {},
    }
    protocol_pairs = {}
    for s, (qd, md) in SCENARIOS.items():
        cfg = OpenSetConfig(
            tuple(HELD_OUT_SINGERS),
            tuple(VALIDATION_SINGERS),
            TARGET_FA,
            shipped.norm_of(qd, md),
            shipped.cohort_top_k,
            args.likely_false_alarm,
            shipped.prior_known,
        )
        args_s = (clips, vectors[qd], vectors[md], cfg, segments[qd])
        by_clip = open_set_scenario(*args_s)
        fitted = open_set_scenario(*args_s, t_segments=segments[md])
        ship_pair = shipped.pairs.get(pair_key(qd, md))
        applied = (
            open_set_scenario(*args_s, pair=ship_pair, t_segments=segments[md])
            if ship_pair
            else None
        )
        if fitted is None or by_clip is None:
            continue
        protocol_pairs[pair_key(qd, md)] = fitted[0]["calibration"]
        result["scenarios"][SCENARIO_TITLES[s]] = {
            "clip_catalogue": summary(by_clip[0]),
            "protocol_calibration": summary(fitted[0]),
            "shipped_calibration": summary(applied[0]) if applied else None,
        }
    protocol = replace(
        shipped, pairs={k: PairCalibration.from_dict(v) for k, v in protocol_pairs.items()}
    )
    result["issue_test"] = issue_test(
        clips,
        vectors,
        segments,
        {"protocol_calibration": protocol, "shipped_calibration": shipped},
        args.trials,
        likely_fa=args.likely_false_alarm,
    )
    result["planted_outliers"] = planted_outliers(clips, segments, shipped)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1))
    print_summary(result)
    if args.markdown:
        print(markdown(result))
    return 0


def print_summary(result: dict) -> None:
    print(f"checkpoint {result['checkpoint_id']} ({result['date']})")
    for title, by_cal in result["scenarios"].items():
        for cal, f in by_cal.items():
            if f is None:
                continue
            lk, ll = f["long_known"], f["long_known_or_likely"]
            print(
                f"{title:9s} {cal:21s} DIR@1% clips raw {f['dir@1%_clips_raw']:.3f} "
                f"s-norm {f['dir@1%_clips_snorm']:.3f} | >=10 s known: FA "
                f"{lk['false_alarm_rate']:.3f} identified {lk['identification_rate']:.3f}; "
                f"known|likely: FA {ll['false_alarm_rate']:.3f} identified "
                f"{ll['identification_rate']:.3f} | ECE clips {f['ece_clips']:.3f} all "
                f"{f['ece_all_lengths']:.3f} >=10 s {f['ece_long']:.3f}"
            )
    for domain, f in result["planted_outliers"].items():
        print(
            f"planted outlier ({domain}, held-out singers): {100 * f['planted_flagged']:.0f}% "
            f"flagged, own songs {100 * f['own_flagged']:.1f}% (bar {f['outlier_bar']:.3f})"
        )
    for cal, f in result["issue_test"].items():
        r, m = f["right_accepted_of_24"], f["impostors_accepted_of_15"]
        print(
            f"issue test ({cal}, {f['trials']} trials): right accepted {r['mean']:.1f}/24 "
            f"(p10 {r['p10']:.0f}, p90 {r['p90']:.0f}), impostors accepted {m['mean']:.2f}/15 "
            f"(p10 {m['p10']:.0f}, p90 {m['p90']:.0f}); both targets met in "
            f"{100 * f['share_of_trials_meeting_both']:.0f}% of trials"
        )


def markdown(result: dict) -> str:
    """The figures as the tables of docs/open-set.md."""

    def pct(x: float | None) -> str:
        return "-" if x is None else f"{100 * x:.1f} %"

    rows = [
        "| scenario | calibration | DIR@1 % clips, raw / AS-norm | >= 10 s: known, FA / "
        "identified | >= 10 s: known or likely, FA / identified | ECE clips / all lengths / "
        ">= 10 s |",
        "|---|---|---:|---:|---:|---:|",
    ]
    names = {
        "clip_catalogue": "protocol, catalogue of clips (the old table's)",
        "protocol_calibration": "protocol, catalogue of songs",
        "shipped_calibration": "shipped file, catalogue of songs",
    }
    for title, by_cal in result["scenarios"].items():
        for cal, f in by_cal.items():
            if f is None:
                continue
            lk, ll = f["long_known"], f["long_known_or_likely"]
            rows.append(
                f"| {title} | {names[cal]} | {f['dir@1%_clips_raw']:.3f} / "
                f"{f['dir@1%_clips_snorm']:.3f} | {pct(lk['false_alarm_rate'])} / "
                f"{lk['identification_rate']:.3f} | {pct(ll['false_alarm_rate'])} / "
                f"{ll['identification_rate']:.3f} | {f['ece_clips']:.3f} / "
                f"{f['ece_all_lengths']:.3f} / {f['ece_long']:.3f} |"
            )
    rows += [
        "",
        "| issue test | right singer accepted (of 24) | impostors accepted (of 15) | "
        "draws meeting both |",
        "|---|---:|---:|---:|",
    ]
    for cal, f in result["issue_test"].items():
        r, m = f["right_accepted_of_24"], f["impostors_accepted_of_15"]
        rows.append(
            f"| {names[cal]} | {r['mean']:.1f} ({r['p10']:.0f}-{r['p90']:.0f}) | "
            f"{m['mean']:.2f} ({m['p10']:.0f}-{m['p90']:.0f}) | "
            f"{100 * f['share_of_trials_meeting_both']:.0f} % of {f['trials']} |"
        )
    return "\n".join(rows)


if __name__ == "__main__":
    raise SystemExit(main())
