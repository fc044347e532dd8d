"""Command-line options shared by the CLIs, and options made from configuration dataclasses.

A dataclass field's type, default and help are written once, in its class: the help is the
comment beside the field (or the comment lines right above it), so a CLI only names the fields
it exposes (`add_fields`) and reads them back (`replace_fields`). Options with other shapes
(lists, choices, flags named unlike their field) stay hand-written.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import functools
import inspect
import io
import textwrap
import tokenize
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

Config = TypeVar("Config", bound="DataclassInstance")
Parser = argparse.ArgumentParser | argparse._ArgumentGroup

#: The default model's MIR-1K validation and held-out singers: `model.training.recipe`'s
#: VAL_SINGERS and HOLDOUT, repeated so that `--help` needs no torch (tests keep them equal).
VALIDATION_SINGERS = ("ariel", "stool")
HELD_OUT_SINGERS = ("abjones", "bobon", "geniusturtle", "khair", "yifen")


@functools.cache
def field_comments(cls: type) -> dict[str, str]:
    """Field name -> its comment in the source of dataclass `cls` ({} without source)."""
    try:
        source = textwrap.dedent(inspect.getsource(cls))
    except (OSError, TypeError):
        return {}
    comments = {
        tok.start[0]: tok.string.lstrip("#").strip()
        for tok in tokenize.generate_tokens(io.StringIO(source).readline)
        if tok.type == tokenize.COMMENT
    }
    lines = source.splitlines()
    out = {}
    for node in ast.parse(source).body[0].body:  # type: ignore[attr-defined]
        if not (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)):
            continue
        first, last = node.lineno, node.end_lineno or node.lineno
        beside = [comments[n] for n in range(first, last + 1) if n in comments]
        above: list[str] = []
        n = first - 1  # comment-only lines right above the field
        while n in comments and lines[n - 1].lstrip().startswith("#"):
            above.insert(0, comments[n])
            n -= 1
        out[node.target.id] = " ".join(beside or above)
    return out


def _escaped(helps: dict[str, str]) -> dict[str, str]:
    return {k: v.replace("%", "%%") for k, v in helps.items()}  # argparse formats help with %


def add_fields(parser: Parser, config: Any, names: Sequence[str]) -> None:
    """One `--field-name` option per field of `names`, typed, defaulted and documented from
    the dataclass instance `config`; booleans get `--x / --no-x`."""
    cls: type = type(config)
    helps = _escaped(field_comments(cls))
    for name in names:
        default = getattr(config, name)
        flag = "--" + name.replace("_", "-")
        if isinstance(default, bool):
            action = argparse.BooleanOptionalAction
            parser.add_argument(flag, action=action, default=default, help=helps.get(name))
        else:
            text = f"{helps.get(name) or name} (default: %(default)s)"
            parser.add_argument(flag, type=type(default), default=default, help=text)


def add_overrides(parser: Parser, config: Any, names: Sequence[str]) -> None:
    """Like `add_fields`, for options that override a configuration file: unset (None) unless
    given, their help naming the dataclass default that applies when the file does not."""
    cls: type = type(config)
    helps = _escaped(field_comments(cls))
    for name in names:
        default = getattr(config, name)
        text = f"{helps.get(name) or name} (default: the --config file's, else {default})"
        parser.add_argument("--" + name.replace("_", "-"), type=type(default), help=text)


def replace_fields(config: Config, args: argparse.Namespace, names: Sequence[str]) -> Config:
    """`config` with the fields `names` taken from the parsed `args`."""
    return dataclasses.replace(config, **{name: getattr(args, name) for name in names})


def name_list(text: str) -> list[str]:
    """argparse type of a comma-separated list: "a,b," -> ["a", "b"]; "" -> []."""
    return [x for x in text.split(",") if x]


def add_device(parser: Parser, default: str | None = "auto") -> None:
    """--device, for the model (and FAISS where a catalogue is open)."""
    parser.add_argument(
        "--device",
        default=default,
        help=f"auto (CUDA when available), cpu, cuda, cuda:N (default: {default or 'auto'})",
    )


def add_embedding_options(parser: Parser, max_seconds: float) -> None:
    """How files become vectors (`model embed`, the indexer): device, decoding threads, batch,
    segment choice and the longest file accepted."""
    add_device(parser)
    parser.add_argument("--workers", type=int, default=2, help="decoding threads (default: 2)")
    parser.add_argument(
        "--batch-size",
        type=int,
        help="segments per inference batch, gathered across files (default: 16 on a CPU, 64 "
        "on CUDA)",
    )
    parser.add_argument(
        "--all-segments",
        action="store_true",
        help="embed every full segment (no voice-activity selection)",
    )
    parser.add_argument(
        "--max-seconds",
        type=float,
        default=max_seconds,
        help="longest decoded audio per file; a longer file is reported as unusable "
        f"(default: {max_seconds:g})",
    )


def add_evaluation_runtime(parser: Parser) -> None:
    """Embedding cache and CPU budget of `model evaluate` and `model calibrate`."""
    parser.add_argument(
        "--cache-dir",
        help="embedding cache ('' for none) (default: $XDG_CACHE_HOME/singer-retrieval/evaluation)",
    )
    add_device(parser, default=None)
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        help="decoding threads beside the inference thread (0: decode inline) (default: 1)",
    )
    parser.add_argument(
        "--torch-threads",
        type=int,
        default=1,
        help="CPU threads for inference; 1 keeps a small or shared machine from stalling on "
        "oversubscribed OpenMP threads (0: torch's default) (default: 1)",
    )


def evaluation_cache(value: str | None) -> Path | None:
    """The folder `--cache-dir` names: the default cache when not given, none for ''.

    (As `Path`, '' would have been the working directory, and the cache written there.)"""
    from model.evaluation.cache import default_cache_dir

    if value is None:
        return default_cache_dir()
    return Path(value) if value else None


def add_calibration_impostors(
    parser: Parser, flag: str, default: Sequence[str], which: str
) -> None:
    """The singers whose clips are the calibration's impostors (`calibrate`, `evaluate`);
    `which` says in the help what the `default` singers are."""
    parser.add_argument(
        flag,
        type=name_list,
        default=list(default),
        metavar="A,B,...",
        help="singers kept out of every catalogue whose clips are the calibration's impostor "
        "queries; pick singers the checkpoint was not trained on (empty string: "
        f"leave-one-singer-out rotations) (default: {','.join(default)}, {which})",
    )
