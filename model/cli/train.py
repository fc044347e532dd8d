"""`python -m model train`: train MONO, MIXED or CROSS from a manifest or a named recipe."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from model.cli.options import add_device, add_overrides, name_list
from model.shared import shared_dir

if TYPE_CHECKING:
    from model.manifest import ManifestRow
    from model.training.recipe import StudioSteps
    from model.training.train import TrainConfig

log = logging.getLogger("model.training.train")


# Fields of model.training.train.TrainConfig that flags can override, named alike.
OVERRIDES = (
    "seed",
    "batch_size",
    "lr",
    "epochs",
    "pretrain_epochs",
    "steps_per_epoch",
    "margin",
    "n_negatives",
    "workers",
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    from model.training.train import TrainConfig

    src = p.add_argument_group("data")
    src.add_argument("--manifest", help="training manifest (CSV, see model/manifest.py)")
    src.add_argument("--val-manifest", help="validation manifest (held-out singers)")
    src.add_argument(
        "--recipe",
        choices=["shared", "teacher", "default"],
        help="shared: ../shared/data (MIR-1K minus held-out singers, sung vowels); teacher: "
        "shared + the a cappella takes (80 %%, one identity each), distilled from the "
        "Resemblyzer teacher (model/weights/cross-default.train.json); default: the shipped "
        "model end to end (shared into OUT/stage1, teacher from it into OUT/stage2, fused "
        "with the speaker encoder into OUT/default.pt), with its own options and singers",
    )
    src.add_argument(
        "--data-dir",
        default=str(shared_dir() / "data"),
        help="for --recipe (default: data/ of $SINGER_SHARED_DIR or ../shared)",
    )
    src.add_argument(
        "--holdout",
        type=name_list,
        default="",
        help="comma-separated MIR-1K test singers to leave out (default: none; --recipe "
        "default: its five held-out singers)",
    )
    src.add_argument(
        "--val-singers",
        type=name_list,
        default="",
        help="comma-separated singers for validation (default: none; --recipe default: "
        "ariel,stool)",
    )
    src.add_argument(
        "--backgrounds",
        nargs="*",
        default=[],
        help="folders or files of background music for on-the-fly mixing",
    )
    p.add_argument("--config", help="JSON file of training options (flags below override it)")
    p.add_argument("--out", required=True, help="run directory (state.pt, last.pt, best.pt)")
    p.add_argument(
        "--model",
        dest="model_type",
        choices=["cross", "mono", "mixed"],
        help="cross: both encoders; mono / mixed: one (default: the --config file's, else cross)",
    )
    add_overrides(p, TrainConfig(), OVERRIDES)
    p.add_argument(
        "--negatives",
        choices=["random", "in-batch"],
        help="random: n-negatives drawn per anchor (the paper); in-batch: the hardest of the "
        "batch (default: the --config file's, else random)",
    )
    p.add_argument(
        "--speeds",
        type=lambda s: tuple(float(x) for x in s.split(",")),
        help="speed factors for pseudo-singers, e.g. 0.89,1,1.12 (default: the --config "
        "file's, else 1)",
    )
    p.add_argument(
        "--spec-augment",
        action="store_true",
        default=None,
        help="SpecAugment masks on training inputs (default: the --config file's, else off)",
    )
    add_device(p, default=None)  # None: the config's
    p.add_argument("--no-resume", action="store_true", help="start over even if --out has a state")
    p.add_argument("--export", help="copy the best checkpoint here when done")
    p.add_argument(
        "--progress",
        action="store_true",
        help="progress bars even when stderr is not a terminal (default: only on a terminal)",
    )
    p.add_argument(
        "--cache-dir",
        default="data/cache/audio",
        help="decoded-audio cache between runs ('' to disable) (default: %(default)s)",
    )
    p.add_argument(
        "--teacher-cache-dir",
        default="data/cache/teacher",
        help="cache of the teacher's embeddings of the training recordings ('' to disable) "
        "(default: %(default)s)",
    )
    p.add_argument(
        "--studio-steps",
        metavar="STEPS",
        help="--recipe default: comma-separated studio-mix steps to run (mixed_speaker, "
        "centres, detector; 'all' or 'none'), instead of those of the shipped default "
        "(model.training.recipe.SHIPPED_STUDIO)",
    )


def studio_steps(text: str | None) -> StudioSteps:
    """The `--studio-steps` value as `StudioSteps` (None: the shipped default's). Raises
    ValueError for an unknown step."""
    from dataclasses import fields

    from model.training.recipe import ALL_STUDIO, SHIPPED_STUDIO, StudioSteps

    if text is None:
        return SHIPPED_STUDIO
    names = {n.strip() for n in text.split(",") if n.strip()}
    if names == {"all"}:
        return ALL_STUDIO
    if names == {"none"}:
        return StudioSteps()
    unknown = names - {f.name for f in fields(StudioSteps)}
    if unknown:
        raise ValueError(f"--studio-steps: unknown {', '.join(sorted(unknown))}")
    return StudioSteps(**{n: True for n in names})


def build_config(args: argparse.Namespace) -> TrainConfig:
    from model.training.train import TrainConfig

    base = json.loads(Path(args.config).read_text()) if args.config else {}
    for key in (*OVERRIDES, "model_type", "negatives", "speeds", "spec_augment", "device"):
        value = getattr(args, key, None)
        if value is not None:
            base[key] = value
    return TrainConfig.from_dict(base)


def export(checkpoint: str | Path, dest: str | None) -> None:
    """Copy the trained checkpoint to --export, when given."""
    import shutil

    if dest:
        Path(dest).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(checkpoint, dest)
        log.info("exported %s", dest)


def load_rows(
    args: argparse.Namespace,
) -> tuple[list[ManifestRow], list[ManifestRow], list[str]]:
    """(train rows, validation rows, background paths) of --recipe or --manifest."""
    from model.manifest import read_manifest
    from model.training.datasets import split_singers
    from model.training.mashup import read_backgrounds
    from model.training.recipe import recipe_rows

    backgrounds = [str(p) for b in args.backgrounds for p in read_backgrounds(b)]
    holdout, val_singers = args.holdout, args.val_singers
    if args.recipe:
        rows, val, recipe_backgrounds = recipe_rows(
            args.recipe, args.data_dir, args.out, holdout, val_singers
        )
        backgrounds = backgrounds or recipe_backgrounds
    else:
        if not args.manifest:
            raise SystemExit("give --manifest or --recipe")
        rows = read_manifest(args.manifest, default_domain="mono")
        rows, _ = split_singers(rows, holdout) if holdout else (rows, [])
        rows, val = split_singers(rows, val_singers) if val_singers else (rows, [])
    if args.val_manifest:
        val += read_manifest(args.val_manifest, default_domain="mono")
    return rows, val, backgrounds


def train_default(args: argparse.Namespace) -> int:
    """--recipe default: the shipped model's whole chain (model.training.recipe)."""
    from model.errors import CheckpointError
    from model.training import recipe

    flags = {
        "config": "--config",
        "manifest": "--manifest",
        "val_manifest": "--val-manifest",
        "model_type": "--model",
        "negatives": "--negatives",
        "speeds": "--speeds",
        "spec_augment": "--spec-augment",
        **{key: "--" + key.replace("_", "-") for key in OVERRIDES},
    }
    given = [flag for key, flag in flags.items() if getattr(args, key, None) is not None]
    given += ["--backgrounds"] if args.backgrounds else []
    if given:
        log.error(
            "--recipe default brings its own options (model/weights/*.train.json); drop %s",
            " ".join(given),
        )
        return 2
    holdout = args.holdout or recipe.HOLDOUT
    val_singers = args.val_singers or recipe.VAL_SINGERS
    try:
        steps = studio_steps(args.studio_steps)
        fused = recipe.train_default(
            args.data_dir,
            args.out,
            holdout=holdout,
            val_singers=val_singers,
            device=args.device,
            resume=not args.no_resume,
            progress=args.progress or sys.stderr.isatty(),
            cache_dir=args.cache_dir or None,
            teacher_cache_dir=args.teacher_cache_dir or None,
            steps=steps,
        )
    except (ValueError, OSError, CheckpointError) as err:
        log.error("%s", err)
        return 2
    log.info("default model: %s", fused)
    export(fused, args.export)
    return 0


def main(args: argparse.Namespace) -> int:
    from model.training.train import train

    if args.recipe == "default":
        return train_default(args)
    try:
        config = build_config(args)
        rows, val, backgrounds = load_rows(args)
    except (ValueError, OSError) as err:
        log.error("%s", err)
        return 2
    log.info(
        "training %s on %d rows (%d singers), validating on %d rows; %d backgrounds",
        config.model_type,
        len(rows),
        len({r.singer for r in rows}),
        len(val),
        len(backgrounds),
    )
    result = train(
        config,
        rows,
        val,
        backgrounds,
        args.out,
        resume=not args.no_resume,
        progress=args.progress or sys.stderr.isatty(),
        cache_dir=args.cache_dir or None,
        teacher_cache_dir=args.teacher_cache_dir or None,
    )
    log.info(
        "done in %.0f s; best validation %.3f -> %s",
        result["seconds"],
        result["best"],
        result["best_checkpoint"],
    )
    export(result["best_checkpoint"], args.export)
    return 0
