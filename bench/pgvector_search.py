"""bench_search.py's pgvector rows: the PostgreSQL catalogue's HNSW search at scale.

A PostgresCatalog of n mono tracks (bulk-loaded with COPY, then its own HNSW index built as
its schema declares it), searched through `search_tracks` at several `hnsw.ef_search`.
With --pg-dir the server's data stays there, and a later run with the same --n finds the
catalogue (schema bench_N) loaded and indexed: it only searches (build figures from then).
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path

import numpy as np
import psutil

from catalog.postgres import PostgresCatalog
from catalog.postgres_schema import HNSW_EF_CONSTRUCTION, HNSW_INDEX, HNSW_M
from tests.support.postgres import PostgresServer, postgres_in

log = logging.getLogger("bench_search")
K = 10
EF_SWEEP = (40, 100, 200, 400, 800)
DEFAULT_EF = 100  # the catalogue's (catalog.postgres_reads.EF_SEARCH)


def _server_cpu_s(pid: int | None) -> float:
    """CPU seconds of a local server's processes (postmaster and children); 0 if remote."""
    if pid is None:
        return 0.0
    root = psutil.Process(pid)
    total = 0.0
    for p in [root, *root.children(recursive=True)]:
        try:
            t = p.cpu_times()
            total += t.user + t.system + t.children_user + t.children_system
        except psutil.NoSuchProcess:
            pass
    return total


def _load(catalog: PostgresCatalog, base: np.ndarray, labels: np.ndarray) -> float:
    """COPY every vector in as a mono track (singer = label); returns seconds."""
    start = time.perf_counter()
    with catalog._pool.connection() as conn:
        conn.execute("DROP INDEX IF EXISTS tracks_mono_hnsw, tracks_mixed_hnsw")
        with conn.cursor().copy("COPY singers (name) FROM STDIN") as copy:
            for s in np.unique(labels):
                copy.write_row([f"singer {s}"])
        ids = dict(conn.execute("SELECT name, id FROM singers").fetchall())
        columns = "singer_id, domain, duration_s, n_segments, content_hash, checkpoint_id, "
        columns += "created_at, vector"
        with conn.cursor().copy(f"COPY tracks ({columns}) FROM STDIN (FORMAT BINARY)") as copy:
            copy.set_types(["int8", "text", "float8", "int4", "text", "text", "text", "vector"])
            for i, (v, s) in enumerate(zip(base, labels)):
                row = [ids[f"singer {s}"], "mono", 30.0, 10, str(i), "bench", "2026", v]
                copy.write_row(row)
                if i % 100_000 == 0:
                    log.info("pgvector: copied %d rows", i)
    return time.perf_counter() - start


def _build(catalog: PostgresCatalog, memory: str) -> float:
    """The catalogue's own HNSW indexes, built with `memory` and 2 parallel workers."""
    start = time.perf_counter()
    with catalog._pool.connection() as conn:
        conn.execute(f"SET maintenance_work_mem = '{memory}'")
        conn.execute("SET max_parallel_maintenance_workers = 2")
        for domain in ("mono", "mixed"):
            conn.execute(HNSW_INDEX.format(domain=domain))
        conn.execute("ANALYZE tracks")
    return time.perf_counter() - start


def pgvector_rows(
    base: np.ndarray,
    labels: np.ndarray,
    queries: np.ndarray,
    truth: np.ndarray,
    args,
    measure: Callable[..., dict],
) -> Iterator[dict]:
    """One row per ef_search (and one with both domains searched); see the module docstring."""
    n = len(base)
    with ExitStack() as stack:
        pid = None
        dsn = args.pg_dsn
        if dsn is None:
            settings = {
                "shared_buffers": args.pg_shared_buffers,
                "max_parallel_maintenance_workers": 2,
                "max_wal_size": "8GB",
            }
            if args.pg_dir:  # kept for the next run
                args.pg_dir.mkdir(parents=True, exist_ok=True)
                server = stack.enter_context(
                    PostgresServer(args.pg_dir / "data", **settings).start()
                )
            else:
                folder = Path(stack.enter_context(tempfile.TemporaryDirectory()))
                server = stack.enter_context(postgres_in(folder, **settings))
            dsn, pid = server.dsn(), server.process.pid
        url = f"{dsn}{'&' if '?' in dsn else '?'}schema=bench_{n}"
        catalog = stack.enter_context(PostgresCatalog.open(url, dim=base.shape[1], pool_size=8))
        with catalog._pool.connection() as conn:
            meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
        if "bench_build_s" in meta and len(catalog) == n:
            load_s, build_s = float(meta["bench_load_s"]), float(meta["bench_build_s"])
            log.info("pgvector: %d vectors loaded and indexed by an earlier run", n)
        else:
            catalog.remove_tracks(catalog.track_ids())
            load_s = _load(catalog, base, labels)
            log.info("pgvector: loaded %d vectors in %.0f s; building HNSW", n, load_s)
            build_s = _build(catalog, args.pg_maintenance_mem)
            with catalog._pool.connection() as conn:
                conn.execute(
                    "INSERT INTO meta VALUES ('bench_load_s', %s), ('bench_build_s', %s)",
                    [str(load_s), str(build_s)],
                )
        with catalog._pool.connection() as conn:
            index_bytes, total_bytes = conn.execute(
                "SELECT pg_relation_size('tracks_mono_hnsw'), pg_total_relation_size('tracks')"
            ).fetchone()
            version = conn.execute("SELECT version()").fetchone()[0].split(" on ")[0]
            vector = conn.execute("SELECT extversion FROM pg_extension WHERE extname = 'vector'")
            pgvector = vector.fetchone()[0]
        log.info("pgvector: built in %.0f s, %.0f B/vector", build_s, index_bytes / n)
        for ef, domain in [*((ef, "mono") for ef in EF_SWEEP), (DEFAULT_EF, None)]:
            catalog.ef_search = ef

            def search(q: np.ndarray, domain=domain):
                found = [
                    [int(h.track.content_hash) for h in catalog.search_tracks(v, K, domain)]
                    for v in q
                ]
                return None, np.array(found)

            before = _server_cpu_s(pid)
            search(queries)  # also warms the caches, as measure()'s own first pass does
            cpu_ms = (_server_cpu_s(pid) - before) / len(queries) * 1e3
            extra = {
                "m": HNSW_M,
                "ef_construction": HNSW_EF_CONSTRUCTION,
                "search_param": ef,
                "domain": domain or "both (two partial indexes)",
                "load_s": round(load_s, 1),
                "build_s": round(build_s, 1),
                "bytes_per_vector": round(index_bytes / n, 1),
                "table_bytes_per_vector": round(total_bytes / n, 1),
                "server_cpu_ms_per_query": round(cpu_ms, 2) if pid else "n/a (remote)",
                "server": f"{version}, pgvector {pgvector}",
            }
            yield measure("pgvector-hnsw", search, queries, truth, extra)
