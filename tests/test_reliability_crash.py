"""Durability under kill -9: concurrent POST /tracks, the server SIGKILLed at random moments,
and every write it acknowledged is still there after a restart."""

from __future__ import annotations

import random
import sys
import threading
import time

import httpx
import pytest

from catalog.hashing import content_hash
from tests.support.live import API_KEY, ServiceProcess, free_port, render, service_env
from tests.support.synth import write

pytestmark = pytest.mark.e2e

TRIALS = 3  # each kills the service mid-write; more trials cost CI about 30 s each
WRITERS = 3


def test_acknowledged_writes_survive_kill_9(tmp_path, random_checkpoint):
    rng = random.Random(7)
    clips = []
    for i in range(90):  # distinct contents: one voice per file, several takes
        path = write(
            tmp_path / "clips" / f"take-{i}.wav", render(i % 4, "mono", seed=i, seconds=4.0)
        )
        clips.append((path, f"singer-{i % 4}"))
    port = free_port()
    env = service_env(random_checkpoint, tmp_path / "index", port, log_level="warning")
    acknowledged: dict[int, tuple[str, str]] = {}  # track id -> (content hash, singer)
    todo = list(clips)
    lock = threading.Lock()

    def writer(url: str, stop: threading.Event) -> None:
        with httpx.Client(base_url=url, timeout=30, headers={"X-API-Key": API_KEY}) as client:
            while not stop.is_set():
                with lock:
                    if not todo:
                        return
                    path, singer = todo.pop()
                data = path.read_bytes()
                try:
                    r = client.post(
                        "/tracks",
                        files={"file": (path.name, data, "audio/wav")},
                        data={"singer": singer, "domain": "mono"},
                    )
                except httpx.TransportError:
                    with lock:
                        todo.append((path, singer))  # not acknowledged: retried after restart
                    return
                if r.status_code in (200, 201):
                    with lock:
                        acknowledged[r.json()["id"]] = (content_hash(data), singer)

    for trial in range(TRIALS):
        server = ServiceProcess([sys.executable, "-m", "service"], env, port, tmp_path).start()
        _check(server.url, acknowledged, trial)
        stop = threading.Event()
        threads = [threading.Thread(target=writer, args=(server.url, stop)) for _ in range(WRITERS)]
        before = len(acknowledged)
        for t in threads:
            t.start()
        deadline = time.monotonic() + 60  # first writes are slow: lazy imports, cold caches
        while len(acknowledged) == before and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(rng.uniform(0.0, 2.0))  # then a random moment, writes in flight
        server.kill()  # SIGKILL, whatever the writers are doing
        stop.set()
        for t in threads:
            t.join(60)
    server = ServiceProcess([sys.executable, "-m", "service"], env, port, tmp_path).start()
    try:
        _check(server.url, acknowledged, TRIALS)
    finally:
        server.kill()
    assert len(acknowledged) >= TRIALS, server.output()[-3000:]  # writes did get through
    print(f"\nkill -9: {TRIALS} trials, {len(acknowledged)} acknowledged writes, none lost")


def _check(url: str, acknowledged: dict[int, tuple[str, str]], trial: int) -> None:
    with httpx.Client(base_url=url, timeout=30) as client:
        for track_id, (digest, singer) in acknowledged.items():
            r = client.get(f"/tracks/{track_id}")
            assert r.status_code == 200, f"trial {trial}: acknowledged track {track_id} lost"
            assert (r.json()["content_hash"], r.json()["singer"]) == (digest, singer)
