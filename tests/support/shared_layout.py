"""A small copy of ../shared/data's layout (index.csv files, Opus stems) with synthetic
voices, for the training recipes (tests/test_recipe.py, tests/test_cuda.py)."""

from __future__ import annotations

import csv
from pathlib import Path

from model.network import EncoderDims
from model.training.train import TrainConfig
from tests.support.synth import VOICES, backing, sing, write

OPUS_SR = 24000  # a rate Opus takes, as the shared copies use


def _csv(path: Path, rows: list[dict]) -> None:
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def write_shared_layout(root: Path) -> Path:
    """MIR-1K (4 singers x 2 songs), sung vowels, instrumentals and 5 a cappella takes under
    `root`, laid out as ../shared/data is. Returns root."""
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


def tiny_config(**kw) -> TrainConfig:
    """A training configuration small enough for a test: one step of a narrow CROSS."""
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
