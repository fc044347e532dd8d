"""`python -m model evaluate --recipe studio`: singer retrieval on studio mixes nobody trained on.

The held-out MIR-1K singers (abjones, bobon, geniusturtle, khair, yifen) and the held-out
a cappella takes (`split_acappella`'s 20 %: 57 voices), produced, mixed and mastered by the
studio-mix generator (`model.training.studio_generator`, split "heldout": grooves and the
soundfont no training mix used) at fixed vocal-to-accompaniment ratios. The mixes are made
on first use under `--studio-dir` (content-addressed: a rerun reuses them).

Three sets, each evaluated by `model.evaluation.runner.evaluate` at each VAR:

- mir1k: the cross-song split of the five singers (`mir1k_split`): a query clip's vocal stem
  (mono) or its mix against the singer models of their other songs' mixes;
- acappella: each take's first half (dry, or its mix) against the second halves' mixes, one
  identity per take;
- pooled: both in one catalogue of 62 voices (chance 1/62 for a take, 1/62 for a singer).

Each row gives Mono2Mix (a vocal take against finished songs, the product's main case),
Mix2Mix and Mono2Mono top-1 with bootstrap 95 % intervals. And per voice detector and VAR,
the share of the mixes the service's selection refuses as `mixed` (it holds singing, so
every refusal is a false one) and flags `low_voice`: the mixes above, and 100 of the MIR-1K
ones again at the ends of the training range, -12 and +3 dB (`manifest-extremes.csv`).
"""

from __future__ import annotations

import argparse
import json
import logging
from collections.abc import Sequence
from pathlib import Path

from model.evaluation.splits import EvalClip, mir1k_split
from model.manifest import ManifestRow

log = logging.getLogger(__name__)

#: the held-out mixes' seed and band tracks (one fixed set for every run)
STUDIO_SEED = 0
STUDIO_BANDS = 24
#: VARs of the retrieval figures, and those the detector's refusals are counted at (dB)
EVAL_VARS_DB = (-10.0, -5.0, 0.0)
EXTREME_VARS_DB = (-12.0, 3.0)
#: the first sources (MIR-1K clips of the held-out singers) mixed at EXTREME_VARS_DB too
EXTREME_SOURCES = 100
SETS = ("mir1k", "acappella", "pooled")


def heldout_rows(
    mix_dir: str | Path,
    data_dir: str | Path,
    var_db: Sequence[float] = EVAL_VARS_DB,
    limit: int = 0,
    workers: int = 2,
    progress: bool = True,
    manifest_name: str = "manifest.csv",
) -> list[ManifestRow]:
    """The held-out studio mixes at each of `var_db` (made now where missing), of the first
    `limit` sources (0: all; the 271 MIR-1K clips come first): manifest rows with
    `extra["dry_path"]` (the take's crop) and `extra["var_db"]`. The same as `python -m model
    studio-mix --split heldout --dry --bands 24 --var-db=... [--limit N]`."""
    from model.training.studio_generator import make_studio_mixes, plan_jobs
    from model.training.studio_sources import studio_sources

    sources = studio_sources(data_dir, "heldout")
    jobs = plan_jobs(
        sources[:limit] if limit else sources,
        "heldout",
        seed=STUDIO_SEED,
        var_db=list(var_db),
        n_bands=STUDIO_BANDS,
    )
    done = make_studio_mixes(
        jobs,
        mix_dir,
        split="heldout",
        dry=True,
        workers=workers,
        progress=progress,
        manifest_name=manifest_name,
    )
    if done.failures:
        log.warning("%d held-out mixes failed: %s", len(done.failures), done.failures)
    return done.rows


def studio_clips(
    rows: Sequence[ManifestRow], var_db: float, data_dir: str | Path, which: str = "pooled"
) -> list[EvalClip]:
    """Evaluation clips of one set (`SETS`) at one VAR: mono = the dry take, mixed = its
    studio mix. MIR-1K roles by the cross-song split; a take's first half is the query."""
    roles = {c.clip_id: (c.role, c.song) for c in mir1k_split(Path(data_dir) / "mir1k")}
    out = []
    for r in rows:
        if float(r.extra["var_db"]) != var_db:
            continue
        name = r.extra["take"]
        is_take = "#" in name
        if (which == "mir1k" and is_take) or (which == "acappella" and not is_take):
            continue
        if is_take:
            role, song = ("query" if name.endswith("#1") else "model"), r.song
            mono = r.extra["dry_path"]
        elif name in roles:
            role, song = roles[name]
            mono = str(r.source)
        else:  # a singer with one song: no cross-song split
            continue
        out.append(
            EvalClip(
                clip_id=name,
                singer=r.singer,
                role=role,
                song=song,
                mono_path=mono,
                mixed_path=r.path,
            )
        )
    return out


def _scenario_row(entry: dict) -> dict:
    """{scenario: {top1, ci95, n}} of one model's runner entry."""
    out = {}
    for s, fig in entry["scenarios"].items():
        if fig is None:
            continue
        sid = fig["singer_id"]
        out[s] = {
            "top1": sid["top1"],
            "ci95": list(sid["top1_ci95"]),
            "n": sid.get("n_queries", sid.get("n")),
        }
    return out


def evaluate_studio(
    rows: Sequence[ManifestRow],
    checkpoints: Sequence[str | Path],
    names: Sequence[str],
    data_dir: str | Path,
    *,
    var_db: Sequence[float] = EVAL_VARS_DB,
    sets: Sequence[str] = SETS,
    all_segments: bool = False,
    cache_dir: str | Path | None = None,
    device: str | None = None,
    workers: int = 1,
    progress: bool = True,
) -> dict:
    """Retrieval figures of each checkpoint on each set at each VAR: {"figures": [{"set",
    "var_db", "model", scenario: {top1, ci95, n}}], "failures": n renderings skipped}."""
    from model.evaluation.runner import evaluate

    figures, failures = [], 0
    for var in var_db:
        for which in sets:
            clips = studio_clips(rows, var, data_dir, which)
            got = evaluate(
                clips,
                checkpoints,
                names=list(names),
                all_segments=all_segments,
                cache_dir=cache_dir,
                device=device,
                workers=workers,
                progress=progress,
                dataset=f"studio {which} at {var:+g} dB",
            )
            failures += len(got["failures"])
            for entry in got["models"]:
                figures.append(
                    {"set": which, "var_db": var, "model": entry["name"], **_scenario_row(entry)}
                )
    return {"figures": figures, "failures": failures}


def refusals(
    rows: Sequence[ManifestRow],
    detectors: Sequence[tuple[str, str | Path | None]],
    checkpoint: str | Path,
    device: str | None = None,
    progress: bool = True,
) -> list[dict]:
    """Per (detector name, path or None for the shipped one) and VAR: how many mixes the
    service's selection, declared `mixed`, refuses and flags `low_voice` (every mix holds
    singing)."""
    from tqdm import tqdm

    from model.audio import load_audio
    from model.embedding import Embedder
    from model.errors import AudioError

    out = []
    for name, path in detectors:
        emb = Embedder.from_checkpoint(checkpoint, device, voice_detector=path)
        sr = emb.features.sample_rate
        counts: dict[float, dict] = {}
        for r in tqdm(rows, desc=f"refusals {name}", disable=not progress, unit="mix"):
            c = counts.setdefault(float(r.extra["var_db"]), {"n": 0, "refused": 0, "low_voice": 0})
            c["n"] += 1
            try:
                sel = emb.select(load_audio(r.path, sr), domain="mixed")
            except AudioError:
                c["refused"] += 1
                continue
            c["low_voice"] += "low_voice" in sel.flags
        for var, c in sorted(counts.items()):
            out.append({"detector": name, "var_db": var, **c})
    return out


def markdown(result: dict) -> str:
    """The tables of a studio evaluation: retrieval top-1 (interval) per set, VAR and model;
    the detector's refusals per VAR."""
    lines = [
        "| set | VAR | model | Mono2Mix top-1 | Mix2Mix top-1 | Mono2Mono top-1 |",
        "|---|---:|---|---|---|---|",
    ]

    def cell(fig: dict | None) -> str:
        if not fig:
            return "–"
        lo, hi = fig["ci95"]
        return f"{fig['top1']:.3f} ({lo:.3f}–{hi:.3f})"

    for f in result["retrieval"]["figures"]:
        lines.append(
            f"| {f['set']} | {f['var_db']:+g} dB | {f['model']} | {cell(f.get('mono2mix'))} | "
            f"{cell(f.get('mix2mix'))} | {cell(f.get('mono2mono'))} |"
        )
    if result.get("refusals"):
        lines += [
            "",
            "| detector | VAR | mixes | refused | flagged low_voice |",
            "|---|---:|---:|---:|---:|",
        ]
        for r in result["refusals"]:
            lines.append(
                f"| {r['detector']} | {r['var_db']:+g} dB | {r['n']} | {r['refused']} "
                f"({r['refused'] / max(r['n'], 1):.1%}) | {r['low_voice']} |"
            )
    return "\n".join(lines) + "\n"


def add_studio_arguments(p: argparse.ArgumentParser) -> None:
    """Options of --recipe studio."""
    g = p.add_argument_group("--recipe studio (model/evaluation/studio_eval.py)")
    g.add_argument(
        "--studio-dir",
        type=Path,
        default=Path("data/studio/heldout"),
        help="where the held-out studio mixes are, made there on first use (default: %(default)s)",
    )
    g.add_argument(
        "--studio-sets",
        default=",".join(SETS),
        help="comma-separated sets of mir1k, acappella, pooled (default: %(default)s)",
    )
    g.add_argument(
        "--detector",
        action="append",
        default=[],
        metavar="NAME=PATH",
        help="a voice detector whose refusals of the mixes to count ('shipped' = the default "
        "one, counted unless --no-refusals); repeatable",
    )
    g.add_argument("--no-refusals", action="store_true", help="skip the detector's refusals")


def run_studio(args: argparse.Namespace) -> int:
    """The CLI's --recipe studio: make or reuse the held-out mixes, evaluate, write
    `studio.json` and `studio.md` under --out."""
    from model.cli.options import evaluation_cache
    from model.errors import SingerRetrievalError
    from model.evaluation.runner import _default_names
    from model.shared import shared_dir

    data = shared_dir() / "data"
    if args.torch_threads > 0:
        import torch

        torch.set_num_threads(args.torch_threads)
    rows = heldout_rows(args.studio_dir, data, workers=max(1, args.workers))
    extremes: list[ManifestRow] = []
    if not args.no_refusals:
        extremes = heldout_rows(
            args.studio_dir,
            data,
            EXTREME_VARS_DB,
            EXTREME_SOURCES,
            max(1, args.workers),
            manifest_name="manifest-extremes.csv",
        )
    names = args.name or _default_names(args.checkpoint)
    sets = [s for s in args.studio_sets.split(",") if s]
    try:
        retrieval = evaluate_studio(
            rows,
            args.checkpoint,
            names,
            data,
            sets=sets,
            all_segments=args.all_segments,
            cache_dir=None if args.no_cache else evaluation_cache(args.cache_dir),
            device=args.device,
            workers=args.workers,
        )
        detectors = [tuple(d.split("=", 1)) for d in args.detector]
        if not args.no_refusals and not any(n == "shipped" for n, _ in detectors):
            detectors.insert(0, ("shipped", None))
        found = (
            refusals(
                [*rows, *extremes],
                [(n, p or None) for n, p in detectors],
                args.checkpoint[0],
                args.device,
            )
            if detectors and not args.no_refusals
            else []
        )
    except (SingerRetrievalError, ValueError) as err:
        log.error("%s", err)
        return 2
    result = {
        "studio_dir": str(args.studio_dir),
        "protocol": "all segments (paper)" if args.all_segments else "service pipeline",
        "checkpoints": dict(zip(names, map(str, args.checkpoint), strict=True)),
        "retrieval": retrieval,
        "refusals": found,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "studio.json").write_text(json.dumps(result, indent=1) + "\n")
    text = markdown(result)
    (args.out / "studio.md").write_text(text)
    print(text)
    return 1 if retrieval["failures"] else 0
