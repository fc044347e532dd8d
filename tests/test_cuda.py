"""The CUDA inference path equals the CPU one, with features kept on the device.

Skipped without a CUDA device; `bench/device_check.sh` runs these (`-m gpu`) on a lent GPU
machine and reports any skip as a failure.
"""

from __future__ import annotations

import asyncio
import io

import numpy as np
import pytest
import soundfile as sf
import torch

from model.devices import to_device
from model.embedding import Embedder
from model.features import FeatureConfig, log_mel
from service.runtime import Runtime
from service.settings import Settings
from service.telemetry import Telemetry
from tests.support.live import render
from tests.support.shared_layout import tiny_config, write_shared_layout

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


def test_the_mixed_branchs_front_end_on_cuda_equals_cpu():
    """The separation (similarities, top k, the sparse geometric mean, block overlap-add) on
    the device gives the CPU's samples, across block edges."""
    from model.repeating_background import remove_repeating_background

    y = render(1, "mixed", seed=3, seconds=14.0)
    cfg = FeatureConfig(mix_background_margin=4.0, mix_background_block_s=5.0)
    gpu = remove_repeating_background(y, cfg, device="cuda")
    assert gpu.device.type == "cuda"
    torch.testing.assert_close(gpu.cpu(), remove_repeating_background(y, cfg), atol=1e-4, rtol=0)


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


def flac_uploads(takes: list[tuple[int, str, float]]) -> list[tuple[bytes, str]]:
    """(voice, domain, seconds) -> (FLAC bytes, domain) of a rendered take each."""
    uploads = []
    for v, d, s in takes:
        buf = io.BytesIO()
        sf.write(buf, render(v, d, seed=v, seconds=s), 22050, format="FLAC")
        uploads.append((buf.getvalue(), d))
    return uploads


def embed_all_at_once(runtime: Runtime, uploads: list[tuple[bytes, str]]) -> list:
    async def all_at_once():
        return await asyncio.gather(*(runtime.inference.embed(data, d) for data, d in uploads))

    return asyncio.run(all_at_once())


def test_cuda_service_decodes_in_processes_and_equals_cpu(tmp_path, embedders, random_checkpoint):
    """On CUDA the service decodes in worker processes by default (`decode_processes` auto),
    embeds concurrent uploads each alone, and vectors equal the CPU path's."""
    cpu, _ = embedders
    uploads = flac_uploads([(0, "mono", 5.0), (1, "mixed", 17.0), (2, "mono", 9.0)])
    settings = Settings(index_dir=tmp_path / "i", checkpoint=random_checkpoint, device="cuda")
    runtime = Runtime(settings, Telemetry())
    runtime.load()
    try:
        assert runtime.inference.decoder is not None
        got = embed_all_at_once(runtime, uploads)
    finally:
        runtime.close()
    for g, (data, d) in zip(got, uploads, strict=True):
        np.testing.assert_allclose(g.vector, cpu.embed_file(data, d).vector, atol=1e-5, rtol=0)


def test_cuda_embed_many_with_features_in_workers_equals_cpu(embedders, tmp_path):
    cpu, gpu = embedders
    paths = []
    for i, (v, d, s) in enumerate([(0, "mono", 6.0), (3, "mono", 12.0)]):
        paths.append(tmp_path / f"{i}.wav")
        sf.write(paths[-1], render(v, d, seed=i, seconds=s), 22050)
    ref = dict(cpu.embed_many(paths, "mono"))
    assert gpu.selects_in_batches  # threads and the feature-less pool: chosen in batches
    got = dict(gpu.embed_many(paths, "mono", workers=2))
    for i in ref:
        np.testing.assert_allclose(got[i].vector, ref[i].vector, atol=1e-5, rtol=0)
    for in_workers in (False, True):
        with gpu.decode_pool(2, in_workers) as pool:
            got = dict(gpu.embed_many(paths, "mono", pool=pool))
        for i in ref:
            np.testing.assert_allclose(got[i].vector, ref[i].vector, atol=1e-5, rtol=0)


def test_fused_model_on_cuda_equals_cpu(fused_checkpoint):
    """The default kind of checkpoint: CROSS and the speaker encoder's LSTM both on the GPU
    (the speaker encoder's front end, resampling included, runs there too)."""
    cpu = Embedder.from_checkpoint(fused_checkpoint, "cpu")
    gpu = Embedder.from_checkpoint(fused_checkpoint, "cuda")
    assert gpu.speaker is not None and next(gpu.speaker.net.parameters()).is_cuda
    y = render(2, "mixed", seed=5, seconds=14.0)
    got, ref = gpu.embed_audio(y, "mixed"), cpu.embed_audio(y, "mixed")
    np.testing.assert_allclose(got.segment_vectors, ref.segment_vectors, atol=1e-4, rtol=1e-4)
    np.testing.assert_allclose(got.vector, ref.vector, atol=1e-5)


def test_default_recipe_trains_on_cuda(tmp_path):
    """`train --recipe default` on a GPU machine: both stages run there (the teacher's targets
    too), and the fused result loads on CUDA as on the CPU."""
    from model.training.recipe import Stage, train_default

    stages = [
        Stage("stage1", "shared", tiny_config(device="cuda")),
        Stage("stage2", "teacher", tiny_config(device="cuda", distill_weight=1.0)),
    ]
    torch.cuda.reset_peak_memory_stats()
    fused = train_default(
        write_shared_layout(tmp_path / "data"),
        tmp_path / "run",
        stages=stages,
        holdout=["s3"],
        val_singers=[],
    )
    assert torch.cuda.max_memory_allocated() > 0
    y = np.random.default_rng(0).standard_normal(5 * 22050).astype(np.float32) * 0.1
    cpu, gpu = (Embedder.from_checkpoint(fused, d) for d in ("cpu", "cuda"))
    assert gpu.speaker is not None
    sel = cpu.select(y, all_segments=True)
    got, ref = gpu.encode([sel], "mixed"), cpu.encode([sel], "mixed")
    np.testing.assert_allclose(got, ref, atol=1e-4, rtol=1e-4)  # per segment, as above
