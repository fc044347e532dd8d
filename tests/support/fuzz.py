"""`make fuzz`: schemathesis against a live `python -m service`, until N requests are served.

    python -m tests.support.fuzz --requests 20000

Starts the service (random-weight checkpoint, fresh catalogue holding two tracks, an API key
so the write endpoints are fuzzed too), then runs `schemathesis run` on its /openapi.json
with the checks below, again with new seeds until the server's own request counter
(`singer_http_requests_total` of /metrics) reaches N. Prints the requests by status and the
schemathesis failures; exits 1 on any 5xx or failed check. The last result is recorded in
service/README.md (Reliability).
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import httpx

from model.cli.options import add_fields, replace_fields
from tests.support.live import (
    API_KEY,
    ServiceProcess,
    add_clip,
    free_port,
    make_clip,
    service_env,
)

CHECKS = ",".join(
    (
        "not_a_server_error",
        "status_code_conformance",
        "content_type_conformance",
        "response_schema_conformance",
        "unsupported_method",
        "allow_header_conformance",
    )
)
COUNTER = re.compile(r"^singer_http_requests_total\{(.*)\} ([0-9.e+]+)$")


def served(url: str) -> Counter:
    """Requests the server has answered, by status (its /metrics, this request excluded)."""
    by_status: Counter = Counter()
    for line in httpx.get(f"{url}/metrics", timeout=30).text.splitlines():
        if m := COUNTER.match(line):
            status = re.search(r'status="(\d+)"', m.group(1)).group(1)
            by_status[status] += int(float(m.group(2)))
    return by_status


def schemathesis_cmd(url: str, examples: int, seed: int, workers: int) -> list[str]:
    exe = shutil.which("schemathesis", path=str(Path(sys.executable).parent)) or "schemathesis"
    return [
        exe,
        "run",
        f"{url}/openapi.json",
        "--checks",
        CHECKS,
        "--max-examples",
        str(examples),
        "--seed",
        str(seed),
        "--workers",
        str(workers),
        "--header",
        f"X-API-Key: {API_KEY}",
        "--request-timeout",
        "60",
        "--suppress-health-check",
        "all",
        "--generation-database",
        "none",
        "--no-color",
    ]


@dataclass(frozen=True)
class FuzzPlan:
    """How long `make fuzz` runs, and with what."""

    requests: int = 20000  # stop once the server has served this many requests
    examples: int = 300  # schemathesis examples per operation per round
    workers: int = 2  # schemathesis workers
    seed: int = 0  # seed of the first round; round i uses seed + i
    max_minutes: float = (
        0.0  # start no new round after this long, even below requests (0: no limit)
    )


FIELDS = ("requests", "examples", "workers", "seed", "max_minutes")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m tests.support.fuzz",
        description=__doc__,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    add_fields(p, FuzzPlan(), FIELDS)
    return run(replace_fields(FuzzPlan(), p.parse_args(argv), FIELDS))


def run(args: FuzzPlan) -> int:
    """Fuzz a fresh service until `args.requests` are served; 1 on any 5xx or failed check."""
    from model.checkpoint import make_random_checkpoint

    work = Path(tempfile.mkdtemp(prefix="singer-fuzz-"))
    ckpt = make_random_checkpoint(work / "random.pt", seed=0)
    port = free_port()
    env = service_env(ckpt, work / "index", port, log_level="warning")
    server = ServiceProcess([sys.executable, "-m", "service"], env, port, work).start()
    start = time.monotonic()
    failures, rounds = [], 0
    try:
        with httpx.Client(base_url=server.url, timeout=60) as client:
            for i in range(2):
                add_clip(client, make_clip(work, i, "mono", i))
        while (total := sum(served(server.url).values())) < args.requests:
            if args.max_minutes and time.monotonic() - start > 60 * args.max_minutes:
                print(f"stopped after {args.max_minutes:g} min at {total} requests")
                break
            seed = args.seed + rounds
            done = subprocess.run(
                schemathesis_cmd(server.url, args.examples, seed, args.workers),
                cwd=work,
                capture_output=True,
                text=True,
                check=False,
            )
            rounds += 1
            summary = [ln for ln in done.stdout.splitlines() if ln.strip()][-3:]
            print(
                f"round {rounds} (seed {seed}): exit {done.returncode}, "
                f"{sum(served(server.url).values())} requests so far; " + " | ".join(summary),
                flush=True,
            )
            if done.returncode != 0:
                failures.append(done.stdout[-6000:])
        by_status = served(server.url)
        log = server.output()
    finally:
        server.kill()
    total = sum(by_status.values())
    n5xx = sum(n for s, n in by_status.items() if s.startswith("5") and s != "503")
    print(f"\n{total} requests in {time.monotonic() - start:.0f} s, {rounds} schemathesis rounds")
    print("by status: " + ", ".join(f"{s}: {n}" for s, n in sorted(by_status.items())))
    print(
        f"5xx other than 503 (not_ready/overloaded): {n5xx}; tracebacks in the server log: "
        f"{log.count('Traceback')}; rounds with failed checks: {len(failures)}"
    )
    for text in failures[:3]:
        print(text)
    return 1 if n5xx or failures or "Traceback" in log else 0


if __name__ == "__main__":
    sys.exit(main())
