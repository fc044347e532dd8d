"""Helpers shared by the tests: synthetic singing (`synth`) and live servers (`live`)."""

from pathlib import Path

#: The repository root (the folder holding pyproject.toml).
REPO = Path(__file__).resolve().parents[2]
