"""What a migration still has to do: the difference between the live generation of a
catalogue and the shadow generation being built from it, track by track (by id).

A shadow track is done when the live catalogue holds a track of the same id with the same
content and domain, and the shadow's was embedded by the target checkpoint; its metadata
(singer, path, title, external id) follows the live track's. The plan is recomputed from the
two catalogues each time, so a migration killed at any point resumes from what it committed.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from catalog.records import Track

METADATA = ("singer", "path", "title", "external_id")


@dataclass
class MigrationPlan:
    """Work left: tracks to embed, metadata to copy, shadow tracks to remove."""

    embed: list[Track] = field(default_factory=list)  # live tracks (audio to embed)
    update: list[tuple[int, dict]] = field(default_factory=list)  # shadow id -> changes
    remove: list[int] = field(default_factory=list)  # shadow ids the live one lacks
    done: int = 0  # shadow tracks already up to date

    def empty(self, ignored: Iterable[int] = ()) -> bool:
        """Nothing left, apart from tracks to embed whose ids are `ignored` (given up on)."""
        skip = set(ignored)
        return not (self.update or self.remove or [t for t in self.embed if t.id not in skip])


def state(tracks: Iterable[Track]) -> dict[int, Track]:
    return {t.id: t for t in tracks}


def plan_migration(
    live: dict[int, Track], shadow: dict[int, Track], checkpoint_id: str
) -> MigrationPlan:
    """The work that makes `shadow` hold every `live` track, embedded by `checkpoint_id`."""
    plan = MigrationPlan()
    for track_id, track in live.items():
        have = shadow.get(track_id)
        if (
            have is None
            or have.content_hash != track.content_hash
            or have.domain != track.domain
            or have.checkpoint_id != checkpoint_id
        ):
            plan.embed.append(track)
            continue
        changes = {k: getattr(track, k) for k in METADATA if getattr(have, k) != getattr(track, k)}
        if changes:
            plan.update.append((track_id, changes))
        else:
            plan.done += 1
    plan.remove = sorted(set(shadow) - set(live))
    return plan


def changed_since(
    before: dict[int, Track], after: dict[int, Track]
) -> tuple[dict[int, Track], list[int]]:
    """What happened to a catalogue between two states: (tracks added or changed, ids
    removed)."""
    changed = {i: t for i, t in after.items() if before.get(i) != t}
    return changed, sorted(set(before) - set(after))
