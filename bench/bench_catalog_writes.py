"""Cost of catalogue writes per track as the catalogue grows, as the indexer writes them.

    python bench/bench_catalog_writes.py [--rounds 3] [--tracks 5000] [--singers 20]
                                         [--dim 512] [--commit 64] [--json out.json]

Each round adds `--tracks` random unit vectors to one embedded catalogue (SQLite + FAISS) in
`add_tracks(..., replace=True)` calls of `--commit` tracks, the singers interleaved so every
commit touches each of them (the indexer's worst case: a manifest not grouped by singer),
and reports milliseconds per track. Before `catalog/model_sums.py` every commit re-read all
stored vectors of each singer it touched, so the cost grew round by round.
Not part of the test suite.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from catalog import Catalog


def items(rng: np.random.Generator, start: int, n: int, singers: int, dim: int) -> list[dict]:
    vectors = rng.standard_normal((n, dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return [
        {
            "vector": v,
            "singer": f"singer-{(start + k) % singers}",
            "domain": "mono",
            "duration_s": 10.0,
            "n_segments": 3,
            "content_hash": f"{start + k:064x}",
            "checkpoint_id": "bench",
            "path": f"/music/{start + k}.flac",
        }
        for k, v in enumerate(vectors)
    ]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=3, help="rounds of --tracks (default: 3)")
    p.add_argument("--tracks", type=int, default=5000, help="tracks a round (default: 5000)")
    p.add_argument("--singers", type=int, default=20, help="singers, interleaved (default: 20)")
    p.add_argument("--dim", type=int, default=512, help="vector size (default: 512, fused)")
    p.add_argument("--commit", type=int, default=64, help="tracks a commit (default: 64)")
    p.add_argument("--json", type=Path, help="also write the results here")
    args = p.parse_args()
    rng = np.random.default_rng(0)
    rows = []
    with tempfile.TemporaryDirectory() as tmp, Catalog.open(Path(tmp), dim=args.dim) as catalog:
        for r in range(args.rounds):
            batch = items(rng, r * args.tracks, args.tracks, args.singers, args.dim)
            start = time.perf_counter()
            for i in range(0, len(batch), args.commit):
                catalog.add_tracks(batch[i : i + args.commit], replace=True)
            ms = 1e3 * (time.perf_counter() - start) / args.tracks
            rows.append({"catalogue_tracks": (r + 1) * args.tracks, "ms_per_track": round(ms, 3)})
            print(f"{rows[-1]['catalogue_tracks']} tracks: {ms:.3f} ms a track", flush=True)
    if args.json:
        args.json.write_text(
            json.dumps({"args": vars(args) | {"json": str(args.json)}, "rounds": rows}, indent=2)
            + "\n"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
