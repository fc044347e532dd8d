"""Where an `/identify` request's time goes, stage by stage, without HTTP.

    python bench/request_stages.py [--device auto] [--seconds 30] [--json out.json]

For 30-s FLAC uploads (44.1 kHz stereo, as bench/bench_service.py sends), the median time of:
decoding in the calling thread; decoding through a `DecodePool` (the round trip included),
waveforms handed back as files (the default) and through the executor's pipe; choosing
segments (`Embedder.select`: features and voice detector on the model's device); the
encoder; each alone, then the same stages run by 8 threads at once (wall time for the 8).
Not part of the test suite.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.workload import uploads
from model.audio import load_audio
from model.decode_pool import DecodePool
from model.embedding import Embedder


def timed(fn: Callable[[], object], device: torch.device, repeat: int) -> float:
    """Median seconds of `fn()` over `repeat` calls, after one warm-up (CUDA-synchronised)."""
    fn()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def together(fn: Callable[[int], object], n: int, repeat: int) -> float:
    """Median wall seconds for `n` threads each running `fn(i)` once."""
    with cf.ThreadPoolExecutor(n) as pool:
        list(pool.map(fn, range(n)))
        walls = []
        for _ in range(repeat):
            start = time.perf_counter()
            list(pool.map(fn, range(n)))
            walls.append(time.perf_counter() - start)
    return statistics.median(walls)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="auto")
    p.add_argument("--seconds", type=float, default=30.0)
    p.add_argument("--threads", type=int, default=8)
    p.add_argument("--repeat", type=int, default=10)
    p.add_argument("--json", type=Path)
    args = p.parse_args()
    embedder = Embedder.from_checkpoint(None, args.device)
    dev, sr, n = embedder.device, embedder.features.sample_rate, args.threads
    data, source = uploads(n, args.seconds, real=False)
    y = load_audio(data[0], sr)
    sel = embedder.select(y, domain="mono")
    out: dict = {"device": str(dev), "upload_s": args.seconds, "source": source, "alone_ms": {}}
    with DecodePool(n) as pool, DecodePool(n, handoff="pipe") as piped:
        pool.warm_up()
        piped.warm_up()
        alone = {
            "decode in thread": lambda: load_audio(data[0], sr),
            "decode in a process (round trip)": lambda: pool.load_audio(data[0], sr),
            "decode in a process, through the pipe": lambda: piped.load_audio(data[0], sr),
            "select (features + voice detector)": lambda: embedder.select(y, domain="mono"),
            "encoder": lambda: embedder.embed_segments(sel.features, "mono"),
        }
        for name, fn in alone.items():
            out["alone_ms"][name] = round(1e3 * timed(fn, dev, args.repeat), 2)
        ys = [load_audio(d, sr) for d in data]
        concurrent = {
            "decode in threads": lambda i: load_audio(data[i], sr),
            "decode in processes": lambda i: pool.load_audio(data[i], sr),
            "decode in processes, through the pipe": lambda i: piped.load_audio(data[i], sr),
            "select": lambda i: embedder.select(ys[i], domain="mono"),
            "decode in processes + select + encoder": lambda i: embedder.embed_audio(
                pool.load_audio(data[i], sr), "mono"
            ),
        }
        out[f"{n}_threads_wall_ms"] = {
            name: round(1e3 * together(fn, n, args.repeat), 2) for name, fn in concurrent.items()
        }
    print(json.dumps(out, indent=2))
    if args.json:
        args.json.write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
