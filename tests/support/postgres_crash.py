"""kill -9 of the PostgreSQL server during concurrent catalogue writes, then a restart: is
every acknowledged write there? (tests/test_catalog_postgres_faults.py runs 20 trials,
bench/bench_postgres_faults.py 100.)

A trial: writer threads share one PostgresCatalog (its pool) and add batches of tracks of a
few singers, and now and then remove one of their acknowledged tracks, until the server's
processes are all SIGKILLed at a random moment, 0.2-1.2 s after the first acknowledged
write. After the restart, a fresh handle checks:
- every acknowledged batch is there, vectors and metadata as written (`lost` otherwise);
- every acknowledged removal stays removed (`resurrected` otherwise);
- a batch whose call failed is there whole or not at all (`torn` otherwise);
- every singer model equals the normalised mean of the singer's stored vectors.
"""

from __future__ import annotations

import threading
import time
import uuid
from dataclasses import dataclass, field

import numpy as np

from catalog import open_catalog
from catalog.errors import CatalogError
from model.vectors import normalized_mean
from tests.support.postgres import PostgresServer

DIM = 32
CHECKPOINT = "crash-ckpt"


@dataclass
class CrashTrial:
    acknowledged: int = 0  # batches whose add_tracks returned
    removals: int = 0  # acknowledged removals
    in_doubt: int = 0  # batches whose call failed when the server died
    in_doubt_landed: int = 0  # of those, found whole after the restart
    lost: list[str] = field(default_factory=list)  # must stay empty
    resurrected: list[str] = field(default_factory=list)  # must stay empty
    torn: list[str] = field(default_factory=list)  # must stay empty
    model_error: float = 0.0  # max |stored model - mean of stored vectors|
    restart_s: float = 0.0


def _batch(rng: np.random.Generator, key: str, size: int) -> list[dict]:
    return [
        {
            "vector": rng.standard_normal(DIM).astype(np.float32),
            "singer": f"singer {rng.integers(6)}",
            "domain": ("mono", "mixed")[int(rng.integers(2))],
            "duration_s": 10.0,
            "n_segments": 3,
            "content_hash": f"{key}-{j}",
            "checkpoint_id": CHECKPOINT,
            "title": key,
        }
        for j in range(size)
    ]


def crash_trial(
    server: PostgresServer, seed: int, *, writers: int = 4, batch: int = 3
) -> CrashTrial:
    """One trial on a new catalogue (schema) of `server`; see the module docstring."""
    rng = np.random.default_rng(seed)
    dsn = f"{server.dsn()}?schema=crash_{uuid.uuid4().hex[:10]}"
    catalog = open_catalog(dsn, dim=DIM)
    attempted: dict[str, list[dict]] = {}
    acked: set[str] = set()
    removed: set[str] = set()  # content hashes whose removal was acknowledged
    doubtful: set[str] = set()  # content hashes whose removal failed
    lock = threading.Lock()

    def writer(w: int) -> None:
        local = np.random.default_rng([seed, w])
        mine: list = []  # this writer's acknowledged tracks
        for i in range(10**6):
            key = f"w{w}-{i}"
            items = _batch(local, key, batch)
            with lock:
                attempted[key] = items
            try:
                mine += catalog.add_tracks(items)
            except CatalogError:  # the server is gone: this batch is in doubt
                return
            with lock:
                acked.add(key)
            if i % 4 == 3:
                victim = mine.pop(int(local.integers(len(mine))))
                try:
                    catalog.remove_track(victim.id)
                except CatalogError:
                    with lock:
                        doubtful.add(victim.content_hash)
                    return
                with lock:
                    removed.add(victim.content_hash)

    threads = [threading.Thread(target=writer, args=(w,), daemon=True) for w in range(writers)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 60
    while not acked and time.monotonic() < deadline:  # the writers are under way
        time.sleep(0.01)
    time.sleep(float(rng.uniform(0.2, 1.2)))
    server.kill()
    for t in threads:
        t.join(60)
    catalog.close()
    start = time.perf_counter()
    server.start()
    result = CrashTrial(restart_s=time.perf_counter() - start, removals=len(removed))
    with open_catalog(dsn, dim=None) as after:
        for key, items in attempted.items():
            found = [after.find_track(it["content_hash"], CHECKPOINT, it["domain"]) for it in items]
            kept = [
                (it, t)
                for it, t in zip(items, found)
                if it["content_hash"] not in removed | doubtful
            ]
            result.resurrected += [it["content_hash"] for it, t in zip(items, found)
                                   if t is not None and it["content_hash"] in removed]  # fmt: skip
            if key in acked:
                result.acknowledged += 1
                for it, t in kept:
                    same = t is not None and t.singer == it["singer"] and np.allclose(
                        after.get_vector(t.id), it["vector"] / np.linalg.norm(it["vector"]),
                        atol=1e-6,
                    )  # fmt: skip
                    if not same:
                        result.lost.append(it["content_hash"])
            else:
                result.in_doubt += 1
                present = sum(t is not None for _, t in kept)
                if present not in (0, len(kept)):
                    result.torn.append(key)
                result.in_doubt_landed += bool(present)
        result.model_error = _model_error(after)
    return result


def _model_error(catalog) -> float:
    """Largest distance between a stored singer model and the normalised mean of its tracks."""
    vectors: dict[tuple[str, str], list[np.ndarray]] = {}
    for t in catalog.iter_tracks():
        vectors.setdefault((t.singer, t.domain), []).append(catalog.get_vector(t.id))
    worst = 0.0
    for (name, domain), vs in vectors.items():
        singer = catalog.get_singer(name)
        stored = catalog.singer_vector(singer.id, domain)
        worst = max(worst, float(np.abs(stored - normalized_mean(np.stack(vs))).max()))
    return worst
