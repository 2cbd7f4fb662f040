"""Envelope fault type on every CWRU recording: per-file table and per-class figures.

    python tools/eval_envelope.py [--data ../shared/data/cwru] [--markdown] [--null 2000] [--channel FE]

Each recording's drive-end channel is cut into 1-second blocks (the 48 kHz healthy baseline is
first resampled to 12 kHz with ``resample_poly(x, 1, 4)``); every block is analysed with the CWRU
drive-end geometry (6205) and the shaft speed the file records (``X###RPM``), with the default
``EnvelopeSettings`` (one rule for every file). ``--null N`` also puts N blocks of white Gaussian
noise through the same procedure and prints the percentiles of the largest family evidence: the
threshold's justification. ``--channel FE`` reads the fan-end accelerometer instead (the fault is
still in the drive-end bearing, seen from a sensor further from it). ``--learn`` decides each
block against the machine's own evidence as well, as a stream whose baseline learned it is: the
median per family of the healthy recording's blocks (each healthy block against the median of
the others: held out), ``margin_db`` over it. ``--native`` analyses each recording at its own rate
instead (only the healthy one differs: 48 kHz, bands up to 21.6 kHz), to see what the bands above
the model's 6 kHz hold on a healthy machine.

``--ramp PCT`` plays every recording as a machine whose speed keeps changing: time-warped so that
its shaft runs down from the recorded speed to ``1 - --swing`` of it and back, PCT % of the
recorded speed per second (a triangle), in 512-sample frames that each carry their mean speed
(the wire format's ``rpm``, a tachometer's reading). The blocks go through the monitor's envelope
stage (``EnvelopeStage`` reading a ``SpeedLog``, windows of 2048 every 512 samples) three ways:
following the speed (order tracking, as the monitor does), at the speed of each block's two ends
without following it (the monitor before order tracking: a block whose speed moved by more than
the lines' 2 % gives no evidence), and every block at its mean speed. The warp moves the
structure's resonances with the speed too, which a real machine's do not; the fault lines move
as a real machine's do.

``--tach-noise S`` adds Gaussian jitter of S (relative, e.g. 0.02) to each frame's reading, as a
tachometer counting a pulse more or less per frame gives; ``--ramp 0`` keeps the recorded speed.

    python tools/eval_envelope.py --ramp 10 [--swing 0.15] [--tach-noise 0.02]
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import re
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
from scipy.signal import resample_poly

from drsn_stream.dsp.envelope import (
    FAMILIES,
    EnvelopeSettings,
    analyse_block,
    bearing_geometry,
    decide,
    median_evidence,
)
from drsn_stream.errors import ConfigError, DataError, run_tool
from drsn_stream.sources.file import mat_rpm, read_recording

RATE = 12000.0
MAX_NULL = 100_000  # blocks of white noise (about 1 ms each): minutes, not days
MAX_SPEED_ERROR = 0.5  # a speed off by half is not a speed
_CLASS = {"B": "ball", "IR": "inner_race", "OR": "outer_race"}


def truth(name: str) -> str:
    """The fault type a CWRU file name says (``normal_*`` -> none)."""
    if name.startswith("normal"):
        return "none"
    m = re.search(r"_(B|IR|OR)\d{3}", name)
    if not m:
        raise DataError(f"{name}: not a CWRU file name (e.g. 12k_Drive_End_IR007_0_105.mat); remove it from --data")
    return _CLASS[m.group(1)]


def blocks(path: Path, seconds: float = 1.0, channel: str = "DE", native: bool = False) -> tuple[np.ndarray, float]:
    """(blocks (k, n) at 12 kHz, shaft speed Hz) of one recording's drive-end (or ``channel``) channel;
    ``native``: at the recording's own rate (``n`` samples per ``seconds``)."""
    x, rate = read_recording(path, channel=channel)
    x = x[:, 0].astype(np.float64)
    if rate != RATE and not native:
        x = resample_poly(x, int(RATE), int(rate))
        rate = RATE
    rpm = mat_rpm(path)
    if rpm is None:
        raise DataError(f"{path.name}: no RPM variable in the file; the envelope needs the shaft speed")
    n = int(rate * seconds)
    k = x.shape[0] // n
    if k == 0:
        raise DataError(f"{path.name}: {x.shape[0] / rate:.2f} s of signal, shorter than one {seconds:g}-second block")
    return x[: k * n].reshape(k, n), rpm / 60.0


def overrides(items: list[str]) -> dict[str, float | int]:
    """``--set KEY=VALUE`` items as EnvelopeSettings fields (one line for a bad one)."""
    types = {f.name: f.type for f in dataclasses.fields(EnvelopeSettings)}
    over: dict[str, float | int] = {}
    for item in items:
        key, eq, value = item.partition("=")
        key = key.strip()
        if not eq or key not in types:
            raise ConfigError(f"--set {item!r}: give KEY=VALUE with KEY one of {', '.join(types)}")
        try:
            number = int(value) if types[key] in ("int", int) else float(value)
        except ValueError:
            kind = "a whole number" if types[key] in ("int", int) else "a number"
            raise ConfigError(f"--set {item!r}: {key} takes {kind}, not {value!r}") from None
        if not math.isfinite(number):
            raise ConfigError(f"--set {item!r}: {key} must be finite")
        over[key] = number
    return over


FRAME = 512  # samples per frame of a --ramp recording (each carries its mean speed)
HOP, WINDOW = 512, 2048  # the monitor's windows, as the envelope stage is fed them


def triangle(n: int, rate: float, pct: float, swing: float) -> np.ndarray:
    """Per sample, a speed relative to the recording's: from 1 down to ``1 - swing`` and back, by
    ``pct`` % per second (0: 1 throughout)."""
    if pct == 0:
        return np.ones(n)
    t = np.arange(n) / rate
    leg = swing / (pct / 100.0)  # seconds from top to bottom
    return 1.0 - swing * np.abs(((t / leg + 1.0) % 2.0) - 1.0)


def warp(x: np.ndarray, rate: float, ratio: np.ndarray) -> np.ndarray:
    """``x`` (a machine at a steady speed) as if its speed had been ``ratio`` times its own at each
    output sample: output sample k plays the recording at time sum(ratio[:k]) / rate (8-times
    oversampled, then interpolated linearly: flat to 0.1 dB below 5 kHz). Stops where the
    recording ends."""
    up = 8
    xu = resample_poly(np.asarray(x, dtype=np.float64), up, 1)
    at = np.concatenate(([0.0], np.cumsum(ratio[:-1]))) * up  # oversampled positions
    n = int(np.searchsorted(at, len(xu) - 1))
    return np.interp(at[:n], np.arange(len(xu)), xu).astype(np.float32)


def ramp_results(y: np.ndarray, speeds: np.ndarray, bearing: str, settings: EnvelopeSettings,
                 follow: bool) -> list[Any]:
    """Per 1-s block of ``y``, the envelope stage's result (None: no evidence), its frames of
    ``FRAME`` samples carrying ``speeds`` (rpm, one per frame) in a ``SpeedLog``; ``follow``:
    the stage reads the speeds' runs (order tracking), else only its blocks' two ends. ``bearing``:
    a named geometry."""
    from drsn_stream.app.ingest import SpeedLog
    from drsn_stream.monitor.envelope import EnvelopeStage
    from drsn_stream.types import Window

    log = SpeedLog()
    for i, rpm in enumerate(speeds):
        log.add("m", i * FRAME / RATE, float(rpm))
    stage = EnvelopeStage({"bearing": bearing}, settings, rate=RATE, hop=HOP, window=WINDOW,
                          speed_of=log.at, speed_runs=log.runs if follow else None)
    for k in range((len(y) - WINDOW) // HOP + 1):
        end = k * HOP + WINDOW
        stage.push([Window("m", k, (end - 1) / RATE, y[end - WINDOW : end], normalized=False)])
        while not stage._queue.empty():
            stage._analyse(*stage._queue.get_nowait())
    return [r for _, r in stage._results.get("m", ())]


def ramp_eval(files: list[Path], pct: float, swing: float, settings: EnvelopeSettings, channel: str,
              md: bool, noise: float = 0.0) -> None:
    """The ``--ramp`` table: per class, blocks right and blocks with evidence, three ways."""
    geo = bearing_geometry("cwru-de")
    ways = ("followed", "ends", "mean")
    rng = np.random.default_rng(0)  # the readings' jitter: the same for every run
    per: dict[str, dict[str, list[int]]] = {}
    spent, analysed = 0.0, 0
    for path in files:
        want = truth(path.name)
        xs, shaft = blocks(path, channel=channel)
        x = xs.reshape(-1)
        if not np.isfinite(x).all():
            print(f"{path.name}: NaN or infinite samples, skipped")
            continue
        ratio = triangle(len(x) * 2, RATE, pct, swing)
        y = warp(x, RATE, ratio)
        frames = len(y) // FRAME
        speeds = 60.0 * shaft * ratio[: frames * FRAME].reshape(frames, FRAME).mean(axis=1)
        speeds *= 1.0 + noise * rng.standard_normal(frames)
        row = per.setdefault(want, {w: [0, 0, 0] for w in ways})
        t0 = time.perf_counter()
        followed = ramp_results(y, speeds, "cwru-de", settings, follow=True)
        spent += time.perf_counter() - t0
        analysed += len(followed)
        ends = ramp_results(y, speeds, "cwru-de", settings, follow=False)
        n = len(followed)
        mean = []
        for b in range(n):  # the same blocks (the stage's first block starts at sample 0)
            lo = slice(b * int(RATE), (b + 1) * int(RATE))
            rpm = 60.0 * shaft * float(ratio[lo].mean())
            mean.append(analyse_block(y[lo], RATE, rpm / 60.0, geo, settings))
        for way, results in zip(ways, (followed, ends, mean)):
            row[way][0] += sum(r is not None and r.fault_type == want for r in results)
            row[way][1] += sum(r is not None for r in results)
            row[way][2] += n
        types = Counter(r.fault_type if r is not None else "-" for r in followed)
        print(f"{path.name:34s} {want:10s} {n:3d} blocks; followed: "
              + ", ".join(f"{t} {c}" for t, c in types.most_common()))
    print()
    head = "| class | blocks | followed (order tracking) | the two ends (before) | mean speed, not followed |"
    print(head if md else f"per class, right of all blocks (blocks with evidence), the speed swinging by "
                          f"{swing:.0%} at {pct:g} %/s, readings jittering by {noise:.1%}:")
    if md:
        print("|---|---|---|---|---|")
    for cls in ("inner_race", "outer_race", "ball", "none"):
        if cls not in per:
            continue
        cells = [f"{r / n:.1%} ({e} with evidence)" for r, e, n in (per[cls][w] for w in ways)]
        total = per[cls]["followed"][2]
        print(f"| {cls} | {total} | " + " | ".join(cells) + " |" if md
              else f"  {cls:10s} {total:4d}  followed {cells[0]:28s} ends {cells[1]:28s} mean {cells[2]}")
    print(f"channel {channel}; threshold {settings.threshold_db} dB; {1e3 * spent / max(1, analysed):.2f} ms per "
          "1-s block followed through the stage (one thread, this machine)")


def null_levels(count: int, settings: EnvelopeSettings, seed: int = 0) -> np.ndarray:
    """Largest family evidence (dB) of ``count`` 1-second white-noise blocks at 1797 rpm."""
    rng = np.random.default_rng(seed)
    geo = bearing_geometry("cwru-de")
    return np.array([
        max(analyse_block(rng.standard_normal(int(RATE)), RATE, 1797 / 60, geo, settings).evidence.values())
        for _ in range(count)
    ])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="../shared/data/cwru", help="folder of the CWRU .mat files")
    ap.add_argument("--markdown", action="store_true", help="print the tables as Markdown")
    ap.add_argument("--null", type=int, default=0, metavar="N", help="also measure N white-noise blocks")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="override an EnvelopeSettings field (for exploring, e.g. --set threshold_db=9)")
    ap.add_argument("--speed-error", type=float, default=0.0, metavar="E",
                    help="analyse with the recorded speed times (1 + E), e.g. 0.01: a tacho or nameplate 1 %% off")
    ap.add_argument("--nameplate", type=float, default=None, metavar="RPM",
                    help="analyse every file at this one speed (a configured [machine] rpm) instead of the speed "
                         "it records (what frames carrying their rpm give the monitor)")
    ap.add_argument("--channel", choices=("DE", "FE"), default="DE",
                    help="the accelerometer: drive end (the faulty bearing's) or fan end")
    ap.add_argument("--ramp", type=float, default=None, metavar="PCT",
                    help="play each recording with its speed changing by PCT %% of it per second (a triangle)")
    ap.add_argument("--swing", type=float, default=0.15, metavar="S",
                    help="with --ramp, how far the speed falls: to (1 - S) of the recorded speed (default 0.15)")
    ap.add_argument("--tach-noise", type=float, default=0.0, metavar="S",
                    help="with --ramp, Gaussian jitter of each frame's speed reading, relative (e.g. 0.02)")
    ap.add_argument("--native", action="store_true",
                    help="analyse each recording at its own sample rate (the healthy one at 48 kHz), not at the "
                         "model's 12 kHz as the monitor does")
    ap.add_argument("--learn", action="store_true",
                    help="decide each block against the machine's own evidence as well: the median per family of "
                         "the healthy recording's blocks (each healthy block against its other blocks: held out)")
    args = ap.parse_args(argv)
    if not 0 <= args.null <= MAX_NULL:
        raise ConfigError(f"--null must be a whole number from 0 to {MAX_NULL:,}, not {args.null}")
    if not (math.isfinite(args.speed_error) and abs(args.speed_error) < MAX_SPEED_ERROR):
        raise ConfigError(f"--speed-error must be a finite share between -{MAX_SPEED_ERROR} and {MAX_SPEED_ERROR} "
                          f"(e.g. 0.01 for 1 %), not {args.speed_error}")
    if args.nameplate is not None and not (math.isfinite(args.nameplate) and 60 <= args.nameplate <= 1e6):
        raise ConfigError(f"--nameplate must be a shaft speed of 60 .. 1000000 rpm, not {args.nameplate}")
    if args.ramp is not None and not (math.isfinite(args.ramp) and 0 <= args.ramp <= 100):
        raise ConfigError(f"--ramp must be a change of speed of 0 .. 100 % per second, not {args.ramp}")
    if not (math.isfinite(args.tach_noise) and 0 <= args.tach_noise <= 0.2):
        raise ConfigError(f"--tach-noise must be a share from 0 to 0.2 (e.g. 0.02), not {args.tach_noise}")
    if not (math.isfinite(args.swing) and 0 < args.swing <= 0.5):
        raise ConfigError(f"--swing must be a share of the speed from 0 to 0.5, not {args.swing}")
    if args.native and (args.learn or args.ramp is not None):
        # the healthy recording is the only 48 kHz one: a normal learned at 48 kHz says nothing of
        # 12 kHz blocks, and the ramps replay the 12 kHz files
        raise ConfigError("--native compares the healthy recording at its own rate; it does not go with --learn "
                          "or --ramp")
    settings = EnvelopeSettings(**overrides(args.set))
    folder = Path(args.data)
    files = sorted(folder.glob("*.mat"))
    if not files:
        print(f"no .mat files in {folder}; give --data", file=sys.stderr)
        return 2
    if args.ramp is not None:
        ramp_eval(files, args.ramp, args.swing, settings, args.channel, args.markdown, args.tach_noise)
        return 0
    geo = bearing_geometry("cwru-de")
    md = args.markdown
    head = ("file", "truth", "rpm", "blocks", "right", "types", "bpfo dB", "bpfi dB", "bsf dB")
    if md:
        print("| " + " | ".join(head) + " |")
        print("|" + "---|" * len(head))
    else:
        print(f"{'file':34s} {'truth':10s} {'rpm':>5s} {'blk':>3s} {'right':>6s}  {'bpfo':>5s} {'bpfi':>5s} {'bsf':>5s}  types")
    per_class: dict[str, list[int]] = {}
    per_load: dict[tuple[str, str], list[int]] = {}
    spent, analysed = 0.0, 0
    skipped: dict[str, int] = {}

    def speed_of(shaft: float) -> float:
        return (args.nameplate / 60.0 if args.nameplate is not None else shaft) * (1.0 + args.speed_error)

    healthy = None  # (blocks, FAMILIES) evidence of the healthy recording, for --learn
    if args.learn:
        normal_files = [f for f in files if truth(f.name) == "none"]
        if not normal_files:
            raise ConfigError(f"--learn needs the healthy recording (normal_*.mat) in {folder}")
        hx, hs = blocks(normal_files[0], channel=args.channel, native=args.native)
        healthy = np.array([[analyse_block(b, float(hx.shape[1]), speed_of(hs), geo, settings).evidence[k]
                             for k in FAMILIES]
                            for b in hx if np.isfinite(b).all()])
    for path in files:
        want = truth(path.name)
        xs, shaft = blocks(path, channel=args.channel, native=args.native)
        fs = float(xs.shape[1])  # 1-second blocks
        shaft = speed_of(shaft)
        finite = np.isfinite(xs).all(axis=1)  # a block with NaN samples has no spectrum: skipped, counted
        if not finite.all():
            skipped[path.name] = int((~finite).sum())
            xs = xs[finite]
        if not len(xs):
            print(f"{path.name:34s} {want:10s} every block holds NaN or infinite samples: skipped")
            continue
        analyse_block(xs[0], fs, shaft, geo, settings)  # builds the plan (once per speed), not timed
        t0 = time.perf_counter()
        results = [analyse_block(b, fs, shaft, geo, settings) for b in xs]
        spent += time.perf_counter() - t0
        analysed += len(results)
        if healthy is not None:
            results = [dataclasses.replace(r, fault_type=decide(r.evidence, settings.threshold_db, median_evidence(
                healthy if want != "none" else np.delete(healthy, i, axis=0)), settings.margin_db))
                for i, r in enumerate(results)]
        right = sum(r.fault_type == want for r in results)
        per_class.setdefault(want, [0, 0])
        per_class[want][0] += right
        per_class[want][1] += len(results)
        load = re.search(r"_(\d)_\d+\.mat$", path.name)
        key = (want, load.group(1) if load else "0")
        per_load.setdefault(key, [0, 0])
        per_load[key][0] += right
        per_load[key][1] += len(results)
        med = {k: float(np.median([r.evidence[k] for r in results])) for k in ("bpfo", "bpfi", "bsf")}
        types = ", ".join(f"{t} {c}" for t, c in Counter(r.fault_type for r in results).most_common())
        rate = right / len(results)
        if md:
            print(f"| {path.name} | {want} | {shaft * 60:.0f} | {len(results)} | {rate:.0%} | {types} | "
                  f"{med['bpfo']:.1f} | {med['bpfi']:.1f} | {med['bsf']:.1f} |")
        else:
            print(f"{path.name:34s} {want:10s} {shaft * 60:5.0f} {len(results):3d} {rate:6.0%}  "
                  f"{med['bpfo']:5.1f} {med['bpfi']:5.1f} {med['bsf']:5.1f}  {types}")
    print()
    print("| class | blocks | right |" if md else "per class (1-second blocks, all loads and sizes):")
    if md:
        print("|---|---|---|")
    for cls in ("inner_race", "outer_race", "ball", "none"):
        if cls in per_class:
            r, n = per_class[cls]
            print(f"| {cls} | {n} | {r / n:.1%} |" if md else f"  {cls:10s} {r:4d}/{n:<4d} {r / n:6.1%}")
    print()
    print("per class and load (HP): " + "; ".join(
        f"{c} {ld}: {r / n:.0%}" for (c, ld), (r, n) in sorted(per_load.items())))
    if skipped:
        print(f"skipped {sum(skipped.values())} blocks with NaN or infinite samples: "
              + ", ".join(f"{name} {k}" for name, k in skipped.items()))
    speed = f"every file at {args.nameplate:g} rpm" if args.nameplate is not None else "each file's own speed"
    against = f"; against the healthy recording's evidence + {settings.margin_db:g} dB" if args.learn else ""
    print(f"channel {args.channel}; {speed}; speed error {args.speed_error:+.1%}; threshold {settings.threshold_db} dB{against}; {1e3 * spent / max(1, analysed):.2f} ms per 1-s block "
          "(one thread, this machine)")
    if args.null:
        lv = null_levels(args.null, settings)
        q = np.percentile(lv, [50, 90, 99, 99.9])
        print(f"white noise, {args.null} blocks: largest family evidence p50/p90/p99/p99.9 = "
              f"{q[0]:.2f}/{q[1]:.2f}/{q[2]:.2f}/{q[3]:.2f} dB; named a fault on "
              f"{np.mean(lv >= settings.threshold_db):.2%}")
    return 0


if __name__ == "__main__":
    raise SystemExit(run_tool(main, "tools/eval_envelope.py"))
