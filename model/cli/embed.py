"""`python -m model embed`: audio files -> (n_files, embed_dim) float32 .npy of track vectors."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import numpy as np

from model.audio import MAX_TRACK_SECONDS
from model.cli.options import add_embedding_options
from model.errors import AudioError, CheckpointError

log = logging.getLogger("model.embed")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("files", nargs="*", help="audio files, embedded in this order")
    p.add_argument("--checkpoint", help="checkpoint (.pt); default: the project's CROSS model")
    p.add_argument(
        "--domain",
        choices=["mono", "mixed"],
        required=True,
        help="mono: vocals only (karaoke take); mixed: a finished song",
    )
    p.add_argument("--out", required=True, help="output .npy, shape (n_files, embed_dim)")
    p.add_argument("--files-from", help="text file with one audio path per line (after FILE...)")
    p.add_argument(
        "--skip-bad",
        action="store_true",
        help="write a NaN row for a file that cannot be used instead of failing",
    )
    add_embedding_options(p, MAX_TRACK_SECONDS)


def main(args: argparse.Namespace) -> int:
    import torch

    from model.devices import inference_threads
    from model.embedding import Embedder

    files = list(args.files)
    if args.files_from:
        lines = Path(args.files_from).read_text(encoding="utf-8").splitlines()
        files += [ln.strip() for ln in lines if ln.strip() and not ln.startswith("#")]
    if not files:
        log.error("no input files (give FILE... or --files-from)")
        return 2
    try:
        embedder = Embedder.from_checkpoint(args.checkpoint, args.device)
    except CheckpointError as err:
        log.error("%s", err)
        return 2
    if embedder.device.type == "cpu":
        torch.set_num_threads(inference_threads(args.workers))
    out = np.full((len(files), embedder.embed_dim), np.nan, dtype=np.float32)
    bad: list[tuple[str, str]] = []
    results = embedder.embed_many(
        files,
        args.domain,
        args.all_segments,
        args.workers,
        args.batch_size,
        progress=sys.stderr.isatty(),
        max_seconds=args.max_seconds,
    )
    for i, res in results:
        if isinstance(res, AudioError):
            if not args.skip_bad:
                log.error("%s: %s", files[i], res.reason)
                return 1
            bad.append((files[i], res.reason))
            continue
        out[i] = res.vector
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    np.save(args.out, out)
    log.info("wrote %s: %d x %d (%d unusable)", args.out, *out.shape, len(bad))
    for name, reason in bad:
        log.warning("skipped %s: %s (NaN row)", name, reason)
    return 0  # with --skip-bad, unusable files are reported and marked by NaN rows
