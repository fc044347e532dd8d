"""Cost of the voice detector per request: segment selection with and without it, in one run.

    python bench/bench_voice.py [--seconds 30] [--rounds 7] [--threads 1] [--json out.json]

Audio: a 30-s stretch of MIR-1K vocal clips of one held-out singer (../shared/data), else
synthetic singing. Times, interleaved for `--rounds` rounds, median of each:

1. energy: `select_segments(y, cfg)` (log-mel + the energy rule, the old pipeline);
2. detector: `select_segments(y, cfg, detector=...)` (log-mel + the CNN on 0.74-s windows);
3. embed: `Embedder.embed_audio(y, "mono")` with the default checkpoint (selection + encoder),
   the whole per-request model cost after decoding.

Reported: milliseconds of each and the detector's added milliseconds. Not part of the test
suite.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from model.audio import load_audio
from model.embedding import Embedder
from model.segment_selection import select_segments
from model.shared import shared_dir


def audio(seconds: float, sr: int) -> tuple[np.ndarray, str]:
    vocals = shared_dir() / "data" / "mir1k" / "vocals"
    if vocals.is_dir():
        parts, n = [], 0
        for f in sorted(vocals.glob("yifen_*.opus")):
            parts.append(load_audio(f, sr))
            n += len(parts[-1])
            if n >= seconds * sr:
                return np.concatenate(parts)[: int(seconds * sr)], "MIR-1K yifen vocals"
    from bench.workload import synthetic_take

    return synthetic_take(seconds, seed=1, sr=sr)[:, 0].copy(), "synthetic singing"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=30.0, help="length of the request audio")
    p.add_argument("--rounds", type=int, default=7, help="interleaved timing rounds")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    p.add_argument("--json", type=Path, help="also write the figures here")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    emb = Embedder.from_checkpoint(device="cpu")
    cfg = emb.features
    y, source = audio(args.seconds, cfg.sample_rate)
    runs = {
        "energy": lambda: select_segments(y, cfg),
        "detector": lambda: select_segments(y, cfg, detector=emb.detector),
        "embed": lambda: emb.embed_audio(y, "mono"),
    }
    times: dict[str, list[float]] = {k: [] for k in runs}
    for fn in runs.values():
        fn()  # warm-up
    for _ in range(args.rounds):
        for name, fn in runs.items():
            t = time.perf_counter()
            fn()
            times[name].append(1000 * (time.perf_counter() - t))
    med = {k: round(statistics.median(v), 1) for k, v in times.items()}
    out = {
        "audio": f"{args.seconds:g} s of {source}",
        "threads": args.threads,
        "median_ms": med,
        "detector_added_ms": round(med["detector"] - med["energy"], 1),
    }
    print(json.dumps(out, indent=2))
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
