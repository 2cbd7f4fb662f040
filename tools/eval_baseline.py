#!/usr/bin/env python3
"""Measures the baseline targets on CWRU (issue 13): learn on the first 75 % of ``normal_0``, then

- the share of the later healthy windows over the threshold (target <= 1 %);
- per fault recording (every fault, size and load), the share of windows flagged (target >= 99 %);
- with the "unknown" statistics of the artifact: the share of test windows refused.

Windows are cut at the model's hop from the recordings resampled to the model's rate, exactly as
the monitor cuts them, and run through the same runner; the baseline is over their pooled features
and their level, as the monitor's (``--no-level``: the pooled features alone, as before the level
was an input). ``--channel FE`` reads the fan-end accelerometer of the same files (a sensor the
model never saw). Prints a table; ``--json`` writes it.

    python tools/eval_baseline.py [--model bearing-cwru] [--data ../shared/data/cwru] [--json out.json] [--sweep] [--steady]
"""

from __future__ import annotations

import argparse
import json
import math
import sys

import numpy as np

from drsn_stream.config import writable_file
from drsn_stream.dsp.normalize import normalize_with_level
from drsn_stream.engine.runner import Runner
from drsn_stream.errors import ConfigError, DataError, run_tool
from drsn_stream.models import load_artifact
from drsn_stream.models.artifact import resolve_artifact
from drsn_stream.monitor.baseline import MARGIN, fit_stream, min_windows, with_level
from drsn_stream.train import cwru

LEARN_SHARE = 0.7  # --steady: each recording's first part learned


def features(runner: Runner, x: np.ndarray, norm: dict, level: bool = True) -> np.ndarray:
    """What a baseline is learned and judged on for windows ``x``: the pooled features and, as
    the monitor's baselines, the windows' level (``with_level``; ``level`` False: the features alone)."""
    out = []
    for i in range(0, len(x), 256):
        y, levels = normalize_with_level(np.array(x[i : i + 256], dtype=np.float32), norm)
        h = runner.submit(y)
        runner.collect(h)
        out.append(with_level(h.features, levels) if level else h.features)
    return np.concatenate(out)


def steady(folder, windows, runner: Runner, meta, level: bool) -> dict:
    """Each recording learned as a machine of one state: a split would be states that are parts
    of one, with thresholds of their own. Counts the recordings split, and compares the share of
    each one's later windows over the threshold with one Gaussian's."""
    hop, span = 128, meta.window // 128
    rows = {}
    for info in cwru.scan(folder):
        x = features(runner, windows(info.name, hop=hop), meta.normalization, level)
        a = int(LEARN_SHARE * len(x))
        if a < min_windows(x.shape[1]) or len(x) - a <= span:
            continue
        later = x[a + span :]  # none overlapping the learned ones
        states = fit_stream(x[:a], span=span, level=level)
        one = fit_stream(x[:a], span=span, states=1, level=level)
        rows[info.name] = {"states": 1 + len(states.states), "over": float(np.mean(states.anomaly(later) > 1)),
                           "over_one_gaussian": float(np.mean(one.anomaly(later) > 1))}
    split = sorted(n for n, r in rows.items() if r["states"] > 1)
    over = [r["over"] for r in rows.values()]
    over1 = [r["over_one_gaussian"] for r in rows.values()]
    print(f"steady recordings learned as one machine each (hop {hop}): {len(split)} of {len(rows)} split into "
          f"states{' (' + ', '.join(split) + ')' if split else ''}; later windows over the threshold "
          f"{np.mean(over):.2%} on average, {max(over, default=0):.2%} at most (one Gaussian: {np.mean(over1):.2%}, "
          f"{max(over1, default=0):.2%})")
    return {"recordings": len(rows), "split": split, "rows": rows}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="bearing-cwru")
    ap.add_argument("--data", default=None)
    ap.add_argument("--learn", type=float, default=0.75, help="share of normal_0 learned (from its start)")
    ap.add_argument("--channel", choices=("DE", "FE"), default="DE",
                    help="the drive-end accelerometer (the model's) or the fan end's (one it never saw)")
    ap.add_argument("--no-level", action="store_true",
                    help="a baseline over the pooled features alone, without the windows' level")
    ap.add_argument("--margin", type=float, default=MARGIN)
    ap.add_argument("--json", help="write the figures here")
    ap.add_argument("--steady", action="store_true",
                    help="also: every recording as a machine of one operating state (learned on its first 70 %% at a "
                         "hop of 128): the states found, and its later windows over the threshold against one Gaussian")
    ap.add_argument("--sweep", action="store_true",
                    help="also: later healthy windows over the threshold against the number of learning windows "
                         "(at the model's hop and half of it), below the floor of min_windows too")
    args = ap.parse_args(argv)
    level = not args.no_level
    if not (math.isfinite(args.margin) and args.margin > 0):
        raise ConfigError(f"--margin must be a finite number > 0, not {args.margin}")
    if not 0 < args.learn < 1:
        raise ConfigError(f"--learn must be a share between 0 and 1 (exclusive), e.g. 0.7, not {args.learn}")
    out = writable_file(args.json, "--json") if args.json else None
    module, meta = load_artifact(args.model)
    if meta.input.get("kind", "raw") != "raw":
        raise ConfigError(f"{args.model} is not a bearing model (its input is {meta.input.get('kind')}, not raw "
                          "vibration); give a CWRU bearing model, e.g. --model bearing-cwru")
    if not meta.features:
        print(f"{args.model}: the artifact returns no pooled features; run tools/fit_unknown.py on it", file=sys.stderr)
        return 2
    runner = Runner(module, window=meta.window, device="cpu", threads=1, features=meta.features,
                    net_config=meta.model_config)
    folder = cwru.cwru_dir(args.data)
    manifest = cwru.read_manifest(folder)
    normal = "normal_0_97.mat"
    if not (folder / normal).is_file():
        raise DataError(f"{folder / normal} is missing: the baseline is learned on it; point --data at the CWRU folder")

    def windows(name: str, bounds: tuple[float, float] = (0.0, 1.0), hop: int = meta.hop) -> np.ndarray:
        rec = cwru.load_recording(folder / name, sample_rate=meta.sample_rate, manifest=manifest, channel=args.channel)
        seg = rec.part(bounds)
        return cwru.cut_windows(seg, cwru.window_starts(seg.size, meta.window, hop), meta.window)

    wl = windows(normal, (0.0, args.learn))
    wr = windows(normal, (args.learn, 1.0))
    need = min_windows(meta.features + level)
    if len(wl) < need or not len(wr):
        raise ConfigError(f"--learn {args.learn} leaves {len(wl)} windows of {normal} to learn on and {len(wr)} "
                          f"to test; the baseline needs >= {need} and the test >= 1: choose e.g. 0.7")
    learn = features(runner, wl, meta.normalization, level)
    base = fit_stream(learn, margin=args.margin, level=level)
    rest = features(runner, wr, meta.normalization, level)
    later = base.anomaly(rest)
    res: dict = {
        "model": meta.name, "learned_windows": base.windows, "held_back": base.held_back, "margin": args.margin,
        "threshold": round(base.threshold, 4),
        "healthy_later": {"windows": int(later.size), "over": int((later > 1).sum()),
                          "share_over": round(float((later > 1).mean()), 4),
                          "anomaly_p50": round(float(np.median(later)), 3), "anomaly_max": round(float(later.max()), 3)},
        "faults": {},
    }
    print(f"{meta.name} ({resolve_artifact(args.model).name}): baseline on the first {args.learn:.0%} of normal_0 "
          f"({base.windows} windows, {base.held_back} held back), margin {args.margin}")
    print(f"later healthy windows over the threshold: {res['healthy_later']['over']}/{later.size} "
          f"({(later > 1).mean():.2%}); anomaly median {np.median(later):.2f}, max {later.max():.2f}")
    worst = 1.0
    for info in cwru.scan(folder):
        if info.kind == "normal":
            continue
        x = windows(info.name)
        if not len(x):
            print(f"  {info.name:<34} shorter than a window: not measured")
            continue
        a = base.anomaly(features(runner, x, meta.normalization, level))
        share = float((a > 1).mean())
        worst = min(worst, share)
        res["faults"][info.name] = {"windows": int(a.size), "flagged": round(share, 4),
                                    "anomaly_p5": round(float(np.percentile(a, 5)), 2),
                                    "anomaly_p50": round(float(np.median(a)), 2)}
        print(f"  {info.name:<34} {share:7.2%} of {a.size:4d} windows flagged; anomaly p5 {np.percentile(a, 5):6.2f} "
              f"median {np.median(a):6.2f}")
    if res["faults"]:
        res["faults_min_flagged"] = round(worst, 4)
        print(f"every fault recording measured flagged on >= {worst:.2%} of its windows")
    else:
        res["faults_min_flagged"] = None
        print(f"no fault recordings measured in {folder}: the flagged share is not measured")
    if args.sweep:
        res["sweep"] = {}
        for hop in (meta.hop, meta.hop // 2):
            if hop != meta.hop:  # at the model's hop: the windows measured above
                learn = features(runner, windows(normal, (0.0, args.learn), hop), meta.normalization, level)
                rest = features(runner, windows(normal, (args.learn, 1.0), hop), meta.normalization, level)
            print(f"hop {hop}: {len(learn)} windows to learn from, {len(rest)} later healthy windows")
            for n in (32, 48, 64, 80, 96, 128, 160):
                if n > len(learn):
                    break
                starts = np.unique(np.linspace(0, len(learn) - n, 16).astype(int))
                over = np.array([(fit_stream(learn[s : s + n], margin=args.margin, least=n, level=level).anomaly(rest) > 1).mean()
                                 for s in starts])
                res["sweep"][f"hop {hop}, {n} windows"] = {"fits": int(starts.size), "mean_over": round(float(over.mean()), 4),
                                                           "fits_over_1pct": round(float((over > 0.01).mean()), 4)}
                print(f"  {n:4d} learning windows ({starts.size:2d} fits): later healthy over the threshold "
                      f"{over.mean():6.2%} on average; {(over > 0.01).mean():4.0%} of the fits over 1 %"
                      + ("" if n >= min_windows(learn.shape[1]) else "  (below the floor)"))
    if args.steady:
        res["steady"] = steady(folder, windows, runner, meta, level)
    if out:
        out.write_text(json.dumps(res, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(run_tool(main, "tools/eval_baseline.py"))
