"""Where inference runs: the device, CPU threads, host-to-device copies, float32 precision."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import numpy as np
import torch


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """'auto' or None: CUDA when available, else CPU."""
    if device in (None, "", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def inference_threads(workers: int) -> int:
    """Torch intra-op threads that leave a core to each decoding worker (at least 1).

    Decoding threads and torch's own thread pool otherwise oversubscribe the CPU: on 2 cores
    with 2 workers, 2 torch threads cost about a third of the throughput (bench/bench_indexer.py).
    """
    return max(1, (os.cpu_count() or 1) - max(1, workers))


def batch_segments(device: torch.device) -> int:
    """Segments gathered from many files for one encoder pass when batching (`embed_many`):
    16 on a CPU, 64 on CUDA. On a CPU, smaller passes interleave the decoding threads and the
    encoder thread more finely: 2 cores indexed MIR-1K clips 13-18 % faster with 16 than with
    64 (bench/bench_indexer.py, docs/benchmarks/indexing.md); a GPU wants its passes full."""
    return 64 if device.type == "cuda" else 16


def to_device(t: torch.Tensor, device: str | torch.device | None) -> torch.Tensor:
    """`t` on `device`; a host tensor bound for CUDA goes through pinned (page-locked) memory,
    so the copy is one DMA transfer that does not block the host thread."""
    if device is None or t.device == torch.device(device):
        return t
    if torch.device(device).type == "cuda" and t.device.type == "cpu":
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)


def as_tensor(y: np.ndarray | torch.Tensor, device: str | torch.device | None) -> torch.Tensor:
    """A waveform or array as a float32 tensor on `device` (None: where it is)."""
    return to_device(torch.as_tensor(y, dtype=torch.float32), device)


def as_tensors(
    ys: Sequence[np.ndarray | torch.Tensor], device: str | torch.device | None
) -> list[torch.Tensor]:
    """Waveforms as float32 tensors on `device`; host waveforms bound for CUDA travel
    together, in one pinned copy (pinning is paid per call, not per recording)."""
    if len(ys) < 2 or device is None or torch.device(device).type != "cuda":
        return [as_tensor(y, device) for y in ys]
    host = [torch.as_tensor(y, dtype=torch.float32) for y in ys]
    if any(t.device.type != "cpu" for t in host):
        return [to_device(t, device) for t in host]
    # Joined straight into page-locked memory: one host copy, not a join and then a pin
    # (a batch of 85 10-s files is 75 MB).
    pinned = torch.empty(sum(len(t) for t in host), dtype=torch.float32, pin_memory=True)
    torch.cat(host, out=pinned)
    on_device = pinned.to(device, non_blocking=True)
    return list(on_device.split([len(t) for t in host]))


class _Float32Scope:
    """Counts the threads inside `full_float32`; the process's TF32 switches are off while
    any is, and restored when the last leaves."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.inside = 0
        self.saved = (False, False)

    def enter(self) -> None:
        with self.lock:
            if self.inside == 0:
                self.saved = (
                    torch.backends.cudnn.allow_tf32,
                    torch.backends.cuda.matmul.allow_tf32,
                )
                torch.backends.cudnn.allow_tf32 = False
                torch.backends.cuda.matmul.allow_tf32 = False
            self.inside += 1

    def leave(self) -> None:
        with self.lock:
            self.inside -= 1
            if self.inside == 0:
                torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = self.saved


_SCOPE = _Float32Scope()


@contextmanager
def full_float32(device: torch.device) -> Iterator[None]:
    """Within: CUDA convolutions (cuDNN) and matrix products (cuBLAS) in full float32, not TF32.

    cuDNN convolutions default to TF32, which moves vectors by about 5e-4 (measured on an
    H100) and makes a segment's vector depend on the batch it shares: catalogue vectors made
    on the CPU and queries made on a GPU would disagree. Full float32 keeps both within 1e-5.
    The switches are process-wide in torch, so they stay off while any thread is inside this
    scope and go back to what they were when the last one leaves: an embedding never depends
    on them, and nothing else in the process is changed for good. A no-op off CUDA.
    """
    if device.type != "cuda":
        yield
        return
    _SCOPE.enter()
    try:
        yield
    finally:
        _SCOPE.leave()
