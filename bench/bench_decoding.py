"""Decoding worker processes: how waveforms come back, through the pipe or as files.

    python bench/bench_decoding.py [--processes 2] [--files 400] [--uploads 120]
                                   [--rounds 3] [--json out.json]

Two `model.decode_pool.DecodePool`s of `--processes` spawned workers, one per hand-off
(`handoff="pipe"`: pickled through the executor; `"files"`: the pool's scratch folder),
each fed by as many threads as it has workers, the way the indexer and the service use it:

1. indexing: `--files` synthetic 10-s FLAC takes (44.1 kHz stereo) by path, each decoded
   to a 10-s waveform at 22050 Hz (882 KB);
2. uploads: `--uploads` 30-s FLAC uploads (1.5 MB) as bytes, each decoded to 30 s (2.6 MB).

Rounds alternate the two pools. Reported per case, medians: files/s and this process's
own CPU time per file (the pool's workers are other processes, so it is what the caller
pays: the executor's threads, unpickling, reading the files back), and the ratios
files / pipe. The waveforms are checked equal between the two. Not part of the test suite.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import json
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.workload import uploads
from model.audio import AudioSource
from model.decode_pool import DecodePool

SR = 22050
HANDOFFS = ("pipe", "files")


def own_cpu_s() -> float:
    """CPU seconds of this process (all its threads), not of its children."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def decode_all(pool: DecodePool, sources: list[AudioSource]) -> tuple[dict, list[np.ndarray]]:
    """Every source through the pool from `pool.processes` threads: files/s, caller CPU."""
    cpu, start = own_cpu_s(), time.perf_counter()
    with cf.ThreadPoolExecutor(pool.processes) as threads:
        out = list(threads.map(lambda s: pool.load_audio(s, SR), sources))
    wall, cpu = time.perf_counter() - start, own_cpu_s() - cpu
    return {"files_per_s": len(sources) / wall, "caller_cpu_ms": 1000 * cpu / len(sources)}, out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--processes", type=int, default=2)
    p.add_argument("--files", type=int, default=400)
    p.add_argument("--uploads", type=int, default=120)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--json", type=Path)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        paths = []
        for i, data in enumerate(uploads(min(args.files, 40), 10.0, real=False)[0]):
            paths.append(Path(tmp) / f"take-{i}.flac")  # 40 distinct takes, read in turn
            paths[-1].write_bytes(data)
        bodies = uploads(min(args.uploads, 8), 30.0, real=False)[0]
        cases: dict[str, list[AudioSource]] = {
            "indexing: 10-s takes by path": [paths[i % len(paths)] for i in range(args.files)],
            "uploads: 30-s FLAC bytes": [bodies[i % len(bodies)] for i in range(args.uploads)],
        }
        pools = {h: DecodePool(args.processes, handoff=h) for h in HANDOFFS}
        try:
            for pool in pools.values():
                pool.warm_up()
                decode_all(pool, list(cases.values())[1][:4])
            runs: dict[str, dict[str, list[dict]]] = {c: {h: [] for h in HANDOFFS} for c in cases}
            for _ in range(args.rounds):
                for case, sources in cases.items():
                    waves = {}
                    for handoff, pool in pools.items():
                        run, waves[handoff] = decode_all(pool, sources)
                        runs[case][handoff].append(run)
                    for a, b in zip(waves["pipe"], waves["files"], strict=True):
                        np.testing.assert_array_equal(a, b)
        finally:
            for pool in pools.values():
                pool.close()
    result: dict = {"processes": args.processes, "rounds": args.rounds, "cases": {}}
    for case, by in runs.items():
        med = {h: {k: statistics.median(r[k] for r in by[h]) for k in by[h][0]} for h in HANDOFFS}
        result["cases"][case] = {
            **med,
            "files_per_s_files_over_pipe": med["files"]["files_per_s"] / med["pipe"]["files_per_s"],
            "caller_cpu_files_over_pipe": med["files"]["caller_cpu_ms"]
            / med["pipe"]["caller_cpu_ms"],
        }
        print(
            f"{case}: pipe {med['pipe']['files_per_s']:.1f} files/s, "
            f"{med['pipe']['caller_cpu_ms']:.2f} ms caller CPU a file; files "
            f"{med['files']['files_per_s']:.1f} files/s, {med['files']['caller_cpu_ms']:.2f} ms"
        )
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
