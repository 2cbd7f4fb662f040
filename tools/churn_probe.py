#!/usr/bin/env python3
"""Churn probe: a live monitor whose stream ids are replaced again and again.

A ZeroMQ PUSH publisher on loopback sends ``--streams`` streams (20 frames/s each) for
``--generation`` seconds, then the same number under new ids (a gateway restarted under new
names), ``--generations`` times, into a monitor (its pipeline in this process) with
``--max-streams`` equal to one generation and a short ``--reclaim-after``. Every few
generations it prints the streams the monitor holds (DSP, health, decisions, latency rows), how
many it retired, the streams in the run's record (windows per label: those monitored, and those
retired but not yet folded into the totals of streams gone), the windows of the current
generation that got results, and this process's RSS: the tables stay at one generation's size and
the RSS flat, however many ids went by.

    python tools/churn_probe.py --generations 60
"""

from __future__ import annotations

import argparse
import threading
import time

import numpy as np
import zmq

from drsn_stream.app.pipeline import Pipeline, RunConfig
from drsn_stream.errors import run_tool
from drsn_stream.sources.wire import encode

RATE, N = 12000.0, 600


def rss_mb() -> float:
    with open("/proc/self/statm", encoding="ascii") as fh:
        return int(fh.read().split()[1]) * 4096 / 2**20


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--streams", type=int, default=64, help="streams per generation (= --max-streams)")
    ap.add_argument("--generations", type=int, default=60)
    ap.add_argument("--generation", type=float, default=1.5, metavar="S", help="seconds each generation sends")
    ap.add_argument("--reclaim-after", type=float, default=0.5, metavar="S")
    args = ap.parse_args(argv)
    port = free_port()
    cfg = RunConfig(sources=(f"zmq+pull+bind://127.0.0.1:{port}",), engine_process=False, threads=1,
                    stale_ms=60000.0, max_streams=args.streams, reclaim_after_s=args.reclaim_after,
                    health={"timeout_s": min(0.3, args.reclaim_after)})
    pipe = Pipeline(cfg, sinks=[])
    pipe.start()
    waiter = threading.Thread(target=pipe.wait, daemon=True)
    waiter.start()
    push = zmq.Context.instance().socket(zmq.PUSH)
    push.connect(f"tcp://127.0.0.1:{port}")
    x = (0.1 * np.random.default_rng(0).standard_normal(N)).astype(np.float32)
    first = None
    print(f"{'generation':>10} {'ids seen':>9} {'retired':>8} {'dsp':>5} {'health':>6} {'decisions':>9} "
          f"{'latency rows':>12} {'record':>6} {'with results':>12} {'RSS MB':>7}", flush=True)
    try:
        for g in range(args.generations):
            t0, i = time.time(), 0
            while time.time() - t0 < args.generation:
                for k in range(args.streams):
                    push.send_multipart(encode(f"g{g}/s{k}", i, time.time() - N / RATE, RATE, x))
                i += 1
                time.sleep(max(0.0, t0 + 0.05 * i - time.time()))
            if g % 20 == 0 or g == args.generations - 1:
                counts = pipe.label_counts
                got = sum(1 for k in range(args.streams) if counts.get(f"g{g}/s{k}"))
                first = rss_mb() if first is None else first
                print(f"{g:>10} {(g + 1) * args.streams:>9} {pipe.ingest.retired:>8} {len(pipe.ingest.dsp):>5} "
                      f"{len(pipe.health.streams):>6} {len(pipe.decisions.streams):>9} {len(pipe.stats._row):>12} "
                      f"{len(counts):>6} {got:>12} {rss_mb():>7.0f}", flush=True)
    finally:
        push.close(0)
        pipe.quit.set()
        waiter.join(timeout=10)
        pipe.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(run_tool(main, "churn_probe"))
