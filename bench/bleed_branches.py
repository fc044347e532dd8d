"""Which branch should a vocal take with accompaniment bleeding in use? A check of the
`mostly_accompaniment` flag's advice (re-send a flagged `mono` upload as `mixed`).

    python bench/bleed_branches.py [--checkpoint CKPT] [--snrs 20,15,10,7.5,5,2.5,0]
                                   [--json out.json]

Two query sets from ../shared/data (SINGER_SHARED_DIR), each against two catalogues: clean
`mono` tracks (vocal takes), and `mixed` tracks (songs: the same material over an
accompaniment at 0 dB, embedded as `mixed`, what `/identify` mostly meets):
- MIR-1K: the default model's held-out and validation singers (7); the first half of each
  singer's songs (clip vectors averaged) is the singer's track (as a song: each clip over its
  own accompaniment), the clips of the other half are the queries, re-mixed with their own
  accompaniment at each ratio;
- a cappella: the held-out takes (`split_acappella`), each its own voice; its first half is
  the track (as a song: over a random instrumental track), its second half the query, over
  another random instrumental track (seed 0) at each ratio.

Each query is embedded as `mono` (its `domain_score` and flag are what the service reports
for a `mono` upload) and as `mixed`; `auto` is what `domain=auto` answers: `mixed` when the
`mono` upload is flagged `mostly_accompaniment`, else `mono`. Reported per set and
catalogue, flagged or not: top-1 singer of each branch and the queries only one branch got
right. About 5 min on the 2-core VM. Not part of the test suite.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from contextlib import suppress
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from model.audio import load_audio
from model.cli.options import HELD_OUT_SINGERS, VALIDATION_SINGERS
from model.embedding import Embedder
from model.errors import AudioError
from model.mixing import mix_over_middle
from model.shared import shared_dir
from model.training.datasets import acappella_rows, split_acappella
from model.training.mashup import read_backgrounds
from model.vectors import l2_normalize

DEFAULT_SNRS = (20.0, 15.0, 10.0, 7.5, 5.0, 2.5, 0.0)

# (singer, vocals, accompaniment or background): float32 (samples,) at the model's rate.
Query = tuple[str, np.ndarray, np.ndarray]
# catalogue domain ("mono": vocal takes, "mixed": songs) -> singer -> unit track vector
Catalogues = dict[str, dict[str, np.ndarray]]
SONG_SNR_DB = 0.0  # the catalogue's songs: voice and accompaniment at equal loudness


def mir1k_set(e: Embedder, data: Path) -> tuple[Catalogues, list[Query]]:
    """Catalogues and queries of the MIR-1K held-out/validation singers: first half of each
    singer's songs as the track, the rest as queries."""
    sr, root = e.features.sample_rate, data / "mir1k"
    songs: dict[str, dict[str, list[Path]]] = defaultdict(lambda: defaultdict(list))
    for f in sorted((root / "vocals").glob("*.opus")):
        singer, song, _ = f.stem.rsplit("_", 2)
        if singer in HELD_OUT_SINGERS + VALIDATION_SINGERS:
            songs[singer][song].append(f)
    catalogues: Catalogues = {"mono": {}, "mixed": {}}
    queries = []
    for singer, by_song in songs.items():
        names = sorted(by_song)
        tracks = set(names[: max(1, len(names) // 2)])
        vectors: dict[str, list[np.ndarray]] = {"mono": [], "mixed": []}
        for song in names:
            for f in by_song[song]:
                v, acc = load_audio(f, sr), load_audio(root / "accompaniment" / f.name, sr)
                if song not in tracks:
                    queries.append((singer, v, acc))
                    continue
                # A clip without singing is left out, as the indexer would skip it.
                with suppress(AudioError):
                    vectors["mono"].append(e.embed_audio(v, "mono").vector)
                with suppress(AudioError):
                    song_y = mix_over_middle(v, acc, SONG_SNR_DB)
                    vectors["mixed"].append(e.embed_audio(song_y, "mixed").vector)
        for domain, vs in vectors.items():
            catalogues[domain][singer] = l2_normalize(np.mean(vs, axis=0))
    return catalogues, queries


def acappella_set(e: Embedder, data: Path) -> tuple[Catalogues, list[Query]]:
    """Catalogue and queries of the held-out a cappella takes: first half of each take as its
    track, the second half over a random instrumental track as its query."""
    sr, rng = e.features.sample_rate, np.random.default_rng(0)
    song_rng = np.random.default_rng(1)  # apart, so the queries are those of earlier runs
    backgrounds = [load_audio(p, sr) for p in read_backgrounds(data / "instrumental")]
    catalogues: Catalogues = {"mono": {}, "mixed": {}}
    queries = []
    for row in split_acappella(acappella_rows(data / "acappella"))[1]:
        y = load_audio(row.path, sr)
        half = len(y) // 2
        query_background = backgrounds[int(rng.integers(len(backgrounds)))]
        song_background = backgrounds[int(song_rng.integers(len(backgrounds)))]
        song_y = mix_over_middle(y[:half], song_background, SONG_SNR_DB)
        try:
            mono, mixed = e.embed_audio(y[:half], "mono"), e.embed_audio(song_y, "mixed")
        except AudioError:
            continue
        catalogues["mono"][row.singer], catalogues["mixed"][row.singer] = mono.vector, mixed.vector
        queries.append((row.singer, y[half:], query_background))
    return catalogues, queries


def answers(
    e: Embedder, catalogues: Catalogues, queries: list[Query], snrs: list[float]
) -> list[dict]:
    """One record per query and ratio: domain_score, flagged, and each branch's top-1 hit
    against each catalogue (`mono`, `mixed`: against vocal takes; `mono_vs_songs`, ...)."""
    names = sorted(catalogues["mono"])
    tracks = {d: np.stack([c[s] for s in names]) for d, c in catalogues.items()}
    out = []
    for singer, vocals, background in queries:
        for snr in snrs:
            y = mix_over_middle(vocals, background, snr)
            try:
                mono, mixed = e.embed_audio(y, "mono"), e.embed_audio(y, "mixed")
            except AudioError:
                continue
            record = {
                "snr_db": snr,
                "domain_score": mono.domain_score,
                "flagged": "mostly_accompaniment" in mono.flags,
            }
            for cat, suffix in (("mono", ""), ("mixed", "_vs_songs")):
                for branch, emb in (("mono", mono), ("mixed", mixed)):
                    hit = names[int(np.argmax(tracks[cat] @ emb.vector))] == singer
                    record[branch + suffix] = hit
            out.append(record)
    return out


def summary(records: list[dict], suffix: str = "") -> dict:
    """Top-1 of each branch and of `auto` against one catalogue (suffix: "" vocal takes,
    "_vs_songs" songs)."""
    n = len(records)
    mono = [r["mono" + suffix] for r in records]
    mixed = [r["mixed" + suffix] for r in records]
    auto = [x if r["flagged"] else m for r, m, x in zip(records, mono, mixed, strict=True)]
    return {
        "queries": n,
        "top1_mono": sum(mono) / max(n, 1),
        "top1_mixed": sum(mixed) / max(n, 1),
        "top1_auto": sum(auto) / max(n, 1),
        "only_mixed": sum(x and not m for m, x in zip(mono, mixed, strict=True)),
        "only_mono": sum(m and not x for m, x in zip(mono, mixed, strict=True)),
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", default=str(REPO / "model" / "weights" / "cross-default.pt"))
    p.add_argument("--snrs", default=",".join(f"{s:g}" for s in DEFAULT_SNRS))
    p.add_argument("--json", type=Path)
    args = p.parse_args()
    data = shared_dir() / "data"
    if not (data / "mir1k").is_dir():
        print(f"no research data at {data} (set SINGER_SHARED_DIR)", file=sys.stderr)
        return 2
    e = Embedder.from_checkpoint(args.checkpoint, "cpu")
    snrs = [float(s) for s in args.snrs.split(",")]
    result: dict = {"checkpoint": e.checkpoint_id, "snrs_db": snrs, "sets": {}}
    print(
        "| queries | catalogue | flagged | n | as mono | as mixed | auto | "
        "only mixed / only mono right |"
    )
    print("|---|---|---|---:|---:|---:|---:|---:|")
    for name, build in (("MIR-1K", mir1k_set), ("a cappella", acappella_set)):
        records = answers(e, *build(e, data), snrs)
        result["sets"][name] = {"records": records}
        for catalogue, suffix in (("vocal takes", ""), ("songs", "_vs_songs")):
            for flagged in (False, True, None):
                rs = [r for r in records if flagged is None or r["flagged"] == flagged]
                s = summary(rs, suffix)
                which = {False: "no", True: "yes", None: "all"}[flagged]
                result["sets"][name][f"{catalogue}, flagged: {which}"] = s
                print(
                    f"| {name} | {catalogue} | {which} | {s['queries']} | "
                    f"{s['top1_mono']:.3f} | {s['top1_mixed']:.3f} | {s['top1_auto']:.3f} | "
                    f"{s['only_mixed']} / {s['only_mono']} |"
                )
        for snr in snrs:
            rs = [r for r in records if r["snr_db"] == snr]
            share = sum(r["flagged"] for r in rs) / max(len(rs), 1)
            print(f"  {name} at {snr:+g} dB: {share:.0%} flagged", file=sys.stderr)
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
