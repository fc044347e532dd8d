"""Turn an `evaluate(...)` result into `results.json` and a Markdown report (`results.md`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from model.domains import SCENARIO_TITLES
from model.evaluation.openset_figures import openset_markdown
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
    lines += openset_markdown(result)
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


def write_report(result: dict, out_dir: str | Path) -> tuple[Path, Path]:
    """Write `results.json` (every figure) and `results.md`; returns their paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path = atomic_write_text(out_dir / "results.json", json.dumps(result, indent=2) + "\n")
    md_path = atomic_write_text(out_dir / "results.md", markdown(result))
    return json_path, md_path
