"""`bench/device_check.sh --dry-run`: the GPU machine's check runs end to end on the CPU."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench.device_check import IDENTIFY_SERVERS, INDEXING_VARIANTS

REPO = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.e2e


def test_dry_run_writes_every_section(tmp_path):
    out = tmp_path / "out"
    env = {**os.environ, "PYTHON": sys.executable, "OMP_NUM_THREADS": "1"}
    run = subprocess.run(
        ["bash", str(REPO / "bench" / "device_check.sh"), "--dry-run", str(out)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    report = json.loads((out / "summary.json").read_text())
    assert report["dry_run"] is True
    for name in ("environment", "encoder", "decoding", "identify", "faiss"):
        assert report[name]["status"] == "ok", report[name]
    # Only what needs CUDA (or the shared data set) is skipped.
    assert report["memory"] == {"status": "skipped", "reason": "CUDA only", "seconds": 0.0}
    idx = report["indexing"]
    assert idx["status"] == "ok", idx
    assert set(idx["variants"]) == set(INDEXING_VARIANTS)
    for v in idx["variants"].values():  # every file indexed, in threads or in processes
        assert (v["indexing"]["indexed"], v["indexing"]["failed"]) == (v["files"], 0)
    assert idx["variants"]["processes, features in workers"]["processes"] == idx["workers"]
    for branch in ("mono", "mixed"):
        assert set(report["encoder"][branch]) == {"1", "8", "32"}
        assert all(v > 0 for v in report["encoder"][branch].values())
    dec = report["decoding"]  # both hand-offs measured, over the same files
    assert dec["processes"] == idx["workers"]
    for case in dec["cases"].values():
        assert case["pipe"]["files_per_s"] > 0 and case["files"]["files_per_s"] > 0
    levels = report["identify"]["levels"]
    assert {(lv["server"], lv["concurrency"]) for lv in levels} == {
        (name, c) for name in IDENTIFY_SERVERS for c in (1, 2)
    }
    assert all(set(lv["statuses"]) == {"200"} for lv in levels)  # every request answered
    for lv in levels:  # the server's own figures were read from its /metrics
        assert 0 < lv["server_embedding_mean_s"] < lv["server_request_mean_s"] < 10
        assert 0 <= lv["server_embedding_over_100ms"] <= lv["server_over_100ms"]
        assert lv["server_over_100ms"] <= lv["n"] and 0 <= lv["over_100ms"] <= lv["n"]
        assert len(lv["latencies_ms"]) == lv["n"]  # each request, for the tail's pattern
        over = sum(x > 100 for x in lv["latencies_ms"])
        at_edge = sum(abs(x - 100) <= 0.05 for x in lv["latencies_ms"])  # rounded to 0.1 ms
        assert abs(over - lv["over_100ms"]) <= at_edge
    assert report["faiss"]["cpu"]["queries_per_s_batch_256"] > 0
    summary = (out / "summary.md").read_text()
    assert "## /identify" in summary and "## Decoding processes" in summary
    assert "| memory | skipped |" in summary
    assert (out / "nvidia-smi.txt").is_file()
