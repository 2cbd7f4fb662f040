#!/usr/bin/env python3
"""How long a good frame waits while a peer floods the monitor's socket with bad messages.

One process: a ZeroMQ PUB on loopback sends a good 512-sample frame every 50 ms and, between them,
as many malformed messages as one Python loop can (``--quiet`` sends none); the monitor's own
ZeroMQ source (``zmq://``) reads them on a thread and notes, for each good frame, the time from its
capture stamp to the poll that hands it over. Prints the frames received, the bad messages sent
and the delay's median and maximum. Not a test: the figures depend on the machine.

    python tools/flood_probe.py             # the flood (docs/hardening.md)
    python tools/flood_probe.py --quiet     # the same stream alone
"""

from __future__ import annotations

import argparse
import threading
import time

import numpy as np
import zmq

from drsn_stream.errors import run_tool
from drsn_stream.sources import make_source
from drsn_stream.sources.wire import encode


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--quiet", action="store_true", help="no flood: the good frames alone")
    ap.add_argument("--port", type=int, default=56123)
    args = ap.parse_args(argv)
    pub = zmq.Context.instance().socket(zmq.PUB)
    pub.setsockopt(zmq.SNDHWM, 100_000)
    pub.bind(f"tcp://127.0.0.1:{args.port}")
    src = make_source(f"zmq://127.0.0.1:{args.port}")
    delays: list[float] = []
    done = threading.Event()

    def read() -> None:
        with src:
            for batch in src.batches():
                now = time.time()
                delays.extend(now - f.t_capture for f in batch)
                if done.is_set():
                    return

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    time.sleep(1.0)  # the subscription reaches the publisher
    x = np.zeros(512, np.float32)
    bad = [b"s0", b"not json at all", b"x" * 100]
    seq = sent_bad = 0
    t_next = time.time()
    t_end = t_next + args.seconds
    while time.time() < t_end:
        if time.time() >= t_next:
            pub.send_multipart(encode("s0", seq, time.time(), 12000.0, x))
            seq += 1
            t_next += 0.05
        elif args.quiet:
            time.sleep(0.001)
        else:
            pub.send_multipart(bad)
            sent_bad += 1
    time.sleep(1.0)
    done.set()
    src.close()
    ms = np.array(delays) * 1000
    print(f"good frames received {len(ms)} of {seq}; bad messages sent {sent_bad}, refused "
          f"{sum(src.stats.snapshot()['malformed'].values())}; delay ms p50 {np.median(ms):.1f}, max {ms.max():.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(run_tool(main, "tools/flood_probe.py"))
