"""`python -m model tune-speaker`: a copy of the speaker encoder tuned for finished songs by
distillation (model.training.speaker_tune), from studio mixes and karaoke mixes.

  python -m model tune-speaker --studio data/studio/train/manifest.csv --out data/runs/speaker

Writes OUT/speaker-mixed.pt (resumes from OUT/state.pt); `python -m model fuse
--mixed-speaker OUT/speaker-mixed.pt` puts it into a fused checkpoint.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from model.cli.options import add_fields, replace_fields
from model.shared import shared_dir

log = logging.getLogger("model.training.speaker_tune")

OPTIONS = (
    "seed",
    "steps",
    "batch_size",
    "lr",
    "tuned_layers",
    "keep_share",
    "studio_share",
    "karaoke_snr_low",
    "karaoke_snr_high",
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    from model.training.speaker_tune import TuneConfig

    p.formatter_class = argparse.ArgumentDefaultsHelpFormatter
    p.add_argument("--out", type=Path, required=True, help="run folder")
    p.add_argument(
        "--studio",
        type=Path,
        required=True,
        help="manifest.csv of `python -m model studio-mix --split train`",
    )
    p.add_argument(
        "--data-dir",
        type=Path,
        default=shared_dir() / "data",
        help="the shared data (MIR-1K training singers' karaoke pairs)",
    )
    add_fields(p, TuneConfig(), OPTIONS)
    p.add_argument("--torch-threads", type=int, default=0, help="CPU threads (0: torch's)")
    p.add_argument("--progress", action="store_true", help="progress bar off a terminal too")


def main(args: argparse.Namespace) -> int:
    import torch

    from model.manifest import ManifestError
    from model.training.speaker_tune import (
        TuneConfig,
        TunePairs,
        karaoke_files,
        studio_rows,
        tune_speaker,
    )

    if args.torch_threads > 0:
        torch.set_num_threads(args.torch_threads)
    cfg = replace_fields(TuneConfig(), args, OPTIONS)
    progress = args.progress or sys.stderr.isatty()
    try:
        pairs = TunePairs(cfg.min_voiced).load(
            studio_rows(args.studio), karaoke_files(args.data_dir), progress
        )
    except (OSError, ValueError, ManifestError) as err:
        log.error("%s", err)
        return 2
    weights = tune_speaker(pairs, cfg, args.out, progress)
    log.info("tuned speaker encoder: %s", weights)
    return 0
