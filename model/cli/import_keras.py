"""`python -m model import-keras SRC.h5 DST`: convert the authors' Keras weights."""

from __future__ import annotations

import argparse
import logging

from model.errors import CheckpointError

log = logging.getLogger("model.import_keras")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "src",
        help="Keras 2 HDF5 weights, e.g. ../shared/reference/mono2mixed-singer/cross_pretrained.h5",
    )
    p.add_argument("dst", help="checkpoint to write (.pt)")
    p.add_argument(
        "--model-type",
        choices=["cross", "mono", "mixed"],
        help="default: cross for two branches; mono/mixed guessed from the file name",
    )


def main(args: argparse.Namespace) -> int:
    from model.checkpoint import checkpoint_id, load_checkpoint
    from model.training.keras_import import import_keras

    try:
        path = import_keras(args.src, args.dst, args.model_type)
        net, _, _ = load_checkpoint(path)
    except CheckpointError as err:
        log.error("%s", err)
        return 2
    log.info("wrote %s (%s model, id %s)", path, net.model_type, checkpoint_id(path))
    return 0
