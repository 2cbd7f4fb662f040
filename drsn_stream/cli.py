"""The ``drsn-stream`` command. Each subcommand lives in its own module; this file registers them.

``drsn-stream [run options]`` without a subcommand runs the live monitor (``run``).
"""

from __future__ import annotations

import argparse
import importlib
import os
import signal
import sys
import threading
from collections.abc import Callable

from drsn_stream import __version__
from drsn_stream.errors import DrsnStreamError, did_you_mean
from drsn_stream.runtime import (
    forget_start_up_signal,
    start_up_signal,
    start_up_signal_handler,
    start_up_unraisable_hook,
    stop_signals,
)

# name -> (module, add_arguments, run, one-line help)
SUBCOMMANDS: dict[str, tuple[str, str, str, str]] = {
    "run": ("drsn_stream.app.cli", "add_arguments", "run", "run the live monitor (the default)"),
    "models": ("drsn_stream.models.cli", "add_arguments", "run", "list built-in models and their metadata"),
    "train": ("drsn_stream.train.cli", "add_train_arguments", "run_train", "train a model: a CWRU config, or your own recordings (--data DIR)"),
    "eval": ("drsn_stream.train.cli", "add_eval_arguments", "run_eval", "evaluate a model on held-out data with noise"),
    "export": ("drsn_stream.train.cli", "add_export_arguments", "run_export", "export a checkpoint as a TorchScript artifact"),
    "baseline": ("drsn_stream.app.baseline_cli", "add_arguments", "run",
                 "learn a machine's normal (baseline learn) or show a learned profile (baseline show)"),
    "bench": ("drsn_stream.engine.bench_cli", "add_arguments", "run", "benchmark the engine against eager and TorchScript"),
    "publish": ("drsn_stream.sources.publish", "add_arguments", "run", "publish any source over ZeroMQ (sensor gateway)"),
    "devices": ("drsn_stream.sources.devices", "add_arguments", "run", "list sound input devices"),
    "keys": ("drsn_stream.sources.curve", "add_arguments", "run", "make key pairs for encrypted ZeroMQ links (CURVE)"),
    "cluster": ("drsn_stream.cluster.cli", "add_arguments", "run",
                "run the monitor on a Ray cluster (pip install drsn-stream[cluster]; docs/cluster.md)"),
}


def _load(name: str) -> tuple[Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int]]:
    module, add, run, _ = SUBCOMMANDS[name]
    mod = importlib.import_module(module)
    return getattr(mod, add), getattr(mod, run)


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The command line's parser (``command``'s options added; the other commands' only named)."""
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


def _chosen(parser: argparse.ArgumentParser, args: argparse.Namespace) -> argparse.ArgumentParser:
    """The parser of the (sub)command the arguments chose, however deep (``baseline learn``)."""
    while True:
        subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        name = getattr(args, subs[0].dest, None) if subs else None
        if name not in (subs[0].choices if subs else {}):
            return parser
        parser = subs[0].choices[name]


def _unknown(extra: list[str], parser: argparse.ArgumentParser) -> str:
    """argparse's words for arguments no option takes, with the nearest option for a mistyped one
    (``--sources`` -> ``--source``)."""
    known = [o for action in parser._actions for o in action.option_strings if o.startswith("--")]
    typed = [arg.split("=", 1)[0] for arg in extra if arg.startswith("--")]
    return f"unrecognized arguments: {' '.join(extra)}{did_you_mean(typed, known)}"


def main(argv: list[str] | None = None) -> int:
    """Runs one command. Ctrl-C, SIGTERM or SIGHUP at any moment ends it without a traceback
    (130/143/129 before the monitor is running; a running monitor stops cleanly with its summary)."""
    in_main = threading.current_thread() is threading.main_thread()
    saved = {sig: signal.getsignal(sig) for sig in stop_signals()} if in_main else {}
    unraisable = sys.unraisablehook
    if in_main:
        # start-up: they unwind like Ctrl-C, and are remembered; ``run`` takes them over once running
        forget_start_up_signal()
        for sig in saved:
            signal.signal(sig, start_up_signal_handler)
        sys.unraisablehook = start_up_unraisable_hook(unraisable)
    command = "run"
    try:
        argv = list(sys.argv[1:] if argv is None else argv)
        top_level = {"-h", "--help", "--version"}
        if not argv or (argv[0] not in SUBCOMMANDS and argv[0] not in top_level):
            argv.insert(0, "run")
        command = argv[0] if argv[0] in SUBCOMMANDS else "run"
        parser = build_parser(command if argv[0] in SUBCOMMANDS else None)
        args, extra = parser.parse_known_args(argv)
        if extra:
            # said by the command's own parser, so that its usage line is the one shown (the top
            # level's lists only COMMAND: no help for `drsn-stream --source sim --seconds 2`)
            chosen = _chosen(parser, args)
            chosen.error(_unknown(extra, chosen))
        _, run = _load(args.command)
        code = int(run(args) or 0)
        sys.stdout.flush()
        return code
    except DrsnStreamError as exc:
        print(f"drsn-stream {command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # Ctrl-C, or Terminated for the other stop signals
        return _stopped(command, start_up_signal() or signal.SIGINT)
    except BrokenPipeError:
        # the reader went away (`drsn-stream models | head -1`): what it wanted it has; stay quiet
        _silence_stdout()
        return 0
    except Exception:
        signum = start_up_signal()
        if signum is None:
            raise
        # the signal's exception, turned into another by code on its way: Python 3.11 wraps one
        # raised in a descriptor's __set_name__ (a dataclass field, as a module is imported) in a
        # RuntimeError, which printed a traceback for a Ctrl-C at start-up
        return _stopped(command, signum)
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)
        sys.unraisablehook = unraisable


def _stopped(command: str, signum: int) -> int:
    """A command a stop signal ended as it started: one line, exit status 128 + the signal."""
    if signum == signal.SIGINT:
        print(f"drsn-stream {command}: interrupted", file=sys.stderr)
    else:
        print(f"drsn-stream {command}: stopped ({signal.Signals(signum).name})", file=sys.stderr)
    return 128 + signum


def entry() -> None:
    """The console script and ``python -m drsn_stream``: ``main``, then a quick exit.

    Everything the command opened is closed by then (sources, sinks, sockets, the engine process,
    shared memory); what is left is the interpreter's own teardown of torch's objects, which takes
    seconds on a loaded machine and makes a Ctrl-C look ignored (docs/hardening.md). Streams are flushed
    and ZeroMQ is given its linger time to deliver the last results before the process ends.
    """
    for stream in (sys.stdout, sys.stderr):
        # a stream id, file or device name the terminal's encoding cannot show (an ASCII or Latin-1
        # locale) is escaped: with stdout's strict default no result line was printed and the
        # summary was a traceback
        try:
            stream.reconfigure(errors="backslashreplace")
        except (AttributeError, ValueError):  # not a text stream of io's (replaced, or closed)
            pass
    code = main()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    zmq = sys.modules.get("zmq")
    if zmq is not None and getattr(zmq.Context, "_instance", None) is not None:
        zmq.Context.instance().destroy(linger=2000)  # sockets close with at most 2 s to deliver
    os._exit(code)


def _silence_stdout() -> None:
    """Points stdout at /dev/null, so that the interpreter's final flush meets no broken pipe."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass


if __name__ == "__main__":
    entry()
