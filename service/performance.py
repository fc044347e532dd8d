"""Performance policy: what the `auto` (unset) performance settings become on this machine.

Each rule says what it chooses; docs/performance.md gives the measurements behind it.
"""

from __future__ import annotations

import os

import torch

from model.devices import inference_threads
from service.settings import Performance


def cores() -> int:
    return os.cpu_count() or 1


def torch_threads(perf: Performance, workers: int) -> int:
    """Intra-op threads of torch on the CPU: the setting, else the cores the `workers`
    inference threads leave (at least 1; more would compete with their decoding)."""
    return perf.torch_threads or inference_threads(workers)


def decode_processes(perf: Performance, workers: int, device: torch.device) -> int:
    """Worker processes that decode uploads (0: the inference threads decode): the setting,
    else on CUDA one per inference worker, at most the cores minus one (the decoding
    threads' GIL was the limit there), and on the CPU none (slower on few cores)."""
    if perf.decode_processes is not None:
        return perf.decode_processes
    return min(workers, max(1, cores() - 1)) if device.type == "cuda" else 0


def max_decode_parts(perf: Performance) -> int:
    """The most pieces one upload's decoding is split into: the setting, else the cores."""
    return perf.decode_parts or cores()


def model_parts(parts: int, threads: int) -> int:
    """Pieces an upload's features, voice detection and encoders run in at once, given its
    share of the cores (`decode_parts`) and torch's threads per piece: only the cores its
    torch threads leave idle, so a lone upload on 2 cores (1 torch thread) uses both, and
    one on 16 cores (14 torch threads) runs in one piece."""
    return max(1, parts // max(1, threads))


def decode_parts(max_parts: int, running: int) -> int:
    """Pieces for the upload about to be decoded: its fair share of the cores among the
    `running` embeddings (itself included), at most `max_parts`. Under load every core is
    taken, and uploads are decoded whole."""
    return max(1, min(max_parts, cores() // max(1, running)))
