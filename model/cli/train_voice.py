"""`python -m model train-voice`: train the singing-voice detector and measure it on held-out
material (model/training/voice.py; the shipped weights are model/weights/voice-detector.pt)."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from model.shared import shared_dir

log = logging.getLogger("model.train_voice")


def add_arguments(p: argparse.ArgumentParser) -> None:
    from model.training.voice import VoiceTrainConfig
    from model.voice import DetectorRule

    tc, rule = VoiceTrainConfig(), DetectorRule()
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
    p.add_argument("--steps", type=int, default=tc.steps, help="optimiser steps")
    p.add_argument("--batch-size", type=int, default=tc.batch_size, help="windows per step")
    p.add_argument("--lr", type=float, default=tc.lr, help="peak learning rate (one-cycle)")
    p.add_argument("--seed", type=int, default=tc.seed, help="random seed (data and weights)")
    p.add_argument(
        "--mir1k-every",
        type=int,
        default=tc.mir1k_every,
        help="use every n-th MIR-1K clip (larger: faster, smaller training set)",
    )
    p.add_argument(
        "--instrumental-crops",
        type=int,
        default=tc.instrumental_crops,
        help="10-s crops per training instrumental track",
    )
    p.add_argument(
        "--n-nonvoice", type=int, default=tc.n_nonvoice, help="generated non-voice examples"
    )
    p.add_argument(
        "--threshold",
        type=float,
        default=rule.threshold,
        help="P(voice) of a voiced frame when segments are chosen",
    )
    p.add_argument(
        "--singing-threshold",
        type=float,
        default=rule.singing_threshold,
        help="P(voice) of a sung frame when deciding that a recording holds singing",
    )
    p.add_argument(
        "--min-voice-s",
        type=float,
        default=rule.min_voice_s,
        help="seconds of sung frames below which a recording holds no singing (refused)",
    )
    p.add_argument(
        "--torch-threads", type=int, default=1, help="CPU threads for training (0: torch default)"
    )


def main(args: argparse.Namespace) -> int:
    from dataclasses import replace

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
    tc = replace(
        VoiceTrainConfig(),
        steps=args.steps,
        batch_size=args.batch_size,
        lr=args.lr,
        seed=args.seed,
        mir1k_every=args.mir1k_every,
        n_nonvoice=args.n_nonvoice,
        instrumental_crops=args.instrumental_crops,
    )
    rule = replace(
        DetectorRule(),
        threshold=args.threshold,
        singing_threshold=args.singing_threshold,
        min_voice_s=args.min_voice_s,
    )
    meta = run(args.data_dir, args.out, tc, rule=rule, progress=True)
    print(json.dumps(meta["heldout_frames"], indent=2))
    return 0
