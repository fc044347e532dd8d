"""`/identify` latency and throughput against a real uvicorn, next to embedding-only time.

    python bench/bench_service.py [--checkpoint CKPT] [--concurrency 4 16] [--json out.json]

One run: builds a catalogue (random unit vectors filed under the loaded checkpoint's id, so
search cost is realistic for its size), makes 30-s FLAC uploads (44.1 kHz, so decoding and
resampling are included; MIR-1K vocals concatenated per singer, or a synthetic voice without
the shared data, see bench/workload.py) and starts `python -m service` as a subprocess with
its defaults. Then:

1. one client, paired: each upload is embedded in this process (one worker thread, the
   service's torch thread count, decoded as the service decodes one upload on an idle
   machine: in `--decode-parts` pieces; also whole, for reference), then sent to the server;
2. N concurrent clients per `--concurrency` level. Server-side embedding time per level comes
   from the service's own /metrics.

With `--against CHECKOUT` a second server runs the same settings from another checkout (a
`git worktree` of the commit before a change), and both are measured alternately: request
by request at one client, level by level above, so a slow spell of the (shared) machine hits
both.

Reported ratios, all from this one run (targets of issue 15):
- `overhead_1_client`: 1-client p50 over embedding-only p50, both decoding in the same
  pieces (target <= 1.10);
- `throughput_4_clients_x_serial`: 4-client requests/s over the serial embedding rate,
  1 / embedding-only mean with uploads decoded whole, one core's work (target >= 1.5);
- with `--against`: `against_1_client` (1-client p50, this checkout over the other) and
  `against_4_clients` (4-client requests/s, this over the other): ~1.0 is no change.
(Cross-request batching, measured here until 2026-12 as `batching_1_client`, was removed:
docs/performance.md.)
Not part of the test suite.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from concurrent.futures import Executor, ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import IO

import httpx
import numpy as np
import torch
from prometheus_client.parser import text_string_to_metric_families

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.workload import free_port, uploads
from catalog import Catalog
from model import DEFAULT_CHECKPOINT
from model.audio import MAX_QUERY_SECONDS, load_audio
from model.cli.options import add_device
from model.devices import inference_threads
from model.embedding import Embedder, TrackEmbedding

SERVER = "defaults"  # the server measured: the service's default settings, this checkout
AGAINST = "against"  # with --against: the same settings, served from another checkout


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
        "over_100ms": int((a > 0.1).sum()),
    }


def service_torch_threads(device: torch.device, workers: int) -> int:
    """The intra-op threads the service gives torch (service.performance: SINGER_TORCH_THREADS
    unset), so the in-process baseline computes under the same conditions."""
    return inference_threads(workers) if device.type == "cpu" else torch.get_num_threads()


def embed_upload(
    embedder: Embedder, data: bytes, parts: int, helpers: Executor | None
) -> TrackEmbedding:
    """An upload embedded as the service embeds it (`UploadEmbedder.embed`, in threads)."""
    sr = embedder.features.sample_rate
    y = load_audio(data, sr, MAX_QUERY_SECONDS, parts=parts, executor=helpers)
    return embedder.embed_audio(y, "mono")


def one_client(
    embedder: Embedder,
    urls: dict[str, str],
    data: list[bytes],
    repeats: int,
    threads: int,
    parts: int,
) -> dict:
    """1-client latencies, paired: each upload is embedded in process (in one worker thread
    like the service's pool, with the service's torch threads, decoded in `parts` pieces as
    the service decodes on an idle machine, then whole), then sent once to each server, in
    turn (order alternating), so a slow spell of the shared machine hits every path alike.

    Returns {"embedding_only": stats, "embedding_only_whole": stats, "identify": {mode: stats}}.
    """
    baselines = {"embedding_only": parts, "embedding_only_whole": 1}
    times: dict[str, list[float]] = {**{b: [] for b in baselines}, **{mode: [] for mode in urls}}
    with (
        ThreadPoolExecutor(1) as pool,
        ThreadPoolExecutor(max(1, parts - 1)) as helpers,
        httpx.Client(timeout=600) as client,
    ):
        pool.submit(torch.set_num_threads, threads).result()
        pool.submit(embed_upload, embedder, data[0], parts, helpers).result()  # warm-up
        for url in urls.values():
            post_identify(client, url, data[0])
        before = {
            mode: server_totals(client.get(f"{url}/metrics").text) for mode, url in urls.items()
        }
        for i in range(repeats * len(data)):
            d = data[i % len(data)]
            for name, n in baselines.items():
                start = time.perf_counter()
                pool.submit(embed_upload, embedder, d, n, helpers).result()
                times[name].append(time.perf_counter() - start)
            order = list(urls.items())
            for mode, url in order if i % 2 == 0 else order[::-1]:  # no position bias
                start = time.perf_counter()
                r = post_identify(client, url, d)
                times[mode].append(time.perf_counter() - start)
                r.raise_for_status()
    out = {}
    for name, n in baselines.items():
        emb = percentiles(times.pop(name))
        out[name] = {
            **emb,
            "torch_threads": threads,
            "decode_parts": n,
            "serial_rate_per_s": 1.0 / emb["mean_s"],
        }
    out["identify"] = {
        mode: {**percentiles(t), **server_means(urls[mode], before[mode])}
        for mode, t in times.items()
    }
    return out


def post_identify(client: httpx.Client, url: str, data: bytes) -> httpx.Response:
    files = {"file": ("q.flac", data, "audio/flac")}
    return client.post(f"{url}/identify", files=files, data={"top_k": "5"})


def server_totals(metrics_text: str) -> dict[str, float]:
    """Sums and counts of the server's embedding time (mono domain) and of its /identify
    request time (from the first middleware: body receipt, parsing, embedding, search, JSON),
    and how many of each took at most 100 ms (their histograms' bucket)."""

    samples = [
        (sample.name, sample.labels, sample.value)
        for family in text_string_to_metric_families(metrics_text)
        for sample in family.samples
    ]

    def value(name: str, **labels: str) -> float:
        """The sum over the samples of `name` whose labels include `labels` (the request
        histogram has one series per method; only POST reaches /identify)."""
        return sum(v for n, ls, v in samples if n == name and labels.items() <= ls.items())

    embedding, request = "singer_embedding_seconds", "singer_http_request_duration_seconds"
    return {
        "embedding_sum": value(f"{embedding}_sum", domain="mono"),
        "embedding_count": value(f"{embedding}_count", domain="mono"),
        "embedding_le_100ms": value(f"{embedding}_bucket", domain="mono", le="0.1"),
        "request_sum": value(f"{request}_sum", route="/identify"),
        "request_count": value(f"{request}_count", route="/identify"),
        "request_le_100ms": value(f"{request}_bucket", route="/identify", le="0.1"),
    }


def server_means(url: str, before: dict[str, float]) -> dict[str, float]:
    """Mean server-side seconds per embedding and per request since `before`, and how many
    of each took over 100 ms (to tell a server's tail from a client's, and the embedding's
    from the rest of the server's)."""
    after = server_totals(httpx.get(f"{url}/metrics").text)
    d = {key: after[key] - before[key] for key in after}
    return {
        "server_embedding_mean_s": d["embedding_sum"] / max(d["embedding_count"], 1),
        "server_request_mean_s": d["request_sum"] / max(d["request_count"], 1),
        "server_over_100ms": int(d["request_count"] - d["request_le_100ms"]),
        "server_embedding_over_100ms": int(d["embedding_count"] - d["embedding_le_100ms"]),
    }


async def drive(
    url: str, data: list[bytes], concurrency: int, total: int
) -> tuple[list[float], dict[int, int], float]:
    """`total` /identify uploads from `concurrency` clients of one event loop:
    (latencies in seconds, count per status code, wall seconds)."""
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    counter = iter(range(total))
    limits = httpx.Limits(max_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=600, limits=limits) as client:

        async def worker():
            for i in counter:
                files = {"file": ("q.flac", data[i % len(data)], "audio/flac")}
                start = time.perf_counter()
                r = await client.post("/identify", files=files, data={"top_k": "5"})
                latencies.append(time.perf_counter() - start)
                statuses[r.status_code] = statuses.get(r.status_code, 0) + 1

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = time.perf_counter() - start
    return latencies, statuses, wall


def level_record(
    concurrency: int, total: int, latencies: list[float], statuses: dict[int, int], wall: float
) -> dict:
    return {
        "concurrency": concurrency,
        **percentiles(latencies),
        "throughput_rps": total / wall,
        "wall_s": wall,
        "statuses": statuses,
        # Every request in completion order (client process after client process): whether
        # the slow ones come first (cold paths), in bursts, or at random.
        "latencies_ms": [round(1000 * x, 1) for x in latencies],
    }


async def load_level(url: str, data: list[bytes], concurrency: int, total: int) -> dict:
    """One load level from clients sharing this process's event loop."""
    return level_record(concurrency, total, *await drive(url, data, concurrency, total))


def _drive_in_process(url: str, data: list[bytes], concurrency: int, total: int):
    return asyncio.run(drive(url, data, concurrency, total))


def load_level_spread(
    url: str, data: list[bytes], concurrency: int, total: int, processes: int
) -> dict:
    """One load level from clients spread over `processes` client processes (started before
    the clock), so that the load generator's own event loop and HTTP encoding, which share
    one core in `load_level`, are not what is measured."""
    import concurrent.futures as cf
    import multiprocessing as mp

    processes = max(1, min(processes, concurrency))
    clients = [concurrency // processes + (i < concurrency % processes) for i in range(processes)]
    shares = [total * c // concurrency for c in clients]
    shares[0] += total - sum(shares)
    with cf.ProcessPoolExecutor(processes, mp_context=mp.get_context("spawn")) as pool:
        list(pool.map(percentiles, [[0.0]] * processes))  # every client process started
        runs = list(
            pool.map(_drive_in_process, [url] * processes, [data] * processes, clients, shares)
        )
    statuses: dict[int, int] = {}
    for _, st, _ in runs:
        for code, n in st.items():
            statuses[code] = statuses.get(code, 0) + n
    latencies = [x for lat, _, _ in runs for x in lat]
    return level_record(concurrency, total, latencies, statuses, max(w for _, _, w in runs))


def measure_level(url: str, data: list[bytes], concurrency: int, total: int) -> dict:
    """`load_level` plus the server's own mean embedding time over the level."""
    before = server_totals(httpx.get(f"{url}/metrics").text)
    level = asyncio.run(load_level(url, data, concurrency, total))
    return {**level, **server_means(url, before)}


def wait_ready(url: str, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with status {proc.returncode}")
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"server not ready within {timeout:.0f} s")


def start_service(
    index: Path,
    checkpoint: Path,
    device: str,
    workers: int,
    log: IO[str],
    checkout: Path = REPO,
    **env: str,
) -> tuple[subprocess.Popen, str]:
    """Start `python -m service` of `checkout` (this one, or another: a `git worktree` of
    an earlier commit) on a free port over `index`, its output to `log` (a file: a pipe
    nobody reads would stall a chatty server): (process, URL), not yet ready."""
    port = free_port()
    settings = {
        "SINGER_INDEX_DIR": str(index),
        "SINGER_CHECKPOINT": str(checkpoint),
        "SINGER_DEVICE": device,
        "SINGER_PORT": str(port),
        "SINGER_LOG_LEVEL": "warning",
        "SINGER_INFERENCE_WORKERS": str(workers),
        "SINGER_MAX_PENDING": "10000",
        # Clients beyond the default 16 concurrent uploads would be refused before their body.
        "SINGER_MAX_CONCURRENT_UPLOADS": "256",
        **{f"SINGER_{k.upper()}": v for k, v in env.items()},
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "service"],
        env={**os.environ, **settings, "PYTHONPATH": str(checkout)},
        cwd=checkout,
        stdout=log,
        stderr=subprocess.STDOUT,
        text=True,
    )
    return proc, f"http://127.0.0.1:{port}"


@contextmanager
def services(
    index: Path,
    checkpoint: Path,
    device: str,
    workers: int,
    servers: Mapping[str, Mapping[str, str]],
    checkouts: Mapping[str, Path] | None = None,
) -> Iterator[dict[str, str]]:
    """One server per entry of `servers` (name -> its SINGER_* settings, lower case) over
    `index`, started together, each from its checkout in `checkouts` (default: this one);
    yields {name: URL} once all are ready. An error while they run carries the end of each
    server's output."""
    with ExitStack() as files:
        logs = {name: files.enter_context(tempfile.TemporaryFile("w+")) for name in servers}
        started = {
            name: start_service(
                index,
                checkpoint,
                device,
                workers,
                logs[name],
                (checkouts or {}).get(name, REPO),
                **env,
            )
            for name, env in servers.items()
        }
        try:
            for proc, url in started.values():
                wait_ready(url, proc)
            yield {name: url for name, (_, url) in started.items()}
        except Exception as err:
            for name, log in logs.items():
                log.seek(0)
                status = started[name][0].poll()
                err.add_note(f"server {name} (exit {status}):\n{log.read()[-3000:]}")
            raise
        finally:
            for proc, _ in started.values():
                proc.terminate()
            for proc, _ in started.values():
                proc.wait(30)


def ratios(results: dict) -> dict:
    """The issue's targets, from one run's figures (a level given more than once, e.g.
    `--concurrency 4 4 4`, counts by its median)."""
    emb, one = results["embedding_only"], results["one_client"]

    def rps(server: str, clients: int) -> float | None:
        runs = [
            lv["throughput_rps"]
            for lv in results["identify"]
            if lv["server"] == server and lv["concurrency"] == clients
        ]
        return float(np.median(runs)) if runs else None

    out = {}
    if SERVER in one:
        out["overhead_1_client"] = one[SERVER]["p50_s"] / emb["p50_s"]
    if (this := rps(SERVER, 4)) is not None:
        out["throughput_4_clients_x_serial"] = (
            this / results["embedding_only_whole"]["serial_rate_per_s"]
        )
    if AGAINST in one:  # this checkout against another, paired request by request
        out["against_1_client"] = one[SERVER]["p50_s"] / one[AGAINST]["p50_s"]
    if (this := rps(SERVER, 4)) is not None and (that := rps(AGAINST, 4)) is not None:
        out["against_4_clients"] = this / that
    return out


def main() -> int:
    p = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--checkpoint", type=Path, default=DEFAULT_CHECKPOINT)
    add_device(p)  # SINGER_DEVICE of the server and of the embedding-only baseline
    p.add_argument("--seconds", type=float, default=30.0, help="upload duration")
    p.add_argument("--uploads", type=int, default=4, help="distinct upload files")
    p.add_argument(
        "--concurrency",
        type=int,
        nargs="+",
        default=[4, 16],
        help="client counts measured as free-running levels (1 client is always measured, "
        "paired with embedding only); repeat one (4 4 4) to take its median",
    )
    p.add_argument(
        "--requests", type=int, default=0, help="requests per level (0: max(48, 8 x clients))"
    )
    p.add_argument("--tracks", type=int, default=2000, help="catalogue size")
    p.add_argument("--singers", type=int, default=200)
    p.add_argument("--workers", type=int, default=2, help="SINGER_INFERENCE_WORKERS")
    p.add_argument(
        "--decode-parts",
        type=int,
        default=os.cpu_count() or 1,
        help="SINGER_DECODE_PARTS (1: uploads decoded whole); the embedding-only baseline "
        "decodes in as many pieces as the service does for one client on an idle machine",
    )
    p.add_argument("--embed-repeats", type=int, default=8, help="1-client rounds over the uploads")
    p.add_argument(
        "--against",
        type=Path,
        help="also serve from this checkout (e.g. `git worktree add /tmp/before HEAD~1`), "
        "measured alternately with this one: ratios against_1_client (p50, this / that) "
        "and against_4_clients (req/s, this / that)",
    )
    p.add_argument("--json", type=Path, help="write the results here")
    args = p.parse_args()

    embedder = Embedder.from_checkpoint(args.checkpoint, args.device)
    data, source = uploads(args.uploads, args.seconds)
    results: dict = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cpus",
        "device": str(embedder.device),
        "checkpoint": embedder.checkpoint_id,
        "uploads": source,
        "upload_seconds": args.seconds,
        "upload_bytes_mean": float(np.mean([len(u) for u in data])),
        "inference_workers": args.workers,
        "catalog_tracks": args.tracks,
    }
    threads = service_torch_threads(embedder.device, args.workers)
    with tempfile.TemporaryDirectory() as tmp:
        index = Path(tmp) / "index"
        build_catalog(index, embedder, args.tracks, args.singers)
        levels = []
        servers = {SERVER: {"decode_parts": str(args.decode_parts)}}
        checkouts = {}
        if args.against:
            servers[AGAINST] = servers[SERVER]
            checkouts[AGAINST] = args.against.resolve()
        parts = min(args.decode_parts, os.cpu_count() or 1)  # performance.decode_parts, 1 client
        with services(
            index, args.checkpoint, args.device, args.workers, servers, checkouts
        ) as urls:
            one = one_client(embedder, urls, data, args.embed_repeats, threads, parts)
            results["embedding_only"] = one["embedding_only"]
            results["embedding_only_whole"] = one["embedding_only_whole"]
            results["one_client"] = one["identify"]
            for mode, stats in one["identify"].items():
                print(
                    f"{mode} c=  1: p50 {stats['p50_s']:.3f} s  "
                    f"p99 {stats['p99_s']:.3f} s  mean {stats['mean_s']:.3f} s (paired with "
                    f"embedding only; server: request {stats['server_request_mean_s']:.3f} s, "
                    f"embedding {stats['server_embedding_mean_s']:.3f} s)",
                    flush=True,
                )
            for c in args.concurrency:
                for mode, url in urls.items():
                    level = measure_level(url, data, c, args.requests or max(48, 8 * c))
                    levels.append({"server": mode, **level})
                    print(
                        f"{mode} c={c:>3}: p50 {level['p50_s']:.3f} s  "
                        f"p99 {level['p99_s']:.3f} s  {level['throughput_rps']:.2f} req/s  "
                        f"(server embedding {level['server_embedding_mean_s']:.3f} s)  "
                        f"{level['statuses']}",
                        flush=True,
                    )
        results["identify"] = levels
    results["ratios"] = ratios(results)

    print(
        f"\n{results['machine']}, device {results['device']}, {args.seconds:.0f}-s FLAC uploads "
        f"({source}, {results['upload_bytes_mean'] / 1e6:.1f} MB), {args.tracks} tracks, "
        f"{args.workers} inference workers, {threads} torch threads"
    )
    for key in ("embedding_only", "embedding_only_whole"):
        emb = results[key]
        print(
            f"embedding only (in process, serial, decoded in {emb['decode_parts']} piece(s)): "
            f"p50 {emb['p50_s']:.3f} s, p99 {emb['p99_s']:.3f} s, mean {emb['mean_s']:.3f} s, "
            f"{emb['serial_rate_per_s']:.2f} uploads/s"
        )
    for mode, stats in results["one_client"].items():
        # Where a 1-client request's time goes, in means (additive, unlike percentiles).
        print(
            f"1 client, {mode}: mean {stats['mean_s']:.3f} s = server embedding "
            f"{stats['server_embedding_mean_s']:.3f} + rest of the server "
            f"{stats['server_request_mean_s'] - stats['server_embedding_mean_s']:.3f} "
            f"+ client and HTTP {stats['mean_s'] - stats['server_request_mean_s']:.3f}"
        )
    print("| server | clients | p50 (s) | p99 (s) | req/s | server embedding mean (s) |")
    print("| --- | --- | --- | --- | --- | --- |")
    for mode, stats in results["one_client"].items():
        print(
            f"| {mode} | 1 (paired) | {stats['p50_s']:.3f} | {stats['p99_s']:.3f} | | "
            f"{stats['server_embedding_mean_s']:.3f} |"
        )
    for lv in results["identify"]:
        print(
            f"| {lv['server']} | {lv['concurrency']} | {lv['p50_s']:.3f} | {lv['p99_s']:.3f} | "
            f"{lv['throughput_rps']:.2f} | {lv['server_embedding_mean_s']:.3f} |"
        )
    targets = {
        "overhead_1_client": "<= 1.10",
        "throughput_4_clients_x_serial": ">= 1.5",
        "against_1_client": "~1.0: no slower than the other checkout",
        "against_4_clients": "~1.0: no less throughput",
    }
    for name, value in results["ratios"].items():
        print(f"{name}: {value:.3f} (target {targets[name]})")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
