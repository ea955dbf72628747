"""The `pna` command: one subcommand per module, each exposing add_arguments(parser) and run(args) -> int."""
from __future__ import annotations

import argparse
import importlib
import sys

# name -> (module, one-line help)
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "train": ("pna.train_cli", "train one model on a synthetic task"),
    "reproduce": ("pna.reproduce", "train, analyse and write the report beside the paper's numbers (the main job)"),
    "sweep": ("pna.sweep", "the alpha x beta sweep with several seeds per cell"),
}


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand's arguments."""
    parser = argparse.ArgumentParser(
        prog="pna",
        description="Train, analyse and reproduce 'Architectural Proprioception in State Space Models' on the "
        "fused selective-scan kernels. Start with `pna reproduce --quick`; `pna COMMAND --help` for each command.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module, help_text) in SUBCOMMANDS.items():
        sub_parser = sub.add_parser(name, help=help_text, description=help_text)
        importlib.import_module(module).add_arguments(sub_parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `pna` console script. Invalid arguments exit with code 2 and a one-line error."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return importlib.import_module(SUBCOMMANDS[args.command][0]).run(args)
    except ValueError as exc:  # bad values found past argparse (config files, combinations)
        parser.exit(2, f"pna {args.command}: error: {exc}\n")


if __name__ == "__main__":
    sys.exit(main())
