"""Settings (service/settings.py): every SINGER_* variable is a field, the README's tables
list exactly those, and the performance knobs keep their flat names in a sub-model."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from pydantic import ValidationError

from service.settings import Performance, Settings, env_fields

README = Path(__file__).resolve().parents[2] / "service" / "README.md"


def readme_variables() -> set[str]:
    """The variables in the first column of the README's settings tables."""
    text = README.read_text()
    section = text[text.index("### Settings") :]
    section = section[: section.index("\n### ", 1)]
    return set(re.findall(r"^\| `(SINGER_[A-Z0-9_]+)` \|", section, re.MULTILINE))


# Read outside `Settings` until the speaker encoder's loader takes the file as a parameter
# (model.speaker.weights_path, studio's; Embedder.from_checkpoint, model-core's): then it
# becomes a field and leaves this set.
NOT_YET_FIELDS = {"SINGER_SPEAKER_WEIGHTS"}


def test_the_readme_lists_every_setting_and_nothing_else():
    names = {name for name, _ in env_fields()}
    assert not names & NOT_YET_FIELDS
    assert readme_variables() == names | NOT_YET_FIELDS
    assert {"SINGER_TORCH_THREADS", "SINGER_DECODE_PROCESSES", "SINGER_DECODE_PARTS"} <= names
    assert not any("BATCH" in n for n in names)


def test_every_field_is_documented():
    for name, field in env_fields():
        assert field.description, name


def test_performance_knobs_keep_flat_names(monkeypatch):
    monkeypatch.setenv("SINGER_DECODE_PARTS", "2")
    monkeypatch.setenv("SINGER_TORCH_THREADS", "3")
    assert Settings().performance == Performance(decode_parts=2, torch_threads=3)
    # given as keyword arguments as the environment gives them; the rest still read there
    flat = Settings(decode_processes=0, decode_parts=5)
    assert flat.performance == Performance(decode_processes=0, decode_parts=5, torch_threads=3)
    nested = Settings(performance=Performance(decode_parts=4), torch_threads=1)
    assert (nested.performance.decode_parts, nested.performance.torch_threads) == (4, 1)
    assert "decode_parts" not in Settings.model_fields


@pytest.mark.parametrize("env", [{"SINGER_DECODE_PARTS": "0"}, {"SINGER_TORCH_THREADS": "x"}])
def test_a_bad_performance_value_is_refused(monkeypatch, env):
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    with pytest.raises(ValidationError):
        Settings()
