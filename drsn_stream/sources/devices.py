"""``drsn-stream devices``: list sound inputs the ``mic`` source can open."""

from __future__ import annotations

import argparse
import json

from drsn_stream.errors import SourceError
from drsn_stream.sources.mic import input_devices


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print the list as JSON")


def run(args: argparse.Namespace) -> int:
    try:
        devs = input_devices()
    except SourceError as exc:
        print(f"error: {exc}")
        return 2
    if getattr(args, "json", False):
        print(json.dumps(devs, indent=2))
        return 0 if devs else 1
    if not devs:
        print("No sound input devices found. Connect a microphone or sound card (check `arecord -l`), "
              "or monitor another source: --source sim, file:PATH, zmq://HOST:PORT.")
        return 1
    print(f"{'':2}{'idx':>4}  {'name':40}  {'host API':12}  {'ch':>3}  {'default rate':>12}")
    for d in devs:
        mark = "*" if d["default"] else " "
        print(f"{mark:2}{d['index']:>4}  {d['name'][:40]:40}  {d['hostapi'][:12]:12}  {d['channels']:>3}  "
              f"{d['default_rate']:>9.0f} Hz")
    print("* = default input. Use --source mic:INDEX or mic:NAME, e.g. "
          f"mic:{devs[0]['index']}?rate={devs[0]['default_rate']:.0f}")
    return 0
