"""A standing corpus for the shipped voice detector (issue 33): what is not singing is refused
as a vocal take, at any sample rate it arrives in, and a finished song with a voice under a
loud band is not refused, at either end of the records' range (-12 and +3 dB).

Signals are generated here and go through the service's own path: written as files at their
rate, decoded and resampled by `model.audio.load_audio`, segments chosen by
`model.segment_selection.select_segments` with the shipped detector. The songs are studio
mixes (`model.training.studio_generator`) of held-out MIR-1K singers' vocals over a band of
the training split (the held-out soundfont renders slowly); the model card's studio
evaluation counts the refusals of the held-out ones by the thousand.
"""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import soundfile as sf

from model.audio import load_audio
from model.errors import NoVoicedSegmentError
from model.features import FeatureConfig
from model.segment_selection import select_segments
from model.training.nonvoice import nonvoice
from model.voice import VoiceDetector

CFG = FeatureConfig()
SR = CFG.sample_rate
RATES = (8000, 16000, 22050, 44100, 48000)


@pytest.fixture(scope="module")
def detector() -> VoiceDetector:
    return VoiceDetector.load()


def _through_a_file(tmp_path, y: np.ndarray, rate: int) -> np.ndarray:
    path = tmp_path / f"signal-{rate}.wav"
    sf.write(path, y, rate, subtype="PCM_16")
    return load_audio(path, SR)


@pytest.mark.parametrize("rate", RATES)
@pytest.mark.parametrize("f0", [110.0, 220.0, 440.0])
def test_a_full_scale_square_wave_is_no_vocal_take_at_any_rate(detector, tmp_path, rate, f0):
    t = np.arange(8 * rate) / rate
    y = _through_a_file(tmp_path, 0.99 * np.sign(np.sin(2 * np.pi * f0 * t)), rate)
    with pytest.raises(NoVoicedSegmentError):
        select_segments(y, CFG, detector=detector, domain="mono")


@pytest.mark.parametrize(
    "kind",
    [
        "dc",
        "silence",
        "white",
        "pink",
        "sine",
        "glide",
        "sweep",
        "vibrato_sine",
        "harmonic_vibrato",
        "aliased_square",
        "fm",
        "chord",
        "hum",
        "clicks",
    ],
)
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_generated_non_voice_is_no_vocal_take(detector, tmp_path, kind, seed):
    rate = RATES[seed % len(RATES)]
    y = _through_a_file(tmp_path, nonvoice(kind, 8.0, np.random.default_rng(seed), rate), rate)
    with pytest.raises(NoVoicedSegmentError):
        select_segments(y, CFG, detector=detector, domain="mono")


@pytest.mark.parametrize("kind", ["dc", "silence", "white", "sine", "sweep", "aliased_square"])
def test_what_is_not_music_is_no_finished_song_either(detector, tmp_path, kind):
    y = _through_a_file(tmp_path, nonvoice(kind, 8.0, np.random.default_rng(7), 16000), 16000)
    with pytest.raises(NoVoicedSegmentError):
        select_segments(y, CFG, detector=detector, domain="mixed")


@pytest.mark.skipif(
    not (shutil.which("mma") and shutil.which("fluidsynth")),
    reason="needs mma and fluidsynth (scripts/system-deps.sh installs them)",
)
def test_studio_mixes_with_singing_are_not_refused(detector, shared_dir, tmp_path):
    from model.training.studio_generator import VocalSource, make_studio_mixes, plan_jobs

    vocals = shared_dir / "data" / "mir1k" / "vocals"
    sources = [
        VocalSource(str(vocals / f"{clip}.opus"), clip.split("_")[0], clip)
        for clip in ("abjones_2_03", "bobon_3_02", "geniusturtle_4_05", "khair_2_01", "yifen_2_02")
    ]
    jobs = plan_jobs(sources, "train", seed=3, var_db=[-12.0, 3.0], n_bands=2, bars=8)
    done = make_studio_mixes(jobs, tmp_path, split="train", workers=2, progress=False)
    assert len(done.rows) == 10
    for row in done.rows:
        sel = select_segments(load_audio(row.path, SR), CFG, detector=detector, domain="mixed")
        assert len(sel) >= 1, row.title
