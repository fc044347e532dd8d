"""The two audio domains, `auto` and the branch it picks, and the paper's retrieval scenarios
(section 4.1)."""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from model.segment_selection import SegmentSelection

#: Monophonic vocals (a karaoke or studio take) and mixed music (a finished song).
DOMAINS: tuple[str, str] = ("mono", "mixed")

#: A query's domain left to the audio: `choose_branch` picks the branch.
AUTO = "auto"

#: Scenario name -> (query domain, target domain).
SCENARIOS: dict[str, tuple[str, str]] = {
    "mono2mono": ("mono", "mono"),
    "mix2mix": ("mixed", "mixed"),
    "mono2mix": ("mono", "mixed"),
}

#: Display names of the scenarios, as the paper writes them.
SCENARIO_TITLES: dict[str, str] = {
    "mono2mono": "Mono2Mono",
    "mix2mix": "Mix2Mix",
    "mono2mix": "Mono2Mix",
}


def selection_domain(domain: str) -> str:
    """The domain a query's segments are chosen (and its flags computed) as: `auto` as mono."""
    return "mono" if domain == AUTO else domain


def choose_branch(selection: SegmentSelection, domain: str) -> tuple[SegmentSelection, str]:
    """The encoder branch for a query declared `domain`, and its selection as reported.

    `mono` / `mixed`: that branch, the selection unchanged. `auto` (selected as mono): the
    mixed branch when the voice detector heard mostly accompaniment (`mostly_accompaniment`,
    domain_score over its threshold), else mono. Takes with a backing track bleeding in found
    their singer more often that way on some sets, less on others (model card, voice
    detector: `bench/bleed_branches.py`). `domain_mismatch` is dropped, since the branch
    follows the audio; `mostly_accompaniment` stays, to say why.
    """
    branch = branch_of(selection, domain)
    if domain != AUTO or branch == "mono":
        return selection, branch
    flags = tuple(f for f in selection.flags if f != "domain_mismatch")
    return replace(selection, flags=flags), branch


def branch_of(selection: SegmentSelection, domain: str) -> str:
    """The encoder branch of `choose_branch`: the declared domain, or for `auto` mixed when
    the voice detector heard mostly accompaniment, else mono."""
    if domain != AUTO:
        return domain
    return "mixed" if "mostly_accompaniment" in selection.flags else "mono"
