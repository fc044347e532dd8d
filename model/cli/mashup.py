"""`python -m model mashup`: mix vocals over mashable backgrounds (model.training.mashup), or
build the `../shared/data` training recipe (model.training.datasets.shared_data_recipe).

  python -m model mashup --vocals VOCALS.csv --backgrounds DIR_OR_MANIFEST --out DIR
  python -m model mashup --recipe shared-data --data ../shared/data --out data/shared

Exit status 1 when some file could not be decoded (they are listed in report.json), else 0.
Vocal segments with no mashable background are reported there too, without failing the run.
"""

from __future__ import annotations

import argparse
import logging
from typing import TYPE_CHECKING

from model.cli.options import add_fields, replace_fields

if TYPE_CHECKING:
    from model.training.mashup import MashupResult

log = logging.getLogger("model.training.mashup")

# Fields of model.training.mashup.MashupConfig exposed as options of the same name.
MIX_OPTIONS = ("tempo_tolerance", "tempo_octave", "relative_keys", "mixes_per_segment")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from model.training.mashup import MashupConfig

    d = MashupConfig()  # the library's defaults are the CLI's
    src = parser.add_argument_group("input")
    src.add_argument("--vocals", help="manifest of monophonic vocal recordings")
    src.add_argument("--backgrounds", help="folder of background tracks, or a manifest")
    src.add_argument(
        "--recipe",
        choices=["shared-data"],
        help="build the ../shared/data training manifest instead (needs --data)",
    )
    src.add_argument("--data", help="the shared data folder for --recipe (e.g. ../shared/data)")
    src.add_argument("--no-mashups", action="store_true", help="recipe without the mashups")
    src.add_argument(
        "--mashup-vowels", action="store_true", help="recipe: mash up the sung-vowel recordings too"
    )
    parser.add_argument(
        "--out", required=True, help="output folder (mixes, manifest.csv, report.json)"
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    parser.add_argument(
        "--workers", type=int, default=2, help="processes (<= 1: in-process) (default: 2)"
    )
    parser.add_argument("--cache", help="background analysis cache (default OUT/cache)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    m = parser.add_argument_group("mashability and mixing (see model/training/mashup.py)")
    m.add_argument(
        "--snr-db",
        type=float,
        nargs=2,
        default=d.snr_db,
        metavar=("LO", "HI"),
        help="vocal-to-background RMS ratio range in dB (default %(default)s: equal RMS)",
    )
    add_fields(m, d, MIX_OPTIONS)
    m.add_argument(
        "--pitch-shifts",
        type=int,
        nargs="*",
        default=list(d.pitch_shifts),
        metavar="SEMITONES",
        help="background pitch shifts to try, e.g. -1 1",
    )
    m.add_argument(
        "--chroma",
        choices=["cqt", "stft"],
        default=d.chroma,
        help="chroma for key finding (default: %(default)s)",
    )


def _config(args):
    from model.training.mashup import MashupConfig

    config = MashupConfig(
        snr_db=tuple(args.snr_db), pitch_shifts=tuple(args.pitch_shifts), chroma=args.chroma
    )
    return replace_fields(config, args, MIX_OPTIONS)


def _summary(result: MashupResult) -> None:
    print(
        f"{result.n_vocals} vocals, {result.n_voiced_segments} voiced segments, "
        f"{result.n_mashed_segments} mashable, {len(result.rows)} mixes "
        f"in {result.seconds:.0f} s; {len(result.unmatched_vocals)} vocals without any match, "
        f"{len(result.unvoiced)} without voiced segments, {len(result.failed)} failed"
    )
    print(f"manifest: {result.manifest}\nreport:   {result.report}")


def main(args: argparse.Namespace) -> int:
    if args.recipe:
        if not args.data:
            raise SystemExit("--recipe needs --data")
        from model.training.datasets import shared_data_recipe

        res = shared_data_recipe(
            args.data,
            args.out,
            mashups=not args.no_mashups,
            mashup_vowels=args.mashup_vowels,
            mashup_config=_config(args),
            seed=args.seed,
            workers=args.workers,
            progress=not args.no_progress,
            cache_dir=args.cache,
        )
        print(
            f"{len(res.rows)} rows, {len({r.singer for r in res.rows})} singers -> {res.manifest}"
        )
        if res.mashup is None:
            return 0
        _summary(res.mashup)
        return 1 if res.mashup.failed else 0
    if not (args.vocals and args.backgrounds):
        raise SystemExit("give --vocals and --backgrounds, or --recipe")
    from model.training.mashup import make_mashups

    result = make_mashups(
        args.vocals,
        args.backgrounds,
        args.out,
        config=_config(args),
        seed=args.seed,
        workers=args.workers,
        progress=not args.no_progress,
        cache_dir=args.cache,
    )
    _summary(result)
    for path, err in result.failed:
        log.error("failed: %s: %s", path, err)
    return 1 if result.failed else 0
