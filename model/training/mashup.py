"""Mashup generator: vocal recordings mixed over background tracks (paper, section 3.1.1).

Pipeline, per the paper:
1. Backgrounds: tempo and beats per track (librosa); a candidate window of one segment length
   starts at every beat; its key is found by Krumhansl-Schmuckler on chroma (model.training.keys).
   Windows that are mostly quiet (fewer than `bg_min_active` of frames active by
   `model.energy_vad.frame_voicing`) are not used.
2. Vocals: only the segments that pass the voice-activity selection of
   `model.segment_selection.extract_segments` are used; tempo and beats per track, key per
   segment.
   A manifest row may carry a `tempo` column (bpm) that overrides the estimate: tempo from a
   cappella audio is unreliable (the authors took it from a music service).
3. Mashability: same tempo within `tempo_tolerance` (relative) and same key. Among the
   matching windows a background track is drawn uniformly, then one of its windows.
4. Mixing: the vocal beat nearest the segment start is put on the background window's first
   beat; the background is scaled so that the vocal-to-background RMS ratio is a value drawn
   uniformly from `snr_db` (default 0 dB: equal RMS); the sum is scaled down only if it would
   clip (which keeps the ratio).

Switchable extensions (all off by default; a segment uses the first tier that has a match):
- `relative_keys`: the relative major/minor (C major <-> A minor) also matches.
- `pitch_shifts`: semitone shifts of the background (e.g. (-1, 1)); a shifted window matches
  when its transposed key does; smaller shifts are preferred.
- `tempo_octave`: half or double tempo also matches (beat trackers often err by an octave;
  the beats still coincide, every other one).

Deterministic given `seed`: each vocal track draws from its own generator, seeded from the
seed and the track's identity, so the output does not depend on the number of workers or on
the order in which they finish. Vocals whose voiced segments find no mashable background are
listed in the report (`report.json`), never dropped silently.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import re
import time
import zlib
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import TypeVar, cast

import numpy as np
import soundfile as sf

from model.audio import SUPPORTED_FORMATS, load_audio
from model.energy_vad import frame_voicing, voiced_segment_starts
from model.errors import AudioError
from model.features import FeatureConfig
from model.files import atomic_write, atomic_write_text
from model.manifest import ManifestRow, read_manifest, write_manifest
from model.mixing import mix_segment
from model.training.keys import Key, chromagram, segment_keys

T = TypeVar("T")
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class MashupConfig:
    """Mashup settings. Tempi in bpm, ratios in dB, lengths in STFT frames of `features`."""

    features: FeatureConfig = field(default_factory=FeatureConfig)
    tempo_tolerance: float = 0.04  # relative tempo difference allowed: |vocal / background - 1|
    tempo_octave: bool = False  # half and double tempo also match
    relative_keys: bool = False  # relative major/minor keys also match
    pitch_shifts: tuple[int, ...] = ()
    snr_db: tuple[float, float] = (0.0, 0.0)  # vocal-to-background RMS ratio range
    mixes_per_segment: int = 1  # different backgrounds under each vocal segment
    vocal_hop_frames: int | None = None  # between vocal segment starts; None: features'
    chroma: str = "cqt"  # chroma for key finding: "cqt" or "stft"
    bg_min_active: float = 0.9
    peak: float = 0.99  # mixes are scaled down to this peak only if they exceed it
    audio_format: str = "flac"

    def __post_init__(self) -> None:
        lo, hi = self.snr_db
        if lo > hi:
            raise ValueError(f"snr_db range must be (low, high), got {self.snr_db}")
        if self.tempo_tolerance < 0 or self.mixes_per_segment < 1:
            raise ValueError("tempo_tolerance must be >= 0 and mixes_per_segment >= 1")
        if self.chroma not in ("cqt", "stft"):
            raise ValueError(f"chroma must be 'cqt' or 'stft', got {self.chroma!r}")
        if self.audio_format not in ("flac", "wav"):  # 16-bit PCM containers
            raise ValueError(f"audio_format must be 'flac' or 'wav', got {self.audio_format!r}")

    @property
    def clip_samples(self) -> int:
        """Length of a mix: one model segment (exactly segment_frames frames of log-mel)."""
        return self.features.min_samples

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["features"] = self.features.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: dict) -> MashupConfig:
        d = dict(d)
        if isinstance(d.get("features"), dict):
            d["features"] = FeatureConfig.from_dict(d["features"])
        for k in ("pitch_shifts", "snr_db"):
            if k in d:
                d[k] = tuple(d[k])
        return cls(**d)


# ---------------------------------------------------------------------------------------------
# Signal-level building blocks


def beats(y: np.ndarray, sr: int, hop_length: int) -> tuple[float, np.ndarray]:
    """Track-level tempo (bpm; 0 if none) and beat positions (int64 samples) of audio (samples,).

    Beats by librosa's dynamic-programming tracker on the mean-aggregated onset strength (the
    median that `beat_track(y=...)` uses misses soft sung onsets). The tempo is refined from
    the beats themselves (least-squares slope of beat time against beat number): librosa's
    tempogram bins are about 5 % apart near 120 bpm, too coarse for a tempo tolerance.
    """
    import librosa

    onset = librosa.onset.onset_strength(y=y, sr=sr, hop_length=hop_length)
    tempo, b = librosa.beat.beat_track(
        onset_envelope=onset, sr=sr, hop_length=hop_length, units="samples"
    )
    b = _refine_beats(y, sr, np.asarray(b, dtype=np.int64), hop_length)
    tempo = float(np.atleast_1d(tempo)[0])
    if len(b) >= 4:
        slope = np.polyfit(np.arange(len(b)), b / sr, 1)[0]  # seconds per beat
        if slope > 0:
            tempo = 60.0 / float(slope)
    return tempo, b


_FINE_HOP = 128  # samples: onset resolution used to place beats (about 6 ms at 22050 Hz)


def _refine_beats(y: np.ndarray, sr: int, beat: np.ndarray, hop_length: int) -> np.ndarray:
    """Move each beat to the onset-strength peak within one hop of it, at `_FINE_HOP` resolution.

    The tracker places beats on its own frame grid (hop_length, 23 ms): two tracks' beats could
    be up to two frames apart after alignment. Sample positions of real onset peaks are not.
    """
    if len(beat) == 0:
        return beat
    import librosa

    fine = librosa.onset.onset_strength(y=y, sr=sr, hop_length=_FINE_HOP)
    radius = hop_length // _FINE_HOP
    out = np.empty_like(beat)
    for i, b in enumerate(beat):
        c = (int(b) + _FINE_HOP // 2) // _FINE_HOP
        lo, hi = max(0, c - radius), min(len(fine), c + radius + 1)
        out[i] = (lo + int(np.argmax(fine[lo:hi]))) * _FINE_HOP if hi > lo else b
    return out


def nearest_beat_offset(start: int, beat_samples: np.ndarray) -> int:
    """Signed distance (samples) from `start` to the nearest beat; 0 when there are no beats."""
    if len(beat_samples) == 0:
        return 0
    return int(beat_samples[np.argmin(np.abs(beat_samples - start))] - start)


# ---------------------------------------------------------------------------------------------
# Background analysis


@dataclass
class BackgroundInfo:
    """A background track's analysis: beat-started candidate windows with their keys."""

    path: str
    tempo: float
    n_samples: int
    window_starts: np.ndarray  # int64 samples (beats) where a usable window starts
    window_keys: np.ndarray  # int64 Key.index of each window
    audio_cache: str  # float32 .npy of the track at the features' sample rate (memory-mapped)

    def to_json(self) -> dict:
        return {
            "path": self.path,
            "tempo": self.tempo,
            "n_samples": self.n_samples,
            "window_starts": self.window_starts.tolist(),
            "window_keys": self.window_keys.tolist(),
            "audio_cache": self.audio_cache,
        }

    @classmethod
    def from_json(cls, d: dict) -> BackgroundInfo:
        return cls(
            path=d["path"],
            tempo=d["tempo"],
            n_samples=d["n_samples"],
            window_starts=np.asarray(d["window_starts"], dtype=np.int64),
            window_keys=np.asarray(d["window_keys"], dtype=np.int64),
            audio_cache=d["audio_cache"],
        )


def _cache_key(path: Path, cfg: MashupConfig) -> str:
    st = path.stat()
    f = cfg.features
    ident = [
        str(path.resolve()),
        st.st_size,
        st.st_mtime_ns,
        f.sample_rate,
        f.hop_length,
        f.n_fft,
        f.segment_frames,
        f.vad_top_db,
        f.vad_floor_db,
        cfg.chroma,
        cfg.bg_min_active,
        4,
    ]  # last: analysis version
    return hashlib.sha1(json.dumps(ident).encode()).hexdigest()[:12]


def analyze_background(
    path: str | Path, cfg: MashupConfig, cache_dir: str | Path
) -> BackgroundInfo:
    """Decode, beat-track and key-analyse one background track; cached in `cache_dir`."""
    path = Path(path)
    cache_dir = Path(cache_dir)
    stem = f"{_safe(path.stem)}-{_cache_key(path, cfg)}"
    audio_file, info_file = cache_dir / f"{stem}.npy", cache_dir / f"{stem}.json"
    if audio_file.is_file() and info_file.is_file():
        return BackgroundInfo.from_json(
            {**json.loads(info_file.read_text()), "path": str(path), "audio_cache": str(audio_file)}
        )
    f = cfg.features
    y = load_audio(path, f.sample_rate)
    tempo, beat = beats(y, f.sample_rate, f.hop_length)
    length = cfg.clip_samples
    starts = beat[beat + length <= len(y)]
    frames = starts // f.hop_length
    active = frame_voicing(y, f).astype(np.float64)
    cum = np.concatenate([[0.0], np.cumsum(active)])
    share = (
        cum[np.minimum(frames + f.segment_frames, len(active))] - cum[frames]
    ) / f.segment_frames
    keys = segment_keys(
        chromagram(y, f.sample_rate, f.hop_length, cfg.chroma), frames, f.segment_frames
    )
    usable_keys = {
        i: k for i, k in enumerate(keys) if k is not None and share[i] >= cfg.bg_min_active
    }
    usable = list(usable_keys)
    info = BackgroundInfo(
        path=str(path),
        tempo=tempo,
        n_samples=len(y),
        window_starts=starts[usable].astype(np.int64),
        window_keys=np.array([k.index for k in usable_keys.values()], dtype=np.int64),
        audio_cache=str(audio_file),
    )
    cache_dir.mkdir(parents=True, exist_ok=True)
    _atomic_save_npy(audio_file, y)
    atomic_write_text(info_file, json.dumps(info.to_json()))
    return info


# ---------------------------------------------------------------------------------------------
# Matching


@dataclass(frozen=True)
class Match:
    """A background window chosen for a vocal segment."""

    background: int  # index into the background list
    start: int  # window start (a beat), samples
    key: Key  # the window's key before any shift
    shift: int  # semitones the background is shifted by
    tier: str  # "key", "relative", "shift"


class BackgroundIndex:
    """All usable windows of all backgrounds, searchable by tempo and key."""

    def __init__(self, infos: Sequence[BackgroundInfo], cfg: MashupConfig):
        self.infos = list(infos)
        self.cfg = cfg
        n = [len(i.window_starts) for i in self.infos]
        self.win_bg = np.repeat(np.arange(len(self.infos)), n).astype(np.int64)
        self.win_start = np.concatenate([i.window_starts for i in self.infos] + [np.zeros(0, int)])
        self.win_key = np.concatenate([i.window_keys for i in self.infos] + [np.zeros(0, int)])
        self.win_len = np.array([i.n_samples for i in self.infos], dtype=np.int64)[self.win_bg]
        self.tempi = np.array([i.tempo for i in self.infos], dtype=np.float64)

    def tempo_ok(self, tempo: float) -> np.ndarray:
        """bool (backgrounds,): tempo within tolerance (and octave-related with tempo_octave)."""
        if tempo <= 0:
            return np.zeros(len(self.infos), dtype=bool)
        tol = self.cfg.tempo_tolerance
        ratios = [1.0, 0.5, 2.0] if self.cfg.tempo_octave else [1.0]
        ok = np.zeros(len(self.infos), dtype=bool)
        with np.errstate(divide="ignore", invalid="ignore"):
            for r in ratios:
                ok |= np.abs(tempo / (self.tempi * r) - 1.0) <= tol
        return ok

    def tiers(self) -> list[tuple[str, int, bool]]:
        """(name, shift, relative) in order of preference."""
        out = [("key", 0, False)]
        if self.cfg.relative_keys:
            out.append(("relative", 0, True))
        for s in sorted({s for s in self.cfg.pitch_shifts if s}, key=lambda s: (abs(s), s)):
            out.append(("shift", s, False))
            if self.cfg.relative_keys:
                out.append(("shift", s, True))
        return out

    def candidates(
        self, key: Key, tempo_mask: np.ndarray, offset: int
    ) -> Iterator[tuple[str, int, np.ndarray]]:
        """Per tier, in preference order: (tier name, shift, window indices that match).

        offset: the vocal's beat offset; the background is read from window start - offset, so
        windows whose read would leave the track are left out.
        """
        fits = (
            (self.win_start - offset >= 0)
            & (self.win_start - offset + self.cfg.clip_samples <= self.win_len)
            & tempo_mask[self.win_bg]
        )
        for name, shift, relative in self.tiers():
            target = key.relative() if relative else key
            needed = target.transpose(-shift).index  # window key that lands on target when shifted
            idx = np.flatnonzero(fits & (self.win_key == needed))
            if len(idx):
                yield name, shift, idx

    def choose(
        self, key: Key, tempo: float, offset: int, k: int, rng: np.random.Generator
    ) -> tuple[list[Match], str]:
        """Up to k matches (distinct backgrounds where possible) and why none, if none."""
        mask = self.tempo_ok(tempo)
        if not mask.any():
            return [], "no background within the tempo tolerance"
        picks: list[Match] = []
        used: set[int] = set()
        for name, shift, idx in self.candidates(key, mask, offset):
            while len(picks) < k and len(idx):
                tracks = np.unique(self.win_bg[idx])
                fresh = tracks[~np.isin(tracks, list(used))] if used else tracks
                track = rng.choice(fresh if len(fresh) else tracks)
                pool = idx[self.win_bg[idx] == track]
                w = int(rng.choice(pool))
                picks.append(
                    Match(
                        int(track),
                        int(self.win_start[w]),
                        Key.from_index(int(self.win_key[w])),
                        shift,
                        name,
                    )
                )
                used.add(int(track))
                idx = idx[idx != w]
            if len(picks) >= k:
                break
        return picks, "" if picks else "no background window in a matching key"


# ---------------------------------------------------------------------------------------------
# Per-vocal work (runs in worker processes)


@dataclass
class VocalJob:
    row: ManifestRow
    audio_path: str
    stem: str  # unique output stem of this vocal
    seed_key: int  # stable per-vocal seed component


@dataclass
class UnmatchedSegment:
    source: str
    singer: str
    start_s: float
    key: str
    tempo: float
    reason: str


@dataclass
class VocalOutcome:
    job_index: int
    rows: list[ManifestRow] = field(default_factory=list)
    n_voiced: int = 0
    unmatched: list[UnmatchedSegment] = field(default_factory=list)
    unvoiced: str = ""  # why no segment passed the voice-activity selection
    error: str = ""
    tempo: float = 0.0


_STATE: dict = {}


def _compile_numba_kernels(cfg: MashupConfig) -> None:
    """Run the analysis once on 3 s of noise, in this process, before workers start.

    librosa's beat tracker and chroma are numba functions cached on disk on first use. Worker
    processes compiling them at the same time write that cache concurrently, and a process
    loading a half-written entry can crash (seen as a segfault in a fresh environment).
    Compiled here first, the workers only read the cache.
    """
    f = cfg.features
    y = np.random.default_rng(0).standard_normal(3 * f.sample_rate).astype(np.float32) * 0.1
    beats(y, f.sample_rate, f.hop_length)
    chromagram(y, f.sample_rate, f.hop_length, cfg.chroma)


def _worker_init() -> None:
    import torch

    torch.set_num_threads(1)  # one process per core; no oversubscription


def _index(index_file: str, cfg_dict: dict) -> BackgroundIndex:
    """The background index, loaded once per process."""
    if _STATE.get("index_file") != index_file:
        cfg = MashupConfig.from_dict(cfg_dict)
        infos = [BackgroundInfo.from_json(b) for b in json.loads(Path(index_file).read_text())]
        _STATE.update(index_file=index_file, index=BackgroundIndex(infos, cfg), audio={})
    return _STATE["index"]


def _background_audio(info: BackgroundInfo) -> np.ndarray:
    audio = _STATE.setdefault("audio", {})
    if info.audio_cache not in audio:
        audio[info.audio_cache] = np.load(info.audio_cache, mmap_mode="r")
    return audio[info.audio_cache]


def _background_excerpt(
    info: BackgroundInfo, start: int, length: int, shift: int, sr: int
) -> np.ndarray:
    y = _background_audio(info)
    if shift == 0:
        return np.array(y[start : start + length], dtype=np.float32)
    import librosa

    margin = sr // 4  # the phase vocoder smears the edges; cut them off afterwards
    lo, hi = max(0, start - margin), min(len(y), start + length + margin)
    shifted = librosa.effects.pitch_shift(
        np.array(y[lo:hi], dtype=np.float32), sr=sr, n_steps=shift
    )
    return shifted[start - lo : start - lo + length].astype(np.float32)


def _mash_vocal(
    job_index: int, job: VocalJob, index_file: str, cfg_dict: dict, seed: int, mix_dir: str
) -> VocalOutcome:
    cfg = MashupConfig.from_dict(cfg_dict)
    index = _index(index_file, cfg_dict)
    f = cfg.features
    out = VocalOutcome(job_index)
    try:
        y = load_audio(job.audio_path, f.sample_rate)
    except AudioError as err:
        out.error = str(err)
        return out
    starts = voiced_segment_starts(y, f, cfg.vocal_hop_frames)
    out.n_voiced = len(starts)
    if len(starts) == 0:
        out.unvoiced = (
            "shorter than one segment"
            if len(y) < f.min_samples
            else "no segment passes the voice-activity selection"
        )
        return out
    tempo, beat = beats(y, f.sample_rate, f.hop_length)
    override = job.row.extra.get("tempo")
    if override:
        tempo = float(override)
    out.tempo = tempo
    keys = segment_keys(
        chromagram(y, f.sample_rate, f.hop_length, cfg.chroma), starts, f.segment_frames
    )
    rng = np.random.default_rng([seed, job.seed_key])
    length = cfg.clip_samples
    row = job.row
    for s, key in zip(starts, keys):
        v0 = int(s) * f.hop_length
        matches: list[Match]
        if key is None:
            matches, why = [], "no key (flat chroma)"
        else:
            offset = nearest_beat_offset(v0, beat)
            matches, why = index.choose(key, tempo, offset, cfg.mixes_per_segment, rng)
        if not matches:
            out.unmatched.append(
                UnmatchedSegment(
                    row.path or job.audio_path,
                    row.singer,
                    v0 / f.sample_rate,
                    key.name if key else "",
                    tempo,
                    why,
                )
            )
            continue
        assert key is not None  # no key, no matches
        vocal = y[v0 : v0 + length]
        for m_i, m in enumerate(matches):
            info = index.infos[m.background]
            bg_start = m.start - offset
            bg = _background_excerpt(info, bg_start, length, m.shift, f.sample_rate)
            snr = (
                float(rng.uniform(*cfg.snr_db)) if cfg.snr_db[1] > cfg.snr_db[0] else cfg.snr_db[0]
            )
            mix, vg, bgg = mix_segment(vocal, bg, snr, cfg.peak)
            name = f"{job.stem}_f{int(s):06d}_m{m_i}"
            path = Path(mix_dir) / _safe(row.singer) / f"{name}.{cfg.audio_format}"
            path.parent.mkdir(parents=True, exist_ok=True)
            sf.write(str(path), mix, f.sample_rate, subtype="PCM_16")
            out.rows.append(
                ManifestRow(
                    singer=row.singer,
                    path=str(path),
                    title=name,
                    domain="mixed",
                    external_id=name,
                    song=row.song,
                    role=row.role,
                    source=row.path or job.audio_path,
                    extra={
                        "dataset": "mashup",
                        "kind": "mashup",
                        "background": info.path,
                        # Positions in samples at the mix's sample rate, exact.
                        "vocal_start": str(v0),
                        "background_start": str(bg_start),
                        "beat_offset": str(offset),
                        "snr_db": f"{snr:.2f}",
                        "vocal_key": key.name,
                        "background_key": m.key.transpose(m.shift).name,
                        "pitch_shift": str(m.shift),
                        "match": m.tier,
                        "vocal_tempo": f"{tempo:.1f}",
                        "background_tempo": f"{info.tempo:.1f}",
                        "vocal_gain": f"{vg:.5f}",
                        "background_gain": f"{bgg:.5f}",
                    },
                )
            )
    return out


# ---------------------------------------------------------------------------------------------
# Driver


@dataclass
class MashupResult:
    """Rows of the mixes plus the bookkeeping written to `report.json`."""

    rows: list[ManifestRow]
    manifest: Path
    report: Path
    n_vocals: int
    n_voiced_segments: int  # segments that passed voice activity
    n_mashed_segments: int  # of those, segments with at least one mix
    unmatched: list[UnmatchedSegment]  # voiced segments with no mashable background
    unmatched_vocals: list[str]  # vocals with voiced segments but not a single mix
    unvoiced: list[tuple[str, str]]  # (vocal, why): nothing passed voice activity
    failed: list[tuple[str, str]]  # (file, error): undecodable vocals or backgrounds
    backgrounds: list[dict]  # path, tempo, usable windows
    seconds: float


def read_backgrounds(source: str | Path | Sequence[str | Path]) -> list[Path]:
    """Background files from a folder (recursive, known audio extensions), a manifest
    (accompaniment_path, else path, per row) or a list of files; sorted, de-duplicated."""
    if isinstance(source, (str, Path)):
        p = Path(source)
        if p.is_dir():
            exts = {"." + e for e in SUPPORTED_FORMATS}
            files = [f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in exts]
        else:
            # read_manifest: a row has `path` or both stems
            files = [Path(cast(str, r.accompaniment_path or r.path)) for r in read_manifest(p)]
    else:
        files = [Path(s) for s in source]
    return sorted({f.resolve() for f in files})


def _jobs(vocals: Sequence[ManifestRow]) -> list[VocalJob]:
    jobs, seen = [], set()
    for r in vocals:
        audio = r.path or r.vocal_path
        if not audio:
            continue
        ident = f"{r.singer}/{Path(audio).parent.name}/{Path(audio).name}"
        stem = _safe(Path(audio).stem)
        if stem.lower() in seen:  # same file name twice for one singer: disambiguate
            stem = f"{stem}-{zlib.crc32(ident.encode()):08x}"
        seen.add(stem.lower())
        jobs.append(
            VocalJob(row=r, audio_path=audio, stem=stem, seed_key=zlib.crc32(ident.encode()))
        )
    return jobs


def make_mashups(
    vocals: Sequence[ManifestRow] | str | Path,
    backgrounds: str | Path | Sequence[str | Path],
    out_dir: str | Path,
    config: MashupConfig | None = None,
    seed: int = 0,
    workers: int = 2,
    progress: bool = True,
    cache_dir: str | Path | None = None,
) -> MashupResult:
    """Mash vocal recordings up over background tracks.

    vocals: monophonic manifest rows (or a manifest path); `path` (else `vocal_path`) is read.
    backgrounds: see `read_backgrounds`. Writes `out_dir/mixes/<singer>/*.flac`,
    `out_dir/manifest.csv` (one `mixed` row per mix, `source` = its vocal recording) and
    `out_dir/report.json`. Background analyses are cached in `cache_dir` (default
    `out_dir/cache`; about 4 bytes per background sample). workers <= 1 runs in this process;
    the output is the same either way. Mixes left in `out_dir/mixes` by an earlier run with
    other settings are not removed, but only this run's are in the manifest.
    """
    from tqdm import tqdm

    t_start = time.perf_counter()
    cfg = config or MashupConfig()
    out = Path(out_dir).resolve()
    cache = Path(cache_dir).resolve() if cache_dir else out / "cache"
    rows_in = (
        read_manifest(vocals, default_domain="mono")
        if isinstance(vocals, (str, Path))
        else list(vocals)
    )
    jobs = _jobs(rows_in)
    bg_files = read_backgrounds(backgrounds)
    cfg_dict = cfg.to_dict()
    failed: list[tuple[str, str]] = []
    infos: list[BackgroundInfo] = []

    pool = None
    if workers > 1:
        _compile_numba_kernels(cfg)
        pool = ProcessPoolExecutor(
            max_workers=workers, mp_context=get_context("spawn"), initializer=_worker_init
        )
    try:
        # 1. Backgrounds
        results: dict[int, BackgroundInfo] = {}
        bar = tqdm(total=len(bg_files), desc="backgrounds", unit="track", disable=not progress)
        for i, res in _run(pool, analyze_background, [(str(p), cfg, str(cache)) for p in bg_files]):
            if isinstance(res, BaseException):
                if not isinstance(res, AudioError):
                    raise res
                failed.append((str(bg_files[i]), str(res)))
                log.warning("background skipped: %s", res)
            else:
                results[i] = res
            bar.update()
        bar.close()
        infos = [results[i] for i in sorted(results)]
        index_file = cache / f"index-{os.getpid()}-{time.time_ns()}.json"
        atomic_write_text(index_file, json.dumps([b.to_json() for b in infos]))

        # 2. Vocals
        outcomes: list[VocalOutcome] = []
        bar = tqdm(total=len(jobs), desc="vocals", unit="track", disable=not progress)
        args = [
            (i, j, str(index_file), cfg_dict, seed, str(out / "mixes")) for i, j in enumerate(jobs)
        ]
        for _, outcome in _run(pool, _mash_vocal, args):
            if isinstance(outcome, BaseException):
                raise outcome
            outcomes.append(outcome)
            bar.update()
        bar.close()
        index_file.unlink(missing_ok=True)
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)

    outcomes.sort(key=lambda o: o.job_index)
    rows = [r for o in outcomes for r in o.rows]
    unmatched = [u for o in outcomes for u in o.unmatched]
    unmatched_vocals = [
        jobs[o.job_index].audio_path for o in outcomes if o.n_voiced and not o.rows and not o.error
    ]
    unvoiced = [(jobs[o.job_index].audio_path, o.unvoiced) for o in outcomes if o.unvoiced]
    failed += [(jobs[o.job_index].audio_path, o.error) for o in outcomes if o.error]
    n_voiced = sum(o.n_voiced for o in outcomes)
    manifest = write_manifest(out / "manifest.csv", rows)
    result = MashupResult(
        rows=rows,
        manifest=manifest,
        report=out / "report.json",
        n_vocals=len(jobs),
        n_voiced_segments=n_voiced,
        n_mashed_segments=n_voiced - len(unmatched),
        unmatched=unmatched,
        unmatched_vocals=unmatched_vocals,
        unvoiced=unvoiced,
        failed=failed,
        backgrounds=[
            {"path": b.path, "tempo": round(b.tempo, 2), "windows": len(b.window_starts)}
            for b in infos
        ],
        seconds=time.perf_counter() - t_start,
    )
    _write_report(result, cfg, seed, workers)
    if unmatched_vocals:
        log.warning(
            "%d vocal recording(s) found no mashable background at all (see %s)",
            len(unmatched_vocals),
            result.report,
        )
    return result


def _run(
    pool: ProcessPoolExecutor | None, fn: Callable[..., T], arglist: list[tuple]
) -> Iterator[tuple[int, T | BaseException]]:
    """(index, result or exception) for fn(*args) over arglist, in completion order."""
    if pool is None:
        for i, args in enumerate(arglist):
            try:
                yield i, fn(*args)
            except Exception as err:
                yield i, err
        return
    futures = {pool.submit(fn, *args): i for i, args in enumerate(arglist)}
    for fut in as_completed(futures):
        exc = fut.exception()
        yield futures[fut], exc if exc is not None else fut.result()


def _write_report(r: MashupResult, cfg: MashupConfig, seed: int, workers: int) -> None:
    report = {
        "settings": {"seed": seed, "workers": workers, **cfg.to_dict()},
        "seconds": round(r.seconds, 1),
        "n_vocals": r.n_vocals,
        "n_voiced_segments": r.n_voiced_segments,
        "n_mashed_segments": r.n_mashed_segments,
        "n_mixes": len(r.rows),
        "matches_by_tier": _count(r.rows, "match"),
        "unmatched_vocals": r.unmatched_vocals,
        "unmatched_segments": [dataclasses.asdict(u) for u in r.unmatched],
        "unvoiced_vocals": [{"path": p, "reason": w} for p, w in r.unvoiced],
        "failed": [{"path": p, "error": e} for p, e in r.failed],
        "backgrounds": r.backgrounds,
    }
    atomic_write_text(r.report, json.dumps(report, indent=1))


def _count(rows: Sequence[ManifestRow], column: str) -> dict[str, int]:
    out: dict[str, int] = {}
    for row in rows:
        out[row.extra.get(column, "")] = out.get(row.extra.get(column, ""), 0) + 1
    return out


def _safe(name: str) -> str:
    """A file-system-safe version of a name (singer names and stems become paths)."""
    return re.sub(r"[^\w.-]+", "_", name).strip("._") or "_"


def _atomic_save_npy(path: Path, y: np.ndarray) -> None:
    with atomic_write(path) as fh:
        np.save(fh, np.ascontiguousarray(y, dtype=np.float32))
