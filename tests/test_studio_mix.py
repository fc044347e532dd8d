"""The studio-mix generator (model.training.studio_generator): real MMA + FluidSynth bands of
two bars, pedalboard vocal chains and masters, real files; deterministic by seed, resumable
after a kill -9, the VAR and the loudness it promises measured on what it wrote."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from model.audio import rms
from model.training import band as band_mod
from model.training.mastering import CEILING_DB, LUFS_TOLERANCE, loudness
from model.training.studio_generator import (
    VAR_TOLERANCE,
    VocalSource,
    make_studio_mixes,
    plan_jobs,
)

pytestmark = pytest.mark.skipif(
    not (shutil.which("mma") and shutil.which("fluidsynth")),
    reason="needs mma and fluidsynth (scripts/system-deps.sh installs them)",
)
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def sources(shared_dir) -> list[VocalSource]:
    """Three 3-s crops of MIR-1K vocal stems (two singers)."""
    vocals = shared_dir / "data" / "mir1k" / "vocals"
    return [
        VocalSource(
            str(vocals / f"{clip}.opus"), clip.split("_")[0], clip, offset_s=1.0, seconds=3.0
        )
        for clip in ("abjones_1_01", "abjones_1_02", "bobon_1_01")
    ]


def _jobs(sources, seed=0, var_db=None):
    # Training split: its soundfonts (FluidR3, TimGM6mb) render two bars in a second.
    return plan_jobs(sources, "train", seed=seed, var_db=var_db, n_bands=2, bars=2)


def _audio(rows) -> list[np.ndarray]:
    return [sf.read(r.path, dtype="float32")[0] for r in rows]


def test_the_same_seed_gives_the_same_mixes_and_another_seed_others(sources, tmp_path):
    a = make_studio_mixes(_jobs(sources), tmp_path / "a", split="train", workers=2, progress=False)
    b = make_studio_mixes(_jobs(sources), tmp_path / "b", split="train", workers=1, progress=False)
    c = make_studio_mixes(
        _jobs(sources, seed=1), tmp_path / "c", split="train", workers=1, progress=False
    )
    assert len(a.rows) == len(sources) and not a.failures
    for x, y in zip(_audio(a.rows), _audio(b.rows), strict=True):
        np.testing.assert_array_equal(x, y)  # processes or not, the same samples
    assert [Path(r.path).name for r in a.rows] == [Path(r.path).name for r in b.rows]
    assert {Path(r.path).name for r in a.rows}.isdisjoint(Path(r.path).name for r in c.rows)
    assert any(
        x.shape != y.shape or np.abs(x - y).max() > 0.01
        for x, y in zip(_audio(a.rows), _audio(c.rows), strict=True)
    )


def test_a_rerun_reuses_finished_mixes_and_makes_the_missing_one(sources, tmp_path):
    jobs = _jobs(sources)
    first = make_studio_mixes(jobs, tmp_path, split="train", workers=1, progress=False)
    assert (first.ran, first.reused) == (3, 0)
    before = _audio(first.rows)
    gone = Path(first.rows[1].path)
    gone.with_suffix(".json").unlink()  # as if killed before the record was written
    gone.unlink()
    again = make_studio_mixes(jobs, tmp_path, split="train", workers=1, progress=False)
    assert (again.ran, again.reused) == (1, 2)
    for x, y in zip(before, _audio(again.rows), strict=True):
        np.testing.assert_array_equal(x, y)
    assert (tmp_path / "manifest.csv").read_text() == first.manifest.read_text()


def test_a_run_killed_with_sigkill_finishes_on_the_rerun(sources, tmp_path):
    """A real kill -9 of a generator process part way; the rerun completes the same mixes."""
    out = tmp_path / "killed"
    script = (
        "import sys, pickle; from model.training.studio_generator import make_studio_mixes;"
        "jobs = pickle.load(open(sys.argv[1], 'rb'));"
        "make_studio_mixes(jobs, sys.argv[2], split='train', workers=1, progress=False)"
    )
    import pickle

    jobs = _jobs(sources, var_db=[-10.0, -5.0, 0.0])  # 9 mixes
    (tmp_path / "jobs.pkl").write_bytes(pickle.dumps(jobs))
    proc = subprocess.Popen(
        [sys.executable, "-c", script, str(tmp_path / "jobs.pkl"), str(out)], cwd=REPO
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if len(list((out / "mixes").glob("*.json"))) >= 2:
            break
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    made = len(list((out / "mixes").glob("*.json")))
    assert 2 <= made < 9, "the kill should land part way"
    assert not (out / "manifest.csv").exists()
    resumed = make_studio_mixes(jobs, out, split="train", workers=1, progress=False)
    assert resumed.reused == made and resumed.ran == 9 - made and len(resumed.rows) == 9
    fresh = make_studio_mixes(jobs, tmp_path / "fresh", split="train", workers=1, progress=False)
    for x, y in zip(_audio(resumed.rows), _audio(fresh.rows), strict=True):
        np.testing.assert_array_equal(x, y)


def test_the_master_has_the_drawn_var_and_loudness(sources, tmp_path):
    jobs = _jobs(sources, var_db=[-10.0, -4.0, 2.0])
    got = make_studio_mixes(jobs, tmp_path, split="train", stems=True, workers=2, progress=False)
    assert len(got.rows) == 9
    for job, row in zip(jobs, got.rows, strict=True):
        mix, sr = sf.read(row.path, dtype="float32")
        base = Path(row.path).with_suffix("")
        vocal = sf.read(f"{base}.vocal.flac", dtype="float32")[0]
        band = sf.read(f"{base}.band.flac", dtype="float32")[0]
        # The VAR measured from the stems as written, which add up to the master.
        assert abs(20 * np.log10(rms(vocal) / rms(band)) - job.var_db) <= VAR_TOLERANCE + 0.05
        assert rms(mix - vocal - band) / rms(mix) < 0.1
        # And fitted on them again: the master is nearly 1 x vocal + 1 x band.
        (a, b), *_ = np.linalg.lstsq(np.stack([vocal, band], 1), mix, rcond=None)
        assert abs(a - 1) < 0.1 and abs(b - 1) < 0.1
        assert abs(loudness(mix, sr) - job.master.target_lufs) <= LUFS_TOLERANCE + 0.05
        assert -9.6 <= loudness(mix, sr) <= -6.4
        assert np.abs(mix).max() <= 10 ** (CEILING_DB / 20) + 1e-3
        record = json.loads(base.with_suffix(".json").read_text())
        assert float(row.extra["measured_var_db"]) == pytest.approx(record["measured_var_db"])


def test_one_pass_mixes_put_the_drawn_var_into_the_master(sources, tmp_path):
    exact = _jobs(sources[:1], var_db=[-6.0])
    fast = plan_jobs(sources[:1], "train", var_db=[-6.0], n_bands=2, bars=2, var_passes=1)
    assert exact[0].key != fast[0].key and exact[0].var_passes == 8
    # a field at its default stays out of the key: mixes made before it keep their files
    assert exact[0].key == replace(exact[0], var_passes=8).key
    got = make_studio_mixes(fast, tmp_path, split="train", stems=True, workers=1, progress=False)
    (row,) = got.rows
    base = Path(row.path).with_suffix("")
    vocal = sf.read(f"{base}.vocal.flac", dtype="float32")[0]
    band = sf.read(f"{base}.band.flac", dtype="float32")[0]
    measured = 20 * np.log10(rms(vocal) / rms(band))
    assert float(row.extra["measured_var_db"]) == pytest.approx(measured, abs=0.05)
    assert abs(measured + 6.0) < 2.0  # near the drawn VAR, not on it


def test_the_dry_crop_is_the_source_span(sources, tmp_path):
    from model.audio import load_audio

    got = make_studio_mixes(
        _jobs(sources[:1]), tmp_path, split="train", dry=True, workers=1, progress=False
    )
    (row,) = got.rows
    dry, sr = sf.read(row.extra["dry_path"], dtype="float32")
    source = load_audio(row.source, sr)[sr : 4 * sr]
    assert len(dry) == len(source) == len(sf.read(row.path)[0])
    np.testing.assert_allclose(dry, source, atol=1 / 32768 + 1e-6)


def test_held_out_grooves_and_soundfont_never_reach_training():
    lib = band_mod.groove_library()
    held, train = band_mod.split_grooves("heldout"), band_mod.split_grooves("train")
    assert held and train and set(held) | set(train) == set(lib) and not set(held) & set(train)
    held_names = {g.lower() for gs in held.values() for g in gs}
    rng = np.random.default_rng(0)
    drawn = [band_mod.draw_band(rng, "train", bars=4) for _ in range(300)]
    assert not {b.groove.lower() for b in drawn} & held_names
    assert {b.soundfont for b in drawn} == set(band_mod.SOUNDFONTS) - {band_mod.HELDOUT_SOUNDFONT}
    assert {band_mod.draw_band(rng, "heldout").soundfont for _ in range(20)} == {
        band_mod.HELDOUT_SOUNDFONT
    }


def test_the_manifest_names_its_mixes_relative_to_its_folder(sources, tmp_path, monkeypatch):
    """A run into a relative folder (as `--out data/studio/train`), its manifest read from
    another working directory: every mix, dry take and tuning pair is found (the bug of the
    first tuning run: `data/studio/data/studio/train/mixes/...`)."""
    from model.manifest import read_manifest
    from model.training.speaker_tune import TunePairs, studio_rows

    monkeypatch.chdir(tmp_path)
    done = make_studio_mixes(
        _jobs(sources[:2]), Path("data/studio/train"), split="train", dry=True, progress=False
    )
    assert all(Path(r.path).is_absolute() and Path(r.path).is_file() for r in done.rows)
    monkeypatch.chdir(REPO)
    rows = read_manifest(tmp_path / done.manifest)
    assert [r.path for r in rows] == [r.path for r in done.rows]
    for row, made in zip(rows, done.rows, strict=True):
        assert Path(row.path).is_file()
        dry = Path(row.extra["dry_path"])
        assert not dry.is_absolute() and (tmp_path / done.manifest).parent.joinpath(dry).is_file()
        assert made.extra["dry_path"] == str((tmp_path / done.manifest).parent / dry)
    pairs = TunePairs(min_voiced=0.3).load(studio_rows(tmp_path / done.manifest))
    assert len(pairs.studio) == len(rows)
