"""The two audio domains and the paper's retrieval scenarios (section 4.1)."""

from __future__ import annotations

#: Monophonic vocals (a karaoke or studio take) and mixed music (a finished song).
DOMAINS: tuple[str, str] = ("mono", "mixed")

#: A query's domain left to the audio: `model.features.choose_branch` picks the branch.
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
