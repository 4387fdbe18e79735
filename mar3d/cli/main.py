"""`mar3d` entry point: one sub-command per stage of the system."""
from __future__ import annotations

import argparse
import sys

from mar3d import __version__
from mar3d.cli import (bench, cache_latents, evaluate, evaluate_vae, export, generate, household, prepare, reconstruct,
                       serve, train)
from mar3d.cli.errors import CLIError

COMMANDS = {
    "prepare": prepare,
    "household": household,
    "train": train,
    "reconstruct": reconstruct,
    "cache-latents": cache_latents,
    "evaluate": evaluate,
    "evaluate-vae": evaluate_vae,
    "export": export,
    "generate": generate,
    "serve": serve,
    "bench": bench,
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mar3d",
        description="MAR-3D: single image -> high-resolution 3D mesh. Prepare data, train, generate, evaluate.",
    )
    parser.add_argument("--version", action="version", version=f"mar3d {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, module in COMMANDS.items():
        module.add_parser(sub, name)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        return COMMANDS[args.command].run(args)
    except CLIError as e:
        print(f"mar3d {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"mar3d {args.command}: interrupted; finished work is kept, run the same command to resume",
              file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
