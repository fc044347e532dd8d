"""Command-line options made from configuration dataclasses.

A field's type and default are written once, in its dataclass; a CLI names the fields it
exposes with their help texts (`add_fields`) and reads them back (`replace_fields`). Options
with other shapes (lists, choices, flags named unlike their field) stay hand-written.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Mapping
from typing import Any, TypeVar

Config = TypeVar("Config")


def add_fields(
    parser: argparse.ArgumentParser | argparse._ArgumentGroup,
    config: Any,
    helps: Mapping[str, str],
) -> None:
    """One `--field-name` option per entry of `helps` (field -> help text), typed and
    defaulted from the dataclass instance `config`; booleans get `--x / --no-x`."""
    for name, text in helps.items():
        default = getattr(config, name)
        flag = "--" + name.replace("_", "-")
        if isinstance(default, bool):
            action = argparse.BooleanOptionalAction
            parser.add_argument(flag, action=action, default=default, help=text)
        else:
            parser.add_argument(flag, type=type(default), default=default, help=text)


def replace_fields(config: Config, args: argparse.Namespace, helps: Mapping[str, str]) -> Config:
    """`config` with the fields of `helps` taken from the parsed `args`."""
    return dataclasses.replace(config, **{name: getattr(args, name) for name in helps})
