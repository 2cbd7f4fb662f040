"""The ``drsn-stream`` command. Each subcommand lives in its own module; this file registers them.

``drsn-stream [run options]`` without a subcommand runs the live monitor (``run``).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable

from drsn_stream import __version__
from drsn_stream.errors import DrsnStreamError

# name -> (module, add_arguments, run, one-line help)
SUBCOMMANDS: dict[str, tuple[str, str, str, str]] = {
    "run": ("drsn_stream.monitor.cli", "add_arguments", "run", "run the live monitor (the default)"),
    "models": ("drsn_stream.models.cli", "add_arguments", "run", "list built-in models and their metadata"),
    "train": ("drsn_stream.train.cli", "add_train_arguments", "run_train", "train a model from a TOML config"),
    "eval": ("drsn_stream.train.cli", "add_eval_arguments", "run_eval", "evaluate a model on held-out data with noise"),
    "export": ("drsn_stream.train.cli", "add_export_arguments", "run_export", "export a checkpoint as a TorchScript artifact"),
    "bench": ("drsn_stream.engine.bench", "add_arguments", "run", "benchmark the engine against eager and TorchScript"),
    "publish": ("drsn_stream.sources.publish", "add_arguments", "run", "publish any source over ZeroMQ (sensor gateway)"),
    "devices": ("drsn_stream.sources.devices", "add_arguments", "run", "list sound input devices"),
    "cluster": ("drsn_stream.cluster.cli", "add_arguments", "run",
                "run the monitor on a Ray cluster (pip install drsn-stream[cluster]; docs/cluster.md)"),
}


def _load(name: str) -> tuple[Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int]]:
    module, add, run, _ = SUBCOMMANDS[name]
    mod = importlib.import_module(module)
    return getattr(mod, add), getattr(mod, run)


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="drsn-stream",
        description=(
            "Live machine-condition and sound monitoring with Deep Residual Shrinkage Networks. "
            "Without a subcommand, runs the live monitor: e.g. `drsn-stream --source sim`, "
            "`drsn-stream --source mic`, `drsn-stream --source zmq://127.0.0.1:5555`."
        ),
        epilog="`drsn-stream run --help` lists the monitor's options; `drsn-stream CMD --help` each command's.",
    )
    parser.add_argument("--version", action="version", version=f"drsn-stream {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (_, _, _, help_text) in SUBCOMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if command is None or command == name:
            add, _ = _load(name)
            add(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    top_level = {"-h", "--help", "--version"}
    if not argv or (argv[0] not in SUBCOMMANDS and argv[0] not in top_level):
        argv.insert(0, "run")
    command = argv[0] if argv[0] in SUBCOMMANDS else None
    parser = build_parser(command)
    args = parser.parse_args(argv)
    _, run = _load(args.command)
    try:
        return int(run(args) or 0)
    except DrsnStreamError as exc:
        print(f"drsn-stream {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
