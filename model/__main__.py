"""`python -m model COMMAND ...`: thin command-line front ends over the library.

Each command lives in `model/cli/<name>.py` and exposes `add_arguments(parser)` and
`main(args) -> int`; they are imported only when chosen, so `--help` stays fast. The wheel and
the service image leave the research code (model.training, model.evaluation) out: a command
that needs it then says so and exits with status 2.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import logging
import sys
from collections.abc import Iterator

COMMANDS = {
    "embed": ("model.cli.embed", "embed audio files into singer vectors (.npy)"),
    "import-keras": ("model.cli.import_keras", "convert the authors' Keras .h5 weights"),
    "mashup": ("model.cli.mashup", "generate mashup mixes of vocals over background tracks"),
    "studio-mix": ("model.cli.studio_mix", "produce, mix and master vocals over dense bands"),
    "train": ("model.cli.train", "train a MONO, MIXED or CROSS model"),
    "tune-speaker": ("model.cli.tune_speaker", "tune the speaker encoder for finished songs"),
    "train-voice": ("model.cli.train_voice", "train the singing-voice detector"),
    "evaluate": ("model.cli.evaluate", "singer-ID and query-by-singer evaluation"),
    "calibrate": ("model.cli.calibrate", "fit a checkpoint's score calibration (open set)"),
    "fuse": ("model.cli.fuse", "fuse a CROSS checkpoint with the speaker encoder"),
}


# Research packages a source checkout has and an installed wheel does not.
RESEARCH_PACKAGES = ("model.training", "model.evaluation")


class ResearchCodeMissing(RuntimeError):
    """A command needs a research package this installation leaves out."""

    def __init__(self, command: str, package: str) -> None:
        super().__init__(
            f"`python -m model {command}` needs {package}, research code that this installation "
            "does not include (the wheel and the service image carry only the inference core). "
            "Run it from a source checkout (`make test` or `pip install -e '.[dev]'`)."
        )


def _research_package(exc: ModuleNotFoundError) -> str | None:
    """The research package whose absence `exc` reports, or None (another missing module)."""
    name = exc.name or ""
    return next((p for p in RESEARCH_PACKAGES if name == p or name.startswith(p + ".")), None)


def main(argv: list[str] | None = None) -> int:
    try:
        return _run(argv)
    except ResearchCodeMissing as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def _run(argv: list[str] | None) -> int:
    parser = argparse.ArgumentParser(prog="python -m model", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    argv = sys.argv[1:] if argv is None else argv
    # Build only the chosen command's parser (plus one-line help for the others).
    chosen = next((a for a in argv if a in COMMANDS), None)
    for name, (module_name, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if name == chosen:
            with _research_guard(name):
                module = importlib.import_module(module_name)
                module.add_arguments(p)
            p.set_defaults(_main=module.main)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )
    # Commands import their research modules lazily, some only for some options.
    with _research_guard(args.command):
        return int(args._main(args) or 0)


@contextlib.contextmanager
def _research_guard(command: str) -> Iterator[None]:
    """Turn a missing research package into `ResearchCodeMissing`; other errors pass."""
    try:
        yield
    except ModuleNotFoundError as exc:
        package = _research_package(exc)
        if package is None:
            raise
        raise ResearchCodeMissing(command, package) from exc


if __name__ == "__main__":
    sys.exit(main())
