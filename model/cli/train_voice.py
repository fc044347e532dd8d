"""`python -m model train-voice`: train the singing-voice detector and measure it on held-out
material (model/training/voice.py; the shipped weights are model/weights/voice-detector.pt)."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from model.cli.options import add_fields, replace_fields
from model.shared import shared_dir

log = logging.getLogger("model.train_voice")

# Fields of model.training.voice.VoiceTrainConfig and model.voice.DetectorRule exposed as options.
TRAIN_OPTIONS = (
    "steps",
    "batch_size",
    "lr",
    "seed",
    "mir1k_every",
    "instrumental_crops",
    "n_nonvoice",
    "studio_manifest",
    "studio_every",
    "band_crops",
)
RULE_OPTIONS = ("threshold", "singing_threshold", "min_voice_s")


def add_arguments(p: argparse.ArgumentParser) -> None:
    from model.training.voice import VoiceTrainConfig
    from model.voice import DetectorRule

    p.formatter_class = argparse.ArgumentDefaultsHelpFormatter
    p.add_argument(
        "--data-dir",
        type=Path,
        default=shared_dir() / "data",
        help="the shared data folder (mir1k, vowels, acappella, instrumental)",
    )
    p.add_argument("--out", type=Path, help="detector checkpoint to write (.pt)")
    p.add_argument(
        "--evaluate",
        type=Path,
        metavar="CKPT",
        help="do not train: measure this detector's answer/refuse decisions on the held-out "
        "material and print them (JSON)",
    )
    add_fields(p, VoiceTrainConfig(), TRAIN_OPTIONS)
    add_fields(p, DetectorRule(), RULE_OPTIONS)
    p.add_argument(
        "--torch-threads", type=int, default=1, help="CPU threads for training (0: torch default)"
    )


def main(args: argparse.Namespace) -> int:
    import torch

    from model.training.voice import VoiceTrainConfig, run
    from model.voice import DetectorRule

    if args.torch_threads > 0:
        torch.set_num_threads(args.torch_threads)
    if not (args.data_dir / "mir1k" / "index.csv").is_file():
        log.error("no MIR-1K under %s (give --data-dir)", args.data_dir)
        return 2
    if args.evaluate:
        from model.training.voice import file_decisions
        from model.voice import VoiceDetector

        print(
            json.dumps(file_decisions(VoiceDetector.load(args.evaluate), args.data_dir), indent=2)
        )
        return 0
    if args.out is None:
        log.error("give --out (or --evaluate CKPT)")
        return 2
    tc = replace_fields(VoiceTrainConfig(), args, TRAIN_OPTIONS)
    rule = replace_fields(DetectorRule(), args, RULE_OPTIONS)
    meta = run(args.data_dir, args.out, tc, rule=rule, progress=True)
    print(json.dumps(meta["heldout_frames"], indent=2))
    return 0
