"""Studio mixes: vocal takes produced, mixed over a dense band and mastered, as records are.

`make_studio_mixes(sources, out_dir, ...)` is the library entry point (`python -m model
studio-mix` is a thin CLI over it). For each vocal source it draws, from one seed:

- a band track of the split (`model.training.band`: an MMA groove rendered by FluidSynth)
  and a place in it; band tracks are rendered once and shared by many mixes;
- a vocal chain (`model.training.vocal_chain`): EQ, compression, doubles, harmonies,
  saturation or telephone now and then, a room or a plate;
- a vocal-to-accompaniment ratio (VAR, dB): around -4 dB (a normal of sd 3.5 dB cut to
  -12..+3 dB), or each of a fixed list (the evaluation's -10, -5, 0);
- a master (`model.training.mastering`): bus compression, EQ, limiter to -9..-7 LUFS.

The VAR is the record's, measured after mastering: 20 log10 of the RMS ratio of the
vocal's and the band's parts of the master, each stem taken through the master's EQ and the
gain curve of its dynamics (`mastered_stems`). The master lifts a quiet vocal, so the
vocal's gain before it is corrected until the output's VAR is within `VAR_TOLERANCE` dB of
the drawn one.

Everything is deterministic by seed: all settings are drawn up front in one process, and a
job's output depends on its settings alone. Outputs are content-addressed (a hash of the
settings and `GENERATOR_VERSION`): `bands/<key>.flac`, `mixes/<key>.flac` (with `--dry`
the take's own crop `mixes/<key>.dry.flac`, with `--stems` `<key>.vocal.flac` and
`<key>.band.flac`, the two parts of the master) and `mixes/<key>.json` written last, so a
killed run (even kill -9) resumes where it was: finished jobs are read back, the others
run. Jobs run in `workers` processes with a progress bar; a source that cannot be decoded
is logged, skipped and listed in `manifest.report.json`. `manifest.csv` lists every mix (domain
mixed, `source` = the vocal file, offset and length of the crop, VAR, groove, soundfont,
loudness); while a long run goes on, `manifest.partial.csv` lists the mixes made so far
(they are made in a seeded random order, so it is a fair sample).
"""

from __future__ import annotations

import concurrent.futures as cf
import functools
import hashlib
import json
import logging
import random
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

from model.audio import SAMPLE_RATE, load_audio, rms
from model.errors import AudioError
from model.files import atomic_write, atomic_write_text
from model.manifest import ManifestRow, write_manifest
from model.training.band import BandRenderError, BandSpec, draw_band, render_band
from model.training.mastering import (
    Master,
    band_bus,
    draw_master,
    gain_curve,
    loudness,
    master_dynamics,
    master_eq,
    solve_monotone,
)
from model.training.vocal_chain import VocalChain, draw_vocal_chain, produce_vocal

log = logging.getLogger(__name__)

#: bump when a change to the code changes the audio of the same settings
GENERATOR_VERSION = 2
#: VAR drawn for training mixes: mean and sd of a normal cut to the range, dB
VAR_MEAN_DB, VAR_SD_DB, VAR_RANGE_DB = -4.0, 3.5, (-12.0, 3.0)
#: the master's VAR ends within this of the drawn one, dB
VAR_TOLERANCE = 0.5


@dataclass(frozen=True)
class VocalSource:
    """A vocal take to mix: file, singer, song, and the crop [offset_s, offset_s + seconds)
    (seconds None: to the end). `name` is unique among the sources of one run."""

    path: str
    singer: str
    name: str
    song: str | None = None
    offset_s: float = 0.0
    seconds: float | None = None


@dataclass(frozen=True)
class MixJob:
    """Everything one mix is made of; its output depends on these fields alone."""

    source: VocalSource
    var_db: float
    band: BandSpec
    band_position: float  # where the crop starts in the band track, a fraction of the room
    chain: VocalChain
    master: Master
    sample_rate: int
    # masters tried while the vocal's gain is searched for the drawn VAR at the output; 1:
    # the drawn VAR is the one into the master (the output's is measured and recorded), about
    # 2.5 times cheaper, for training mixes whose VAR is random anyway
    var_passes: int = 8

    @property
    def key(self) -> str:
        """Hash of the fields (those at their default left out, so that a field added later
        keeps the keys of the mixes made before it) and GENERATOR_VERSION."""
        fields = {k: v for k, v in asdict(self).items() if _DEFAULTS.get(k, _DEFAULTS) != v}
        return _digest({"v": GENERATOR_VERSION, **fields})


#: MixJob fields added after version 2, at their defaults (left out of the key)
_DEFAULTS: dict = {"var_passes": 8}


def _digest(obj: object) -> str:
    return hashlib.sha1(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:20]


def band_key(band: BandSpec, sr: int) -> str:
    """Content address of a rendered band track."""
    return _digest({"v": GENERATOR_VERSION, "band": band.to_dict(), "sr": sr})


@dataclass
class StudioResult:
    """What `make_studio_mixes` made: manifest rows (one per mix, in job order), the manifest
    path, failures (source name -> error), counts of jobs run and read back."""

    rows: list[ManifestRow]
    manifest: Path
    failures: dict[str, str] = field(default_factory=dict)
    ran: int = 0
    reused: int = 0


def draw_var(rng: np.random.Generator) -> float:
    """A training VAR: normal(VAR_MEAN_DB, VAR_SD_DB) redrawn until inside VAR_RANGE_DB."""
    while True:
        v = float(rng.normal(VAR_MEAN_DB, VAR_SD_DB))
        if VAR_RANGE_DB[0] <= v <= VAR_RANGE_DB[1]:
            return v


def plan_jobs(
    sources: Sequence[VocalSource],
    split: str,
    *,
    seed: int = 0,
    per_source: int = 1,
    var_db: Sequence[float] | None = None,
    n_bands: int = 48,
    bars: int = 32,
    sr: int = SAMPLE_RATE,
    var_passes: int = 8,
) -> list[MixJob]:
    """The jobs of a run, drawn in order from `seed`: `n_bands` band tracks of `split`
    (`bars` bars each), then per source `per_source` mixes, each over a random band. With
    `var_db`, each of those mixes is rendered once per listed VAR with the same band,
    crop, chain and master (only the balance changes); else its VAR is drawn (`draw_var`).
    `var_passes`: see `MixJob`."""
    rng = np.random.default_rng(seed)
    bands = [draw_band(rng, split, bars) for _ in range(n_bands)]
    jobs = []
    for src in sources:
        for _ in range(per_source):
            band = bands[int(rng.integers(len(bands)))]
            position = float(rng.random())
            chain = draw_vocal_chain(rng)
            mastering = draw_master(rng)
            drawn = draw_var(rng)
            for var in var_db if var_db is not None else (drawn,):
                job = MixJob(src, float(var), band, position, chain, mastering, sr, var_passes)
                jobs.append(job)
    return jobs


def var_db(vocal: np.ndarray, band: np.ndarray) -> float:
    """20 log10(rms(vocal) / rms(band)), dB: the vocal-to-accompaniment ratio of two stems."""
    return 20.0 * np.log10(rms(vocal) / max(rms(band), 1e-20))


def mastered_stems(
    vocal: np.ndarray, band: np.ndarray, sr: int, m: Master
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(master, vocal part, band part): the mix of two stems (samples,) mastered, and each
    stem taken through the same master (its EQ, then the gain curve of its dynamics), so
    that the parts add up to the master but for the limiter's overshoots."""
    v, b = master_eq(vocal, sr, m), master_eq(band, sr, m)
    mix = master_dynamics(v + b, sr, m)
    g = gain_curve(v + b, mix)
    return mix, (g * v).astype(np.float32), (g * b).astype(np.float32)


def _fit_length(y: np.ndarray, n: int, position: float) -> np.ndarray:
    """n samples of `y` from `position` (a fraction of the room left), looped if too short."""
    if len(y) < n:
        y = np.tile(y, int(np.ceil(n / max(len(y), 1))) + 1)
    start = int(position * (len(y) - n))
    return y[start : start + n]


def _write_flac(path: Path, y: np.ndarray, sr: int) -> None:
    with atomic_write(path) as fh:
        sf.write(fh, np.clip(y, -1.0, 1.0), sr, format="FLAC", subtype="PCM_16")


def _band_audio(band: BandSpec, sr: int, out: Path) -> np.ndarray:
    """A band track (float32), read from `out/bands` or rendered and stored there."""
    file = out / "bands" / f"{band_key(band, sr)}.flac"
    if not file.is_file():
        y = render_band(band, sr)
        _write_flac(file, y / max(float(np.abs(y).max()), 1e-9) * 0.5, sr)
    return _stored_band(file).astype(np.float32) / 32768.0  # as sf.read gives float32


@functools.cache
def _stored_band(file: Path) -> np.ndarray:
    """A stored band track's 16-bit samples, kept for the process: a run's few dozen tracks
    take about 200 MB, and the mixes of one band are spread over the whole run."""
    return sf.read(file, dtype="int16")[0]


def _balanced(
    vocal: np.ndarray, band: np.ndarray, job: MixJob, sr: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(master, vocal part, band part) whose parts' VAR is within 0.8 VAR_TOLERANCE of
    `job.var_db` where `job.var_passes` masters reach it (with 1, the drawn VAR goes in).
    The master lifts a quiet vocal (the limiter pulls the loud moments down), so the VAR out
    moves more slowly than the vocal's gain in: the gain is found by `solve_monotone`."""

    tried: dict[float, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}

    def var_out(gain: float) -> float:
        tried[gain] = mastered_stems(vocal * 10.0 ** (gain / 20.0), band, sr, job.master)
        return var_db(*tried[gain][1:])

    gain = solve_monotone(
        var_out, job.var_db, job.var_db, 0.8 * VAR_TOLERANCE, job.var_passes, (-40.0, 30.0)
    )
    return tried[gain]


def render_mix(job: MixJob, out: Path, dry: bool = False, stems: bool = False) -> dict:
    """Make one mix (see the module docstring) and write its files under `out/mixes`; returns
    its record (what `<key>.json` holds). Raises AudioError, BandRenderError."""
    sr = job.sample_rate
    src = job.source
    take = load_audio(src.path, sr)
    start = round(src.offset_s * sr)
    stop = len(take) if src.seconds is None else start + round(src.seconds * sr)
    take = take[start:stop]
    if len(take) < sr // 2 or rms(take) == 0.0:
        raise AudioError(f"{src.path}: the crop holds under 0.5 s of sound")
    vocal = produce_vocal(take, sr, job.chain)
    band = _fit_length(_band_audio(job.band, sr, out), len(vocal), job.band_position)
    band = band_bus(band, sr, job.master)
    band = band * (rms(vocal) / max(rms(band), 1e-12))  # 0 dB, then the vocal's gain moves
    mix, v, b = _balanced(vocal, band, job, sr)
    base = out / "mixes" / job.key
    _write_flac(base.with_suffix(".flac"), mix, sr)
    if dry:
        _write_flac(base.with_suffix(".dry.flac"), take, sr)
    if stems:
        _write_flac(base.with_suffix(".vocal.flac"), v, sr)
        _write_flac(base.with_suffix(".band.flac"), b, sr)
    record = {
        "key": job.key,
        "var_db": job.var_db,
        "measured_var_db": round(var_db(v, b), 3),
        "lufs": round(loudness(mix, sr), 2),
        "seconds": round(len(mix) / sr, 3),
        "dry": dry,
        "stems": stems,
    }
    atomic_write_text(base.with_suffix(".json"), json.dumps(record))
    return record


def _done(job: MixJob, out: Path, dry: bool, stems: bool) -> dict | None:
    """The record of a finished job with the files asked for, else None."""
    file = out / "mixes" / f"{job.key}.json"
    if not file.is_file():
        return None
    record = json.loads(file.read_text())
    if (dry and not record.get("dry")) or (stems and not record.get("stems")):
        return None
    return record


def _row(job: MixJob, record: dict, out: Path, split: str) -> ManifestRow:
    """The mix's manifest row, its files named relative to `out` (the manifest's folder, as
    `read_manifest` resolves them); `_absolute` makes them usable from anywhere."""
    src = job.source
    base = Path("mixes") / job.key
    extra = {
        "offset_s": f"{src.offset_s:g}",
        "crop_s": f"{record['seconds']:g}",
        "var_db": f"{job.var_db:g}",
        "measured_var_db": f"{record['measured_var_db']:g}",
        "lufs": f"{record['lufs']:g}",
        "groove": job.band.groove,
        "soundfont": job.band.soundfont,
        "tempo": str(job.band.tempo),
        "split": split,
        "take": src.name,
    }
    if record.get("dry"):
        extra["dry_path"] = str(base.with_suffix(".dry.flac"))
    return ManifestRow(
        singer=src.singer,
        path=str(base.with_suffix(".flac")),
        title=f"{src.name} @ {job.var_db:+g} dB",
        domain="mixed",
        external_id=f"{src.name}@{job.var_db:+g}",
        song=src.song,
        source=src.path,
        extra=extra,
    )


def _absolute(row: ManifestRow, out: Path) -> ManifestRow:
    """`row` with its mix and dry take named by absolute paths under `out`."""
    root = out.resolve()
    extra = dict(row.extra)
    if "dry_path" in extra:
        extra["dry_path"] = str(root / extra["dry_path"])
    return replace(row, path=str(root / str(row.path)), extra=extra)


def _render_bands(jobs: Sequence[MixJob], out: Path, workers: int, progress: bool) -> dict:
    """Render the distinct band tracks of `jobs` that are not stored yet; returns failures
    (band key -> error)."""
    from tqdm import tqdm

    todo: dict[str, BandSpec] = {}
    for job in jobs:
        key = band_key(job.band, job.sample_rate)
        if not (out / "bands" / f"{key}.flac").is_file():
            todo[key] = job.band
    failures: dict[str, str] = {}
    sr = jobs[0].sample_rate if jobs else SAMPLE_RATE
    for key, fut in _parallel(
        _band_audio,
        [(b, sr, out) for b in todo.values()],
        workers,
        list(todo),
        tqdm(total=len(todo), desc="bands", unit="band", disable=not progress),
    ):
        try:
            fut.result()
        except BandRenderError as err:
            log.warning("band %s: %s", key, err)
            failures[key] = str(err)
    return failures


def _parallel(
    fn: Callable, args: Sequence[tuple], workers: int, labels: Sequence, bar: Any
) -> Iterator[tuple[Any, cf.Future]]:
    """Yield (label, finished future) of fn(*a) for each a, in `workers` processes (<= 1: in
    this process), updating the progress bar."""
    if workers <= 1:
        for label, a in zip(labels, args, strict=True):
            fut: cf.Future = cf.Future()
            try:
                fut.set_result(fn(*a))
            except Exception as err:  # handed to the caller through the future, as a pool does
                fut.set_exception(err)
            bar.update(1)
            yield label, fut
        bar.close()
        return
    with cf.ProcessPoolExecutor(workers) as pool:
        futs = {pool.submit(fn, *a): label for label, a in zip(labels, args, strict=True)}
        for fut in cf.as_completed(futs):
            bar.update(1)
            yield futs[fut], fut
    bar.close()


def make_studio_mixes(
    jobs: Sequence[MixJob],
    out_dir: str | Path,
    *,
    split: str = "train",
    dry: bool = False,
    stems: bool = False,
    workers: int = 2,
    progress: bool = True,
    partial_every: int = 100,
    manifest_name: str = "manifest.csv",
) -> StudioResult:
    """Render `jobs` (from `plan_jobs`) under `out_dir`, resuming a run killed part way, and
    write `out_dir/manifest.csv` and `out_dir/manifest.report.json` (see the module docstring).
    Every `partial_every` mixes made (0: never), `manifest.partial.csv` lists those finished
    so far, in job order (removed when the run ends). `manifest_name`: another name for the
    manifest, for a second set of jobs sharing the folder's band tracks (its report is
    `<name stem>.report.json`)."""
    from tqdm import tqdm

    out = Path(out_dir)
    (out / "mixes").mkdir(parents=True, exist_ok=True)
    records: dict[int, dict] = {}
    todo = []
    for i, job in enumerate(jobs):
        record = _done(job, out, dry, stems)
        if record is None:
            todo.append(i)
        else:
            records[i] = record
    reused = len(records)
    band_failures = _render_bands([jobs[i] for i in todo], out, workers, progress)
    failures: dict[str, str] = {}
    runnable = []
    for i in todo:
        bad = band_failures.get(band_key(jobs[i].band, jobs[i].sample_rate))
        if bad:
            failures[jobs[i].source.name] = f"band: {bad}"
        else:
            runnable.append(i)
    # In a seeded random order: the manifest written along the way (`partial_every`) is then
    # a fair sample of the whole run, usable while the rest is made.
    random.Random(0).shuffle(runnable)
    bar = tqdm(total=len(runnable), desc="mixes", unit="mix", disable=not progress)
    args = [(jobs[i], out, dry, stems) for i in runnable]
    for n, (i, fut) in enumerate(_parallel(render_mix, args, workers, runnable, bar), 1):
        try:
            records[i] = fut.result()
        except (AudioError, BandRenderError) as err:
            log.warning("skipped %s: %s", jobs[i].source.name, err)
            failures[jobs[i].source.name] = str(err)
        if partial_every and n % partial_every == 0 and n < len(runnable):
            rows = [_row(jobs[k], records[k], out, split) for k in sorted(records)]
            write_manifest(out / f"{Path(manifest_name).stem}.partial.csv", rows)
    rows = [_row(jobs[i], records[i], out, split) for i in sorted(records)]
    manifest = write_manifest(out / manifest_name, rows)
    (out / f"{Path(manifest_name).stem}.partial.csv").unlink(missing_ok=True)
    rows = [_absolute(r, out) for r in rows]
    report = {
        "generator_version": GENERATOR_VERSION,
        "split": split,
        "jobs": len(jobs),
        "mixes": len(rows),
        "ran": len(records) - reused,
        "reused": reused,
        "failures": failures,
    }
    atomic_write_text(out / f"{Path(manifest_name).stem}.report.json", json.dumps(report, indent=1))
    return StudioResult(rows, manifest, failures, len(records) - reused, reused)
