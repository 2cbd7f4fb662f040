#!/usr/bin/env python3
"""Memory a live baseline learning (``--learn``) holds: ``--streams`` streams learning for
``--minutes`` of windows each (a hop of 512 samples at 12 kHz: 23.4 windows per second), fed to a
real ``BaselineStage`` as the monitor's output thread feeds it (each window's pooled features a row
of its batch's array, as the engine hands them over), its learning never ending (``learn_s`` inf).
Prints the growth of this process's peak resident memory and the bytes per window learned from.

    python tools/learn_memory.py --streams 64 --minutes 10
    python tools/learn_memory.py --streams 64 --minutes 30
"""

from __future__ import annotations

import argparse
import gc
import json
import resource

import numpy as np

from drsn_stream.errors import ConfigError, run_tool
from drsn_stream.monitor.baseline import BaselineStage
from drsn_stream.types import Prediction

HOP_S = 512 / 12000
CLASSES, FEATURES = 10, 16  # bearing-cwru's outputs: classes, the noise index, pooled features


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KB on Linux


def run(streams: int, minutes: float) -> dict:
    stage = BaselineStage(None, learn_s=float("inf"), model="m", digest="d", sample_rate=12000, window=2048,
                          hop=512, features=FEATURES)
    per = int(minutes * 60 / HOP_S)
    rng = np.random.default_rng(0)
    probs = np.full(CLASSES, 1.0 / CLASSES)
    before = peak_mb()
    for k in range(per):
        res = rng.standard_normal((streams, CLASSES + 1 + FEATURES)).astype(np.float32)
        preds = [Prediction(f"s{i}", k, k * HOP_S, probs, "normal", 0.9, 0.3, 10.0, features=row)
                 for i, row in enumerate(res[:, CLASSES + 1 :])]
        stage.apply(preds)
    del preds, res
    gc.collect()
    grown = peak_mb() - before
    return {"streams": streams, "minutes": minutes, "windows_per_stream": per, "peak_rss_growth_mb": round(grown, 1),
            "bytes_per_window": round(grown * 2**20 / (streams * per), 1)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--streams", type=int, default=64)
    ap.add_argument("--minutes", type=float, default=10.0, help="minutes of windows each stream learns from")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    if args.streams < 1 or not args.minutes > 0:
        raise ConfigError("--streams must be >= 1 and --minutes > 0")
    r = run(args.streams, args.minutes)
    print(json.dumps(r) if args.json else
          f"{r['streams']} streams learning {r['minutes']:g} min ({r['windows_per_stream']} windows) each: peak "
          f"resident memory +{r['peak_rss_growth_mb']} MB, {r['bytes_per_window']} bytes per window")
    return 0


if __name__ == "__main__":
    raise SystemExit(run_tool(main, "tools/learn_memory.py"))
