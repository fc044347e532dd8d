"""The CUDA inference path equals the CPU one, with features kept on the device.

Skipped without a CUDA device; `bench/device_check.sh` runs these (`-m gpu`) on a lent GPU
machine and reports any skip as a failure.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from model.embedding import Embedder
from model.features import FeatureConfig, log_mel, to_device
from service.inference import SegmentBatcher
from tests.support.batching import embed_together
from tests.support.live import render

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


@pytest.fixture(scope="module")
def embedders(random_checkpoint) -> tuple[Embedder, Embedder]:
    return (
        Embedder.from_checkpoint(random_checkpoint, "cpu"),
        Embedder.from_checkpoint(random_checkpoint, "cuda"),
    )


def test_log_mel_on_cuda_equals_cpu():
    y = render(1, "mixed", seed=0, seconds=6.0)
    cfg = FeatureConfig()
    gpu = log_mel(y, cfg, device="cuda")
    assert gpu.device.type == "cuda"
    torch.testing.assert_close(gpu.cpu(), log_mel(y, cfg), rtol=1e-4, atol=1e-4)


def test_pinned_copy_to_cuda_keeps_values():
    t = torch.randn(64, 128, 129)
    moved = to_device(t, "cuda")
    torch.cuda.synchronize()
    assert moved.device.type == "cuda"
    torch.testing.assert_close(moved.cpu(), t, rtol=0, atol=0)


@pytest.mark.parametrize("domain", ["mono", "mixed"])
def test_cuda_embedding_equals_cpu_and_features_stay_on_device(embedders, domain):
    cpu, gpu = embedders
    y = render(2, domain, seed=1, seconds=10.0)
    selection = gpu.select(y)
    assert selection.features.device.type == "cuda"  # no host round trip before the encoder
    got, ref = gpu.embed_audio(y, domain), cpu.embed_audio(y, domain)
    np.testing.assert_allclose(got.segment_vectors, ref.segment_vectors, atol=1e-4, rtol=1e-4)
    np.testing.assert_allclose(got.vector, ref.vector, atol=1e-5)


def test_cuda_batcher_equals_each_alone(embedders):
    _, gpu = embedders
    takes = [
        (render(v, d, seed=v, seconds=s), d)
        for v, d, s in [(0, "mono", 4.0), (1, "mixed", 13.0), (2, "mono", 22.0), (3, "mixed", 7.0)]
    ]
    selections = [gpu.select(y) for y, _ in takes]
    batcher = SegmentBatcher(gpu.embed_segments, sum(len(s) for s in selections), 10.0)
    got = embed_together(batcher, selections, [d for _, d in takes])
    assert batcher.batches == 2
    for g, (y, d) in zip(got, takes, strict=True):
        np.testing.assert_allclose(
            g.segment_vectors, gpu.embed_audio(y, d).segment_vectors, atol=1e-5, rtol=0
        )
