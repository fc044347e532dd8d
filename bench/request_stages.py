"""Where an `/identify` request's time goes, stage by stage, without HTTP.

    python bench/request_stages.py [--device auto] [--seconds 30] [--json out.json]

For 30-s FLAC uploads (44.1 kHz stereo, as bench/bench_service.py sends), the median time of:
decoding in the calling thread; decoding through a `DecodePool` (the round trip included),
waveforms handed back as files (the default) and through the executor's pipe; choosing
segments (`Embedder.select`: features and voice detector on the model's device); the
encoder; each alone, then the same stages run by 8 threads at once (wall time for the 8).

    python bench/request_stages.py --against CHECKOUT [--uploads 4] [--repeat 10]

instead times one upload's embedding alone with this checkout's code and another's (e.g. a
worktree of the commit before a change), in `bench/checkout_runner.py` workers, the order
alternating upload by upload. `--path service` (default): as each checkout's service embeds
a lone upload (its `UploadEmbedder` with default settings: decoding in pieces and, since
2026-12-07, encoding in runs over the idle cores); `--path model`: decoding whole in the
calling thread, segment choice and encoders in that thread (1 torch thread, as the service
gives each of its 2 inference workers on 2 cores).
`p50_ratio` is this p50 over that p50 (issue 38's target: <= 0.5), `cpu_p50_ratio` the
same for CPU seconds. Real MIR-1K uploads
(voice left, accompaniment right) when the data set is there. Not part of the test suite.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.checkout_runner import CheckoutRunner
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


def against(checkout: Path, seconds: float, n: int, repeat: int, path: str) -> dict:
    """Embedding-only seconds of `n` uploads, `repeat` times each, by this checkout and
    `checkout` in turn (the order alternating): medians and their ratio. path: `service`,
    each checkout's `UploadEmbedder` with default settings; `model`, `load_audio` and
    `embed_audio` in the worker's thread."""
    op, threads = ("upload" if path == "service" else "embed"), 1
    data, source = uploads(n, seconds)
    times: dict[str, list[float]] = {"this": [], "that": []}
    cpu: dict[str, list[float]] = {"this": [], "that": []}
    with tempfile.TemporaryDirectory(prefix="request-stages-") as tmp:
        files = []
        for i, d in enumerate(data):
            files.append(Path(tmp) / f"upload-{i}.flac")
            files[-1].write_bytes(d)
        with CheckoutRunner(REPO, threads) as this, CheckoutRunner(checkout, threads) as that:
            runners = {"this": this, "that": that}
            for runner in runners.values():  # first-call costs
                runner.call(op, upload=str(files[0]))
            for i in range(repeat * n):
                order = ("this", "that") if i % 2 == 0 else ("that", "this")
                for side in order:
                    got = runners[side].call(op, upload=str(files[i % n]))
                    times[side].append(got["seconds"])
                    cpu[side].append(got["cpu_s"])
            loaded = {side: runner.loaded for side, runner in runners.items()}
    p50 = {side: statistics.median(t) for side, t in times.items()}
    return {
        "upload_s": seconds,
        "source": source,
        "path": path,
        "torch_threads": threads,
        "requests_per_side": len(times["this"]),
        "loaded": loaded,
        "this_p50_ms": round(1e3 * p50["this"], 1),
        "that_p50_ms": round(1e3 * p50["that"], 1),
        "p50_ratio": round(p50["this"] / p50["that"], 3),
        # CPU seconds per embedding: what the load of other jobs moves least
        "cpu_p50_ratio": round(statistics.median(cpu["this"]) / statistics.median(cpu["that"]), 3),
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="auto")
    p.add_argument("--seconds", type=float, default=30.0)
    p.add_argument("--threads", type=int, default=8)
    p.add_argument("--repeat", type=int, default=10)
    p.add_argument("--json", type=Path)
    p.add_argument("--against", type=Path, help="another checkout: paired embedding-only p50")
    p.add_argument("--uploads", type=int, default=4, help="with --against: distinct uploads")
    p.add_argument(
        "--path",
        choices=["service", "model"],
        default="service",
        help="with --against: each checkout's service code (default) or the model alone",
    )
    args = p.parse_args()
    if args.against:
        out = against(args.against, args.seconds, args.uploads, args.repeat, args.path)
        print(json.dumps(out, indent=2))
        if args.json:
            args.json.write_text(json.dumps(out, indent=2) + "\n")
        return 0
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
