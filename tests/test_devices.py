"""`model.devices`: TF32 off only around inference, pinned joined copies, thread counts.

Torch's TF32 switches can be set without a GPU, so the scope is tested here; that vectors
made on CUDA inside it agree with CPU ones is tests/test_cuda.py's (GPU machines).
"""

from __future__ import annotations

import threading

import numpy as np
import torch

from model.devices import as_tensors, batch_segments, full_float32, inference_threads

CUDA = torch.device("cuda")


def tf32() -> tuple[bool, bool]:
    return torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32


def test_tf32_is_off_inside_and_as_it_was_after():
    before = tf32()
    try:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = True, True
        with full_float32(CUDA):
            assert tf32() == (False, False)
            with full_float32(CUDA):  # nested: still off, and not restored by the inner exit
                assert tf32() == (False, False)
            assert tf32() == (False, False)
        assert tf32() == (True, True)
        with full_float32(torch.device("cpu")):  # the CPU has no TF32: nothing changes
            assert tf32() == (True, True)
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = before


def test_tf32_stays_off_while_any_thread_is_inside():
    before = tf32()
    inside, leave = threading.Barrier(3), threading.Event()
    seen: list[tuple[bool, bool]] = []

    def work() -> None:
        with full_float32(CUDA):
            inside.wait()
            leave.wait()
            seen.append(tf32())

    try:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = True, False
        threads = [threading.Thread(target=work) for _ in range(2)]
        for t in threads:
            t.start()
        inside.wait()
        assert tf32() == (False, False)
        leave.set()
        for t in threads:
            t.join()
        assert seen == [(False, False)] * 2  # the first to leave did not switch it back
        assert tf32() == (True, False)
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = before


def test_as_tensors_keeps_each_waveform():
    ys = [np.arange(n, dtype=np.float32) for n in (5, 0, 3)]
    for got, y in zip(as_tensors(ys, "cpu"), ys, strict=True):
        assert got.dtype == torch.float32 and np.array_equal(got.numpy(), y)


def test_inference_threads_leave_a_core_per_worker(monkeypatch):
    monkeypatch.setattr("os.cpu_count", lambda: 8)
    assert [inference_threads(w) for w in (0, 1, 2, 7, 8, 20)] == [7, 7, 6, 1, 1, 1]


def test_files_are_gathered_into_small_passes_on_a_cpu_and_full_ones_on_cuda():
    assert batch_segments(torch.device("cpu")) == 16
    assert batch_segments(CUDA) == 64
