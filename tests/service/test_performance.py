"""Performance policy (service/performance.py): what unset performance settings become."""

from __future__ import annotations

import pytest
import torch

from model.devices import inference_threads
from service import performance
from service.settings import Performance

CPU, CUDA = torch.device("cpu"), torch.device("cuda")


@pytest.fixture
def cores(monkeypatch):
    def on(n: int) -> None:
        monkeypatch.setattr(performance, "cores", lambda: n)

    return on


def test_decoding_processes_only_on_cuda(cores):
    cores(16)
    assert performance.decode_processes(Performance(), 4, CPU) == 0
    assert performance.decode_processes(Performance(), 4, CUDA) == 4
    cores(3)  # at most cores minus one
    assert performance.decode_processes(Performance(), 4, CUDA) == 2
    cores(1)
    assert performance.decode_processes(Performance(), 4, CUDA) == 1
    assert performance.decode_processes(Performance(decode_processes=3), 4, CPU) == 3
    assert performance.decode_processes(Performance(decode_processes=0), 4, CUDA) == 0


def test_an_upload_is_decoded_on_its_share_of_the_cores(cores):
    cores(4)
    assert performance.max_decode_parts(Performance()) == 4
    assert performance.max_decode_parts(Performance(decode_parts=3)) == 3
    shares = {running: performance.decode_parts(3, running) for running in (0, 1, 2, 3, 4, 6)}
    assert shares == {0: 3, 1: 3, 2: 2, 3: 1, 4: 1, 6: 1}
    assert performance.decode_parts(1, 1) == 1


def test_torch_threads_leave_the_workers_their_cores():
    assert performance.torch_threads(Performance(), 2) == inference_threads(2)
    assert performance.torch_threads(Performance(torch_threads=5), 2) == 5


def test_an_upload_runs_in_pieces_only_on_cores_its_torch_threads_leave(cores):
    assert [performance.model_parts(p, 1) for p in (1, 2, 4)] == [1, 2, 4]
    assert [performance.model_parts(16, t) for t in (14, 8, 5, 16)] == [1, 2, 3, 1]
