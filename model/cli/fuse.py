"""`python -m model fuse`: a CROSS checkpoint plus the speaker encoder -> a fused checkpoint."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from model.cli.options import HELD_OUT_SINGERS, VALIDATION_SINGERS, add_device, name_list
from model.errors import CheckpointError

log = logging.getLogger("model.fuse")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", required=True, help="CROSS checkpoint (.pt) to fuse")
    p.add_argument(
        "--weight",
        type=float,
        required=True,
        help="CROSS's share of every cosine, in [0, 1]; the speaker encoder has the rest "
        "(1: write the CROSS model alone, unfused)",
    )
    p.add_argument("--out", required=True, help="fused checkpoint to write (.pt)")
    p.add_argument(
        "--centres",
        metavar="DATA_DIR",
        type=Path,
        help="also estimate each domain's centre, subtracted before fusion, and the nuisance "
        "directions, removed after it, on the training material of this ../shared/data "
        "folder: MIR-1K but the held-out and validation singers, and the training a cappella "
        "takes (model/training/centres.py)",
    )
    p.add_argument(
        "--holdout",
        type=name_list,
        default=list(HELD_OUT_SINGERS),
        help="for --centres: comma-separated MIR-1K singers to leave out (default: the "
        f"default model's held-out singers, {','.join(HELD_OUT_SINGERS)})",
    )
    p.add_argument(
        "--val-singers",
        type=name_list,
        default=list(VALIDATION_SINGERS),
        help="for --centres: comma-separated MIR-1K singers to leave out too (default: the "
        f"default model's validation singers, {','.join(VALIDATION_SINGERS)})",
    )
    p.add_argument(
        "--nuisance-dims",
        type=int,
        default=None,
        metavar="K",
        help="for --centres: nuisance directions to estimate and remove after fusion (0: "
        "none; default: model.training.centres.NUISANCE_DIMS, 5)",
    )
    p.add_argument(
        "--studio",
        metavar="MANIFEST",
        type=Path,
        help="for --centres: also the studio mixes of this manifest (`python -m model "
        "studio-mix --split train`), each take heard clean and mixed",
    )
    p.add_argument(
        "--mixed-speaker",
        metavar="WEIGHTS",
        type=Path,
        help="speaker-encoder weights for mixed segments (`python -m model tune-speaker`), "
        "stored in the checkpoint (default: the fused checkpoint's own, if any)",
    )
    p.add_argument(
        "--mix-background-margin",
        type=float,
        metavar="MARGIN",
        help="the mixed branch's front end (4 in the shipped default): each segment of a "
        "song is also embedded from the song without its repeating band, the voice kept "
        "where it stands MARGIN times above it, and the two vectors summed; with --centres, "
        "the centres are estimated with it (model/repeating_background.py; 0: off; default: "
        "the checkpoint's own)",
    )
    add_device(p)


def main(args: argparse.Namespace) -> int:
    from model.checkpoint import checkpoint_id
    from model.fusion import fuse_checkpoint

    try:
        out = fuse_checkpoint(
            args.checkpoint,
            args.out,
            args.weight,
            mixed_speaker=args.mixed_speaker,
            mix_background_margin=args.mix_background_margin,
        )
        if args.centres is not None:
            from model.training.centres import NUISANCE_DIMS, centre_checkpoint

            k = NUISANCE_DIMS if args.nuisance_dims is None else args.nuisance_dims
            out = centre_checkpoint(
                out,
                args.centres,
                out,
                args.holdout,
                args.val_singers,
                args.device,
                True,
                k,
                studio=args.studio,
            )
    except (CheckpointError, ValueError, FileNotFoundError) as err:
        log.error("%s", err)
        return 2
    log.info("wrote %s (checkpoint id %s, CROSS weight %g)", out, checkpoint_id(out), args.weight)
    return 0
