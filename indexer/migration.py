"""`python -m indexer migrate`: re-embed a catalogue with another checkpoint, without downtime.

    live = the catalogue's live generation (services keep serving it meanwhile)
    shadow = live.open_generation(NAME)       a catalogue of its own, same location
    repeat: plan = difference(live, shadow)   (indexer/migration_plan.py)
            embed plan.embed from each track's recorded path (or the kept upload of its
            content), write with the live track's id, singer, metadata and creation time;
            copy metadata changes; remove what the live one removed
    live.switch_to(shadow, ready)             atomically, once nothing is left to copy

Every batch of `commit_every` tracks is committed to the shadow, and the plan is recomputed
from the two catalogues, so a run killed at any point (kill -9 included) resumes where it
stopped and ends as an uninterrupted run would. Tracks whose audio is gone (or no longer
the content that was indexed, or no longer usable) are reported; with `missing="keep"`
the switch waits until their audio is back, with `missing="drop"` the new generation goes
live without them (they stay in the retired one). Running services follow the switch
(service/catalog_swap.py).
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

from tqdm import tqdm

from catalog import CatalogBackend, CatalogError
from catalog.hashing import content_hash
from catalog.records import StoredTrack, Track
from indexer.migration_plan import MigrationPlan, changed_since, plan_migration, state
from indexer.run import auto_processes, in_order
from model.audio import MAX_TRACK_SECONDS
from model.embedding import Embedder
from model.errors import AudioError

log = logging.getLogger(__name__)
ROUNDS = 5  # catch-up passes before the switch holds writers while it catches up


@dataclass(frozen=True)
class MigrationOptions:
    missing: str = "keep"  # keep: no switch while audio is missing; drop: switch without it
    uploads: Path | None = None  # the upload store (<index dir>/audio): audio of uploads
    switch: bool = True  # False: build the shadow only
    workers: int = 2  # decoding threads
    processes: int | None = None  # decoding processes (None: as the indexer chooses)
    batch_size: int | None = None  # segments per encoder batch (None: the device's default)
    all_segments: bool = False
    commit_every: int = 64
    max_seconds: float | None = MAX_TRACK_SECONDS
    progress: bool = False


@dataclass
class MigrationReport:
    checkpoint_id: str
    generation: str  # the shadow's name
    n_tracks: int = 0  # in the live catalogue at the end
    n_embedded: int = 0  # by this run
    n_updated: int = 0  # metadata copied
    n_removed: int = 0  # shadow tracks removed (gone from the live catalogue)
    unavailable: dict[int, str] = field(default_factory=dict)  # track id -> why
    switched: bool = False
    already: bool = False  # the live catalogue was built by this checkpoint already
    wall_s: float = 0.0

    @property
    def ok(self) -> bool:
        return self.already or self.switched

    def summary(self) -> str:
        if self.already:
            return f"the live catalogue holds checkpoint {self.checkpoint_id}'s vectors already"
        lines = [
            f"generation {self.generation} (checkpoint {self.checkpoint_id}): {self.n_tracks} "
            f"tracks, {self.n_embedded} embedded by this run, {self.n_updated} metadata "
            f"updates, {self.n_removed} removed, {len(self.unavailable)} without usable audio "
            f"({self.wall_s:.1f} s)"
        ]
        lines += [f"  track {i}: {why}" for i, why in sorted(self.unavailable.items())]
        if self.switched:
            lines.append(f"switched: generation {self.generation} is live")
        elif self.unavailable:
            lines.append(
                "NOT switched: restore their audio (or re-index it) and run migrate again (it "
                "resumes), or pass --missing drop to switch without these tracks"
            )
        else:
            lines.append("NOT switched (--no-switch): run migrate again to switch")
        return "\n".join(lines)


def shadow_name(checkpoint_id: str, live_generation: str) -> str:
    """The shadow generation's name: the same for the same source and target (a run that
    was stopped resumes in it), another one for the next migration."""
    source = hashlib.sha256(live_generation.encode()).hexdigest()[:8]
    return f"{checkpoint_id}-from-{source}"


class _Migration:
    """One run: the live catalogue, its shadow, the embedder and the report."""

    def __init__(
        self,
        live: CatalogBackend,
        shadow: CatalogBackend,
        embedder: Embedder,
        o: MigrationOptions,
        report: MigrationReport,
    ):
        self.live, self.shadow, self.embedder, self.o, self.report = (
            live,
            shadow,
            embedder,
            o,
            report,
        )
        self.ckpt = embedder.checkpoint_id

    def plan(self) -> tuple[dict[int, Track], MigrationPlan]:
        source = state(self.live.iter_tracks())
        return source, plan_migration(source, state(self.shadow.iter_tracks()), self.ckpt)

    # -- applying a plan ---------------------------------------------------------------
    def apply(self, plan: MigrationPlan) -> None:
        if plan.remove:
            self.report.n_removed += len(self.shadow.remove_tracks(plan.remove, missing_ok=True))
        for track_id, changes in plan.update:
            self.shadow.update_track(track_id, **changes)
            self.report.n_updated += 1
        todo = [t for t in plan.embed if t.id not in self.report.unavailable]
        if todo:
            self.embed(todo)

    def audio_of(self, track: Track) -> Path | str:
        """The file holding `track`'s content, or why there is none (a string)."""
        why = "no path recorded and no kept upload"
        if track.path:
            path = Path(track.path)
            try:
                if content_hash(path) == track.content_hash:
                    return path
                why = f"{track.path} holds other audio than was indexed"
            except FileNotFoundError:
                why = f"{track.path} is gone"
            except OSError as err:
                why = f"{track.path} cannot be read ({err.strerror or err})"
        if self.o.uploads is not None and self.o.uploads.is_dir():
            kept = sorted(self.o.uploads.glob(f"{track.content_hash}.*"))
            if kept:
                return kept[0]
        return f"audio missing: {why}"

    def embed(self, tracks: list[Track]) -> None:
        sources: list[tuple[Track, Path]] = []
        for track in tracks:
            found = self.audio_of(track)
            if isinstance(found, str):
                self.report.unavailable[track.id] = found
                log.warning("track %d: %s", track.id, found)
            else:
                sources.append((track, found))
        bar = tqdm(total=len(sources), desc="migrating", unit="track", disable=not self.o.progress)
        processes = (
            auto_processes(self.embedder.device) if self.o.processes is None else self.o.processes
        )
        pool = None
        if processes > 0 and sources:
            pool = self.embedder.decode_pool(
                processes, features_in_workers=not self.embedder.selects_in_batches
            )
        pending: list[StoredTrack] = []
        try:
            for domain in sorted({t.domain for t, _ in sources}):
                batch = [(t, p) for t, p in sources if t.domain == domain]
                results = self.embedder.embed_many(
                    [p for _, p in batch],
                    domain,
                    self.o.all_segments,
                    workers=self.o.workers,
                    batch_size=self.o.batch_size,
                    max_seconds=self.o.max_seconds,
                    pool=pool,
                )
                for i, result in in_order(results):
                    track = batch[i][0]
                    bar.update(1)
                    if isinstance(result, AudioError):
                        self.report.unavailable[track.id] = f"audio unusable: {result.reason}"
                        continue
                    new = replace(
                        track,
                        checkpoint_id=self.ckpt,
                        duration_s=result.duration_s,
                        n_segments=result.n_segments,
                    )
                    pending.append(StoredTrack(new, result.vector))
                    if len(pending) >= self.o.commit_every:
                        self.commit(pending)
                        pending = []
        finally:
            self.commit(pending)  # an interrupted run keeps what it embedded
            bar.close()
            if pool is not None:
                pool.close()

    def commit(self, records: list[StoredTrack]) -> None:
        if records:
            self.report.n_embedded += len(self.shadow.restore_tracks(records))

    # -- switching ---------------------------------------------------------------------
    def ready(self, last_round: bool, seen: dict[int, Track]) -> Callable[[], bool]:
        """The check `switch_to` runs while writers are held: nothing left to copy (in the
        last round, what is left is copied now). `seen` gets the live state it checked."""

        def check() -> bool:
            source, plan = self.plan()
            if not plan.empty(self.report.unavailable):
                if not last_round:
                    return False
                self.apply(plan)
                source, plan = self.plan()
            seen.clear()
            seen.update(source)
            return plan.empty(self.report.unavailable)

        return check

    def carry_over(self, seen: dict[int, Track]) -> None:
        """After the switch: what reached the retired generation since the check (only
        where writers could not be held, Qdrant) is copied into the live one."""
        changed, removed = changed_since(seen, state(self.live.iter_tracks()))
        if changed or removed:
            log.warning(
                "%d writes reached the old generation during the switch; copying them",
                len(changed) + len(removed),
            )
            shadow = state(self.shadow.iter_tracks())
            plan = plan_migration(
                changed, {i: shadow[i] for i in changed if i in shadow}, self.ckpt
            )
            plan.remove = [i for i in removed if i in shadow]
            self.apply(plan)


def migrate(
    live: CatalogBackend,
    embedder: Embedder,
    checkpoint_file: str | Path | None,
    options: MigrationOptions | None = None,
) -> MigrationReport:
    """Re-embed the live catalogue `live` with `embedder` into a shadow generation, then make
    it live (see the module docstring). `checkpoint_file` is recorded for the services that
    follow the switch. Raises CatalogError (e.g. a backend without generations)."""
    o = options or MigrationOptions()
    start = time.perf_counter()
    ckpt = embedder.checkpoint_id
    source_generation = live.generation()
    held = live.checkpoint_ids()
    if held == {ckpt} or (not held and source_generation.checkpoint_id == ckpt):
        return MigrationReport(ckpt, source_generation.name, n_tracks=len(live), already=True)
    name = shadow_name(ckpt, source_generation.name)
    report = MigrationReport(ckpt, name)
    shadow = live.open_generation(name, dim=embedder.embed_dim)
    try:
        if shadow.generation().retired:
            raise CatalogError(f"generation {name} was live once and retired; it cannot return")
        shadow.record_build(ckpt, str(Path(checkpoint_file).resolve()) if checkpoint_file else None)
        run = _Migration(live, shadow, embedder, o, report)
        for number in range(1, ROUNDS + 1):
            shadow.add_roots(live.roots())
            _, plan = run.plan()
            log.info(
                "round %d: %d tracks to embed, %d to update, %d to remove, %d done",
                number,
                len(plan.embed),
                len(plan.update),
                len(plan.remove),
                plan.done,
            )
            run.apply(plan)
            if (report.unavailable and o.missing == "keep") or not o.switch:
                break
            seen: dict[int, Track] = {}
            if live.switch_to(shadow, run.ready(number == ROUNDS, seen)):
                report.switched = True
                run.carry_over(seen)
                break
        report.n_tracks = len(shadow)
    finally:
        shadow.close()
    report.wall_s = time.perf_counter() - start
    return report
