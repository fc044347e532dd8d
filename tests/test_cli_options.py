"""Options made from configuration dataclasses (model.cli.options) and their dict round trip
(model.stored.Stored)."""

from __future__ import annotations

import argparse
from dataclasses import replace

from model.cli import train_voice
from model.cli.options import add_evaluation_runtime, evaluation_cache
from model.evaluation.cache import default_cache_dir
from model.features import FeatureConfig
from model.training.voice import VoiceTrainConfig
from model.voice import DetectorDims, DetectorRule


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser()
    train_voice.add_arguments(parser)
    return parser


def parse(*argv: str) -> argparse.Namespace:
    return _parser().parse_args(list(argv))


def test_options_default_to_the_dataclass_and_read_back_into_it():
    from model.cli.options import replace_fields

    args = parse()
    assert replace_fields(VoiceTrainConfig(), args, train_voice.TRAIN_OPTIONS) == VoiceTrainConfig()
    assert replace_fields(DetectorRule(), args, train_voice.RULE_OPTIONS) == DetectorRule()

    args = parse("--steps", "7", "--lr", "0.5", "--min-voice-s", "2.5")
    tc = replace_fields(VoiceTrainConfig(), args, train_voice.TRAIN_OPTIONS)
    rule = replace_fields(DetectorRule(), args, train_voice.RULE_OPTIONS)
    assert tc == replace(VoiceTrainConfig(), steps=7, lr=0.5)
    assert rule == replace(DetectorRule(), min_voice_s=2.5)
    assert isinstance(tc.steps, int) and isinstance(rule.min_voice_s, float)


def test_help_is_the_comment_beside_or_above_the_field():
    from dataclasses import dataclass

    from model.cli.options import field_comments

    @dataclass
    class Example:
        """Docstring lines like steps: a decoy are not comments."""

        steps: int = 3  # optimiser steps
        # learning rate,
        # peak of the one-cycle schedule
        lr: float = 0.1
        quiet: bool = False

    assert field_comments(Example) == {
        "steps": "optimiser steps",
        "lr": "learning rate, peak of the one-cycle schedule",
        "quiet": "",
    }
    # every option a CLI makes from a dataclass is documented
    helps = {a.dest: a.help for a in _parser()._actions}
    for name in (*train_voice.TRAIN_OPTIONS, *train_voice.RULE_OPTIONS):
        assert helps[name], name


def test_stored_configs_round_trip_and_ignore_unknown_keys():
    dims = DetectorDims(channels=(4, 8))
    stored = dims.to_dict()
    assert stored["channels"] == [4, 8]  # plain JSON types in the checkpoint
    assert DetectorDims.from_dict({**stored, "added_by_a_newer_version": 1}) == dims
    features = replace(FeatureConfig(), n_mels=64)
    assert FeatureConfig.from_dict(features.to_dict()) == features


def _all_parsers():
    """(name, parser) of every `python -m model` command and `python -m indexer` command."""
    import importlib

    from indexer.__main__ import build_parser
    from model.__main__ import COMMANDS

    for name, (module, _) in COMMANDS.items():
        p = argparse.ArgumentParser(prog=f"python -m model {name}")
        importlib.import_module(module).add_arguments(p)
        yield f"model {name}", p
    root = build_parser()
    sub = next(a for a in root._actions if isinstance(a, argparse._SubParsersAction))
    yield from ((f"indexer {n}", p) for n, p in sub.choices.items())


def test_every_cli_option_has_a_description_and_shows_its_default():
    missing = []
    for name, parser in _all_parsers():
        text = parser.format_help()  # renders every %(default)s: a bad format string raises
        shows_defaults = parser.formatter_class is argparse.ArgumentDefaultsHelpFormatter
        for a in parser._actions:
            if isinstance(a, argparse._HelpAction):
                continue
            if not a.help:
                missing.append(f"{name} {a.dest}: no description")
            elif (
                a.option_strings
                and a.default not in (None, False, [], "")
                and "default" not in a.help
                and not shows_defaults
            ):
                missing.append(f"{name} {a.dest}: default {a.default!r} not shown")
        assert "--help" in text
    assert not missing, missing


def test_cache_dir_empty_means_no_cache_not_the_working_directory(tmp_path):
    """`evaluate` and `calibrate` share these options; '' once wrote the cache into cwd."""
    p = argparse.ArgumentParser()
    add_evaluation_runtime(p)
    assert evaluation_cache(p.parse_args(["--cache-dir", ""]).cache_dir) is None
    assert evaluation_cache(p.parse_args([]).cache_dir) == default_cache_dir()
    assert evaluation_cache(p.parse_args(["--cache-dir", str(tmp_path)]).cache_dir) == tmp_path
