"""Domain centres of a fused checkpoint (`model.fusion.DomainCentres`,
`model.training.centres`): stored, checked, applied before fusion, and estimated as the plain
mean of the segments' unit vectors. How a model applies them: test_nuisance_projection.py."""

from __future__ import annotations

import argparse
from functools import partial

import numpy as np
import pytest

from model.audio import load_audio
from model.cli.fuse import add_arguments
from model.domains import DOMAINS
from model.embedding import Embedder
from model.errors import CheckpointError
from model.fusion import CENTRES_KEY, fuse_checkpoint
from model.training.centres import (
    NUISANCE_DIMS,
    Recording,
    centres_of,
    embed_parts,
    training_recordings,
)
from model.training.datasets import acappella_rows, split_acappella
from tests.support.fusion import random_centres, spoiled
from tests.support.live import render
from tests.support.shared_layout import write_shared_layout

WEIGHT = 0.25  # the conftest's fused_checkpoint


@pytest.fixture(scope="module")
def centred_checkpoint(fused_checkpoint, tmp_path_factory):
    out = tmp_path_factory.mktemp("centred") / "centred.pt"
    return fuse_checkpoint(fused_checkpoint, out, WEIGHT, random_centres(0))


@pytest.mark.parametrize(
    "spoil",
    [
        lambda d: d.pop("mixed"),
        lambda d: d["mono"].update(cross=d["mono"]["cross"][:-1]),
        lambda d: d["mono"]["speaker"].__setitem__(0, float("nan")),
        lambda d: d["mixed"].update(speaker=[1.0] * 256),  # norm 16: not a mean of unit vectors
    ],
)
def test_malformed_centres_refuse_to_load(centred_checkpoint, tmp_path, spoil):
    bad = spoiled(centred_checkpoint, CENTRES_KEY, spoil, tmp_path / "bad.pt")
    with pytest.raises(CheckpointError, match="centres are malformed"):
        Embedder.from_checkpoint(bad, "cpu")


def test_estimated_centres_are_the_mean_unit_vectors_of_the_segments(fused_checkpoint):
    """Brute force: every recording's segments embedded by each system apart, normalised, and
    averaged per domain over all segments (not per recording)."""
    embedder = Embedder.from_checkpoint(fused_checkpoint, "cpu")
    recordings = [
        (render(0, "mono", seed=5, seconds=5.0), "mono"),
        (render(1, "mono", seed=6, seconds=14.0), "mono"),
        (render(2, "mixed", seed=7, seconds=8.0), "mixed"),
        (np.zeros(22050 * 4, np.float32), "mixed"),  # no voice: skipped, not an error
    ]
    material = [Recording(partial(np.copy, y), d, str(i)) for i, (y, d) in enumerate(recordings)]
    got = centres_of(embed_parts(embedder, material))
    cross: dict[str, list] = {d: [] for d in DOMAINS}
    speaker: dict[str, list] = {d: [] for d in DOMAINS}
    for y, domain in recordings[:3]:
        v = embedder.embed_audio(y, domain).segment_vectors
        cross[domain].append(v[:, :256] / np.sqrt(WEIGHT))
        speaker[domain].append(v[:, 256:] / np.sqrt(1 - WEIGHT))
    for d in DOMAINS:
        np.testing.assert_allclose(got.cross[d], np.concatenate(cross[d]).mean(0), atol=1e-5)
        np.testing.assert_allclose(got.speaker[d], np.concatenate(speaker[d]).mean(0), atol=1e-5)
    with pytest.raises(ValueError, match="no segment of the mixed domain"):
        centres_of(embed_parts(embedder, material[:2]))


def test_training_material_leaves_out_held_out_singers_and_takes(tmp_path):
    """The synthetic layout: MIR-1K singers s0..s3 with 2 clips each, 5 takes of which one is
    held out. With s3 held out and s2 validating: the 4 clips of s0 and s1 as vocals and
    karaoke mixes, and the 4 training takes alone and over an instrumental."""
    data = write_shared_layout(tmp_path / "data")
    material = training_recordings(data, 22050, ["s3"], ["s2"])
    got = [(rec.load(), rec.domain) for rec in material]
    # every performance is heard in both domains, under one name
    assert sorted(r.performance for r in material if r.domain == "mono") == sorted(
        r.performance for r in material if r.domain == "mixed"
    )
    assert [d for _, d in got].count("mono") == [d for _, d in got].count("mixed") == 8
    assert all(y.dtype == np.float32 and y.ndim == 1 and len(y) for y, _ in got)
    mono = [y for y, d in got if d == "mono"]
    vocals = [load_audio(data / f"mir1k/vocals/{c}.opus", 22050) for c in ("s0_1_01", "s1_2_01")]
    (held,) = split_acappella(acappella_rows(data / "acappella"))[1]
    unseen = [load_audio(held.path, 22050), load_audio(data / "mir1k/vocals/s2_1_01.opus", 22050)]
    assert all(any(np.array_equal(v, y) for y in mono) for v in vocals)
    assert not any(np.array_equal(v, y) for v in unseen for y in mono)


def test_fuse_command_estimates_centres_or_exits_2(random_checkpoint, tmp_path):
    from model.__main__ import main

    data = write_shared_layout(tmp_path / "data")
    out = tmp_path / "fused.pt"
    args = ["fuse", "--checkpoint", str(random_checkpoint), "--weight", "0.25", "--out", str(out)]
    centres = ["--centres", str(data), "--holdout", "s3", "--val-singers", "s2"]
    assert main([*args, *centres, "--device", "cpu"]) == 0
    centred = Embedder.from_checkpoint(out, "cpu")
    assert centred.fusion_weight == 0.25 and centred.centres is not None
    assert centred.nuisance is not None
    assert centred.nuisance.directions.shape == (NUISANCE_DIMS, 512)
    assert main([*args, *centres, "--nuisance-dims", "0", "--device", "cpu"]) == 0
    assert Embedder.from_checkpoint(out, "cpu").nuisance is None
    assert main([*args, "--centres", str(tmp_path / "nowhere")]) == 2
    assert main([*args, "--centres", str(data)]) == 2  # the default's singers are not there


def test_fuse_help_states_the_default_nuisance_dims():
    """The help names the default without importing the training code (so `--help` needs no
    torch): it must say what `NUISANCE_DIMS` is."""
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    assert f"model.training.centres.NUISANCE_DIMS, {NUISANCE_DIMS})" in " ".join(
        parser.format_help().split()
    )
