"""`python -m model fuse`: a CROSS checkpoint plus the speaker encoder -> a fused checkpoint."""

from __future__ import annotations

import argparse
import logging

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


def main(args: argparse.Namespace) -> int:
    from model.checkpoint import checkpoint_id
    from model.fusion import fuse_checkpoint

    try:
        out = fuse_checkpoint(args.checkpoint, args.out, args.weight)
    except CheckpointError as err:
        log.error("%s", err)
        return 2
    log.info("wrote %s (checkpoint id %s, CROSS weight %g)", out, checkpoint_id(out), args.weight)
    return 0
