"""The default's recipe end to end (model/training/recipe.py, `train --recipe default`): both
stages on a synthetic copy of ../shared/data's layout, the second from the first's weights,
the fused result, and a rerun that trains nothing again."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from model.checkpoint import load_checkpoint
from model.embedding import Embedder
from model.fusion import FUSION_KEY, MIXED_SPEAKER_KEY
from model.training.recipe import (
    ALL_STUDIO,
    MIX_BACKGROUND_MARGIN,
    SHIPPED_STUDIO,
    Stage,
    StudioPlan,
    StudioSteps,
    default_stages,
    finished,
    recipe_rows,
    train_default,
)
from model.training.speaker_tune import TuneConfig
from model.training.voice import VoiceTrainConfig
from model.voice import VoiceDetector
from tests.support.shared_layout import tiny_config, write_shared_layout
from tests.support.synth import VOICES, sing


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return write_shared_layout(tmp_path_factory.mktemp("shared") / "data")


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


TINY = {
    "studio_plan": StudioPlan(per_source=1, bands=2, bars=2),
    "tune": TuneConfig(steps=2, batch_size=4),
    "detector": VoiceTrainConfig(
        steps=3, batch_size=16, n_nonvoice=18, instrumental_crops=1, band_crops=1
    ),
}


@pytest.mark.skipif(
    not (shutil.which("mma") and shutil.which("fluidsynth")),
    reason="the studio mixes need mma and fluidsynth (scripts/system-deps.sh installs them)",
)
def test_default_chain_trains_stage_two_from_stage_one_and_fuses(data, tmp_path):
    stages = [
        Stage("stage1", "shared", tiny_config()),
        Stage("stage2", "teacher", tiny_config(distill_weight=1.0)),
    ]
    out = tmp_path / "run"
    fused = train_default(
        data, out, stages=stages, holdout=["s3"], val_singers=[], steps=ALL_STUDIO, **TINY
    )
    assert fused == out / "default.pt"
    stage1, stage2 = out / "stage1" / "last.pt", out / "stage2" / "last.pt"
    _, _, meta = load_checkpoint(stage2)
    assert meta["train_config"]["init_checkpoint"] == str(stage1)
    embedder = Embedder.from_checkpoint(fused, "cpu")
    assert embedder.speaker is not None and embedder.fusion_weight == pytest.approx(0.1)
    # the mixed branch's front end, set before the centres (estimated with it)
    assert embedder.features.mix_background_margin == MIX_BACKGROUND_MARGIN > 0
    # estimated on the layout's training material
    assert embedder.centres is not None and embedder.nuisance is not None
    # the speaker encoder's own weights for mixed segments, tuned on the studio mixes
    assert MIXED_SPEAKER_KEY in load_checkpoint(fused)[2][FUSION_KEY]
    assert "mixed" in embedder.speaker.domain_nets
    studio = (out / "studio" / "manifest.csv").read_text()
    assert "s3_" not in studio and "s0_1_01" in studio  # held-out singers never mixed
    assert VoiceDetector.load(out / "voice-detector.pt").meta["train_config"]["studio_manifest"]
    net, _, _ = load_checkpoint(fused)
    for name, tensor in load_checkpoint(stage2)[0].state_dict().items():
        torch.testing.assert_close(net.state_dict()[name], tensor, rtol=0, atol=0)
    assert finished(out / "stage1", stages[0].config)
    assert not finished(out / "stage1", tiny_config(epochs=2))

    done = (stage1, stage2, out / "speaker" / "speaker-mixed.pt", out / "voice-detector.pt")
    stamps = [p.stat().st_mtime_ns for p in done]
    vector = embedder.embed_audio(sing(VOICES[0], 4.0, 5), "mono").vector
    again = train_default(
        data, out, stages=stages, holdout=["s3"], val_singers=[], steps=ALL_STUDIO, **TINY
    )
    assert [p.stat().st_mtime_ns for p in done] == stamps  # nothing retrained
    np.testing.assert_allclose(
        Embedder.from_checkpoint(again, "cpu").embed_audio(sing(VOICES[0], 4.0, 5), "mono").vector,
        vector,
        atol=1e-6,
    )

    # The tuned copy without studio centres: added after centres estimated without it, which
    # it keeps (same weight); the detector without studio mixes.
    tuned_only = StudioSteps(mixed_speaker=True)
    fused = train_default(
        data, out, stages=stages, holdout=["s3"], val_singers=[], steps=tuned_only, **TINY
    )
    fusion = load_checkpoint(fused)[2][FUSION_KEY]
    assert MIXED_SPEAKER_KEY in fusion and "centres" in fusion and "nuisance" in fusion
    assert stage2.stat().st_mtime_ns == stamps[1]
    assert not VoiceDetector.load(out / "voice-detector.pt").meta["train_config"]["studio_manifest"]


def test_studio_steps_of_the_command_line():
    from model.cli.train import studio_steps

    assert studio_steps(None) == SHIPPED_STUDIO
    assert studio_steps("all") == ALL_STUDIO and not studio_steps("none").any()
    assert studio_steps("centres, mixed_speaker") == StudioSteps(mixed_speaker=True, centres=True)
    with pytest.raises(ValueError, match="unknown"):
        studio_steps("speaker")


def test_the_default_stages_are_the_shipped_options():
    first, second = default_stages()
    assert (first.recipe, second.recipe) == ("shared", "teacher")
    assert second.config.distill_weight > 0 and first.config.distill_weight == 0


def test_recipe_default_refuses_options_of_its_own(tmp_path):
    from model.__main__ import main

    assert main(["train", "--recipe", "default", "--out", str(tmp_path), "--epochs", "3"]) == 2


def test_cli_defaults_name_the_recipes_singers():
    """The CLIs repeat the default model's validation and held-out singers (so that `--help`
    imports no torch): they must stay the recipe's."""
    from model.cli.options import HELD_OUT_SINGERS, VALIDATION_SINGERS
    from model.training.recipe import HOLDOUT, VAL_SINGERS

    assert (VALIDATION_SINGERS, HELD_OUT_SINGERS) == (VAL_SINGERS, HOLDOUT)
