"""`python -m model calibrate`: fit the score calibration of a checkpoint (open-set verdicts).

    python -m model calibrate --checkpoint model/weights/cross-default.pt --recipe mir1k

Writes `<checkpoint_id>.calibration.json` and its s-norm cohort `<checkpoint_id>.cohort.npz`
next to the checkpoint (or in --out's folder), which the service loads with the checkpoint
(docs/open-set.md). Exit status 0 on success, 2 on bad input.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from model.cli.evaluate import add_data_arguments, add_take_impostors, load_clips
from model.cli.options import (
    HELD_OUT_SINGERS,
    VALIDATION_SINGERS,
    add_calibration_impostors,
    add_evaluation_runtime,
    evaluation_cache,
)

log = logging.getLogger("model.calibrate")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", type=Path, required=True, help="checkpoint to calibrate")
    add_data_arguments(p)
    add_calibration_impostors(
        p,
        "--impostors",
        (*VALIDATION_SINGERS, *HELD_OUT_SINGERS),
        "every MIR-1K singer the default model was not trained on: more impostor singers pin "
        "the threshold closer to its target (README, open set)",
    )
    add_take_impostors(p)
    p.add_argument(
        "--cohort-takes",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="ship the 225 training a cappella takes of the shared folder (both renderings) "
        "as the s-norm cohort beside the checkpoint, joined to the catalogue's singers, so "
        "that a small catalogue has a cohort too (default: %(default)s)",
    )
    p.add_argument(
        "--norm",
        choices=("auto", "raw", "snorm"),
        default="auto",
        help="score to calibrate: raw cosine, adaptive s-norm against the catalogue (and the "
        "cohort), or auto: per domain pair, the one that identifies more of the calibration "
        "queries at 1%% false alarm (docs/open-set.md) (default: %(default)s)",
    )
    p.add_argument(
        "--prior-known",
        type=float,
        default=0.5,
        help="share of queries by catalogue singers that the confidence assumes "
        "(default: %(default)s)",
    )
    p.add_argument(
        "--false-flag-rate",
        type=float,
        default=0.02,
        help="share of a singer's own tracks that the outlier bar may flag (default: %(default)s)",
    )
    p.add_argument(
        "--out",
        type=Path,
        help="output file (default: <checkpoint folder>/<checkpoint_id>.calibration.json)",
    )
    add_evaluation_runtime(p)


def main(args: argparse.Namespace) -> int:
    from model.calibration import calibration_path
    from model.errors import SingerRetrievalError
    from model.evaluation.calibrate import calibrate
    from model.manifest import ManifestError

    try:
        clips, _ = load_clips(args)
        # Stored in the calibration file: no machine-specific path.
        dataset = "MIR-1K cross-song split" if args.recipe else args.manifest.name
    except (FileNotFoundError, ManifestError) as err:
        log.error("%s", err)
        return 2
    if args.torch_threads > 0:
        import torch

        torch.set_num_threads(args.torch_threads)
    try:
        calibration = calibrate(
            clips,
            args.checkpoint,
            impostors=args.impostors,
            norm=args.norm,
            prior_known=args.prior_known,
            false_flag_rate=args.false_flag_rate,
            dataset=dataset,
            cache_dir=evaluation_cache(args.cache_dir),
            device=args.device,
            workers=args.workers,
            progress=True,
        )
    except (SingerRetrievalError, ValueError) as err:
        log.error("%s", err)
        return 2
    out = args.out or calibration_path(args.checkpoint, calibration.checkpoint_id)
    calibration.save(out)
    for key, pair in sorted(calibration.pairs.items()):
        for tier in pair.tiers:
            log.info(
                "%s, queries of >= %d segments: threshold at 1%% false alarm %.3f (catalogue of "
                "%d), %d known / %d impostor queries, %.0f%% of the known identified",
                key,
                tier.min_segments,
                tier.threshold(0.01, tier.n_candidates),
                tier.n_candidates,
                tier.n_known,
                tier.n_impostor,
                100 * (tier.identified or 0.0),
            )
    for domain, e in sorted(calibration.enrolment.items()):
        log.info(
            "%s singer models: outlier bar %.3f (%.0f%% of own tracks flagged, %.0f%% of "
            "planted ones)",
            domain,
            e.outlier_below,
            100 * e.false_flag_rate,
            100 * (e.detection or 0.0),
        )
    log.info("wrote %s", out)
    return 0
