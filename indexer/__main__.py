"""`python -m indexer`: fill, inspect and edit a catalogue directory.

    python -m indexer --index DIR [--checkpoint CKPT] [--domain mixed|mono] SOURCE
    python -m indexer --catalog qdrant://HOST:6333/NAME --engine ray [--address ADDR] SOURCE
    python -m indexer stats  --index DIR [--json]
    python -m indexer remove --index DIR [ID ...] [--singer NAME] [--checkpoint-id ID]
    python -m indexer export --index DIR [--format csv|json|archive] [--vectors] [-o FILE]
    python -m indexer import --index DIR ARCHIVE
    python -m indexer migrate --index DIR --to CKPT [--missing keep|drop]
    python -m indexer snapshot --index DIR --out OUT
    python -m indexer restore --index DIR SNAPSHOT
    python -m indexer generations --index DIR

Exit status: 0 success, 1 some files failed (listed at the end), 2 unusable arguments,
checkpoint, source or catalogue, 130 interrupted (what was embedded is committed).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from indexer.cli_support import missing_catalogue, open_target
from indexer.operations import OPERATIONS, add_arguments
from model.audio import MAX_TRACK_SECONDS
from model.calibration import EnrolmentCalibration
from model.cli.options import add_embedding_options

log = logging.getLogger("indexer")
INTERRUPTED = 130  # the shell's status for SIGINT


def _add_common(p: argparse.ArgumentParser) -> None:
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument(
        "--index",
        type=Path,
        metavar="DIR",
        help="catalogue directory (catalog.sqlite + FAISS files); created if absent",
    )
    where.add_argument(
        "--catalog",
        metavar="URL",
        help="catalogue URL instead of a directory: postgresql://USER@HOST:5432/DB, "
        "qdrant://HOST:6333/NAME, qdrant+local:///DIR, qdrant+memory://NAME (see "
        "catalog/factory.py); the Qdrant API key is read from SINGER_QDRANT_API_KEY, "
        "PostgreSQL's password from the URL or PGPASSWORD",
    )
    p.add_argument(
        "--index-kind",
        choices=["flat", "hnsw"],
        default="flat",
        help="FAISS index over track vectors: exact (flat) or approximate (hnsw) "
        "(default: %(default)s)",
    )
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m indexer",
        description=__doc__,
        epilog="Without a command, `index` is meant: python -m indexer --index DIR SOURCE",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    parsers = {}
    for name, handler in COMMANDS.items():
        text = (handler.__doc__ or "").strip()  # the handler's docstring is the command's help
        parsers[name] = sub.add_parser(name, help=text, description=text)
    for p in parsers.values():
        _add_common(p)

    p = parsers["index"]
    p.add_argument(
        "source",
        type=Path,
        metavar="SOURCE",
        help="folder (<singer>/<track> layout, or a manifest.csv at its root) or "
        "CSV manifest (path,singer[,title][,domain][,external_id])",
    )
    p.add_argument(
        "--checkpoint", type=Path, help="model checkpoint (.pt); default: the project's CROSS model"
    )
    p.add_argument(
        "--domain",
        choices=["mixed", "mono"],
        default="mixed",
        help="mixed: finished songs; mono: vocals only. A manifest's domain column "
        "overrides it per row (default: %(default)s)",
    )
    p.add_argument(
        "--rebuild", action="store_true", help="re-embed every file, even those already indexed"
    )
    add_embedding_options(p, MAX_TRACK_SECONDS)
    p.add_argument(
        "--threads",
        type=int,
        help="torch threads for CPU inference (default: cores minus workers, >= 1)",
    )
    p.add_argument(
        "--processes",
        type=_processes,
        default=None,
        metavar="N|auto",
        help="decode (and compute features) in N worker processes instead of the threads, "
        "with the local engine: faster where there are many cores, since threads queue on the "
        "GIL; 0: threads. auto: all cores but two when the model runs on CUDA, else 0 "
        "(default: auto)",
    )
    p.add_argument(
        "--commit-every",
        type=int,
        default=64,
        metavar="N",
        help="tracks per catalogue transaction; at most this many are re-embedded "
        "after a crash (default: 64; also every 2 s)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument(
        "--engine",
        choices=["local", "ray"],
        default="local",
        help="local: this machine's threads; ray: Ray Data stages on a Ray cluster (extra "
        "`scale`; see indexer/README.md) (default: %(default)s)",
    )
    p.add_argument(
        "--address",
        help="Ray cluster to join with --engine ray (e.g. ray://HEAD:10001 or auto); "
        "default: start a local Ray on this machine",
    )
    p.add_argument(
        "--ray-actors",
        type=int,
        default=2,
        metavar="N",
        help="embedding actors (each holds the model; one GPU each when the cluster has "
        "GPUs) with --engine ray (default: %(default)s)",
    )

    p = parsers["stats"]
    p.add_argument("--json", action="store_true", help="print JSON")

    p = parsers["remove"]
    p.add_argument("ids", nargs="*", type=int, metavar="ID", help="track ids")
    p.add_argument("--singer", help="every track of this singer")
    p.add_argument("--checkpoint-id", help="every track embedded by this checkpoint (see `stats`)")

    p = parsers["export"]
    p.add_argument("-o", "--output", type=Path, help="output file (default: standard output)")
    p.add_argument(
        "--format",
        choices=["csv", "json", "archive"],
        help="archive: a checked, portable archive for `import` (tracks, vectors, singers, "
        "checkpoint ids, roots); default: from the output's extension (.tar, .tar.gz, .tgz: "
        "archive; .json), else csv",
    )
    p.add_argument("--vectors", action="store_true", help="include the track vectors (csv, json)")
    add_arguments(parsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in (*COMMANDS, "-h", "--help"):
        argv.insert(0, "index")
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("faiss").setLevel(logging.WARNING)  # its loader logs CPU features
    from catalog import CatalogError

    try:
        return COMMANDS[args.command](args)
    except CatalogError as err:
        log.error("%s", err)
        return 2
    except KeyboardInterrupt:
        log.error("interrupted")
        return INTERRUPTED


def _outlier_bars(checkpoint: Path | None, checkpoint_id: str) -> dict[str, EnrolmentCalibration]:
    """The calibration's outlier bars of the checkpoint (none without a usable calibration)."""
    from model import DEFAULT_CHECKPOINT
    from model.calibration import CalibrationError, find_calibration

    try:
        cal = find_calibration(checkpoint or DEFAULT_CHECKPOINT, checkpoint_id)
    except CalibrationError as err:
        log.warning("no outlier check of the singers: %s", err)
        return {}
    return dict(cal.enrolment) if cal is not None else {}


def _index(args: argparse.Namespace) -> int:
    """Embed the audio of a folder or CSV manifest into the catalogue (the default)."""
    import torch
    from tqdm.contrib.logging import logging_redirect_tqdm

    from indexer.run import check_enrolment, index_source
    from indexer.sources import source_root
    from model.devices import inference_threads
    from model.embedding import Embedder
    from model.errors import CheckpointError
    from model.manifest import ManifestError

    if not args.source.exists():
        hint = (
            f" (to run the `{args.source}` command, put it first: python -m indexer "
            f"{args.source} --index ...)"
            if str(args.source) in COMMANDS
            else ""
        )
        log.error("no such folder or manifest: %s%s", args.source, hint)
        return 2
    try:
        embedder = Embedder.from_checkpoint(args.checkpoint, args.device)
    except CheckpointError as err:
        default = (
            ""
            if args.checkpoint
            else (" (the project's default checkpoint; pass --checkpoint CKPT to use another)")
        )
        log.error("cannot load the model: %s%s", err, default)
        return 2
    if embedder.device.type == "cpu":
        torch.set_num_threads(
            args.threads or inference_threads(max(args.workers, args.processes or 0))
        )
    progress = not args.no_progress and sys.stderr.isatty()
    with open_target(args, embedder.embed_dim) as catalog, logging_redirect_tqdm():
        catalog.add_roots([str(source_root(args.source))])  # the service may play its files
        log.info(
            "indexing %s into %s with checkpoint %s on %s",
            args.source,
            args.catalog or args.index,
            embedder.checkpoint_id,
            embedder.device,
        )
        options = {
            "domain": args.domain,
            "rebuild": args.rebuild,
            "workers": args.workers,
            "batch_size": args.batch_size,
            "all_segments": args.all_segments,
            "progress": progress,
            "commit_every": args.commit_every,
            "max_seconds": args.max_seconds,
        }
        try:
            if args.engine == "ray":
                if args.processes:  # None (auto) lets Ray's own workers decode
                    log.error("--processes is for the local engine; Ray runs its own workers")
                    return 2
                from indexer.ray_engine import index_source_ray

                report = index_source_ray(
                    catalog,
                    embedder,
                    args.source,
                    checkpoint=args.checkpoint,
                    address=args.address,
                    actors=args.ray_actors,
                    **options,
                )
            else:
                report = index_source(
                    catalog, embedder, args.source, processes=args.processes, **options
                )
        except (ManifestError, FileNotFoundError) as err:
            log.error("%s", err)
            return 2
        check_enrolment(catalog, report, _outlier_bars(args.checkpoint, embedder.checkpoint_id))
    print(report.summary(), file=sys.stderr)
    if report.interrupted:
        return INTERRUPTED
    return 0 if report.ok else 1


def _processes(text: str) -> int | None:
    if text == "auto":
        return None
    n = int(text)
    if n < 0:
        raise argparse.ArgumentTypeError("must be 0 or more, or auto")
    return n


def _stats(args: argparse.Namespace) -> int:
    """Show what the catalogue holds."""
    if missing_catalogue(args):
        return 2
    with open_target(args) as catalog:
        stats = catalog.stats()
    if args.json:
        print(json.dumps(stats, indent=2, sort_keys=True))
        return 0
    n = stats["n_tracks"]
    print(
        f"catalogue {stats['directory']} (schema {stats['schema_version']}, "
        f"{stats['dim']}-d, {stats['index']} index on {stats['faiss_device']})"
    )
    print(
        f"  tracks:  {sum(n.values())} ({n['mono']} mono, {n['mixed']} mixed), "
        f"{stats['duration_h']:.2f} h of audio"
    )
    print(f"  singers: {stats['n_singers']}")
    for ckpt, count in sorted(stats["checkpoint_ids"].items()):
        print(f"  checkpoint {ckpt}: {count} tracks")
    return 0


def _remove(args: argparse.Namespace) -> int:
    """Remove tracks by id, singer or checkpoint."""
    if not (args.ids or args.singer or args.checkpoint_id):
        log.error("give track ids, --singer or --checkpoint-id")
        return 2
    if missing_catalogue(args):
        return 2
    with open_target(args) as catalog:
        ids = list(args.ids)
        if args.singer or args.checkpoint_id:
            ids += catalog.track_ids(singer=args.singer, checkpoint_id=args.checkpoint_id)
        removed = catalog.remove_tracks(ids, missing_ok=True)
        missing = sorted(set(args.ids) - {t.id for t in removed})
    for track in removed:
        print(f"removed track {track.id}: {track.singer} / {track.title or track.path or ''}")
    print(f"removed {len(removed)} tracks", file=sys.stderr)
    if missing:
        log.error("no such track ids: %s", ", ".join(map(str, missing)))
        return 1
    return 0


def _format_of(output: Path | None) -> str:
    name = output.name if output else ""
    if name.endswith((".tar", ".tar.gz", ".tgz")):
        return "archive"
    return "json" if name.endswith(".json") else "csv"


def _export(args: argparse.Namespace) -> int:
    """Write the catalogue's tracks as CSV (a valid manifest), JSON, or an archive."""
    if missing_catalogue(args):
        return 2
    fmt = args.format or _format_of(args.output)
    if fmt == "archive":
        from catalog.archive import export_archive

        if args.output is None:
            log.error("an archive needs an output file: -o FILE.tar")
            return 2
        with open_target(args) as catalog:
            summary = export_archive(catalog, args.output)
        log.info("exported %d tracks to the archive %s", summary.n_tracks, args.output)
        return 0
    with open_target(args) as catalog:
        if args.output is None:
            n = catalog.export(sys.stdout, fmt, include_vectors=args.vectors)
        else:
            args.output.parent.mkdir(parents=True, exist_ok=True)
            tmp = args.output.with_name(args.output.name + ".tmp")
            with tmp.open("w", newline="", encoding="utf-8") as fh:
                n = catalog.export(fh, fmt, include_vectors=args.vectors)
            tmp.replace(args.output)
    log.info("exported %d tracks as %s%s", n, fmt, f" to {args.output}" if args.output else "")
    return 0


COMMANDS = {
    "index": _index,
    "stats": _stats,
    "remove": _remove,
    "export": _export,
    **OPERATIONS,
}

if __name__ == "__main__":
    sys.exit(main())
