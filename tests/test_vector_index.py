"""FAISS indexes against brute-force numpy: exact equality for flat, measured recall for HNSW."""

from __future__ import annotations

import faiss
import numpy as np
import pytest

from catalog.vector_index import (
    FlatIndex,
    HNSWIndex,
    child_failure,
    create_index,
    gpu_available,
    gpu_problem,
    load_index,
    resolve_gpu,
)

DIM = 256


def normalise(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def clustered(rng: np.random.Generator, n: int, n_clusters: int = 150) -> np.ndarray:
    """Unit vectors around cluster centres: the shape of a singer catalogue."""
    centres = rng.standard_normal((n_clusters, DIM))
    return normalise(centres[rng.integers(0, n_clusters, n)] + 0.8 * rng.standard_normal((n, DIM)))


def brute_force(queries: np.ndarray, vectors: np.ndarray, ids: np.ndarray, k: int):
    scores = queries @ vectors.T
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(scores, order, axis=1), ids[order]


def recall_at(found: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(f) & set(t)) / len(t) for f, t in zip(found, truth)]))


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(7)
    vectors = normalise(rng.standard_normal((3000, DIM)))
    ids = rng.choice(10**9, size=len(vectors), replace=False).astype(np.int64)  # not 0..n-1
    queries = normalise(rng.standard_normal((40, DIM)))
    return vectors, ids, queries


def test_flat_equals_brute_force(data):
    vectors, ids, queries = data
    index = FlatIndex(DIM)
    index.add(ids[:1000], vectors[:1000])
    index.add(ids[1000:], vectors[1000:])  # added in two batches
    scores, found = index.search(queries, 10)
    ref_scores, ref_ids = brute_force(queries, vectors, ids, 10)
    np.testing.assert_array_equal(found, ref_ids)
    np.testing.assert_allclose(scores, ref_scores, atol=1e-5)


def test_flat_removal_equals_brute_force_over_the_rest(data):
    vectors, ids, queries = data
    index = FlatIndex(DIM)
    index.add(ids, vectors)
    gone = ids[::3]
    assert index.remove(np.concatenate([gone, [-5]])) == len(gone)  # unknown ids are ignored
    keep = np.ones(len(ids), bool)
    keep[::3] = False
    scores, found = index.search(queries, 10)
    ref_scores, ref_ids = brute_force(queries, vectors[keep], ids[keep], 10)
    np.testing.assert_array_equal(found, ref_ids)
    np.testing.assert_allclose(scores, ref_scores, atol=1e-5)
    assert len(index) == keep.sum()


def test_fewer_rows_than_k_pads_with_minus_one():
    index = FlatIndex(4)
    index.add([11, 12], normalise(np.eye(4)[:2]))
    scores, found = index.search(np.eye(4, dtype=np.float32)[:1], 5)
    assert found[0, :2].tolist() == [11, 12] and (found[0, 2:] == -1).all()
    np.testing.assert_allclose(scores[0, :2], [1.0, 0.0], atol=1e-6)
    empty = create_index("hnsw", 4)
    assert (empty.search(np.eye(4, dtype=np.float32)[:1], 3)[1] == -1).all()


@pytest.fixture(scope="module")
def catalogue_like():
    rng = np.random.default_rng(3)
    vectors = clustered(rng, 2500)
    queries = clustered(rng, 100)
    ids = np.arange(len(vectors), dtype=np.int64) * 7 + 1
    return vectors, ids, queries


@pytest.fixture(scope="module")
def hnsw(catalogue_like):
    vectors, ids, _ = catalogue_like
    index = HNSWIndex(DIM)
    index.add(ids, vectors)
    return index


def test_hnsw_recall_at_10_against_exact_search(catalogue_like, hnsw):
    vectors, ids, queries = catalogue_like
    exact = FlatIndex(DIM)
    exact.add(ids, vectors)
    _, truth = exact.search(queries, 10)
    _, found = hnsw.search(queries, 10)
    recall = recall_at(found, truth)
    print(f"HNSW recall@10 = {recall:.3f}")
    assert recall >= 0.9


@pytest.mark.parametrize("fraction", [0.1, 0.4])  # below / above the compaction threshold
def test_hnsw_removed_rows_never_come_back(catalogue_like, hnsw, fraction):
    vectors, ids, queries = catalogue_like
    index = load_index("hnsw", DIM, hnsw.to_arrays())  # a copy, without building it again
    n_gone = int(fraction * len(ids))
    gone = set(ids[:n_gone].tolist())
    assert index.remove(ids[:n_gone]) == n_gone
    assert len(index) == len(ids) - n_gone
    _, found = index.search(queries, 10)
    assert not gone & set(found.ravel().tolist())
    _, truth = brute_force(queries, vectors[n_gone:], ids[n_gone:], 10)
    assert recall_at(found, truth) >= 0.9
    # A removed id may come back with a new vector (a re-embedded track keeps its id).
    index.add(ids[:1], -vectors[:1])
    score, top = index.search(-vectors[:1], 1)
    assert top[0, 0] == ids[0] and score[0, 0] == pytest.approx(1.0, abs=1e-5)


@pytest.mark.parametrize("kind", ["flat", "hnsw"])
def test_round_trip_through_arrays(catalogue_like, kind):
    vectors, ids, queries = catalogue_like
    index = create_index(kind, DIM)
    index.add(ids[:800], vectors[:800])
    index.remove(ids[:100])
    arrays = index.to_arrays()
    assert all(isinstance(a, np.ndarray) for a in arrays.values())
    again = load_index(kind, DIM, {k: a.copy() for k, a in arrays.items()})
    assert len(again) == len(index) == 700
    s1, i1 = index.search(queries, 10)
    s2, i2 = again.search(queries, 10)
    np.testing.assert_array_equal(i1, i2)
    np.testing.assert_allclose(s1, s2)


def test_wrong_dimension_is_refused():
    with pytest.raises(ValueError, match="dimension 8"):
        FlatIndex(8).add([1], np.ones((1, 9), np.float32))
    index = HNSWIndex(8)
    index.add([1], normalise(np.ones((1, 8))))
    with pytest.raises(ValueError, match="already"):
        index.add([1], normalise(np.ones((1, 8))))


def test_gpu_probe_survives_a_native_abort():
    # The probe's child can die of a C-level abort (FAISS asserts on a CUDA error): it is
    # reported, this process goes on.
    assert child_failure("import os; os.abort()") == "exit status -6"
    assert child_failure("raise SystemExit('no kernel image')") == "no kernel image"
    assert child_failure("pass") is None
    if not hasattr(faiss, "StandardGpuResources"):
        assert gpu_problem() == "this FAISS build has no GPU support"


def test_device_resolution():
    assert resolve_gpu("cpu") is None
    assert resolve_gpu("auto") == (0 if gpu_available() else None)
    if not gpu_available():
        assert resolve_gpu("cuda:0") is None  # falls back to CPU FAISS with a warning
    with pytest.raises(ValueError):
        resolve_gpu("tpu")


@pytest.mark.gpu
@pytest.mark.skipif(not gpu_available(), reason="needs the FAISS GPU build and a CUDA device")
def test_gpu_flat_equals_cpu_flat(data):
    vectors, ids, queries = data
    cpu, gpu = FlatIndex(DIM), FlatIndex(DIM, gpu=0)
    for index in (cpu, gpu):
        index.add(ids, vectors)
        index.remove(ids[:10])
        index.add(ids[:5], vectors[:5])
    s1, i1 = cpu.search(queries, 10)
    s2, i2 = gpu.search(queries, 10)
    np.testing.assert_array_equal(i1, i2)
    np.testing.assert_allclose(s1, s2, atol=1e-4)
