"""How often the refusal rule (`model.refusal`) refuses what it should and what it should not.

    python -m model.evaluation.refusal_rates [--limit N] [--detector PT]

Two sets, each recording chosen as `mixed` (a finished song) and as `mono` (a vocal take)
through the service's selection (`select_many` with the voice detector):

- steady signals that must be refused either way: silence, DC, sines, square waves, sawtooth,
  a chord of tones, sine and square sweeps, white noise, written as 16-bit WAV at 16, 22.05
  and 44.1 kHz and decoded as uploads are (`steady_corpus`);
- music that a finished song must never be refused for: MIR-1K's karaoke mixes at 0 dB, its
  accompaniments alone and crops of the instrumental tracks, from ../shared/data
  (`music_corpus`); their singing voice is what `mono` may refuse.

Prints one Markdown row per set and domain: recordings, refused, and the names refused.
"""

from __future__ import annotations

import argparse
import csv
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import soundfile as sf

from model.audio import load_audio
from model.errors import AudioError
from model.features import FeatureConfig
from model.mixing import nominal_mix
from model.segment_selection import select_many
from model.shared import shared_dir
from model.voice import VoiceDetector

#: Sample rates the steady signals are written at before decoding.
RATES = (16000, 22050, 44100)
STEADY_KINDS = ("silence", "dc", "sine", "square", "sawtooth", "chord", "sweep", "sqsweep", "white")


def steady_signal(kind: str, sr: int, seconds: float = 6.0, f: float = 220.0) -> np.ndarray:
    """A steady test signal of `kind` (STEADY_KINDS) at `sr` Hz: float32 (samples,)."""
    n = int(seconds * sr)
    t = np.arange(n) / sr

    def sweep(top: float) -> np.ndarray:  # phase (cycles) of a sweep from 50 Hz to `top`
        return np.cumsum(np.geomspace(50.0, top, n)) / sr

    signals = {
        "silence": lambda: np.zeros(n),
        "dc": lambda: np.full(n, 0.5),
        "sine": lambda: 0.9 * np.sin(2 * np.pi * f * t),
        "square": lambda: 0.99 * np.sign(np.sin(2 * np.pi * f * t)),
        "sawtooth": lambda: 0.9 * (2 * ((t * f) % 1.0) - 1),
        "chord": lambda: 0.3 * sum(np.sin(2 * np.pi * f * r * t) for r in (1, 1.26, 1.5)),
        "sweep": lambda: 0.9 * np.sin(2 * np.pi * sweep(0.45 * sr)),
        "sqsweep": lambda: 0.9 * np.sign(np.sin(2 * np.pi * sweep(4000.0))),
        "white": lambda: 0.3 * np.random.default_rng(0).standard_normal(n),
    }
    return np.clip(signals[kind](), -1, 1).astype(np.float32)


def steady_corpus(sample_rate: int = 22050) -> Iterator[tuple[str, np.ndarray]]:
    """(name, waveform at `sample_rate`) of every steady kind at every rate of RATES, and of
    sines and squares at several pitches, each written as 16-bit WAV and decoded."""
    with tempfile.TemporaryDirectory() as tmp:
        for sr in RATES:
            for kind in STEADY_KINDS:
                pitches = (110.0, 440.0, 1000.0, 3000.0) if kind in ("sine", "square") else (220.0,)
                for f in pitches:
                    path = Path(tmp) / f"{kind}-{f:g}-{sr}.wav"
                    sf.write(path, steady_signal(kind, sr, f=f), sr, subtype="PCM_16")
                    yield path.stem, load_audio(path, sample_rate)


def music_corpus(
    sample_rate: int = 22050, limit: int | None = None, shared: Path | None = None
) -> Iterator[tuple[str, str, np.ndarray]]:
    """(set, name, waveform at `sample_rate`): MIR-1K clips (every one, or `limit` spread
    over the set) as 0 dB mixes ("mix0dB") and accompaniments alone ("accompaniment"), and
    three 10-s crops of each instrumental track ("instrumental")."""
    data = (shared or shared_dir()) / "data"
    with (data / "mir1k" / "index.csv").open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    if limit is not None:
        rows = rows[:: max(1, len(rows) // limit)][:limit]
    for r in rows:
        vocals = load_audio(data / "mir1k" / "vocals" / f"{r['clip']}.opus", sample_rate)
        backing = load_audio(data / "mir1k" / "accompaniment" / f"{r['clip']}.opus", sample_rate)
        yield "mix0dB", r["clip"], nominal_mix(vocals, backing)
        yield "accompaniment", r["clip"], backing
    for path in sorted((data / "instrumental").glob("*.opus")):
        y = load_audio(path, sample_rate)
        for k in range(3):
            start = len(y) * (k + 1) // 4
            yield "instrumental", f"{path.stem}@{k}", y[start : start + 10 * sample_rate]


def refused(
    ys: list[np.ndarray], domain: str, detector: VoiceDetector, cfg: FeatureConfig
) -> list[str | None]:
    """For each waveform, the class of the error that refuses it as `domain`, or None."""
    out: list[str | None] = []
    for a in range(0, len(ys), 32):
        batch = ys[a : a + 32]
        for got in select_many(batch, cfg, detector=detector, domains=[domain] * len(batch)):
            out.append(type(got).__name__ if isinstance(got, AudioError) else None)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--limit", type=int, default=None, help="MIR-1K clips (default: all)")
    p.add_argument("--detector", type=Path, default=None, help="voice detector (default: shipped)")
    args = p.parse_args(argv)
    detector = VoiceDetector.load(args.detector)
    cfg = FeatureConfig()
    sets: dict[str, list[tuple[str, np.ndarray]]] = {"steady": list(steady_corpus())}
    for group, name, y in music_corpus(cfg.sample_rate, args.limit):
        sets.setdefault(group, []).append((name, y))
    print("| set | domain | recordings | refused | refused recordings |")
    print("|---|---|---:|---:|---|")
    for group, items in sets.items():
        for domain in ("mixed", "mono"):
            why = refused([y for _, y in items], domain, detector, cfg)
            names = [n for (n, _), w in zip(items, why, strict=True) if w is not None]
            shown = ", ".join(names[:12]) + (" ..." if len(names) > 12 else "")
            print(f"| {group} | {domain} | {len(items)} | {len(names)} | {shown} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
