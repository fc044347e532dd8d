"""The issue-37 acceptance test: a service answers /identify without a pause while its
catalogue migrates from checkpoint A to checkpoint B (real uvicorn, real indexer processes,
one of them killed with SIGKILL half way): every answer is a 2xx, answers switch from A's
checkpoint id to B's once and for all, and the catalogue keeps every track."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from catalog.sqlite_generations import generation_dir, read_live
from catalog.sqlite_schema import CATALOG_FILE
from catalog.store import Catalog
from indexer.__main__ import main
from indexer.migration import shadow_name
from model.checkpoint import checkpoint_id, make_random_checkpoint
from service.settings import Settings
from tests.support import REPO
from tests.support.live import API_KEY, LiveServer, make_clip, upload

pytestmark = pytest.mark.e2e


def embedded_by(db: Path, ckpt: str) -> int:
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1) as conn:
            sql = "SELECT count(*) FROM tracks WHERE checkpoint_id = ?"
            return conn.execute(sql, (ckpt,)).fetchone()[0]
    except sqlite3.Error:
        return 0


class Asker:
    """A client thread asking /identify in a loop: (status, checkpoint id) of every answer."""

    def __init__(self, url: str, clips: list[Path]):
        self.url, self.clips = url, clips
        self.answers: list[tuple[int, str | None]] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self) -> None:
        with httpx.Client(base_url=self.url, timeout=120) as client:
            i = 0
            while not self.stop.is_set():
                r = upload(client, "/identify", self.clips[i % len(self.clips)], domain="mixed")
                body = r.json() if r.headers.get("content-type") == "application/json" else {}
                self.answers.append((r.status_code, body.get("checkpoint_id")))
                i += 1

    def wait_for(self, ckpt: str, timeout_s: float = 120.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if any(c == ckpt for _, c in self.answers[-3:]):
                return
            time.sleep(0.1)
        raise AssertionError(f"no answer with checkpoint {ckpt}: {self.answers[-5:]}")


def migrate_process(index: Path, checkpoint: Path) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "indexer", "migrate", "--index", str(index), "--to"]
    cmd += [str(checkpoint), "--workers", "1", "--batch-size", "2", "--commit-every", "1"]
    return subprocess.Popen(
        [*cmd, "--no-progress"],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"},
    )


def test_identify_answers_throughout_a_migration(tmp_path, random_checkpoint):
    library = tmp_path / "music"
    clips = [
        make_clip(library / f"singer-{v}", v, domain, seed)
        for v in range(4)
        for domain in ("mono", "mixed")
        for seed in (0, 1)
    ]
    index = tmp_path / "index"
    assert main(["--index", str(index), "--checkpoint", str(random_checkpoint), str(library)]) == 0
    ckpt_a = checkpoint_id(random_checkpoint)
    b = make_random_checkpoint(tmp_path / "b.pt", seed=1)
    ckpt_b = checkpoint_id(b)
    with Catalog.open(index, dim=None) as c:
        before = {t.id: t for t in c.iter_tracks()}
    settings = Settings(
        index_dir=index,
        checkpoint=random_checkpoint,
        device="cpu",
        api_key=API_KEY,
        catalog_poll_s=0.3,
    )
    with LiveServer(settings) as server:
        asker = Asker(server.url, [c.path for c in clips[:4]])
        try:
            asker.wait_for(ckpt_a)
            shadow_db = generation_dir(index, shadow_name(ckpt_b, "")) / CATALOG_FILE
            killed = migrate_process(index, b)
            deadline = time.monotonic() + 300
            while embedded_by(shadow_db, ckpt_b) < 3 and time.monotonic() < deadline:
                assert killed.poll() is None, killed.communicate()[1]
                time.sleep(0.02)
            killed.send_signal(signal.SIGKILL)
            killed.wait()
            assert read_live(index) == "" and 3 <= embedded_by(shadow_db, ckpt_b) < len(clips)
            # A track added through the service while the migration is under way survives.
            with server.client() as client:
                late = make_clip(tmp_path / "late", 2, "mixed", 7)
                r = upload(
                    client,
                    "/tracks",
                    late.path,
                    headers={"X-API-Key": API_KEY},
                    singer="late singer",
                    domain="mixed",
                )
                assert r.status_code == 201, r.text
                late_id = r.json()["id"]
            resumed = migrate_process(index, b)
            _, err = resumed.communicate(timeout=600)
            assert resumed.returncode == 0, err
            asker.wait_for(ckpt_b)
            n_after = len(asker.answers)
            while len(asker.answers) < n_after + 3:
                time.sleep(0.1)
        finally:
            asker.stop.set()
            asker.thread.join(120)
        with server.client() as client:
            track = client.get(f"/tracks/{late_id}").json()
            assert track["checkpoint_id"] == ckpt_b and track["singer"] == "late singer"
    statuses = [s for s, _ in asker.answers]
    assert all(200 <= s < 300 for s in statuses), [s for s in statuses if s >= 300]
    ids = [c for _, c in asker.answers]
    first_b = ids.index(ckpt_b)
    assert set(ids[:first_b]) == {ckpt_a} and set(ids[first_b:]) == {ckpt_b}
    with Catalog.open(index, dim=None) as c:
        after = {t.id: t for t in c.iter_tracks()}
        assert c.generation().checkpoint_id == ckpt_b
    assert set(after) == {*before, late_id}
    for track_id, old in before.items():
        new = after[track_id]
        assert (new.singer, new.path, new.title, new.created_at) == (
            old.singer,
            old.path,
            old.title,
            old.created_at,
        )
        assert new.checkpoint_id == ckpt_b
