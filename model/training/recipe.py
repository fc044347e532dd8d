"""Named training recipes over `../shared/data`, and the shipped default end to end.

`recipe_rows` gives the rows of the `shared` and `teacher` recipes. `train_default`
(`python -m model train --recipe default`) chains what made `model/weights/cross-default.pt`
and `model/weights/voice-detector.pt`: stage 1 (`shared`, `cross-shared.train.json`), stage 2
(`teacher`, `cross-default.train.json`, started from stage 1's last weights), fusion with the
speaker encoder at `FUSION_WEIGHT` (`model.fusion`), the domain centres and the nuisance
projection (`model.training.centres`), and the voice detector (`model.training.voice`,
`voice-detector.train.json`). The studio-mix steps (`StudioSteps`: the training takes'
studio mixes, `model.training.studio_generator`; the speaker encoder's copy for mixed
segments, `model.training.speaker_tune`, `speaker-tune.train.json`; studio pairs for the
centres; studio mixes for the detector) run where `SHIPPED_STUDIO` turns them on, or with
`--studio-steps`. Each stage is a folder (or file) of its own, so a killed chain resumes
inside the stage it was in, and a finished stage is not done again.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from model import DEFAULT_CHECKPOINT
from model.fusion import fuse_checkpoint
from model.manifest import ManifestRow
from model.training.centres import centre_checkpoint
from model.training.datasets import (
    acappella_rows,
    mir1k_rows,
    split_acappella,
    split_singers,
    vowel_rows,
)
from model.training.mashup import read_backgrounds
from model.training.speaker_tune import TuneConfig
from model.training.train import TrainConfig, train
from model.training.voice import VoiceTrainConfig

log = logging.getLogger(__name__)

RECIPES = ("shared", "teacher")
#: MIR-1K singers the default never trains on: its evaluation (`--singers`).
HOLDOUT = ("abjones", "bobon", "geniusturtle", "khair", "yifen")
#: MIR-1K singers the default validates on (and calibrates its impostors with).
VAL_SINGERS = ("ariel", "stool")
#: CROSS's share of every cosine in the default; chosen on the a cappella dev figure
#: (model/weights/MODEL_CARD.md).
FUSION_WEIGHT = 0.1
#: The mixed branch's front end: each segment of a song also read without the song's
#: repeating band, the voice kept where it stands this many times above it
#: (`model.repeating_background`; model card, "Stage 6"). Set before the centres, which are
#: estimated with it.
MIX_BACKGROUND_MARGIN = 4.0
WEIGHTS = DEFAULT_CHECKPOINT.parent


@dataclass(frozen=True)
class StudioPlan:
    """The training takes' studio mixes of the default: `plan_jobs`' seed, mixes per take,
    band tracks and bars per band track."""

    seed: int = 0
    per_source: int = 1
    bands: int = 48
    bars: int = 32
    var_passes: int = 1  # the drawn VAR goes into the master (`MixJob.var_passes`)


@dataclass(frozen=True)
class StudioSteps:
    """Which steps of the chain use the studio mixes (issue 33): tune the speaker encoder's
    copy for mixed segments (`mixed_speaker`), estimate the domain centres and nuisance
    directions with studio pairs too (`centres`), train the voice detector with studio mixes
    (`detector`). `SHIPPED_STUDIO` is what the shipped default used: each was measured on
    the held-out studio mixes and MIR-1K (model card, "Studio mixes"), and a step stays off
    until it passes both."""

    mixed_speaker: bool = False
    centres: bool = False
    detector: bool = False

    def any(self) -> bool:
        return self.mixed_speaker or self.centres or self.detector


SHIPPED_STUDIO = StudioSteps()
#: the detector's options with studio mixes (the run measured in the model card), over
#: `voice-detector.train.json`'s
STUDIO_DETECTOR: dict[str, Any] = {
    "steps": 2000,
    "n_nonvoice": 1200,
    "studio_every": 1,
    "band_crops": 3,
}
ALL_STUDIO = StudioSteps(mixed_speaker=True, centres=True, detector=True)


@dataclass(frozen=True)
class Stage:
    """One training run of a chain: its folder name, its rows' recipe and its options."""

    name: str
    recipe: str
    config: TrainConfig


def default_stages() -> list[Stage]:
    """The two stages of the shipped default, with the options stored beside its weights."""

    def config(name: str) -> TrainConfig:
        return TrainConfig.from_dict(json.loads((WEIGHTS / name).read_text()))

    return [
        Stage("stage1", "shared", config("cross-shared.train.json")),
        Stage("stage2", "teacher", config("cross-default.train.json")),
    ]


def recipe_rows(
    recipe: str,
    data_dir: str | Path,
    work_dir: str | Path,
    holdout: Sequence[str] = (),
    val_singers: Sequence[str] = (),
) -> tuple[list[ManifestRow], list[ManifestRow], list[str]]:
    """(training rows, validation rows, background paths) of a named recipe.

    shared: MIR-1K vocals and karaoke mixes, sung vowels (joined into recordings written
    under `work_dir`), the instrumental tracks as backgrounds. teacher: the same plus 80 % of
    the a cappella takes, one identity each. `holdout` singers are left out entirely,
    `val_singers` become the validation rows. Raises ValueError for an unknown recipe."""
    if recipe not in RECIPES:
        raise ValueError(f"unknown recipe {recipe!r}; known: {', '.join(RECIPES)}")
    data = Path(data_dir)
    rows = mir1k_rows(data / "mir1k") + vowel_rows(data / "vowels", Path(work_dir) / "vowels")
    backgrounds = [str(p) for p in read_backgrounds(data / "instrumental")]
    takes = split_acappella(acappella_rows(data / "acappella"))[0] if recipe == "teacher" else []
    rows, _ = split_singers(rows, list(holdout)) if holdout else (rows, [])
    rows, val = split_singers(rows, list(val_singers)) if val_singers else (rows, [])
    return rows + takes, val, backgrounds


def finished(run_dir: Path, config: TrainConfig) -> bool:
    """Whether `run_dir` holds a completed run of `config` (its state after the last epoch)."""
    state = run_dir / "state.pt"
    if not (state.is_file() and (run_dir / "last.pt").is_file()):
        return False
    saved = torch.load(state, map_location="cpu", weights_only=True)
    done = saved["epoch"] >= config.pretrain_epochs + config.epochs
    return bool(done and saved["config"] == config.to_dict())


def train_default(
    data_dir: str | Path,
    out_dir: str | Path,
    *,
    stages: Sequence[Stage] | None = None,
    fusion_weight: float = FUSION_WEIGHT,
    holdout: Sequence[str] = HOLDOUT,
    val_singers: Sequence[str] = VAL_SINGERS,
    device: str | None = None,
    resume: bool = True,
    progress: bool = False,
    cache_dir: str | Path | None = None,
    teacher_cache_dir: str | Path | None = None,
    studio_plan: StudioPlan = StudioPlan(),
    tune: TuneConfig | None = None,
    detector: VoiceTrainConfig | None = None,
    steps: StudioSteps = SHIPPED_STUDIO,
    mix_background_margin: float = MIX_BACKGROUND_MARGIN,
) -> Path:
    """Train the default's stages in `out_dir/<stage>/`, each from the last weights of the
    one before, write `out_dir/default.pt` (fused, with its centres and nuisance projection)
    and the voice detector `out_dir/voice-detector.pt`. Returns the fused checkpoint's path.
    With any of the studio `steps`: the training takes' studio mixes in `out_dir/studio`
    first, and the mixed-domain speaker encoder tuned in `out_dir/speaker` if asked.

    stages: default `default_stages()`; tune, detector: default the shipped options
    (`speaker-tune.train.json`, `voice-detector.train.json`); device: overrides the stages'
    own ("auto"); mix_background_margin: the mixed branch's front end (0: none)."""
    out = Path(out_dir)
    studio = None
    if steps.any():
        studio = studio_mixes(data_dir, out / "studio", studio_plan, holdout, val_singers, progress)
    previous: Path | None = None
    for stage in stages if stages is not None else default_stages():
        config = stage.config
        if previous is not None:
            config = replace(config, init_checkpoint=str(previous))
        if device is not None:
            config = replace(config, device=device)
        run_dir = out / stage.name
        if resume and finished(run_dir, config):
            log.info("%s: already trained (%s)", stage.name, run_dir / "last.pt")
        else:
            rows, val, backgrounds = recipe_rows(
                stage.recipe, data_dir, run_dir, holdout, val_singers
            )
            log.info(
                "%s: %s recipe, %d rows, %d validation",
                stage.name,
                stage.recipe,
                len(rows),
                len(val),
            )
            train(
                config,
                rows,
                val,
                backgrounds,
                run_dir,
                resume=resume,
                progress=progress,
                cache_dir=cache_dir,
                teacher_cache_dir=teacher_cache_dir,
            )
        previous = run_dir / "last.pt"
    if previous is None:
        raise ValueError("no stages to train")
    speaker = None
    if steps.mixed_speaker:
        assert studio is not None
        speaker = tune_mixed_speaker(
            data_dir, studio, out / "speaker", tune, [*holdout, *val_singers], progress
        )
    # The tuned copy goes in before the centres only when they are estimated with it.
    early = speaker if steps.centres else None
    fused = fuse_checkpoint(
        previous,
        out / "default.pt",
        fusion_weight,
        mixed_speaker=early,
        mix_background_margin=mix_background_margin,
    )
    log.info("fused %s at CROSS weight %g -> %s", previous, fusion_weight, fused)
    fused = centre_checkpoint(
        fused,
        data_dir,
        fused,
        holdout,
        val_singers,
        device,
        progress,
        studio=studio if steps.centres else None,
    )
    log.info("domain centres and nuisance directions estimated on training material -> %s", fused)
    if speaker is not None and early is None:  # same weight, no new centres: both are kept
        fused = fuse_checkpoint(fused, fused, fusion_weight, mixed_speaker=speaker)
        log.info("mixed-domain speaker encoder added -> %s", fused)
    voice = train_detector(
        data_dir, studio if steps.detector else None, out / "voice-detector.pt", detector
    )
    log.info("voice detector -> %s", voice)
    return fused


def studio_mixes(
    data_dir: str | Path,
    out_dir: Path,
    plan: StudioPlan = StudioPlan(),
    holdout: Sequence[str] = HOLDOUT,
    val_singers: Sequence[str] = VAL_SINGERS,
    progress: bool = False,
) -> Path:
    """The training takes' studio mixes (`plan`) in `out_dir`, made where missing (the same
    as `python -m model studio-mix --split train --var-passes 1`); returns their manifest."""
    from model.training.studio_generator import make_studio_mixes, plan_jobs
    from model.training.studio_sources import studio_sources

    sources = studio_sources(data_dir, "train", holdout, val_singers)
    jobs = plan_jobs(
        sources,
        "train",
        seed=plan.seed,
        per_source=plan.per_source,
        n_bands=plan.bands,
        bars=plan.bars,
        var_passes=plan.var_passes,
    )
    done = make_studio_mixes(jobs, out_dir, split="train", progress=progress)
    if done.failures:
        log.warning("%d studio mixes failed: %s", len(done.failures), done.failures)
    return done.manifest


def tune_mixed_speaker(
    data_dir: str | Path,
    studio: Path,
    out_dir: Path,
    cfg: TuneConfig | None = None,
    leave_out: Sequence[str] | None = None,
    progress: bool = False,
) -> Path:
    """The speaker encoder's copy for mixed segments (`cfg`, default
    `speaker-tune.train.json`) tuned in `out_dir` (resumed, or read back when finished), on
    the studio mixes and the karaoke mixes of the MIR-1K singers but `leave_out`."""
    from model.training.speaker_tune import TunePairs, karaoke_files, studio_rows, tune_speaker

    if cfg is None:
        cfg = TuneConfig(**json.loads((WEIGHTS / "speaker-tune.train.json").read_text()))
    weights = out_dir / "speaker-mixed.pt"
    if weights.is_file():
        saved = torch.load(weights, map_location="cpu", weights_only=True)
        if saved.get("tune_config") == cfg.to_dict():
            return weights
    karaoke = karaoke_files(data_dir, leave_out)
    pairs = TunePairs(cfg.min_voiced).load(studio_rows(studio), karaoke, progress)
    return tune_speaker(pairs, cfg, out_dir, progress)


def train_detector(
    data_dir: str | Path, studio: Path | None, out: Path, tc: VoiceTrainConfig | None = None
) -> Path:
    """The voice detector (`tc`, default `voice-detector.train.json`, the shipped one's options,
    with `STUDIO_DETECTOR` on top when `studio` is given) trained with the studio mixes of
    `studio` (None: without), unless `out` holds one trained with those options."""
    from model.training.voice import run

    if tc is None:
        tc = VoiceTrainConfig(**json.loads((WEIGHTS / "voice-detector.train.json").read_text()))
        if studio is not None:
            tc = replace(tc, **STUDIO_DETECTOR)
    tc = replace(tc, studio_manifest=str(studio) if studio is not None else "")
    if out.is_file():
        saved = torch.load(out, map_location="cpu", weights_only=True)
        if saved.get("meta", {}).get("train_config") == tc.to_dict():
            return out
    run(Path(data_dir), out, tc)
    return out
