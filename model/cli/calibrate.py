"""`python -m model calibrate`: fit the score calibration of a checkpoint (open-set verdicts).

    python -m model calibrate --checkpoint model/weights/cross-default.pt --recipe mir1k

Writes `<checkpoint_id>.calibration.json` next to the checkpoint (or --out), which the service
loads with the checkpoint. Exit status 0 on success, 2 on bad input.
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
        "--norm",
        choices=("raw", "snorm"),
        default="raw",
        help="score to calibrate: raw cosine or adaptive s-norm against the catalogue; raw "
        "measured better for the default model (README, open set) (default: %(default)s)",
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
    for key, tiers in sorted(calibration.pairs.items()):
        for pair in tiers:
            log.info(
                "%s, queries of >= %d segments: threshold at 1%% false alarm %.3f (catalogue of "
                "%d), %d target / %d non-target trials",
                key,
                pair.min_segments,
                pair.threshold(0.01, pair.n_candidates),
                pair.n_candidates,
                pair.n_target,
                pair.n_nontarget,
            )
    log.info("wrote %s", out)
    return 0
