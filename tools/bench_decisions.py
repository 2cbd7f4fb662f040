#!/usr/bin/env python3
"""The decisions alone: CPU per window of ``DecisionEngine.update_many``, compiled and numpy.

Feeds batches of ``--batch`` windows (each of a distinct stream, the streams taken in turn from
``--streams``) with the bearing model's labels: scores around each stream's own label with
outliers, a fault now and then (alarms rise and clear), a refused label, a sick sensor and
anomaly scores here and there. Both paths run in the same process on the same batches, one
after the other per batch size, ``--repeat`` times; the lowest CPU time of each is printed, and
the numpy steps' time over the compiled loop's (without numba only the numpy line is printed):

    python tools/bench_decisions.py
    python tools/bench_decisions.py --batch 1,64,1024 --streams 10240
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from drsn_stream.errors import run_tool
from drsn_stream.monitor import decision
from drsn_stream.monitor.decision import DecisionConfig, DecisionEngine
from drsn_stream.train.cwru import LABELS_10
from drsn_stream.types import Prediction

LABELS = list(LABELS_10)


def batches(streams: int, batch: int, windows: int, seed: int = 0) -> list[tuple[list[Prediction], list[bool]]]:
    """About ``windows`` windows in batches of ``batch`` distinct streams."""
    rng = np.random.default_rng(seed)
    home = np.arange(streams) % len(LABELS)
    out, at = [], 0
    for r in range(max(1, windows // batch)):
        preds, ok = [], []
        for _ in range(batch):
            s = at % streams
            at += 1
            p = rng.dirichlet(np.ones(len(LABELS)) * 0.3).astype(np.float32) * 0.3
            p[(home[s] + 1) % len(LABELS) if s % 97 == 0 and r % 5 == 0 else home[s]] += 0.7
            label = LABELS[int(p.argmax())]
            refused = s % 53 == 0 and r % 3 == 0
            preds.append(Prediction(f"m{s:05d}", r, float(r), p, "unknown" if refused else label, float(p.max()),
                                    float(rng.random()), 1.0, level=float(rng.random()),
                                    model_label=label if refused else None,
                                    anomaly=float(rng.random() * 2) if s % 7 == 0 else None))
            ok.append(not (s % 211 == 0 and r % 4 == 1))
        out.append((preds, ok))
    return out


def cpu_per_window(compiled: bool, work: list, streams: int) -> float:
    """CPU seconds per window of ``update_many`` over ``work``, after a first pass that makes
    every stream's row (a new stream's first window is not what is measured)."""
    engine = DecisionEngine(LABELS, DecisionConfig.for_labels(LABELS), compiled=compiled)
    engine.update_many(*batches(streams, streams, streams, seed=1)[0])
    t0 = time.thread_time()
    n = 0
    for preds, ok in work:
        engine.update_many(preds, ok)
        n += len(preds)
    return (time.thread_time() - t0) / n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", default="1,4,16,64,256,1024", help="comma-separated batch sizes (windows)")
    ap.add_argument("--streams", type=int, default=2048, help="distinct streams the windows come from")
    ap.add_argument("--windows", type=int, default=40_000, help="windows per measurement (at least one batch)")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    compiled = decision.warm()
    if not compiled:
        print(f"no compiled decisions here ({decision.why_not()}): the numpy steps only")
    print(f"{args.streams} streams, {len(LABELS)} labels; us of CPU per window, the lowest of {args.repeat}")
    for b in (int(x) for x in args.batch.split(",")):
        work = batches(args.streams, min(b, args.streams), args.windows if b > 1 else min(args.windows, 5000))
        best = {}
        for _ in range(args.repeat):
            for path in ((True, False) if compiled else (False,)):
                t = cpu_per_window(path, work, args.streams)
                best[path] = min(best.get(path, t), t)
        line = f"batch {b:5d}: numpy {best[False] * 1e6:8.2f}"
        if compiled:
            line += f"  compiled {best[True] * 1e6:8.2f}  numpy / compiled {best[False] / best[True]:5.1f}x"
        print(line, flush=True)


if __name__ == "__main__":
    raise SystemExit(run_tool(main, "tools/bench_decisions.py"))
