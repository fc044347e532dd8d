"""`/identify` latency and throughput against a real uvicorn, next to embedding-only time.

    python bench/bench_service.py [--checkpoint CKPT] [--concurrency 1 4 16] [--json out.json]

One run: builds a catalogue (random unit vectors filed under the loaded checkpoint's id, so
search cost is realistic for its size), renders 30-s synthetic singing uploads (FLAC, 44.1 kHz:
decoding and resampling included), times `Embedder.embed_file` on those bytes in this process
(embedding only, one at a time, in a worker thread as in the service), then starts `python -m
service` as a subprocess and sends the same uploads from N concurrent clients per level.
Server-side embedding time per level comes from the service's own /metrics. Not part of the test
suite.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import soundfile as sf

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # tests.support.synth: the project's synthetic singing voices

from catalog import Catalog
from model import DEFAULT_CHECKPOINT
from model.embedding import Embedder
from tests.support.live import free_port
from tests.support.synth import VOICES, sing


def render_uploads(n: int, seconds: float, sr: int = 44100) -> list[bytes]:
    out = []
    for i in range(n):
        buf = io.BytesIO()
        sf.write(buf, sing(VOICES[i % len(VOICES)], seconds, seed=i, sr=sr), sr, format="FLAC")
        out.append(buf.getvalue())
    return out


def build_catalog(index_dir: Path, embedder: Embedder, n_tracks: int, n_singers: int) -> None:
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((n_tracks, embedder.embed_dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    items = [
        {
            "vector": v,
            "singer": f"singer-{i % n_singers}",
            "domain": ("mono", "mixed")[i % 2],
            "duration_s": 30.0,
            "n_segments": 10,
            "content_hash": f"bench-{i}",
            "checkpoint_id": embedder.checkpoint_id,
            "title": f"track {i}",
        }
        for i, v in enumerate(vectors)
    ]
    with Catalog.open(index_dir, dim=embedder.embed_dim) as catalog:
        catalog.add_tracks(items)


def percentiles(xs: list[float]) -> dict:
    a = np.asarray(xs)
    return {
        "p50_s": float(np.percentile(a, 50)),
        "p99_s": float(np.percentile(a, 99)),
        "mean_s": float(a.mean()),
        "n": len(xs),
    }


def embedding_only(embedder: Embedder, uploads: list[bytes], repeats: int) -> dict:
    """`embed_file` on the upload bytes, one at a time, in one worker thread like the
    service's inference pool (torch's threading differs between the main and other threads)."""

    def run() -> list[float]:
        embedder.embed_file(uploads[0], "mono")  # warm-up
        times = []
        for _ in range(repeats):
            for data in uploads:
                start = time.perf_counter()
                embedder.embed_file(data, "mono")
                times.append(time.perf_counter() - start)
        return times

    with ThreadPoolExecutor(1) as pool:
        return percentiles(pool.submit(run).result())


def server_embedding(metrics_text: str) -> tuple[float, float]:
    """(sum, count) of singer_embedding_seconds for the mono domain."""

    def value(name: str) -> float:
        m = re.search(rf'^{name}\{{domain="mono"\}} (\S+)$', metrics_text, re.MULTILINE)
        return float(m.group(1)) if m else 0.0

    return value("singer_embedding_seconds_sum"), value("singer_embedding_seconds_count")


async def load_level(url: str, uploads: list[bytes], concurrency: int, total: int) -> dict:
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    counter = iter(range(total))
    limits = httpx.Limits(max_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=600, limits=limits) as client:

        async def worker():
            for i in counter:
                files = {"file": ("q.flac", uploads[i % len(uploads)], "audio/flac")}
                start = time.perf_counter()
                r = await client.post("/identify", files=files, data={"top_k": "5"})
                latencies.append(time.perf_counter() - start)
                statuses[r.status_code] = statuses.get(r.status_code, 0) + 1

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = time.perf_counter() - start
    return {
        "concurrency": concurrency,
        **percentiles(latencies),
        "throughput_rps": total / wall,
        "wall_s": wall,
        "statuses": statuses,
    }


def wait_ready(url: str, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited: {proc.stdout.read()}")
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise SystemExit("server not ready")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", type=Path, default=DEFAULT_CHECKPOINT)
    p.add_argument("--device", default="auto")
    p.add_argument("--seconds", type=float, default=30.0, help="upload duration")
    p.add_argument("--uploads", type=int, default=4, help="distinct upload files")
    p.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16])
    p.add_argument(
        "--requests",
        type=int,
        default=0,
        help="requests per level (default: max(48, 8 x concurrency))",
    )
    p.add_argument("--tracks", type=int, default=2000, help="catalogue size")
    p.add_argument("--singers", type=int, default=200)
    p.add_argument("--workers", type=int, default=2, help="SINGER_INFERENCE_WORKERS")
    p.add_argument("--embed-repeats", type=int, default=8)
    p.add_argument("--json", type=Path, help="write the results here")
    args = p.parse_args()

    embedder = Embedder.from_checkpoint(args.checkpoint, args.device)
    uploads = render_uploads(args.uploads, args.seconds)
    results: dict = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cpus",
        "device": str(embedder.device),
        "checkpoint": embedder.checkpoint_id,
        "upload_seconds": args.seconds,
        "upload_bytes_mean": float(np.mean([len(u) for u in uploads])),
        "inference_workers": args.workers,
        "catalog_tracks": args.tracks,
    }
    with tempfile.TemporaryDirectory() as tmp:
        index = Path(tmp) / "index"
        build_catalog(index, embedder, args.tracks, args.singers)
        results["embedding_only"] = embedding_only(embedder, uploads, args.embed_repeats)
        del embedder  # the server process loads its own copy

        port = free_port()
        url = f"http://127.0.0.1:{port}"
        env = {
            **os.environ,
            "SINGER_INDEX_DIR": str(index),
            "SINGER_CHECKPOINT": str(args.checkpoint),
            "SINGER_DEVICE": args.device,
            "SINGER_PORT": str(port),
            "SINGER_LOG_LEVEL": "warning",
            "SINGER_INFERENCE_WORKERS": str(args.workers),
            "SINGER_MAX_PENDING": "10000",
        }
        proc = subprocess.Popen(
            [sys.executable, "-m", "service"],
            env=env,
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        try:
            wait_ready(url, proc)
            asyncio.run(load_level(url, uploads, 1, 2))  # warm-up
            levels = []
            for c in args.concurrency:
                before = server_embedding(httpx.get(f"{url}/metrics").text)
                level = asyncio.run(load_level(url, uploads, c, args.requests or max(48, 8 * c)))
                after = server_embedding(httpx.get(f"{url}/metrics").text)
                n_embedded = max(after[1] - before[1], 1)
                level["server_embedding_mean_s"] = (after[0] - before[0]) / n_embedded
                levels.append(level)
                print(
                    f"c={c:>3}: p50 {level['p50_s']:.3f} s  p99 {level['p99_s']:.3f} s  "
                    f"{level['throughput_rps']:.2f} req/s  (server embedding "
                    f"{level['server_embedding_mean_s']:.3f} s)  {level['statuses']}",
                    flush=True,
                )
            results["identify"] = levels
        finally:
            proc.terminate()
            proc.wait(30)

    emb = results["embedding_only"]
    print(
        f"\n{results['machine']}, device {results['device']}, {args.seconds:.0f}-s FLAC uploads "
        f"({results['upload_bytes_mean'] / 1e6:.1f} MB), {args.tracks} tracks, "
        f"{args.workers} inference workers"
    )
    print(
        f"embedding only (in process, serial): p50 {emb['p50_s']:.3f} s, "
        f"p99 {emb['p99_s']:.3f} s -> {1 / emb['p50_s']:.2f} uploads/s"
    )
    print("| clients | p50 (s) | p99 (s) | req/s | server embedding mean (s) |")
    print("| --- | --- | --- | --- | --- |")
    for lv in results["identify"]:
        print(
            f"| {lv['concurrency']} | {lv['p50_s']:.3f} | {lv['p99_s']:.3f} | "
            f"{lv['throughput_rps']:.2f} | {lv['server_embedding_mean_s']:.3f} |"
        )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
