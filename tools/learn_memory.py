#!/usr/bin/env python3
"""Memory a live baseline learning (``--learn``) holds: ``--streams`` streams learning for
``--minutes`` of windows each (a hop of 512 samples at 12 kHz: 23.4 windows per second), fed to a
real ``BaselineStage`` as the monitor's output thread feeds it (each window's pooled features a row
of its batch's array, as the engine hands them over), its learning never ending (``learn_s`` inf).
Prints the growth of this process's peak resident memory and the bytes per window learned from;
with ``--save DIR``, also what saving the learnings in progress costs (``BaselineStage.save_learning``,
as ``--learn --baseline FILE`` does every minute): the file's size, the time of five saves, and of
their part in the output thread (the copies; a thread of its own writes them).

With ``--end``, the learning spans ``--minutes`` instead, so that every stream's learning ends in
the same batch (a host's streams started together), and the batches go on until every stream has
its baseline, back to back: the longest ``apply`` call after the end (the output thread held),
and the time until all were fitted, with the fits spread (``FIT_WAIT``, the default) and, in the
same run, all at once (``FIT_WAIT`` 0: as before they were spread); and the longest batch while
they learned.

With ``--halving``, the streams learn (started together) past the first time each fills what it
keeps and halves it: the longest ``apply`` call (the output thread held), with the fill spread over
the streams (``KEEP_SPREAD``, the default) and, in the same run, all at once (as before).

    python tools/learn_memory.py --streams 64 --minutes 10
    python tools/learn_memory.py --streams 64 --minutes 30 --save /tmp
    python tools/learn_memory.py --streams 256 --minutes 6 --end
    python tools/learn_memory.py --streams 2048 --halving
"""

from __future__ import annotations

import argparse
import gc
import json
import resource
import tempfile
import time
from pathlib import Path

import numpy as np

from drsn_stream.errors import ConfigError, run_tool
from drsn_stream.monitor import baseline
from drsn_stream.monitor.baseline import BaselineStage
from drsn_stream.types import Prediction

HOP_S = 512 / 12000
CLASSES, FEATURES = 10, 16  # bearing-cwru's outputs: classes, the noise index, pooled features


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KB on Linux


def run(streams: int, minutes: float, save: str | None = None) -> dict:
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
    out = {"streams": streams, "minutes": minutes, "windows_per_stream": per, "peak_rss_growth_mb": round(grown, 1),
           "bytes_per_window": round(grown * 2**20 / (streams * per), 1)}
    if save is not None:
        with tempfile.TemporaryDirectory(dir=save) as folder:
            stage.kept_elsewhere(learning_to=Path(folder) / "plant.learning.npz")
            times, copies = [], []
            for _ in range(5):
                t = time.perf_counter()
                stage.learning_snapshot()  # the output thread's part of a periodic save
                copies.append((time.perf_counter() - t) * 1000)
                t = time.perf_counter()
                stage.save_learning(final=True)  # all of it: the copies and the write
                times.append((time.perf_counter() - t) * 1000)
            if stage.learning_save_failures:
                raise ConfigError(f"the learnings could not be saved in {save}: {stage.notes[-1][1]}")
            out["save_mb"] = round((Path(folder) / "plant.learning.npz").stat().st_size / 2**20, 1)
            out["save_ms"] = [round(x, 1) for x in times]
            out["copy_ms"] = [round(x, 1) for x in copies]
            out["peak_rss_growth_mb_with_saves"] = round(peak_mb() - before, 1)
    return out


def run_end(streams: int, minutes: float, fit_wait: float) -> dict:
    """Every stream's learning of ``minutes`` ending in the same batch; the batches after it until
    every stream has a baseline, with the stage's ``fit_wait`` = ``fit_wait``."""
    stage = BaselineStage(None, learn_s=minutes * 60, model="m", digest="d", sample_rate=12000, window=2048,
                          hop=512, features=FEATURES)
    rng = np.random.default_rng(0)
    probs = np.full(CLASSES, 1.0 / CLASSES)
    held, k, after, t_end, at_end, longest_learning = [], 0, 0, 0.0, 0, 0.0
    stage.fit_wait = fit_wait
    while len(stage.profile.streams) < streams:
        feats = rng.standard_normal((streams, FEATURES)).astype(np.float32)
        preds = [Prediction(f"s{i}", k, k * HOP_S, probs, "normal", 0.9, 0.3, 10.0, features=row)
                 for i, row in enumerate(feats)]
        ended = k + 1 >= minutes * 60 / HOP_S + 1  # this batch ends every stream's span
        t = time.perf_counter()
        stage.apply(preds)
        dt = time.perf_counter() - t
        if ended:
            if not t_end:
                t_end, at_end = t, len(stage.profile.streams)
            held.append(dt)
            after += 1
        elif dt > longest_learning:
            longest_learning = dt
        k += 1
        if after > 1_000_000:
            raise ConfigError("the streams were never all fitted")
    return {"fit_wait": fit_wait, "windows_per_stream": k - after + 1, "fitted_in_the_last_batch": at_end,
            "longest_apply_ms": round(1000 * max(held), 1), "longest_learning_apply_ms": round(1000 * longest_learning, 1),
            "s_until_all_fitted": round(time.perf_counter() - t_end, 2), "apply_ms_after_end": round(1000 * sum(held), 1)}


def run_halving(streams: int, spread: int) -> dict:
    """Batches of every stream's window until each has halved what it keeps once, with
    ``KEEP_SPREAD`` = ``spread``: the longest ``apply`` call and the median one."""
    stage = BaselineStage(None, learn_s=float("inf"), model="m", digest="d", sample_rate=12000, window=2048,
                          hop=512, features=FEATURES)
    rng = np.random.default_rng(0)
    probs = np.full(CLASSES, 1.0 / CLASSES)
    feats = rng.standard_normal((streams, FEATURES)).astype(np.float32)
    held = []
    old, baseline.KEEP_SPREAD = baseline.KEEP_SPREAD, spread
    try:
        for k in range(baseline.LEARN_KEEP + 64):
            preds = [Prediction(f"s{i}", k, k * HOP_S, probs, "normal", 0.9, 0.3, 10.0, features=row)
                     for i, row in enumerate(feats)]
            t = time.perf_counter()
            stage.apply(preds)
            held.append(time.perf_counter() - t)
        halved = sum(lr.stride > 1 for lr in stage._learning.values())
    finally:
        baseline.KEEP_SPREAD = old
    return {"keep_spread": spread, "streams_halved": halved, "longest_apply_ms": round(1000 * max(held), 2),
            "median_apply_ms": round(1000 * float(np.median(held)), 3),
            "batches_over_2x_median": int(np.sum(np.array(held) > 2 * np.median(held)))}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--streams", type=int, default=64)
    ap.add_argument("--minutes", type=float, default=10.0, help="minutes of windows each stream learns from")
    ap.add_argument("--save", metavar="DIR", help="also time saving the learnings to a file in DIR")
    ap.add_argument("--end", action="store_true",
                    help="learn for --minutes, every stream ending together: how long the fits hold the output thread")
    ap.add_argument("--halving", action="store_true",
                    help="learn past the first halving of what each stream keeps: how long it holds the output thread")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    if args.streams < 1 or not args.minutes > 0:
        raise ConfigError("--streams must be >= 1 and --minutes > 0")
    if args.halving:
        rows = [run_halving(args.streams, s) for s in (0, baseline.KEEP_SPREAD)]
        if args.json:
            print(json.dumps({"streams": args.streams, "rows": rows}))
            return 0
        print(f"{args.streams} streams learning from the same batch past their first halving "
              f"({baseline.LEARN_KEEP + 64} windows each):")
        for r in rows:
            print(f"  KEEP_SPREAD {r['keep_spread']}: {r['streams_halved']} halved; the longest batch held the output "
                  f"thread {r['longest_apply_ms']} ms (the median {r['median_apply_ms']} ms; "
                  f"{r['batches_over_2x_median']} batches over twice it)")
        return 0
    if args.end:
        rows = [run_end(args.streams, args.minutes, w) for w in (0.0, baseline.FIT_WAIT)]
        if args.json:
            print(json.dumps({"streams": args.streams, "minutes": args.minutes, "rows": rows}))
            return 0
        print(f"{args.streams} streams ending a {args.minutes:g}-min learning ({rows[0]['windows_per_stream']} windows "
              "each) in the same batch:")
        for r in rows:
            print(f"  FIT_WAIT {r['fit_wait']:g}: {r['fitted_in_the_last_batch']} fitted in the batch that ended the "
                  f"learning; the longest batch held the output thread {r['longest_apply_ms']} ms; "
                  f"all fitted {r['s_until_all_fitted']} s after the end, {r['apply_ms_after_end']} ms of it in the batches "
                  f"(while learning, the longest batch: {r['longest_learning_apply_ms']} ms)")
        return 0
    r = run(args.streams, args.minutes, args.save)
    print(json.dumps(r) if args.json else
          f"{r['streams']} streams learning {r['minutes']:g} min ({r['windows_per_stream']} windows) each: peak "
          f"resident memory +{r['peak_rss_growth_mb']} MB, {r['bytes_per_window']} bytes per window"
          + (f"; a save of the learnings: {r['save_mb']} MB in {min(r['save_ms'])}-{max(r['save_ms'])} ms "
             f"(5 saves), of which the output thread's copies {min(r['copy_ms'])}-{max(r['copy_ms'])} ms; "
             f"peak +{r['peak_rss_growth_mb_with_saves']} MB with them" if "save_mb" in r else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(run_tool(main, "tools/learn_memory.py"))
