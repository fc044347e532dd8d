"""`python -m model studio-mix`: vocal takes of ../shared/data produced, mixed over dense MMA
bands and mastered like records (model.training.studio_generator), resumable.

  python -m model studio-mix --split train --var-passes 1 --out data/studio/train
  python -m model studio-mix --split heldout --var-db=-10,-5,0 --dry --out data/studio/heldout

Exit status 1 when some source or band failed (listed in OUT/manifest.report.json), else 0.
"""

from __future__ import annotations

import argparse
import logging

from model.shared import shared_dir

log = logging.getLogger("model.training.studio_generator")


def _floats(text: str) -> list[float]:
    return [float(x) for x in text.split(",") if x.strip()]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.formatter_class = argparse.ArgumentDefaultsHelpFormatter
    p.add_argument("--out", required=True, help="output folder (bands/, mixes/, manifest.csv)")
    p.add_argument(
        "--split",
        choices=["train", "heldout"],
        default="train",
        help="train: the default's training takes over the training grooves and soundfonts; "
        "heldout: its held-out singers and takes over the held-out ones "
        "(model/training/studio_sources.py, model/training/band.py)",
    )
    p.add_argument("--data-dir", default=str(shared_dir() / "data"), help="the shared data")
    p.add_argument("--seed", type=int, default=0, help="random seed of every setting")
    p.add_argument("--per-source", type=int, default=1, help="mixes per vocal source")
    p.add_argument(
        "--var-db",
        type=_floats,
        help="comma-separated vocal-to-accompaniment ratios, each mix rendered at every one "
        "(default: one drawn around -4 dB per mix)",
    )
    p.add_argument("--bands", type=int, default=48, help="band tracks rendered for the run")
    p.add_argument("--bars", type=int, default=32, help="bars per band track")
    p.add_argument(
        "--var-passes",
        type=int,
        default=8,
        help="masters tried to put the output's VAR on the drawn one (1: the drawn VAR goes "
        "into the master and the output's is recorded; about 2.5 times cheaper)",
    )
    p.add_argument("--limit", type=int, default=0, help="only the first N sources (0: all)")
    p.add_argument("--dry", action="store_true", help="also write each take's crop")
    p.add_argument("--stems", action="store_true", help="also write the vocal and band parts")
    p.add_argument("--workers", type=int, default=2, help="processes (<= 1: in-process)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def main(args: argparse.Namespace) -> int:
    from model.training.studio_generator import make_studio_mixes, plan_jobs
    from model.training.studio_sources import studio_sources

    try:
        sources = studio_sources(args.data_dir, args.split)
    except (OSError, KeyError, ValueError) as err:
        log.error("cannot list the vocal sources under %s: %s", args.data_dir, err)
        return 2
    if args.limit:
        sources = sources[: args.limit]
    jobs = plan_jobs(
        sources,
        args.split,
        seed=args.seed,
        per_source=args.per_source,
        var_db=args.var_db,
        n_bands=args.bands,
        bars=args.bars,
        var_passes=args.var_passes,
    )
    log.info("%d sources, %d mixes -> %s", len(sources), len(jobs), args.out)
    result = make_studio_mixes(
        jobs,
        args.out,
        split=args.split,
        dry=args.dry,
        stems=args.stems,
        workers=args.workers,
        progress=not args.no_progress,
    )
    log.info(
        "%d mixes (%d made now, %d already there), %d failures: %s",
        len(result.rows),
        result.ran,
        result.reused,
        len(result.failures),
        result.manifest,
    )
    return 1 if result.failures else 0
