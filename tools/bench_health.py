#!/usr/bin/env python3
"""Sensor health alone on the ingest path: CPU per frame and per channel of ``HealthMonitor``.

Feeds ``--streams`` channels of 12 kHz noise in 512-sample frames (``--channels`` C per frame)
as the ingest thread does: slices of ``--slice`` channels, each ``push_channels`` then
``flush_many`` and ``unhealthy`` of the slice's channel streams (a window per frame, so every
frame's samples are judged before its window is handed on). ``--repeat`` runs; the lowest CPU
time is printed (the least disturbed by other load). An older checkout without
``push_channels`` is fed ``push_many`` of each frame's channels as its pipeline did, so that old
and new can be compared by running this script with each on ``PYTHONPATH``, alternately:

    python tools/bench_health.py --streams 256 --channels 16
    python tools/bench_health.py --streams 256 --channels 1 --slice 256
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from drsn_stream.errors import run_tool
from drsn_stream.monitor.health import HealthMonitor
from drsn_stream.types import Frame, channel_ids, split_channels

RATE = 12000.0
FRAME = 512


def run(monitor: HealthMonitor, streams: int, channels: int, seconds: float, slice_: int) -> float:
    """CPU seconds of the monitor's thread per frame, after one second of warm-up."""
    machines = streams // channels
    noise = (0.1 * np.random.default_rng(1).standard_normal((16, FRAME, channels))).astype(np.float32)
    per = max(1, slice_ // channels)
    warm, polls = int(RATE / FRAME), int(seconds * RATE / FRAME)
    ids = {f"m{m}": channel_ids(f"m{m}", channels) for m in range(machines)}
    cpu = 0.0
    for k in range(warm + polls):
        poll = [Frame(f"m{m}", k, k * FRAME / RATE, RATE, noise[(k + m) % 16] if channels > 1 else noise[(k + m) % 16, :, :1])
                for m in range(machines)]
        now = 1e9 + k * FRAME / RATE
        t = time.thread_time()
        for i in range(0, machines, per):
            part = poll[i : i + per]
            if hasattr(monitor, "push_channels"):
                monitor.push_channels(part, now=now)
            else:  # an older checkout
                monitor.push_many([p for f in part for p in (split_channels(f) if channels > 1 else (f,))], now=now)
            judged = [sid for f in part for sid in ids[f.stream_id]]
            monitor.flush_many(judged, now=now)
            monitor.unhealthy(dict.fromkeys(judged))
        if k >= warm:
            cpu += time.thread_time() - t
    return cpu / (polls * machines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--streams", type=int, default=256, help="channels in all (a multiple of --channels)")
    ap.add_argument("--channels", type=int, default=16, help="channels per frame")
    ap.add_argument("--slice", type=int, default=64, help="channels per push (the pipeline's INGEST_SLICE)")
    ap.add_argument("--seconds", type=float, default=2.0, help="seconds of signal per stream timed")
    ap.add_argument("--repeat", type=int, default=3, help="runs; the lowest CPU time is printed")
    args = ap.parse_args(argv)
    if args.streams % args.channels:
        raise SystemExit(f"--streams {args.streams} is not a multiple of --channels {args.channels}")
    s = min(run(HealthMonitor(), args.streams, args.channels, args.seconds, args.slice) for _ in range(args.repeat))
    print(f"{args.streams} streams in frames of {args.channels} channel(s), slices of {args.slice} channels: "
          f"health CPU {1e6 * s:.1f} us per frame, {1e6 * s / args.channels:.2f} us per channel")
    return 0


if __name__ == "__main__":
    raise SystemExit(run_tool(main, "tools/bench_health.py"))
