"""The default's recipe end to end (model/training/recipe.py, `train --recipe default`): both
stages on a synthetic copy of ../shared/data's layout, the second from the first's weights,
the fused result, and a rerun that trains nothing again."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch

from model.checkpoint import load_checkpoint
from model.embedding import Embedder
from model.network import EncoderDims
from model.training.recipe import Stage, default_stages, finished, recipe_rows, train_default
from model.training.train import TrainConfig
from tests.support.synth import VOICES, backing, sing, write

OPUS_SR = 24000  # a rate Opus takes, as the shared copies use


def _csv(path: Path, rows: list[dict]) -> None:
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """MIR-1K (4 singers x 2 songs), sung vowels, instrumentals and 5 a cappella takes, laid
    out as ../shared/data is (index.csv files, Opus stems)."""
    root = tmp_path_factory.mktemp("shared") / "data"
    opus = {"format": "OGG", "subtype": "OPUS"}
    clips = []
    for i, voice in enumerate(VOICES[:4]):
        for song in (1, 2):
            clip = f"s{i}_{song}_01"
            seed = 10 * i + song
            write(
                root / f"mir1k/vocals/{clip}.opus", sing(voice, 4.0, seed, OPUS_SR), OPUS_SR, **opus
            )
            write(
                root / f"mir1k/accompaniment/{clip}.opus",
                backing(4.0, seed, OPUS_SR),
                OPUS_SR,
                **opus,
            )
            clips.append(
                {"clip": clip, "singer": f"s{i}", "song": f"s{i}_{song}", "duration_s": 4.0}
            )
    _csv(root / "mir1k/index.csv", clips)
    vowels = []
    for n, vowel in enumerate("aeiou"):
        write(root / f"vowels/v{n}.wav", sing(VOICES[0], 1.0, 50 + n))
        vowels.append(
            {
                "file": f"v{n}.wav",
                "singer": "v0",
                "register": "chest",
                "vowel": vowel,
                "take": 1,
                "duration_s": 1.0,
            }
        )
    _csv(root / "vowels/index.csv", vowels)
    for n in range(2):
        write(root / f"instrumental/track{n}.flac", backing(6.0, 90 + n))
    takes = []
    for n in range(5):
        name = f"ssvd_{n}.opus"
        write(
            root / f"acappella/{name}",
            sing(VOICES[n % len(VOICES)], 4.0, 70 + n, OPUS_SR),
            OPUS_SR,
            **opus,
        )
        takes.append(
            {
                "file": name,
                "source": "ssvd",
                "original_path": name,
                "duration_s": 4.0,
                "original_rate": OPUS_SR,
            }
        )
    _csv(root / "acappella/index.csv", takes)
    return root


def _tiny(**kw) -> TrainConfig:
    options = {
        "batch_size": 8,
        "negatives": "in-batch",
        "pretrain_epochs": 0,
        "epochs": 1,
        "steps_per_epoch": 1,
        "dims": EncoderDims(channels=16, embed_dim=32),
        "device": "cpu",
    }
    return TrainConfig(**{**options, **kw})


def test_recipe_rows_hold_out_singers_and_add_the_takes_for_the_teacher(data, tmp_path):
    shared, val, backgrounds = recipe_rows("shared", data, tmp_path, ["s3"], ["s2"])
    teacher, _, _ = recipe_rows("teacher", data, tmp_path, ["s3"], ["s2"])
    assert {r.singer for r in shared} == {"s0", "s1", "v0"}
    assert {r.singer for r in val} == {"s2"}
    assert len(backgrounds) == 2
    takes = {r.singer for r in teacher} - {r.singer for r in shared}
    assert len(takes) == 4 and all(t.startswith("take:") for t in takes)  # 20 % held out
    with pytest.raises(ValueError, match="unknown recipe"):
        recipe_rows("nope", data, tmp_path)


def test_default_chain_trains_stage_two_from_stage_one_and_fuses(data, tmp_path):
    stages = [
        Stage("stage1", "shared", _tiny()),
        Stage("stage2", "teacher", _tiny(distill_weight=1.0)),
    ]
    out = tmp_path / "run"
    fused = train_default(data, out, stages=stages, holdout=["s3"], val_singers=[])
    assert fused == out / "default.pt"
    stage1, stage2 = out / "stage1" / "last.pt", out / "stage2" / "last.pt"
    _, _, meta = load_checkpoint(stage2)
    assert meta["train_config"]["init_checkpoint"] == str(stage1)
    embedder = Embedder.from_checkpoint(fused, "cpu")
    assert embedder.speaker is not None and embedder.fusion_weight == pytest.approx(0.1)
    net, _, _ = load_checkpoint(fused)
    for name, tensor in load_checkpoint(stage2)[0].state_dict().items():
        torch.testing.assert_close(net.state_dict()[name], tensor, rtol=0, atol=0)
    assert finished(out / "stage1", stages[0].config)
    assert not finished(out / "stage1", _tiny(epochs=2))

    stamps = [p.stat().st_mtime_ns for p in (stage1, stage2)]
    vector = embedder.embed_audio(sing(VOICES[0], 4.0, 5), "mono").vector
    again = train_default(data, out, stages=stages, holdout=["s3"], val_singers=[])
    assert [p.stat().st_mtime_ns for p in (stage1, stage2)] == stamps  # nothing retrained
    np.testing.assert_allclose(
        Embedder.from_checkpoint(again, "cpu").embed_audio(sing(VOICES[0], 4.0, 5), "mono").vector,
        vector,
        atol=1e-6,
    )


def test_the_default_stages_are_the_shipped_options():
    first, second = default_stages()
    assert (first.recipe, second.recipe) == ("shared", "teacher")
    assert second.config.distill_weight > 0 and first.config.distill_weight == 0


def test_recipe_default_refuses_options_of_its_own(tmp_path):
    from model.__main__ import main

    assert main(["train", "--recipe", "default", "--out", str(tmp_path), "--epochs", "3"]) == 2
