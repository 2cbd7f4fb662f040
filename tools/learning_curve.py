#!/usr/bin/env python3
"""Cross-load fine-tuning on CWRU, and how much of your own data it takes (docs/user-data.md).

"Another machine" is stood in for by another load: the shipped bearing-cwru network (trained at
0 HP) is fine-tuned with a new head on the FIRST 30 % (by time) of every 3 HP recording and tested
on the LAST 50 % (10 classes; the healthy baseline exists only at 0 HP, so it is split the same
way in time). The same runs from scratch give the comparison. The learning curve trains on only
the first N windows' worth of signal per class (N x 2048 samples, N x 0.17 s; the 30 % holds 17.9
for a fault, 8.9 for the 5 s healthy baseline) and measures the same test part.

Writes docs/user-data-cross-load.json and docs/img/learning-curve.png; runs go through the same
code as `drsn-stream train --data MANIFEST` (train/userdata.py, train/finetune.py).

    nice python tools/learning_curve.py [--data ../shared/data/cwru] [--windows 1,2,4,8] [--scratch-windows 2,8]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from drsn_stream.errors import ConfigError, run_tool
from drsn_stream.train.cwru import cwru_dir, scan
from drsn_stream.train.evaluate import evaluate
from drsn_stream.train.finetune import WHOLE, UserRun, fit_split, layout_of
from drsn_stream.train.userdata import Split, load_user_data, parse_parts, split_clips

ROOT = Path(__file__).resolve().parents[1]
PARTS = "train=0:0.3,test=0.5:1"
FULL = 18  # windows' worth in the first 30 % of a 10 s fault recording (17.9; the baseline has 8.9)
LOAD = 3


def manifest(folder: Path, out: Path) -> Path:
    """The 3 HP fault recordings and the (0 HP) healthy baseline, labelled as the shipped model's classes."""
    rows = ["path,label"]
    for info in scan(folder):
        if info.kind == "normal" or info.load == LOAD:
            rows.append(f"{folder / info.name},{info.label_with_size}")
    out.write_text("\n".join(rows) + "\n")
    return out


def limited(split: Split, samples: int | None) -> Split:
    """The split with every training segment cut to its first ``samples`` (None: as is)."""
    if samples is None:
        return split
    segs = dict(split.segments)
    segs["train"] = [replace(c, signal=c.signal[:samples]) for c in split.segments["train"]]
    return Split(segs, split.by, split.parts, split.table)


def one(run: UserRun, labels: list[str], split: Split) -> dict[str, Any]:
    t0 = time.perf_counter()
    t = fit_split(run, labels, split, progress=False)
    seconds = time.perf_counter() - t0
    lay = t.layout
    ev = evaluate(t.model, split.segments["test"], labels, WHOLE, window=lay.window, hop=lay.hop,
                  normalization={"kind": lay.normalization}, kinds=["gaussian", "pink"], snrs=[0.0], seed=1234)
    conf = np.array(ev["confusion"])
    faults = [i for i, lab in enumerate(labels) if lab != "normal"]
    return {
        "clean": ev["results"][0]["accuracy"],
        "gaussian@0dB": ev["results"][1]["accuracy"],
        "pink@0dB": ev["results"][2]["accuracy"],
        "faults_only_clean": float(conf[np.ix_(faults, faults)].trace() / conf[faults].sum()),
        "per_class": {lab: float(conf[i, i] / conf[i].sum()) for i, lab in enumerate(labels)},
        "n_test": int(conf.sum()),
        "seconds": round(seconds, 1),
        "epochs": t.recipe.epochs,
        "windows_seen": t.result.windows_seen,
    }


def plot(doc: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    for start, style in (("bearing-cwru", "o-"), ("scratch", "s--")):
        pts = [r for r in doc["curve"] if r["from"] == start]
        xs = sorted({r["windows_per_class"] for r in pts})
        ys = [100 * np.mean([r["clean"] for r in pts if r["windows_per_class"] == x]) for x in xs]
        ax.plot(xs, ys, style, label=f"from {start}")
    ax.axhline(95, color="grey", lw=0.8, ls=":")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("training signal per class (windows of 2048 samples, 0.17 s each)")
    ax.set_ylabel("accuracy on the last 50 % at 3 HP (%)")
    ax.set_title("CWRU 3 HP, 10 classes: fine-tuned vs from scratch")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def counts(text: str, flag: str, *, least: int) -> list[int]:
    """A comma-separated list of whole numbers >= ``least`` (checked before the data loads)."""
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        values = []
    if not values or min(values) < least:
        raise ConfigError(f"{flag} {text!r}: give comma-separated whole numbers >= {least}, e.g. 1,2,4")
    return values


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=None, help="CWRU folder (default: ../shared/data/cwru)")
    ap.add_argument("--windows", default="1,2,4,8", help="windows per class for the fine-tuning curve (and all)")
    ap.add_argument("--scratch-windows", default="2,8", help="windows per class for the from-scratch curve (and all)")
    ap.add_argument("--seeds", default="0", help="training seeds, comma-separated")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=str(ROOT / "docs" / "user-data-cross-load.json"))
    ap.add_argument("--png", default=str(ROOT / "docs" / "img" / "learning-curve.png"))
    args = ap.parse_args(argv)
    seeds = counts(args.seeds, "--seeds", least=0)
    plan = {"bearing-cwru": counts(args.windows, "--windows", least=1),
            "scratch": counts(args.scratch_windows, "--scratch-windows", least=1)}
    try:
        import matplotlib  # noqa: F401 - the figure is drawn at the end of a long run: check now
    except ImportError:
        raise ConfigError("the figure needs matplotlib: pip install -e '.[docs]'") from None
    folder = cwru_dir(args.data).resolve()  # the manifest lives in a temp folder: its paths must not be relative
    with tempfile.TemporaryDirectory() as tmp:
        data = load_user_data(manifest(folder, Path(tmp) / "lc.manifest.csv"),
                              sample_rate=layout_of(UserRun()).sample_rate)
    labels = data.labels
    split = split_clips(data.clips, labels, parts=parse_parts(PARTS))
    window = layout_of(UserRun()).window
    doc: dict[str, Any] = {
        "protocol": f"CWRU DE, 10 classes; faults at {LOAD} HP, healthy baseline at 0 HP (the only one); "
        f"parts {PARTS} of every recording (split in time before windowing)",
        "command": "nice python tools/learning_curve.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "note": "the base bearing-cwru saw 0-75 % of the healthy baseline in its own training/validation, so "
        "its test windows 50-75 % are not new to a fine-tuned model; faults_only_clean leaves that class out",
        "full": [],
        "curve": [],
    }
    for base, points in plan.items():
        for seed in seeds:
            run = UserRun(base=base, seed=seed, threads=args.threads, parts=parse_parts(PARTS))
            for n in [*points, None]:
                r = {"from": base, "seed": seed, "windows_per_class": n or FULL,
                     **one(run, labels, limited(split, n * window if n else None))}
                (doc["curve"] if n else doc["full"]).append(r)
                if n is None:  # the whole 30 %: a point of the curve too
                    doc["curve"].append(r)
                print(f"from {base} seed {seed}, {n or 'all (30 %)'} windows/class: clean {100 * r['clean']:.2f} %  "
                      f"faults only {100 * r['faults_only_clean']:.2f} %  ({r['seconds']} s)", flush=True)
    for base in ("bearing-cwru", "scratch"):
        pts = sorted((r["windows_per_class"], r["clean"]) for r in doc["curve"] if r["from"] == base)
        reach = [n for n, acc in pts if acc >= 0.95]
        doc.setdefault("windows_for_95", {})[base] = reach[0] if reach else None
    Path(args.out).write_text(json.dumps(doc, indent=1))
    plot(doc, Path(args.png))
    print(f"wrote {args.out} and {args.png}; windows per class for 95 %: {doc['windows_for_95']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(run_tool(main, "tools/learning_curve.py"))
