"""Batch indexing throughput next to a decode-only pass over the same files, in one run.

    python bench/bench_indexer.py [--limit 300] [--workers 2] [--batch-size N]
                                  [--checkpoint CKPT] [--source FOLDER|CSV] [--json out.json]

Files: by default the first `--limit` MIR-1K vocal clips (../shared/data/mir1k/vocals, Ogg
Opus at 16 kHz, indexed as `mono`); `--source` takes any folder or manifest instead. After a
pass that reads every file once (so both measured passes find them in the page cache), it
times:

1. decode-only: `model.audio.load_audio` (decode + resample to 22050 Hz) of every file in
   `--workers` threads (or `--processes` worker processes), the decoding the indexer does
   and nothing else;
2. indexing: `indexer.run.index_listing` into a fresh catalogue in a temporary directory
   (hashing, decoding, features, batched inference, SQLite commits), the same workers and
   the same torch thread count as `python -m indexer`.

The two passes alternate for `--rounds` rounds (a fresh catalogue each time). Reported:
median files/s and realtime factor (audio seconds per wall second) of each, and their
ratio (target: indexing keeps >= 75 % of decode-only throughput). Without a checkpoint (and
no default one) a random-weight model of the same architecture is used: same compute.

`--against CHECKOUT` (e.g. `git worktree add /tmp/base HEAD~1`) also indexes the same files
with another checkout's code and default model, in each round beside this one's, the order
alternating: both run in `bench/checkout_runner.py` workers (threads only, the same torch
threads), and `against` reports each side's median files/s and the median of the rounds'
ratios (this over that; issue 38's target: >= 2.0), and `cpu_ratio`, the same for the
workers' CPU seconds (that over this), which the load of other jobs moves much less.
Not part of the test suite.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import csv
import json
import logging
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.checkout_runner import CheckoutRunner
from catalog import Catalog
from indexer.run import IndexOptions, index_listing
from indexer.sources import Listing, SourceItem, read_source
from model import DEFAULT_CHECKPOINT
from model.audio import load_audio
from model.checkpoint import make_random_checkpoint
from model.decode_pool import DecodePool
from model.devices import inference_threads
from model.embedding import Embedder
from model.errors import AudioError
from model.shared import shared_dir

MIR1K = shared_dir() / "data" / "mir1k"


def mir1k_listing(limit: int) -> Listing:
    with (MIR1K / "index.csv").open(newline="") as fh:
        rows = list(csv.DictReader(fh))[:limit]
    return Listing(
        [
            SourceItem(MIR1K / "vocals" / f"{r['clip']}.opus", r["singer"], "mono", title=r["clip"])
            for r in rows
        ]
    )


def decode_pass(
    paths: list[Path], workers: int, sr: int, pool: DecodePool | None = None
) -> tuple[float, float]:
    """(wall seconds, audio seconds) to decode and resample every file, in `workers` threads
    or, given a pool, in its worker processes (as many threads waiting on them)."""

    def one(path: Path) -> float:
        try:
            y = pool.load_audio(path, sr) if pool is not None else load_audio(path, sr)
            return len(y) / sr
        except AudioError:
            return 0.0

    start = time.perf_counter()
    threads = max(workers, pool.processes if pool is not None else 0)
    with cf.ThreadPoolExecutor(threads) as executor:
        audio = sum(executor.map(one, paths))
    return time.perf_counter() - start, audio


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--source", type=Path, help="folder or manifest (default: MIR-1K vocals)")
    p.add_argument(
        "--domain",
        default="mono",
        choices=["mono", "mixed"],
        help="domain for --source (default: mono)",
    )
    p.add_argument("--limit", type=int, default=300, help="files from MIR-1K (default: 300)")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument(
        "--processes",
        type=int,
        default=0,
        help="decoding worker processes (0: threads); the decode-only pass uses them too",
    )
    p.add_argument(
        "--features-in",
        choices=["workers", "device"],
        help="with --processes: where segments are chosen (default: as the indexer, on the "
        "device where it chooses them in batches (CUDA), else in the workers)",
    )
    p.add_argument(
        "--batch-size",
        type=int,
        help="segments per encoder batch (default: each checkout's indexer default)",
    )
    p.add_argument("--threads", type=int, help="torch threads (default: as python -m indexer)")
    p.add_argument("--device", default="cpu", help="embedding device: cpu, cuda[:N] or auto")
    p.add_argument("--checkpoint", type=Path, help="default: the project's, else random weights")
    p.add_argument("--rounds", type=int, default=3, help="decode/index rounds (median)")
    p.add_argument("--json", type=Path, help="also write the results here")
    p.add_argument(
        "--against",
        type=Path,
        help="another checkout (a worktree of the commit before a change): its indexing of "
        "the same files, alternated with this checkout's, both in worker processes",
    )
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    listing = read_source(args.source, args.domain) if args.source else mir1k_listing(args.limit)
    paths = [it.path for it in listing.items]
    if not paths:
        print("no files to index", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="bench-indexer-") as tmp:
        ckpt = args.checkpoint or (DEFAULT_CHECKPOINT if DEFAULT_CHECKPOINT.is_file() else None)
        weights = str(ckpt) if ckpt else "random weights (no default checkpoint yet)"
        ckpt = ckpt or make_random_checkpoint(Path(tmp) / "random.pt")
        embedder = Embedder.from_checkpoint(ckpt, device=args.device)
        # As the CLI sets it.
        torch.set_num_threads(args.threads or inference_threads(max(args.workers, args.processes)))
        sr = embedder.features.sample_rate
        choice = args.features_in or ("device" if embedder.selects_in_batches else "workers")
        in_workers = choice == "workers"
        decoders = index_pool = None
        if args.processes:  # started and warmed before timing, as a long-lived caller's are
            decoders = DecodePool(args.processes)
            index_pool = embedder.decode_pool(args.processes, in_workers)
            decoders.warm_up()
            index_pool.warm_up()

        for path in paths:  # page cache: both timed passes read from memory
            path.read_bytes()
        decode_pass(paths[: 2 * args.workers], args.workers, sr, decoders)  # first-call costs
        warm = paths[: max(4, 2 * args.processes)]
        list(embedder.embed_many(warm, listing.items[0].domain, pool=index_pool))
        runners = {}
        if args.against:  # this checkout and the other, each in a worker process
            if args.processes:
                p.error("--against indexes in threads: leave out --processes")
            for side, checkout in (("this", REPO), ("that", args.against)):
                runners[side] = CheckoutRunner(checkout, torch.get_num_threads(), args.checkpoint)
            files = [(str(it.path), it.singer) for it in listing.items]
            job = {
                "domain": listing.items[0].domain,
                "workers": args.workers,
                "batch_size": args.batch_size,
            }
            for runner in runners.values():  # first-call costs
                runner.call("index", files=files[:8], **job)
        decode_s, index_s = [], []
        paired: dict[str, list[float]] = {side: [] for side in runners}
        paired_cpu: dict[str, list[float]] = {side: [] for side in runners}
        for r in range(args.rounds):  # alternated, so a slow spell of the machine hits both
            seconds, audio_s = decode_pass(paths, args.workers, sr, decoders)
            decode_s.append(seconds)
            if runners:
                order = ("this", "that") if r % 2 == 0 else ("that", "this")
                for side in order:
                    got = runners[side].call("index", files=files, **job)
                    paired[side].append(got["seconds"])
                    paired_cpu[side].append(got["cpu_s"])
                index_s.append(paired["this"][-1])
                continue
            with Catalog.open(Path(tmp) / f"index-{r}", dim=embedder.embed_dim) as catalog:
                start = time.perf_counter()
                options = IndexOptions(
                    workers=args.workers,
                    processes=args.processes,  # 0: threads; else the warm pool below
                    batch_size=args.batch_size,
                    progress=sys.stderr.isatty(),
                )
                report = index_listing(catalog, embedder, listing, options, pool=index_pool)
                index_s.append(time.perf_counter() - start)  # hashing, last commit included
        for pool in (decoders, index_pool):
            if pool is not None:
                pool.close()
        for runner in runners.values():
            runner.close()

    n, dec, idx = len(paths), statistics.median(decode_s), statistics.median(index_s)
    result = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"torch {torch.__version__} ({torch.get_num_threads()} threads), {embedder.device}",
        "weights": weights,
        "files": n,
        "audio_min": round(audio_s / 60, 2),
        "workers": args.workers,
        "processes": args.processes,
        "features_in": ("workers" if in_workers else "device") if args.processes else "threads",
        "batch_size": args.batch_size or "each checkout's indexer default",
        "rounds": args.rounds,
        "decode_only": {
            "median_s": round(dec, 2),
            "all_s": [round(x, 2) for x in decode_s],
            "files_per_s": round(n / dec, 1),
            "realtime_x": round(audio_s / dec),
        },
        "indexing": {
            "median_s": round(idx, 2),
            "all_s": [round(x, 2) for x in index_s],
            "files_per_s": round(n / idx, 1),
            "realtime_x": round(audio_s / idx),
            "indexed": got["added"] if runners else report.n_added,
            "failed": got["failed"] if runners else len(report.failures),
        },
        "ratio": round(dec / idx, 3),
    }
    if runners:
        ratios = [b / a for a, b in zip(paired["this"], paired["that"], strict=True)]
        result["against"] = {
            "checkout": str(args.against.resolve()),
            "loaded": {side: runner.loaded for side, runner in runners.items()},
            "this_files_per_s": round(n / statistics.median(paired["this"]), 1),
            "that_files_per_s": round(n / statistics.median(paired["that"]), 1),
            "all_s": {side: [round(x, 2) for x in t] for side, t in paired.items()},
            "ratio": round(statistics.median(ratios), 3),  # this over that, files/s
            # CPU seconds of each pass (all the worker's threads): what a loaded machine
            # swings least; the ratio is that over this, as for files/s.
            "cpu_s": {side: [round(x, 2) for x in t] for side, t in paired_cpu.items()},
            "cpu_ratio": round(
                statistics.median(
                    b / a for a, b in zip(paired_cpu["this"], paired_cpu["that"], strict=True)
                ),
                3,
            ),
        }
    print(json.dumps(result, indent=2))
    print(
        f"indexing keeps {100 * result['ratio']:.0f} % of decode-only throughput (target >= 75 %)",
        file=sys.stderr,
    )
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
