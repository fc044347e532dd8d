"""`python -m model evaluate`: singer-ID and query-by-singer figures (the paper's section 4).

    python -m model evaluate --checkpoint data/ckpt/cross_pretrained.pt --recipe mir1k \
        --gmm --snr-sweep --tsne --out data/eval/mir1k

    python -m model evaluate --recipe acappella --checkpoint model/weights/cross-default.pt \
        --checkpoint teacher:resemblyzer --out data/eval/acappella

`--checkpoint teacher:resemblyzer` evaluates the distillation teacher (Resemblyzer's GE2E) on
the same segments. `--recipe acappella` is a verification dev figure instead of the paper's
tables: EER of first against second halves of the held-out 20 % of the a cappella takes
(acappella_eer.json). Writes results.json, results.md and the PNGs under --out. Exit status 0
when every rendering of every clip was evaluated, 1 when some were skipped (listed in the
report), 2 on bad input.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from model.cli.options import (
    HELD_OUT_SINGERS,
    VALIDATION_SINGERS,
    add_calibration_impostors,
    add_evaluation_runtime,
    evaluation_cache,
    name_list,
)

log = logging.getLogger("model.evaluate")

RECIPES = ("mir1k", "acappella", "studio")


def _default_mir1k() -> Path:
    from model.shared import shared_dir

    return shared_dir() / "data" / "mir1k"


def add_data_arguments(p: argparse.ArgumentParser) -> None:
    """--manifest | --recipe, and --data-root (shared with `model calibrate`)."""
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument(
        "--manifest",
        type=Path,
        help="evaluation manifest CSV (singer, role model|query, path+domain and/or "
        "vocal_path+accompaniment_path)",
    )
    src.add_argument(
        "--recipe",
        choices=RECIPES,
        help="built-in split: mir1k (cross-song split); acappella (evaluate only: verification "
        "EER on the held-out a cappella takes); studio (held-out singers and takes as studio "
        "mixes at -10, -5, 0 dB, model/evaluation/studio_eval.py)",
    )
    p.add_argument(
        "--data-root",
        type=Path,
        help="MIR-1K folder for --recipe mir1k, a cappella folder for --recipe acappella "
        "(default: data/mir1k or data/acappella of the shared folder)",
    )


def add_take_impostors(p: argparse.ArgumentParser) -> None:
    """--calibration-takes (shared with `model calibrate`)."""
    p.add_argument(
        "--calibration-takes",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also calibrate on the held-out 20 %% of the a cappella takes of the shared folder "
        "as impostors (57 voices outside every training set; mixed renderings over its "
        "instrumental tracks). Two impostor singers alone set a threshold that let 24 %% of "
        "unknown singers through at a 1 %% target (README, open set) (default: %(default)s)",
    )


def _takes(held_out: bool) -> tuple[list[str], list[Path]] | None:
    """(a cappella takes, instrumental tracks) of the shared folder: the held-out 20 % or the
    training 80 %; None (logged) when the folder has none."""
    from model.shared import shared_dir
    from model.training.datasets import acappella_rows, split_acappella
    from model.training.mashup import read_backgrounds

    data = shared_dir() / "data"
    if not (data / "acappella" / "index.csv").is_file():
        log.warning("no a cappella takes under %s", data)
        return None
    train, held = split_acappella(acappella_rows(data / "acappella"))
    # (acappella_rows gives every row a path; the test only narrows the type)
    takes = [r.path for r in (held if held_out else train) if r.path is not None]
    return takes, read_backgrounds(data / "instrumental")


def take_impostors(args: argparse.Namespace) -> list:
    """The EvalClips that --calibration-takes (impostors) and --cohort-takes (cohort) add."""
    from model.evaluation.splits import impostor_clips

    out = []
    if args.calibration_takes and (held := _takes(held_out=True)):
        out += impostor_clips(*held)
    if getattr(args, "cohort_takes", False) and (train := _takes(held_out=False)):
        out += impostor_clips(*train, role="cohort")
    return out


def load_clips(args: argparse.Namespace) -> tuple[list, str]:
    """(clips, data set description) of --recipe / --manifest. Raises FileNotFoundError,
    ManifestError."""
    from model.evaluation import splits

    if args.recipe == "mir1k":
        root = args.data_root or _default_mir1k()
        return splits.mir1k_split(root) + take_impostors(args), f"MIR-1K cross-song split ({root})"
    if args.recipe is not None:
        raise ValueError(f"--recipe {args.recipe} has no model/query split; use mir1k")
    return splits.read_eval_manifest(args.manifest) + take_impostors(args), str(args.manifest)


def add_arguments(p: argparse.ArgumentParser) -> None:
    from model.evaluation.gmm_ubm import GmmUbmConfig
    from model.evaluation.runner import DEFAULT_SNRS_DB, SCENARIOS

    g = GmmUbmConfig()
    p.add_argument(
        "--checkpoint",
        action="append",
        default=[],
        metavar="CKPT",
        help="checkpoint to evaluate, or teacher:resemblyzer for the distillation teacher; "
        "repeat for several (one table)",
    )
    p.add_argument(
        "--name",
        action="append",
        default=[],
        metavar="NAME",
        help="label per --checkpoint, in order (default: file stem)",
    )
    p.add_argument(
        "--fuse",
        action="append",
        nargs=3,
        default=[],
        metavar=("NAME1", "NAME2", "WEIGHT"),
        help="add a row: the score fusion of two named checkpoints, WEIGHT on the first "
        "(model.evaluation.score_fusion); repeat for several (default: none)",
    )
    add_data_arguments(p)
    p.add_argument(
        "--singers",
        type=name_list,
        default=[],
        metavar="A,B,...",
        help="evaluate only these singers (e.g. those a model was "
        "not trained on); the singer-ID candidates are then only these singers",
    )
    p.add_argument(
        "--scenarios",
        nargs="+",
        choices=list(SCENARIOS),
        default=list(SCENARIOS),
        help="query -> catalogue domain pairs to evaluate (default: all three)",
    )
    p.add_argument("--gmm", action="store_true", help="add the GMM-UBM baseline (in-domain)")
    for flag, default, text in (  # GmmUbmConfig's defaults are the CLI's
        ("--gmm-components", g.n_components, "Gaussians of the UBM"),
        ("--gmm-relevance", g.relevance, "MAP adaptation relevance factor"),
        ("--gmm-ubm-frames", g.ubm_max_frames, "frames sampled for the UBM's EM fit"),
        ("--gmm-top-c", g.qbs_top_c, "top-C scoring of track models in query-by-singer (0: exact)"),
    ):
        p.add_argument(
            flag, type=type(default), default=default, help=f"{text} (default: %(default)s)"
        )
    p.add_argument(
        "--snr-sweep",
        action="store_true",
        help="re-mix clips with stems at each --snr and repeat the mixed scenarios",
    )
    p.add_argument(
        "--snr",
        type=float,
        nargs="+",
        default=list(DEFAULT_SNRS_DB),
        metavar="DB",
        help="vocal-to-accompaniment ratios of --snr-sweep (default: %(default)s)",
    )
    p.add_argument("--tsne", action="store_true", help="t-SNE map PNG per checkpoint")
    p.add_argument(
        "--all-segments",
        action="store_true",
        help="the paper's protocol: embed every full 3-s segment, no voice detection "
        "(default: off, the service's pipeline: the voice detector chooses the segments "
        "exactly as for an upload)",
    )
    p.add_argument("-k", type=int, default=5, help="cut-off of precision/recall at k (default: 5)")
    p.add_argument(
        "--cross-domain-snr",
        type=float,
        default=None,
        metavar="DB",
        help="--recipe acappella: mix each take's second half over an instrumental of the "
        "`instrumental` folder beside the takes at this vocal-to-accompaniment ratio, and score "
        "it through the mixed branch (default: off, both halves mono)",
    )
    add_evaluation_runtime(p)
    p.add_argument("--no-cache", action="store_true", help="neither read nor write the cache")
    add_open_set_arguments(p)
    p.add_argument("--out", type=Path, required=True, help="output folder")
    from model.evaluation.studio_eval import add_studio_arguments

    add_studio_arguments(p)


def add_open_set_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--open-set",
        action="store_true",
        help="add open-set figures: --impostors leave the catalogue, EER, minDCF, "
        "identification at 1%% and 5%% false alarm, the calibrated operating point, DET plot",
    )
    p.add_argument(
        "--impostors",
        type=name_list,
        default=list(HELD_OUT_SINGERS),
        metavar="A,B,...",
        help="singers held out as impostors (default: the default model's 5 held-out MIR-1K "
        "singers: %(default)s)",
    )
    add_calibration_impostors(
        p,
        "--calibration-impostors",
        VALIDATION_SINGERS,
        "the default model's validation singers; its held-out ones are the evaluated impostors",
    )
    add_take_impostors(p)
    p.add_argument(
        "--cohort-takes",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="s-norm against the catalogue joined by a fixed cohort, the 225 training a "
        "cappella takes in both renderings (what `model calibrate` ships with the checkpoint) "
        "(default: %(default)s)",
    )
    p.add_argument(
        "--target-fa",
        type=float,
        default=0.01,
        help="operating point: wanted false-alarm rate (default: %(default)s)",
    )
    p.add_argument(
        "--likely-fa",
        type=float,
        default=0.1,
        help="looser operating point, of 'known or likely' (default: %(default)s)",
    )
    p.add_argument(
        "--prior-known",
        type=float,
        default=0.5,
        help="share of queries by catalogue singers the confidence assumes (default: %(default)s)",
    )
    p.add_argument(
        "--norm",
        choices=("auto", "raw", "snorm"),
        default="auto",
        help="score calibrated: raw cosine, adaptive s-norm against the catalogue and the "
        "cohort, or auto: per scenario the one that identifies more of the calibration "
        "queries at 1%% false alarm, as `calibrate` (default: %(default)s)",
    )


def main(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from model.errors import SingerRetrievalError
    from model.evaluation.gmm_ubm import GmmUbmConfig
    from model.evaluation.openset import OpenSetConfig
    from model.evaluation.report import markdown, write_report
    from model.evaluation.runner import evaluate
    from model.evaluation.score_fusion import Fusion
    from model.manifest import ManifestError

    if not args.checkpoint and not args.gmm:
        log.error("give at least one --checkpoint, or --gmm")
        return 2
    if args.name and len(args.name) != len(args.checkpoint):
        log.error("give one --name per --checkpoint")
        return 2
    try:
        fusions = [Fusion(a, b, float(w)) for a, b, w in args.fuse]
    except ValueError as err:
        log.error("--fuse: %s", err)
        return 2
    if args.recipe == "acappella":
        return _acappella(args, fusions)
    if args.recipe == "studio":
        from model.evaluation.studio_eval import run_studio

        return run_studio(args)
    try:
        clips, dataset = load_clips(args)
    except (FileNotFoundError, ManifestError) as err:
        log.error("%s", err)
        return 2
    if args.singers:
        from model.evaluation.splits import ROLES

        unknown = sorted(set(args.singers) - {c.singer for c in clips if c.role in ROLES})
        if unknown:
            log.error("--singers: not in the evaluation set: %s", ", ".join(unknown))
            return 2
        clips = [c for c in clips if c.singer in set(args.singers) or c.role not in ROLES]
        dataset += f", singers {','.join(sorted(args.singers))}"
    if args.torch_threads > 0:
        import torch

        torch.set_num_threads(args.torch_threads)
    gmm = None
    if args.gmm:
        gmm = replace(
            GmmUbmConfig(),
            n_components=args.gmm_components,
            relevance=args.gmm_relevance,
            ubm_max_frames=args.gmm_ubm_frames,
            qbs_top_c=args.gmm_top_c or None,
        )
    try:
        result = evaluate(
            clips,
            args.checkpoint,
            names=args.name or None,
            scenarios=args.scenarios,
            gmm=gmm,
            snr_sweep=args.snr if args.snr_sweep else None,
            tsne=args.tsne,
            plot_dir=args.out,
            cache_dir=None if args.no_cache else evaluation_cache(args.cache_dir),
            all_segments=args.all_segments,
            k=args.k,
            device=args.device,
            workers=args.workers,
            progress=True,
            dataset=dataset,
            open_set=OpenSetConfig(
                tuple(args.impostors),
                tuple(args.calibration_impostors),
                args.target_fa,
                args.norm,
                likely_fa=args.likely_fa,
                prior_known=args.prior_known,
            )
            if args.open_set
            else None,
            fusions=fusions,
        )
    except (SingerRetrievalError, ValueError) as err:
        log.error("%s", err)
        return 2
    json_path, md_path = write_report(result, args.out)
    print(markdown(result))
    log.info("wrote %s and %s (%.1f s)", json_path, md_path, result["timing_s"]["total"])
    if result["failures"]:
        log.warning("%d renderings were skipped; see %s", len(result["failures"]), md_path)
        return 1
    return 0


def _acappella(args: argparse.Namespace, fusions: list) -> int:
    """Verification EER of every --checkpoint (and --fuse row) on the held-out a cappella takes."""
    import json

    import torch

    from model.errors import SingerRetrievalError
    from model.evaluation.runner import _default_names, _embedder
    from model.evaluation.verification import halves_eer, take_halves_many
    from model.shared import shared_dir
    from model.training.datasets import acappella_rows, split_acappella
    from model.training.mashup import read_backgrounds
    from model.vectors import fuse

    if args.torch_threads > 0:
        torch.set_num_threads(args.torch_threads)
    root = args.data_root or shared_dir() / "data" / "acappella"
    try:
        _, held = split_acappella(acappella_rows(root))
    except FileNotFoundError as err:
        log.error("%s", err)
        return 2
    backgrounds: list[str | Path] | None = None
    if args.cross_domain_snr is not None:
        backgrounds = list(read_backgrounds(root.parent / "instrumental"))
        if not backgrounds:
            log.error("--cross-domain-snr: no instrumentals in %s", root.parent / "instrumental")
            return 2
    names = args.name or _default_names(args.checkpoint)
    results: dict = {
        "takes": [r.path for r in held],
        "second_half": "mono"
        if backgrounds is None
        else f"mixed at {args.cross_domain_snr:g} dB over {len(backgrounds)} instrumentals",
        "models": [],
    }
    halves: dict[str, dict] = {}

    def report(name: str, checkpoint: str, entry: dict) -> None:
        results["models"].append({"name": name, "checkpoint": checkpoint, **entry})
        print(f"{name}: EER {entry['eer']:.3f} ({entry['n_takes']} takes)")

    try:
        for f in fusions:
            f.check(names)
        embedders = [_embedder(spec, args.device) for spec in args.checkpoint]
        per_system = take_halves_many(
            embedders,
            [r.path for r in held if r.path is not None],  # every a cappella row has one
            backgrounds,
            args.cross_domain_snr or 0.0,
        )
        for name, spec, (got, skipped) in zip(names, args.checkpoint, per_system, strict=True):
            halves[name] = got
            report(name, str(spec), {**halves_eer(list(got.values())), "skipped": skipped})
        for f in fusions:
            a, b = halves[f.first], halves[f.second]
            # takes usable by both systems, each half fused as a track vector is
            both = [
                (fuse(a[p][0], b[p][0], f.weight), fuse(a[p][1], b[p][1], f.weight))
                for p in a
                if p in b
            ]
            report(f.name, f"{f.first} + {f.second}", {**halves_eer(both), "fusion": f.weight})
    except (SingerRetrievalError, ValueError) as err:
        log.error("%s", err)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "acappella_eer.json").write_text(json.dumps(results, indent=2) + "\n")
    return 0
