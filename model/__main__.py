"""`python -m model COMMAND ...`: thin command-line front ends over the library.

Each command lives in `model/cli/<name>.py` and exposes `add_arguments(parser)` and
`main(args) -> int`; they are imported only when chosen, so `--help` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m model", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    argv = sys.argv[1:] if argv is None else argv
    # Build only the chosen command's parser (plus one-line help for the others).
    chosen = next((a for a in argv if a in COMMANDS), None)
    for name, (module_name, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if name == chosen:
            module = importlib.import_module(module_name)
            module.add_arguments(p)
            p.set_defaults(_main=module.main)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )
    return int(args._main(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
