"""Krumhansl-Schmuckler key finding (model/keys.py) on synthetic tones of known key."""

from __future__ import annotations

import numpy as np
import pytest

from model.training.keys import (
    MAJOR_PROFILE,
    MINOR_PROFILE,
    Key,
    chromagram,
    find_key,
    key_scores,
    segment_keys,
)
from tests.support.synth import SR, chord_progression, harmonic_tone, midi_hz

# I-IV-V-I in C major and F# major, i-iv-V-i in A minor (harmonic minor: G# in the V chord).
PROGRESSIONS = {
    "C major": [[60, 64, 67], [65, 69, 72], [67, 71, 74], [60, 64, 67]],
    "A minor": [[57, 60, 64], [62, 65, 69], [64, 68, 71], [57, 60, 64]],
    "F# major": [[66, 70, 73], [71, 75, 78], [73, 77, 80], [66, 70, 73]],
}


@pytest.mark.parametrize("method", ["cqt", "stft"])
@pytest.mark.parametrize("name", sorted(PROGRESSIONS))
def test_finds_the_key_of_a_chord_progression(name, method):
    y = chord_progression(PROGRESSIONS[name], 0.75)
    assert find_key(chromagram(y, SR, 512, method)) == Key.parse(name)


def test_finds_the_key_of_a_scale():
    # C major scale up and down, tonic held longer (as melodies tend to).
    notes = [60, 62, 64, 65, 67, 69, 71, 72, 71, 69, 67, 65, 64, 62, 60, 60]
    y = np.concatenate([harmonic_tone(midi_hz(n), 0.3, vibrato_cents=30) for n in notes])
    assert find_key(chromagram(y, SR)) == Key.parse("C major")


def test_scores_are_pearson_correlations_with_the_rotated_profiles():
    rng = np.random.default_rng(0)
    chroma = rng.random((12, 40))
    profile = chroma.sum(axis=1)
    expected = [
        np.corrcoef(profile, np.roll(p, t))[0, 1]
        for p in (MAJOR_PROFILE, MINOR_PROFILE)
        for t in range(12)
    ]
    np.testing.assert_allclose(key_scores(chroma), expected, atol=1e-12)
    # A profile itself, rotated to any tonic, is found as that key.
    for index in range(24):
        base = MINOR_PROFILE if index >= 12 else MAJOR_PROFILE
        assert find_key(np.roll(base, index % 12)) == Key.from_index(index)


def test_flat_chroma_has_no_key():
    assert find_key(np.zeros((12, 10))) is None
    assert find_key(np.ones(12)) is None


def test_segment_keys_follow_a_modulation():
    # 3 s of C major then 3 s of F# major; each 3-s window sees one whole progression.
    y = np.concatenate(
        [
            chord_progression(PROGRESSIONS["C major"], 0.75),
            chord_progression(PROGRESSIONS["F# major"], 0.75),
        ]
    )
    chroma = chromagram(y, SR, 512)
    per_window = round(3.0 * SR / 512)
    keys = segment_keys(chroma, [0, per_window], per_window)
    assert keys == [Key.parse("C major"), Key.parse("F# major")]
    assert segment_keys(chroma, [chroma.shape[1] + 5], per_window) == [None]  # past the end


def test_key_relations_and_names():
    c = Key.parse("C major")
    assert c.relative() == Key.parse("A minor") and c.relative().relative() == c
    assert Key.parse("Eb minor").relative() == Key.parse("F# major")
    assert c.transpose(6) == Key.parse("F# major") and c.transpose(-1) == Key.parse("B")
    assert [Key.from_index(i).index for i in range(24)] == list(range(24))
    assert str(Key.parse("a# minor")) == "A# minor"
    with pytest.raises(ValueError):
        Key.parse("H major")
