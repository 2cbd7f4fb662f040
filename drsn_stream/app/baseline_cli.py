"""``drsn-stream baseline learn|show``: learn a machine's normal from any source, or show a profile."""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

from drsn_stream.app.cli import config_from_args
from drsn_stream.app.pipeline import Pipeline, RunConfig
from drsn_stream.config import arg_duration, arg_number
from drsn_stream.dsp.envelope import learned_fault
from drsn_stream.errors import ConfigError
from drsn_stream.monitor.baseline import STOPPED_SHARE, Profile, StreamBaseline, learning_path, read_learnings


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    learn = sub.add_parser("learn", help="learn every stream of the sources and write a profile",
                           description="Runs the sources through the model (files as fast as possible) and fits each "
                                       "stream's normal: the statistics of the model's pooled features and an alarm "
                                       "threshold from a held-back part of the data.")
    learn.add_argument("--source", "-s", action="append", required=True, metavar="SPEC",
                       help="a source as for the monitor (file:PATH, zmq://..., mic, sim...); repeat for several")
    learn.add_argument("--model", "-m", help="built-in model name or .pt path (default: as the monitor picks)")
    learn.add_argument("--duration", type=arg_duration,
                       help="stop learning after DURATION (e.g. 90, 30s, 10m, 1h30m; live sources)")
    learn.add_argument("--hop", type=int, help="samples between windows (default: the model's hop)")
    learn.add_argument("--out", "-o", required=True, metavar="PROFILE", help="the profile to write (JSON)")
    learn.add_argument("--config", "-c", metavar="TOML",
                       help="a run config whose [machine] and [envelope] tables give the streams' bearings and speeds: "
                            "the profile then learns each machine's envelope evidence too (its own lines, which a "
                            "fault type must rise over)")
    learn.add_argument("--bearing", metavar="NAME", help="bearing geometry of every stream (a name, orders or dimensions), as for the monitor's --bearing")
    learn.add_argument("--rpm", type=arg_number(float, above=0, most=1e6), help="shaft speed (rpm) of every stream, as for the monitor")
    show = sub.add_parser("show", help="print what a profile holds, and the learnings still under way beside it")
    show.add_argument("profile")


def run(args: argparse.Namespace) -> int:
    if args.action == "show":
        print(show(Path(args.profile)))
        return 0
    # the bearing and speed only: the config's sinks, alarms and the rest are the monitor's
    machine = config_from_args(argparse.Namespace(source=args.source, config=args.config, bearing=args.bearing,
                                                  rpm=args.rpm))
    cfg = RunConfig(sources=tuple(args.source), model=args.model, duration=args.duration, hop=args.hop,
                    fast=True, learn_s=math.inf, machine=machine.machine, envelope=machine.envelope)
    pipe = Pipeline(cfg)
    assert pipe.baseline is not None
    pipe.baseline.kept_elsewhere()  # saved below, to --out
    pipe.start()
    try:
        pipe.wait()
    except KeyboardInterrupt:
        pass
    finally:
        pipe.stop()
    assert pipe.baseline is not None
    profile = pipe.baseline.fit()
    for sid, message in pipe.baseline.notes:
        if "learned" in message or "not learned" in message:
            print(f"{sid}: {message}", file=sys.stderr)
    for sid, message in pipe.too_short:
        print(f"{sid}: {message}", file=sys.stderr)
    for err in pipe.errors:
        print(f"drsn-stream baseline: {err}", file=sys.stderr)
    if not profile.streams:
        print("drsn-stream baseline: error: no stream gave enough windows to learn from; learn for longer",
              file=sys.stderr)
        return 2
    profile.settings = {"sources": list(args.source)}
    profile.save(args.out)
    print(describe(profile, args.out))
    for sid, b in sorted(profile.streams.items()):  # (the monitor says it too, as it starts on the profile)
        fault = learned_fault(b.envelope["median_db"], cfg.envelope) if b.envelope else None
        if fault is not None:
            print(f"{sid}: the envelope found {fault[1].upper()} lines ({fault[2]:.1f} dB) while it learned: if the "
                  "bearing was not healthy then, they are taken for its normal; learn again once it is", file=sys.stderr)
    return 0


def describe(profile: Profile, where: str) -> str:
    lines = [f"{where}: baseline of model {profile.model} (weights {profile.model_digest[:12]}), "
             f"{profile.sample_rate} Hz, window {profile.window}, hop {profile.hop}, created {profile.created or 'now'}"]
    for sid, b in sorted(profile.streams.items()):
        rest = f"; at rest under a level of {STOPPED_SHARE * b.level_low:.3g}" if math.isfinite(b.level_low) else ""
        if b.dc_levels:
            rest += "; levels learned with the DC offset in (learn again on a DC-coupled sensor)"
        if math.isfinite(b.rpm_low):
            rest += f"; learned at {b.rpm_low:.0f}-{b.rpm_high:.0f} rpm"
        if b.envelope:
            med = b.envelope["median_db"]
            rest += (f"; envelope evidence {', '.join(f'{k.upper()} {v:.1f}' for k, v in med.items())} dB "
                     f"(median of {b.envelope['blocks']} blocks)")
        if b.states:
            sizes = [b.windows - sum(st.windows for st in b.states)] + [st.windows for st in b.states]
            limit = (f"{1 + len(b.states)} operating states of {', '.join(map(str, sizes))} windows, thresholds "
                     f"{', '.join(f'{th:.3g}' for th in [b.threshold, *(st.threshold for st in b.states)])}")
        else:
            limit = f"threshold {b.threshold:.3g}"
        lines.append(f"  {sid}: {b.windows} windows ({b.held_back} held back), {_learned_when(b)}; "
                     f"{limit} (Mahalanobis distance of {b.features} features"
                     f"{' and the level' if b.with_level else ''}){rest}")
    return "\n".join(lines)


def _learned_when(b: StreamBaseline) -> str:
    """When a baseline's first and last learning windows were captured: both ends, not a span as
    a duration (a learning taken up after a restart spans the time between the runs too)."""
    if b.learned_from <= 1e9:  # the recording's own clock (a replay)
        return f"{b.learned_from:.1f}-{b.learned_to:.1f} s of a replay"
    first, last = time.gmtime(b.learned_from), time.gmtime(b.learned_to)
    end = "%H:%M:%S" if first[:3] == last[:3] else "%Y-%m-%d %H:%M:%S"
    return f"learned {time.strftime('%Y-%m-%d %H:%M:%S', first)} to {time.strftime(end, last)} UTC"


def show(path: Path) -> str:
    """``baseline show``: the profile, and the learnings ``--learn --baseline PATH`` left under way
    beside it (``learning_path``), also where no baseline is learned yet."""
    beside = learning_path(path)
    if path.exists() or not beside.exists():
        lines = [describe(Profile.load(path), str(path))]  # none of either: Profile.load says so
    else:
        lines = [f"{path}: no baseline learned yet"]
    if beside.is_dir():
        return "\n".join([*lines, f"{beside} is a folder: --learn cannot keep the baselines being learned there "
                                   "over a restart; move it away"])
    if beside.exists():
        try:
            head, learnings = read_learnings(beside)
        except ConfigError as exc:
            return "\n".join([*lines, f"{exc}; the next --learn run writes it over"])
        hop, rate = head.get("hop"), head.get("sample_rate")
        lines.append(f"{beside}: {len(learnings)} learning(s) under way, taken up by the next --learn run "
                     f"with --baseline {path}")
        for sid, d in sorted(learnings.items()):
            seen = d["seen"] if isinstance(d["seen"], int) else 0
            span = f", {max(0, seen - 1) * hop / rate:.1f} s of signal" if isinstance(hop, int) and isinstance(rate, int) and rate else ""
            lines.append(f"  {sid}: {seen} windows learned from so far{span} ({len(d['features'])} kept)")
    return "\n".join(lines)
