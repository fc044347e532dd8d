"""Time the model of another checkout beside this one's, alternately, in one run.

    python bench/checkout_runner.py CHECKOUT   (a worker: JSON lines on stdin and stdout)

`CheckoutRunner(checkout)` starts this file as a worker process that imports `model`,
`catalog` and `indexer` from CHECKOUT (a git worktree of the commit before a change, or this
checkout itself) with this interpreter, loads the default checkpoint there, and then times
what it is asked, one request at a time:

- `index`: `indexer.run.index_listing` of some files into a fresh catalogue (as
  `bench/bench_indexer.py` times it);
- `embed`: one upload's bytes decoded and embedded in the worker (`load_audio` then
  `embed_audio`, mono);
- `upload`: one upload embedded by the checkout's service code (`UploadEmbedder` with
  default settings, as its service embeds a lone upload);
- `vectors`: the track vectors of some files, to compare two checkouts' answers.

Each reply gives wall seconds and the worker's CPU seconds (user + system, all its
threads): on a machine loaded by other jobs the wall time swings with their load, the CPU
time much less. Both sides of a comparison run in such workers, with the same torch thread
count, so a ratio compares the code and nothing else (`bench_indexer.py --against`,
`request_stages.py --against`). Not part of the test suite.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np


class CheckoutRunner:
    """A worker process running CHECKOUT's code; `call(op, **args)` -> its JSON reply."""

    def __init__(self, checkout: Path, threads: int, checkpoint: Path | None = None):
        self.checkout = Path(checkout).resolve()
        env = {**os.environ, "PYTHONPATH": str(self.checkout)}
        # The data sets stay where this checkout finds them (a worktree in /tmp has no
        # ../shared beside it).
        from model.shared import shared_dir

        env.setdefault("SINGER_SHARED_DIR", str(shared_dir()))
        self.proc = subprocess.Popen(
            [sys.executable, __file__, str(self.checkout)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
            cwd=self.checkout,
        )
        #: {"checkpoint_id", "module": the folder `model` was imported from}
        self.loaded = self.call(
            "load", threads=threads, checkpoint=str(checkpoint) if checkpoint else None
        )

    def call(self, op: str, **args: Any) -> dict:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps({"op": op, **args}) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the worker for {self.checkout} exited ({self.proc.wait()})")
        reply = json.loads(line)
        if "error" in reply:
            raise RuntimeError(f"{self.checkout}: {reply['error']}")
        return reply

    def close(self) -> None:
        if self.proc.poll() is None:
            assert self.proc.stdin is not None
            self.proc.stdin.close()
            self.proc.wait(timeout=60)

    def __enter__(self) -> CheckoutRunner:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _Worker:
    """The worker side: CHECKOUT's modules, imported after sys.path puts it first."""

    def __init__(self) -> None:
        self.embedder: Any = None
        self.service: Any = None  # the checkout's UploadEmbedder, made on first use
        self.tmp = tempfile.TemporaryDirectory(prefix="checkout-runner-")
        self.rounds = 0

    def load(self, threads: int, checkpoint: str | None) -> dict:
        import torch

        from model.embedding import Embedder

        self.embedder = Embedder.from_checkpoint(checkpoint, device="cpu")
        torch.set_num_threads(threads)
        return {"checkpoint_id": self.embedder.checkpoint_id, "module": _module_root()}

    def index(
        self, files: list[tuple[str, str]], domain: str, workers: int, batch_size: int | None
    ) -> dict:
        """files: (path, singer) pairs; batch_size None: the checkout's indexer default."""
        from catalog import Catalog
        from indexer.run import IndexOptions, index_listing
        from indexer.sources import Listing, SourceItem

        listing = Listing([SourceItem(Path(f), singer, domain) for f, singer in files])
        self.rounds += 1
        path = Path(self.tmp.name) / f"index-{self.rounds}"
        with Catalog.open(path, dim=self.embedder.embed_dim) as catalog:
            start, cpu = time.perf_counter(), _cpu_s()
            sizes = {} if batch_size is None else {"batch_size": batch_size}
            options = IndexOptions(workers=workers, processes=0, **sizes)
            report = index_listing(catalog, self.embedder, listing, options)
            seconds, cpu = time.perf_counter() - start, _cpu_s() - cpu
        return {
            "seconds": seconds,
            "cpu_s": cpu,
            "added": report.n_added,
            "failed": len(report.failures),
        }

    def embed(self, upload: str) -> dict:
        from model.audio import load_audio

        data = Path(upload).read_bytes()
        start, cpu = time.perf_counter(), _cpu_s()
        y = load_audio(data, self.embedder.features.sample_rate)
        self.embedder.embed_audio(y, "mono")
        return {"seconds": time.perf_counter() - start, "cpu_s": _cpu_s() - cpu}

    def upload(self, upload: str) -> dict:
        """One upload embedded as CHECKOUT's service embeds a lone upload: its
        `UploadEmbedder` with default settings (its decoding pieces, torch threads and, where
        it has them, encoding runs on this machine's idle cores)."""
        import asyncio

        from service.settings import Settings
        from service.upload_embedder import UploadEmbedder

        if self.service is None:
            self.service = UploadEmbedder(self.embedder, Settings(), lambda *_: None)
        data = Path(upload).read_bytes()
        start, cpu = time.perf_counter(), _cpu_s()
        asyncio.run(self.service.embed(data, "mono"))
        return {"seconds": time.perf_counter() - start, "cpu_s": _cpu_s() - cpu}

    def vectors(self, files: list[str], domain: str, out: str) -> dict:
        rows = [self.embedder.embed_file(f, domain).vector for f in files]
        np.save(out, np.stack(rows).astype(np.float32))
        return {"n": len(rows)}


def _cpu_s() -> float:
    """This process's CPU seconds so far, user and system, all threads."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _module_root() -> str:
    import model

    return str(Path(model.__file__).resolve().parents[1])


def _serve(checkout: str) -> int:
    sys.path.insert(0, checkout)
    worker = _Worker()
    for line in sys.stdin:
        request = json.loads(line)
        try:
            reply = getattr(worker, request.pop("op"))(**request)
        except Exception as err:  # reported to the caller, which raises it
            reply = {"error": f"{type(err).__name__}: {err}"}
        print(json.dumps(reply), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(_serve(sys.argv[1]))
