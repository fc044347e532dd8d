"""Measurements of a lent GPU machine, written as JSON and Markdown; run by device_check.sh.

    python bench/device_check.py --out DIR [--dry-run] [--gpu-tests LINE] [--sections a,b]

Sections (each runs on its own; a failing one is recorded and the next goes on):
- environment: torch, CUDA, cuDNN, FAISS versions, the device's name and memory;
- encoder: segments/s of one branch alone at batch 1, 64 and 1024, per branch (CUDA-timed);
- indexing: `bench/bench_indexer.py` (indexing files/s against decode-only, same run), with
  decoding in threads and in worker processes (`INDEXING_VARIANTS`);
- decoding: `bench/bench_decoding.py` with the indexer's worker processes: waveforms handed
  back through the executor's pipe against as files (`model.decode_pool`), same run;
- identify: `/identify` p50/p99/throughput at 1, 8 and 32 clients against a real uvicorn
  with the device's defaults (`IDENTIFY_SERVERS`; bench/bench_service.py's servers and
  clients);
- faiss: flat inner-product search, faiss-gpu against faiss-cpu, at 1M vectors;
- memory: GPU memory allocated and reserved over 1,000 requests through the service's own
  embedding path (`UploadEmbedder.embed`), after 100 warm-up requests, for each of
  `MEMORY_SERVERS`.
`--dry-run` runs everything that does not need CUDA at tiny sizes on the CPU (the test suite
calls it); the CUDA-only sections are recorded as skipped with the reason.
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
import traceback
from collections.abc import Callable
from pathlib import Path

import httpx
import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.bench_service import (
    build_catalog,
    load_level,
    load_level_spread,
    server_means,
    server_totals,
    services,
)
from bench.workload import uploads
from model import DEFAULT_CHECKPOINT
from model.checkpoint import make_random_checkpoint
from model.embedding import Embedder


class Skipped(Exception):
    """A section that cannot run here (no CUDA, no data set); the reason is reported."""


def sizes(dry: bool) -> dict:
    if dry:
        return {
            "encoder_batches": [1, 8, 32],
            "encoder_seconds": 0.2,
            "indexer_files": 4,
            "clients": [1, 2],
            "requests": lambda c: 3 * c,
            "upload_seconds": 4.0,
            "tracks": 200,
            "faiss_vectors": 20_000,
            "memory_requests": 0,
            "decoding": ["--files", "8", "--uploads", "4", "--rounds", "1"],
        }
    return {
        "encoder_batches": [1, 64, 1024],
        "encoder_seconds": 3.0,
        "indexer_files": 2000,
        "clients": [1, 8, 32],
        # Per level: p99 of 64 requests was their slowest or second slowest.
        "requests": lambda c: max(256, 8 * c),
        "upload_seconds": 30.0,
        "tracks": 20_000,
        "faiss_vectors": 1_000_000,
        "memory_requests": 1000,
        "decoding": ["--files", "1200", "--uploads", "240", "--rounds", "3"],
    }


def checkpoint() -> Path:
    if DEFAULT_CHECKPOINT.is_file():
        return DEFAULT_CHECKPOINT
    return make_random_checkpoint(Path(tempfile.mkdtemp()) / "random.pt")


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# -- sections --------------------------------------------------------------------------------
def environment(cfg: dict, device: torch.device) -> dict:
    import faiss

    from catalog.vector_index import gpu_available, gpu_problem

    out = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.cuda.is_available() else None,
        "faiss": faiss.__version__,
        "faiss_gpu": gpu_available(),
        # device_check.sh's stand-in for cuBLAS 12 on a CUDA 13 machine, when it was used.
        "faiss_gpu_problem": gpu_problem(),
        "cublas12_shim": ".whl/lib" in os.environ.get("LD_LIBRARY_PATH", ""),
        "cpu_count": os.cpu_count(),
        "device": str(device),
    }
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        out["gpu"] = props.name
        out["gpu_memory_gib"] = round(props.total_memory / 2**30, 1)
    return out


def encoder(cfg: dict, device: torch.device) -> dict:
    """Segments/s of each branch alone on random log-mel input (features excluded)."""
    net = Embedder.from_checkpoint(checkpoint(), str(device)).net
    out: dict = {}
    for domain in ("mono", "mixed"):
        out[domain] = {}
        for batch in cfg["encoder_batches"]:
            x = torch.randn(batch, net.dims.n_mels, 129, device=device)
            with torch.inference_mode():
                for _ in range(3):  # warm-up: cuDNN algorithm choice, allocator
                    net(x, domain)
                sync(device)
                n, start = 0, time.perf_counter()
                while time.perf_counter() - start < cfg["encoder_seconds"]:
                    net(x, domain)
                    n += 1
                sync(device)
                wall = time.perf_counter() - start
            out[domain][str(batch)] = round(n * batch / wall, 1)
    out["unit"] = "segments/s (129 frames each)"
    return out


def synthetic_folder(root: Path, n: int, seconds: float = 10.0) -> Path:
    """`n` synthetic FLAC takes (44.1 kHz) as <singer>/<track>.flac, for a machine without
    MIR-1K (the research data does not travel to the lent GPU machine); written by one
    process per core (about 0.1 s a take on one)."""
    import concurrent.futures as cf
    import multiprocessing as mp

    paths = [root / f"singer-{i % 20}" / f"take-{i}.flac" for i in range(n)]
    for path in paths:
        path.parent.mkdir(parents=True, exist_ok=True)
    spawn = mp.get_context("spawn")  # this process may hold CUDA: no fork
    with cf.ProcessPoolExecutor(os.cpu_count() or 1, mp_context=spawn) as pool:
        list(pool.map(write_take, paths, range(n), [seconds] * n))
    return root


def write_take(path: Path, seed: int, seconds: float) -> None:
    import soundfile as sf

    from bench.workload import UPLOAD_SR, synthetic_take

    sf.write(path, synthetic_take(seconds, seed=seed), UPLOAD_SR)


# How the indexer decodes, measured side by side: threads (the default), worker processes
# with features on the model's device, worker processes that compute features themselves.
INDEXING_VARIANTS = {
    "threads": [],
    "processes, features on device": ["--features-in", "device"],
    "processes, features in workers": ["--features-in", "workers"],
}


def indexing(cfg: dict, device: torch.device, out_dir: Path) -> dict:
    """bench/bench_indexer.py per `INDEXING_VARIANTS`: MIR-1K vocals when present, else
    synthetic 10-s FLAC files. Each variant's decode-only floor is measured the way it
    decodes (threads, or its worker processes)."""
    from model.shared import shared_dir

    cuda = device.type == "cuda"
    workers = max(2, (os.cpu_count() or 2) - 2) if cuda else 2
    out: dict = {"workers": workers, "variants": {}}
    with tempfile.TemporaryDirectory() as tmp:
        source, extra = "MIR-1K vocals", []
        if not (shared_dir() / "data" / "mir1k" / "index.csv").is_file():
            extra = ["--source", str(synthetic_folder(Path(tmp), cfg["indexer_files"] // 3))]
            source = "synthetic 10-s FLAC takes"
        out["source"] = source
        for name, flags in INDEXING_VARIANTS.items():
            dest = out_dir / "bench_indexer.json"
            cmd = [sys.executable, str(REPO / "bench" / "bench_indexer.py"), *extra, *flags]
            cmd += ["--limit", str(cfg["indexer_files"]), "--rounds", "1" if cfg["dry"] else "3"]
            cmd += ["--workers", str(workers), "--device", str(device), "--json", str(dest)]
            cmd += ["--batch-size", "256" if cuda else "64"]
            if name != "threads":
                cmd += ["--processes", str(workers)]
            subprocess.run(cmd, check=True, cwd=REPO, stdout=subprocess.DEVNULL)
            out["variants"][name] = json.loads(dest.read_text())
            dest.unlink()
    threads_floor = out["variants"]["threads"]["decode_only"]["files_per_s"]
    for v in out["variants"].values():
        v["ratio_to_threads_floor"] = round(v["indexing"]["files_per_s"] / threads_floor, 3)
    return out


def decoding(cfg: dict, device: torch.device, out_dir: Path) -> dict:
    """bench/bench_decoding.py with as many worker processes as the indexing section: the
    pipe against file hand-off, files/s and the caller's CPU per file (synthetic FLAC)."""
    workers = max(2, (os.cpu_count() or 2) - 2) if device.type == "cuda" else 2
    dest = out_dir / "bench_decoding.json"
    cmd = [sys.executable, str(REPO / "bench" / "bench_decoding.py"), *cfg["decoding"]]
    cmd += ["--processes", str(workers), "--json", str(dest)]
    subprocess.run(cmd, check=True, cwd=REPO, stdout=subprocess.DEVNULL)
    out = json.loads(dest.read_text())
    dest.unlink()
    return out


# The servers `/identify` is measured on: the device's defaults (decoding in worker processes
# on CUDA, each upload in pieces on its share of the cores). Measured and dropped: decoding in
# the inference threads (lowest p50 at 1 client, worse under load), until 2026-11-27; a CUDA
# stream per inference thread (a higher p99 at 8 clients on two machines, and 294 MiB more
# reserved), 2026-11-28; cross-request batching (p99 at 8 clients 102 -> 165 ms), removed
# from the service (docs/performance.md).
IDENTIFY_SERVERS: dict[str, dict[str, str]] = {"defaults": {}}

# Above one client, each level runs twice: every client in this process's event loop, and
# the clients spread over this many processes (the load generator's own CPU time is then
# not what the latency measures).
CLIENT_PROCESSES = 4


def identify(cfg: dict, device: torch.device) -> dict:
    ckpt = checkpoint()
    embedder = Embedder.from_checkpoint(ckpt, "cpu")
    data, source = uploads(4, cfg["upload_seconds"], real=not cfg["dry"])
    workers = max(2, (os.cpu_count() or 2) // 2) if device.type == "cuda" else 2
    levels = []
    with tempfile.TemporaryDirectory() as tmp:
        index = Path(tmp) / "index"
        build_catalog(index, embedder, cfg["tracks"], max(1, cfg["tracks"] // 10))
        dev = str(device)
        with services(index, ckpt, dev, workers, IDENTIFY_SERVERS) as urls:
            for url in urls.values():
                asyncio.run(load_level(url, data, 2, 4))  # warm-up
            for c in cfg["clients"]:
                for name, url in urls.items():
                    for spread in (False, True):
                        if spread and c == 1:
                            continue
                        n = cfg["requests"](c)
                        before = server_totals(httpx.get(f"{url}/metrics").text)
                        if spread:  # clients over 4 processes
                            level = load_level_spread(url, data, c, n, CLIENT_PROCESSES)
                        else:
                            level = asyncio.run(load_level(url, data, c, n))
                        level |= server_means(url, before)
                        levels.append({"server": name, "client_processes": spread, **level})
    return {
        "uploads": source,
        "upload_s": cfg["upload_seconds"],
        "workers": workers,
        "tracks": cfg["tracks"],
        "levels": levels,
    }


def faiss_search(cfg: dict, device: torch.device) -> dict:
    """Flat inner-product top-10 over `faiss_vectors` x 256: faiss-cpu, faiss-gpu when it can
    run on this card, and an exact torch matrix-product search on the same device as a
    reference for what the card does without FAISS."""
    import faiss

    from catalog.vector_index import gpu_available, gpu_problem

    n, dim = cfg["faiss_vectors"], 256
    rng = np.random.default_rng(0)
    base = rng.standard_normal((n, dim), dtype=np.float32)
    faiss.normalize_L2(base)
    queries = base[rng.choice(n, 256, replace=False)].copy()
    cpu = faiss.IndexFlatIP(dim)
    cpu.add(base)
    searches: dict[str, Callable[[np.ndarray], np.ndarray]] = {
        "cpu": lambda q: cpu.search(q, 10)[1]
    }
    if gpu_available():
        gpu = faiss.index_cpu_to_gpu(faiss.StandardGpuResources(), 0, cpu)
        searches["gpu"] = lambda q: gpu.search(q, 10)[1]
    if device.type == "cuda":
        on_device = torch.from_numpy(base).to(device)

        def torch_search(q: np.ndarray) -> np.ndarray:
            scores = torch.from_numpy(q).to(device) @ on_device.T
            return scores.topk(10, dim=1).indices.cpu().numpy()

        searches["torch_cuda"] = torch_search
    out: dict = {"vectors": n, "dim": dim, "k": 10}
    ids = {}
    for name, search in searches.items():
        search(queries[:8])  # warm-up
        start = time.perf_counter()
        for q in queries[:32]:
            search(q[None])
        single = (time.perf_counter() - start) / 32
        start = time.perf_counter()
        ids[name] = search(queries)
        batch = time.perf_counter() - start
        out[name] = {
            "one_query_ms": round(1e3 * single, 3),
            "queries_per_s_batch_256": round(len(queries) / batch, 1),
        }
        if name != "cpu":
            out[name]["top10_equal_cpu"] = float(np.mean(ids[name] == ids["cpu"]))
    if "gpu" not in ids:
        out["gpu"] = f"skipped: {gpu_problem()}"
    return out


# The service's settings the memory section runs with: the CUDA defaults.
MEMORY_SERVERS: dict[str, dict[str, str]] = {"defaults": {}}


def memory(cfg: dict, device: torch.device) -> dict:
    """GPU memory after 100 warm-up requests and after `memory_requests` more, through
    `UploadEmbedder.embed` (decoding, features, encoder) with 8 requests at a time, for each of
    `MEMORY_SERVERS`."""
    if device.type != "cuda":
        raise Skipped("CUDA only")
    rng = np.random.default_rng(0)
    data = [uploads(1, float(s))[0][0] for s in rng.uniform(4.0, 40.0, 8)]
    return {
        "requests": cfg["memory_requests"],
        "variants": {
            name: memory_of(cfg, device, data, settings)
            for name, settings in MEMORY_SERVERS.items()
        },
    }


def memory_of(cfg: dict, device: torch.device, data: list[bytes], settings: dict) -> dict:
    from service.runtime import Runtime
    from service.settings import Settings
    from service.telemetry import Telemetry

    with tempfile.TemporaryDirectory() as tmp:
        runtime = Runtime(
            Settings(
                index_dir=Path(tmp) / "i",
                checkpoint=checkpoint(),
                device=str(device),
                inference_workers=8,
                **settings,
            ),
            Telemetry(),
        )
        runtime.load()

        async def run(n: int) -> None:
            for start in range(0, n, 8):
                jobs = [
                    runtime.inference.embed(data[(start + i) % len(data)], ("mono", "mixed")[i % 2])
                    for i in range(min(8, n - start))
                ]
                await asyncio.gather(*jobs)

        def snapshot() -> dict:
            torch.cuda.synchronize(device)
            return {
                "allocated_mib": round(torch.cuda.memory_allocated(device) / 2**20, 2),
                "reserved_mib": round(torch.cuda.memory_reserved(device) / 2**20, 2),
            }

        torch.cuda.reset_peak_memory_stats(device)
        asyncio.run(run(100))
        before = snapshot()
        start = time.perf_counter()
        asyncio.run(run(cfg["memory_requests"]))
        wall = time.perf_counter() - start
        after = snapshot()
        runtime.close()
    return {
        "after_warmup": before,
        "after": after,
        "growth_allocated_mib": round(after["allocated_mib"] - before["allocated_mib"], 2),
        "growth_reserved_mib": round(after["reserved_mib"] - before["reserved_mib"], 2),
        "peak_allocated_mib": round(torch.cuda.max_memory_allocated(device) / 2**20, 2),
        "requests_per_s": round(cfg["memory_requests"] / wall, 1),
    }


# -- report ------------------------------------------------------------------------------------
def run_section(name: str, fn: Callable[[], dict]) -> dict:
    start = time.perf_counter()
    try:
        result = {"status": "ok", **fn()}
    except Skipped as why:
        result = {"status": "skipped", "reason": str(why)}
    except Exception as err:
        result = {
            "status": "failed",
            "error": f"{err.__class__.__name__}: {err}",
            "traceback": traceback.format_exc(),
        }
    result["seconds"] = round(time.perf_counter() - start, 1)
    print(f"{name}: {result['status']} ({result['seconds']} s)", flush=True)
    return result


def table(heading: str, intro: str, header: str, rows: list[list[str]]) -> list[str]:
    """A Markdown section's lines: its heading, an optional paragraph, a table whose column
    names are `header`'s, separated by " | "."""
    lines = [heading, ""] + ([intro, ""] if intro else [])
    lines += [f"| {header} |", "|---" * len(header.split(" | ")) + "|"]
    return lines + ["| " + " | ".join(row) + " |" for row in rows] + [""]


def decoding_row(case: str, v: dict) -> list[str]:
    """One case of bench_decoding.py as a row of the summary's table."""
    pipe, files = v["pipe"], v["files"]
    return [
        case,
        f"{pipe['files_per_s']:.1f}",
        f"{files['files_per_s']:.1f}",
        f"**{v['files_per_s_files_over_pipe']:.2f}**",
        f"{pipe['caller_cpu_ms']:.2f} / {files['caller_cpu_ms']:.2f}",
    ]


def memory_row(name: str, v: dict) -> list[str]:
    """One server of the memory section as a row of the summary's table (MiB)."""
    return [
        name,
        f"{v['after_warmup']['allocated_mib']} -> {v['after']['allocated_mib']}",
        f"{v['growth_allocated_mib']} / {v['growth_reserved_mib']}",
        f"{v['peak_allocated_mib']}",
        f"{v['requests_per_s']}",
    ]


def identify_row(lv: dict) -> list[str]:
    """One /identify load level as a row of the summary's table (times in ms)."""
    procs = min(lv["concurrency"], CLIENT_PROCESSES) if lv["client_processes"] else 1
    return [
        lv["server"],
        f"{lv['concurrency']}",
        f"{procs}",
        f"{lv['n']}",
        f"{1e3 * lv['p50_s']:.1f}",
        f"{1e3 * lv['p99_s']:.1f}",
        f"{lv['over_100ms']} / {lv['server_over_100ms']} / {lv['server_embedding_over_100ms']}",
        f"{lv['throughput_rps']:.1f}",
        f"{1e3 * lv['server_request_mean_s']:.1f}",
        f"{1e3 * lv['server_embedding_mean_s']:.1f}",
    ]


def markdown(report: dict) -> str:
    env = report["environment"]
    lines = [
        "# Device check",
        "",
        f"{env.get('gpu', 'no GPU')} ({env.get('device')}), torch {env.get('torch')} "
        f"(CUDA {env.get('torch_cuda')}), faiss {env.get('faiss')} "
        f"(GPU build: {env.get('faiss_gpu')}), {env.get('cpu_count')} CPUs"
        + (" — dry run (tiny sizes)" if report["dry_run"] else ""),
        "",
        f"GPU tests: {report['gpu_tests']}",
        "",
    ]
    enc = report["encoder"]
    if enc["status"] == "ok":
        batches = list(enc["mono"])
        lines += table(
            "## Encoder alone (segments/s)",
            "",
            " | ".join(["branch", *(f"batch {b}" for b in batches)]),
            [[d, *(f"{enc[d][b]:,.0f}" for b in batches)] for d in ("mono", "mixed")],
        )
    idx = report["indexing"]
    if idx["status"] == "ok":
        first = next(iter(idx["variants"].values()))
        lines += table(
            "## Indexing against the decode floor",
            f"{first['files']} files ({idx['source']}), {idx['workers']} workers (threads or "
            "processes); each variant's decode-only floor decodes as it does.",
            "decoding | decode-only files/s | indexing files/s | of its floor | "
            "of the threads' floor",
            [
                [
                    name,
                    f"{v['decode_only']['files_per_s']}",
                    f"{v['indexing']['files_per_s']}",
                    f"**{v['ratio']:.0%}**",
                    f"{v['ratio_to_threads_floor']:.0%}",
                ]
                for name, v in idx["variants"].items()
            ],
        )
    dec = report["decoding"]
    if dec["status"] == "ok":
        lines += table(
            f"## Decoding processes: waveforms back through the pipe or as files "
            f"({dec['processes']} processes)",
            "",
            "case | pipe files/s | files files/s | files / pipe | "
            "caller CPU ms a file: pipe / files",
            [decoding_row(case, v) for case, v in dec["cases"].items()],
        )
    ide = report["identify"]
    if ide["status"] == "ok":
        lines += table(
            f"## /identify ({ide['upload_s']:.0f}-s FLAC uploads, {ide['workers']} "
            f"inference workers, {ide['tracks']} tracks)",
            f"Client processes: 1 (all clients in one event loop) or {CLIENT_PROCESSES}. Over 100 "
            "ms: requests that took the client, the server (body receipt to JSON) and its "
            "embedding longer. "
            "Server request / embedding: the server's own mean time per /identify and per "
            "embedding (decoding, segments, encoder), from its metrics.",
            "server | clients | client processes | requests | p50 (ms) | p99 (ms) | over 100 ms: "
            "client / server / embedding | req/s | server request (ms) | server embedding (ms)",
            [identify_row(lv) for lv in ide["levels"]],
        )
    fs = report["faiss"]
    if fs["status"] == "ok":
        lines += [f"## Flat search, {fs['vectors']:,} x {fs['dim']}, top {fs['k']}", ""]
        for name in ("cpu", "gpu", "torch_cuda"):
            if name not in fs:
                continue
            v = fs[name]
            lines.append(
                f"- {name}: "
                + (
                    v
                    if isinstance(v, str)
                    else f"{v['one_query_ms']} ms per single query, "
                    f"{v['queries_per_s_batch_256']:,.0f} queries/s in batches of 256"
                    + (
                        f", top-10 equal to faiss-cpu {100 * v['top10_equal_cpu']:.1f} %"
                        if "top10_equal_cpu" in v
                        else ""
                    )
                )
            )
        lines.append("")
    mem = report["memory"]
    if mem["status"] == "ok":
        lines += table(
            "## GPU memory over requests",
            f"{mem['requests']} requests after 100 warm-up, 8 at a time through "
            "`UploadEmbedder.embed`.",
            "server | allocated (MiB) | growth allocated / reserved (MiB) | peak (MiB) | req/s",
            [memory_row(name, v) for name, v in mem["variants"].items()],
        )
    lines += table(
        "## Sections",
        "",
        "section | status | seconds | note",
        [
            [name, s["status"], f"{s['seconds']}", s.get("reason") or s.get("error") or ""]
            for name, s in ((n, report[n]) for n in SECTIONS)
        ],
    )
    return "\n".join(lines) + "\n"


SECTIONS = ("environment", "encoder", "indexing", "decoding", "identify", "faiss", "memory")


def main() -> int:
    p = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    p.add_argument("--out", type=Path, required=True, help="folder for summary.json / .md")
    p.add_argument("--dry-run", action="store_true", help="CPU, tiny sizes, CUDA-only skipped")
    p.add_argument("--device", default="auto", help="torch device measured (auto: CUDA if any)")
    p.add_argument("--gpu-tests", default="not run", help="outcome line of the GPU tests")
    p.add_argument(
        "--sections", default=",".join(SECTIONS), help="comma-separated subset to run (a rerun)"
    )
    args = p.parse_args()
    chosen = args.sections.split(",")
    if unknown := set(chosen) - set(SECTIONS):
        p.error(f"unknown sections: {sorted(unknown)}; choose from {', '.join(SECTIONS)}")
    args.out.mkdir(parents=True, exist_ok=True)
    device = (
        torch.device("cpu")
        if args.dry_run
        else torch.device(
            "cuda"
            if args.device == "auto" and torch.cuda.is_available()
            else ("cpu" if args.device == "auto" else args.device)
        )
    )
    cfg = {**sizes(args.dry_run), "dry": args.dry_run}
    if device.type == "cpu":
        torch.set_num_threads(1)  # the dry run shares a small CPU with the test suite
    sections = {
        "environment": lambda: environment(cfg, device),
        "encoder": lambda: encoder(cfg, device),
        "indexing": lambda: indexing(cfg, device, args.out),
        "decoding": lambda: decoding(cfg, device, args.out),
        "identify": lambda: identify(cfg, device),
        "faiss": lambda: faiss_search(cfg, device),
        "memory": lambda: memory(cfg, device),
    }
    report: dict = {"dry_run": args.dry_run, "gpu_tests": args.gpu_tests}
    for name in SECTIONS:
        if name not in chosen and name != "environment":
            report[name] = {"status": "skipped", "reason": "not chosen", "seconds": 0.0}
            continue
        report[name] = run_section(name, sections[name])
        # Written after every section, so a native crash later keeps what was measured.
        (args.out / "summary.json").write_text(json.dumps(report, indent=2) + "\n")
    (args.out / "summary.md").write_text(markdown(report))
    print((args.out / "summary.md").read_text())
    failed = [n for n in SECTIONS if report[n]["status"] == "failed"]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
