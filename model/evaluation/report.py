"""Turn an `evaluate(...)` result into `results.json` and a Markdown report (`results.md`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from model.domains import SCENARIO_TITLES
from model.files import atomic_write_text


def _fmt(x: object) -> str:
    if isinstance(x, list | tuple):  # an interval
        return f"{x[0]:.3f}–{x[1]:.3f}"
    return "–" if x is None else f"{x:.3f}"


def _get(figs: dict | None, task: str, key: str) -> Any:
    return None if not figs else figs[task].get(key)


def _table(result: dict, title: str, columns: list[tuple[str, str, str]]) -> list[str]:
    """One row per model, one (label, task, figure key) column group per scenario."""
    scenarios = result["settings"]["scenarios"]
    heads = [SCENARIO_TITLES.get(s, s) for s in scenarios]
    lines = [
        title,
        "",
        "| model | " + " | ".join(f"{h} {c[0]}" for h in heads for c in columns) + " |",
        "|---|" + "---:|" * (len(heads) * len(columns)),
    ]
    for m in result["models"]:
        cells = [
            _fmt(_get(m["scenarios"].get(s), task, key))
            for s in scenarios
            for _, task, key in columns
        ]
        lines.append(f"| {m['name']} | " + " | ".join(cells) + " |")
    return lines


def markdown(result: dict) -> str:
    """The report: data set line, Task 1 and Task 2 tables, SNR sweep, plots, failures."""
    k = result["settings"]["k"]
    ds = result["dataset"]
    header = (
        f"Data: {ds.get('name') or 'evaluation set'}: {ds['n_singers']} singers, "
        f"{ds['n_model_clips']} model clips, {ds['n_query_clips']} query clips"
        + (f"; {len(result['failures'])} rendering(s) skipped" if result["failures"] else "")
        + "."
    )
    protocol = result["settings"].get("protocol", "")
    if protocol:
        header += f" Protocol: {protocol}."
    lines = [header, ""]
    lines += _table(
        result,
        "Task 1, singer identification (top-1 with its bootstrap 95% interval over queries / "
        "top-5 accuracy)",
        [
            ("top-1", "singer_id", "top1"),
            ("top-1 95% CI", "singer_id", "top1_ci95"),
            ("top-5", "singer_id", "top5"),
        ],
    )
    lines += [""]
    lines += _table(
        result,
        f"Task 2, query-by-singer (precision@{k} / recall@{k} / mAP)",
        [
            (f"P@{k}", "query_by_singer", f"precision@{k}"),
            (f"R@{k}", "query_by_singer", f"recall@{k}"),
            ("mAP", "query_by_singer", "mAP"),
        ],
    )
    sweeps = [m for m in result["models"] if m.get("snr_sweep")]
    if sweeps:
        snrs = list(sweeps[0]["snr_sweep"])
        lines += [
            "",
            "SNR sweep, singer-ID top-1 by vocal-to-accompaniment ratio (mixed side re-mixed)",
            "",
            "| model | scenario | " + " | ".join(f"{x} dB" for x in snrs) + " |",
            "|---|---|" + "---:|" * len(snrs),
        ]
        for m in sweeps:
            for s in m["snr_sweep"][snrs[0]]:
                cells = [_fmt(_get(m["snr_sweep"][x][s], "singer_id", "top1")) for x in snrs]
                lines.append(
                    f"| {m['name']} | {SCENARIO_TITLES.get(s, s)} | " + " | ".join(cells) + " |"
                )
    lines += _open_set_table(result)
    if result.get("plots"):
        lines += ["", "Plots: " + ", ".join(f"`{Path(p).name}`" for p in result["plots"].values())]
    if result["failures"]:
        lines += ["", "Skipped renderings:", ""]
        lines += [
            f"- {f['clip']} ({f['rendering']}): {f['error']}" for f in result["failures"][:50]
        ]
        if len(result["failures"]) > 50:
            lines.append(f"- ... and {len(result['failures']) - 50} more (see results.json)")
    return "\n".join(lines) + "\n"


def _open_set_table(result: dict) -> list[str]:
    """Open-set figures per model and scenario (empty when not evaluated)."""
    rows = []
    for m in result["models"]:
        for s, f in (m.get("open_set") or {}).items():
            if not f:
                continue
            op = f.get("operating_point", {})
            rows.append(
                f"| {m['name']} | {SCENARIO_TITLES.get(s, s)} | {_fmt(f['raw']['eer'])} / "
                f"{_fmt(f['snorm']['eer'])} | {_fmt(f['raw']['min_dcf'])} / "
                f"{_fmt(f['snorm']['min_dcf'])} | {_fmt(f['raw']['dir@0.01'])} / "
                f"{_fmt(f['snorm']['dir@0.01'])} | {_fmt(f['raw']['dir@0.05'])} / "
                f"{_fmt(f['snorm']['dir@0.05'])} | {_fmt(op.get('false_alarm_rate'))} | "
                f"{_fmt(op.get('detection_rate'))} | {_fmt(op.get('identification_rate'))} |"
            )
    if not rows:
        return []
    cfg = result["settings"]["open_set"]
    by_length = [
        f"| {m['name']} | {SCENARIO_TITLES.get(s, s)} | {band} | {b['n_impostor']} / "
        f"{b['n_known']} | {_fmt(b['clips']['false_alarm_rate'])} / "
        f"{_fmt(b['tiers']['false_alarm_rate'])} | {_fmt(b['clips']['identification_rate'])} / "
        f"{_fmt(b['tiers']['identification_rate'])} |"
        for m in result["models"]
        for s, f in (m.get("open_set") or {}).items()
        if f
        for band, b in (f.get("by_length") or {}).items()
    ]
    if by_length:
        by_length = [
            "",
            "By query length (segments of 3 s; the evaluation recordings cut into runs of "
            "segments): the operating point of a calibration fitted on clips as they are / of "
            "one with length tiers (what `python -m model calibrate` fits).",
            "",
            "| model | scenario | segments | queries impostor / known | FA at op. | "
            "identified at op. |",
            "|---|---|---|---:|---:|---:|",
            *by_length,
        ]
    return [
        "",
        f"Open set: impostors {', '.join(cfg['impostors'])} (every clip); calibration "
        f"impostors {', '.join(cfg['calibration_impostors']) or 'leave-one-singer-out'}"
        # counted once, in the data set summary (splits.split_summary)
        + (
            f" + {n} other recordings"
            if (n := result["dataset"].get("n_calibration_impostor_clips"))
            else ""
        )
        + "; "
        f"operating point: {cfg['norm']} score, target false alarm {cfg['target_fa']:g}. "
        "Pairs are raw / s-norm; DIR = detection and identification rate at that false alarm "
        "(oracle threshold).",
        "",
        "| model | scenario | EER | minDCF | DIR@1% | DIR@5% | FA at op. | detection at op. "
        "| identified at op. |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
        *rows,
        *by_length,
    ]


def write_report(result: dict, out_dir: str | Path) -> tuple[Path, Path]:
    """Write `results.json` (every figure) and `results.md`; returns their paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path = atomic_write_text(out_dir / "results.json", json.dumps(result, indent=2) + "\n")
    md_path = atomic_write_text(out_dir / "results.md", markdown(result))
    return json_path, md_path
