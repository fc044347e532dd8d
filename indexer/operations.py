"""Catalogue operations of `python -m indexer`: migrate, import, snapshot, restore,
generations (the library functions live in indexer/migration.py, catalog/archive.py and
catalog/snapshot.py; these handlers parse, call and print).

    python -m indexer migrate --index DIR --to CKPT [--missing keep|drop] [--uploads DIR]
    python -m indexer import  --index DIR ARCHIVE
    python -m indexer snapshot --index DIR --out OUT
    python -m indexer restore --index DIR SNAPSHOT
    python -m indexer generations --index DIR
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from indexer.cli_support import missing_catalogue, open_target

log = logging.getLogger("indexer")


def add_arguments(parsers: dict[str, argparse.ArgumentParser]) -> None:
    """The options of the commands below, on their subparsers."""
    from model.audio import MAX_TRACK_SECONDS
    from model.cli.options import add_embedding_options

    p = parsers["migrate"]
    p.add_argument("--to", type=Path, required=True, metavar="CKPT", help="the new checkpoint")
    p.add_argument(
        "--missing",
        choices=["keep", "drop"],
        default="keep",
        help="tracks whose audio is gone: keep (do not switch until it is back; run again "
        "to resume) or drop (switch without them) (default: %(default)s)",
    )
    p.add_argument(
        "--uploads",
        type=Path,
        help="the upload store holding the audio of POST /tracks uploads (default: "
        "DIR/audio with --index; none with --catalog)",
    )
    p.add_argument("--no-switch", action="store_true", help="build the new generation only")
    p.add_argument(
        "--commit-every",
        type=int,
        default=64,
        metavar="N",
        help="tracks per transaction; at most this many are embedded again after a crash "
        "(default: %(default)s)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--processes", type=int, default=None, help="decoding processes (default: auto)")
    add_embedding_options(p, MAX_TRACK_SECONDS)

    parsers["import"].add_argument("archive", type=Path, help="a catalogue archive (.tar[.gz])")
    parsers["snapshot"].add_argument(
        "-o", "--out", type=Path, required=True, help="new folder for the snapshot"
    )
    parsers["restore"].add_argument("snapshot", type=Path, help="a snapshot folder")


def migrate_command(args: argparse.Namespace) -> int:
    """Re-embed the catalogue with another checkpoint into a new generation, then switch."""
    import torch

    from indexer.migration import MigrationOptions, migrate
    from model.devices import inference_threads
    from model.embedding import Embedder
    from model.errors import CheckpointError

    if missing_catalogue(args):
        return 2
    try:
        embedder = Embedder.from_checkpoint(args.to, args.device)
    except CheckpointError as err:
        log.error("cannot load the model: %s", err)
        return 2
    if embedder.device.type == "cpu":
        torch.set_num_threads(inference_threads(args.workers))
    uploads = args.uploads or (args.index / "audio" if args.index else None)
    options = MigrationOptions(
        missing=args.missing,
        uploads=uploads,
        switch=not args.no_switch,
        workers=args.workers,
        processes=args.processes,
        batch_size=args.batch_size,
        all_segments=args.all_segments,
        max_seconds=args.max_seconds,
        commit_every=args.commit_every,
        progress=not args.no_progress and sys.stderr.isatty(),
    )
    with open_target(args) as live:
        report = migrate(live, embedder, args.to, options)
    print(report.summary(), file=sys.stderr)
    return 0 if report.ok or (args.no_switch and not report.unavailable) else 1


def import_command(args: argparse.Namespace) -> int:
    """Import a catalogue archive (made by `export -o FILE.tar`), checked first."""
    from catalog.archive import import_archive, read_manifest

    manifest = read_manifest(args.archive)
    with open_target(args, int(manifest["dim"])) as catalog:
        summary = import_archive(catalog, args.archive)
    log.info(
        "imported %d tracks (%s) from %s",
        summary.n_tracks,
        ", ".join(f"checkpoint {k}: {n}" for k, n in sorted(summary.checkpoint_ids.items())),
        args.archive,
    )
    return 0


def snapshot_command(args: argparse.Namespace) -> int:
    """Copy the live catalogue consistently while services use it (SQLite directories)."""
    from catalog.snapshot import snapshot

    if _needs_directory(args):
        return 2
    summary = snapshot(args.index, args.out)
    log.info(
        "snapshot of %d tracks (write %d) in %s (%.1f s)",
        summary.n_tracks,
        summary.generation,
        summary.path,
        summary.seconds,
    )
    return 0


def restore_command(args: argparse.Namespace) -> int:
    """Make a snapshot the live catalogue (a new generation; services follow it)."""
    from catalog.snapshot import restore

    if _needs_directory(args):
        return 2
    name = restore(args.snapshot, args.index)
    log.info("generation %s (from %s) is live in %s", name, args.snapshot, args.index)
    return 0


def generations_command(args: argparse.Namespace) -> int:
    """List the generations of a catalogue directory and which one is live."""
    from catalog.sqlite_generations import generation_names, read_live
    from catalog.store import Catalog

    if _needs_directory(args):
        return 2
    live = read_live(args.index)
    for name in generation_names(args.index):
        with Catalog.open(args.index, generation=name, dim=None) as c:
            info, n = c.generation(), len(c)
            # A generation filled by the indexer records no build: name its tracks' models.
            built = info.checkpoint_id or ", ".join(sorted(c.stats()["checkpoint_ids"])) or "-"
        state = "live" if name == live else ("retired" if info.retired else "not live")
        print(f"{name or '(first)'}: {state}, {n} tracks, built with {built}")
    return 0


def _needs_directory(args: argparse.Namespace) -> bool:
    if args.index is None:
        log.error("this command works on catalogue directories (--index DIR)")
        return True
    return False


OPERATIONS = {
    "migrate": migrate_command,
    "import": import_command,
    "snapshot": snapshot_command,
    "restore": restore_command,
    "generations": generations_command,
}
