#!/usr/bin/env python3
"""Leave-one-speaker-out accuracy of every ensemble the trained seeds allow, without training again.

`tools/train_digits.py --loso --ensemble K` trains K networks (seeds s, s+1, ...) per held-out
speaker and saves each network's probabilities for that speaker's 500 recordings in
`loso-SPEAKER-probs.npz`. This script scores every subset of those seeds as an ensemble (mean of
the members' probabilities, argmax over all labels, as `Ensemble` and `accuracy()` do), so one
run answers "how much does a pair / three / four networks help, and how much does it depend on
which seeds": per subset size it prints the mean over speakers for every subset, and their
minimum, mean and maximum.

    python tools/loso_ensembles.py runs/digits-loso4-a runs/digits-loso4-b [--json OUT]
        [--write 0,1,2 DIR]   # loso-SPEAKER.json of that ensemble, for train_digits.py --record-loso
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import zipfile
from pathlib import Path

import numpy as np

from drsn_stream.errors import DataError, run_tool


def load(dirs: list[Path]) -> tuple[list[int], dict[str, tuple[np.ndarray, np.ndarray]], dict[str, int]]:
    """Seeds, {speaker: (probs (members, n, classes), truth (n,))} from the folders' npz files,
    and {speaker: training epochs} from the loso-SPEAKER.json beside them."""
    seeds: list[int] | None = None
    folds: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    epochs: dict[str, int] = {}
    for d in dirs:
        for f in sorted(d.glob("loso-*-probs.npz")):
            speaker = f.name[len("loso-") : -len("-probs.npz")]
            record = d / f"loso-{speaker}.json"
            try:
                with np.load(f, allow_pickle=False) as z:
                    s = [int(v) for v in z["seeds"]]
                    probs, truth = z["probs"], z["truth"]
                ep = int(json.loads(record.read_text())["epochs"])
            except (OSError, ValueError, KeyError, TypeError, zipfile.BadZipFile) as exc:
                what = f"missing {exc}" if isinstance(exc, KeyError) else str(exc).splitlines()[0][:200]
                raise DataError(f"{f.name} / {record.name} in {d}: not what tools/train_digits.py --loso writes "
                                f"({what}); re-run it") from None
            if probs.ndim != 3 or probs.shape[0] != len(s) or truth.shape != probs.shape[1:2] or \
                    not np.isfinite(probs).all():
                raise DataError(f"{f}: probabilities {probs.shape} for {len(s)} seeds and labels {truth.shape}"
                                + ("" if np.isfinite(probs).all() else ", some NaN or infinite")
                                + "; not what tools/train_digits.py --loso writes: re-run it")
            if seeds is None:
                seeds = s
            elif s != seeds:
                raise DataError(f"{f}: seeds {s} differ from {seeds} in the other folds; score runs of one seed set "
                                "together")
            if speaker in folds:
                raise DataError(f"{f}: speaker {speaker} appears twice")
            folds[speaker] = (probs, truth)
            epochs[speaker] = ep
    if not folds or seeds is None:
        raise DataError(f"no loso-*-probs.npz in {', '.join(map(str, dirs))}; run tools/train_digits.py --loso first")
    return seeds, folds, epochs


def write_records(folds: dict[str, tuple[np.ndarray, np.ndarray]], epochs: dict[str, int], seeds: list[int],
                  chosen: list[int], out: Path) -> None:
    """loso-SPEAKER.json for the ensemble of the ``chosen`` seeds, as train_digits.py --loso writes them."""
    from drsn_stream.speech.train import score_digits

    pos = [seeds.index(s) for s in chosen]
    out.mkdir(parents=True, exist_ok=True)
    for speaker, (probs, truth) in sorted(folds.items()):
        rec = {
            "speaker": speaker,
            "epochs": epochs[speaker],
            "seeds": chosen,
            "member_accuracy": [score_digits(probs[i], truth)["accuracy"] for i in pos],
            **score_digits(probs[pos].mean(axis=0), truth),
            "scored_by": "tools/loso_ensembles.py from the members' saved probabilities",
        }
        (out / f"loso-{speaker}.json").write_text(json.dumps(rec, indent=1))


def score(folds: dict[str, tuple[np.ndarray, np.ndarray]], members: tuple[int, ...]) -> dict[str, float]:
    """Accuracy (%) per speaker of the ensemble of these member positions, plus their mean."""
    from drsn_stream.speech.train import score_digits

    out = {}
    for speaker, (probs, truth) in sorted(folds.items()):
        out[speaker] = score_digits(probs[list(members)].mean(axis=0), truth)["accuracy"]
    out["mean"] = round(float(np.mean([v for k, v in out.items()])), 2)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dirs", nargs="+", type=Path, help="run folders holding loso-SPEAKER-probs.npz")
    ap.add_argument("--json", type=Path, default=None, help="also write every subset's scores here")
    ap.add_argument("--write", nargs=2, metavar=("SEEDS", "DIR"), default=None,
                    help="write loso-SPEAKER.json of the ensemble of these comma-separated seeds into DIR")
    args = ap.parse_args(argv)
    seeds, folds, epochs = load(args.dirs)
    print(f"speakers: {', '.join(sorted(folds))} ({len(folds)}); seeds {seeds}")
    rows = []
    for k in range(1, len(seeds) + 1):
        means = []
        for members in itertools.combinations(range(len(seeds)), k):
            acc = score(folds, members)
            rows.append({"seeds": [seeds[i] for i in members], "accuracy": acc})
            means.append(acc["mean"])
            per = "  ".join(f"{s} {v:5.1f}" for s, v in acc.items() if s != "mean")
            print(f"seeds {','.join(str(seeds[i]) for i in members):<10} mean {acc['mean']:6.2f} %   {per}")
        print(f"-- {k} network(s): {len(means)} subset(s), mean over speakers: min {min(means):.2f}, "
              f"mean {np.mean(means):.2f}, max {max(means):.2f} %")
    if args.write:
        chosen = [int(v) for v in args.write[0].split(",")]
        if not set(chosen) <= set(seeds):
            sys.exit(f"--write: seeds {chosen} are not all among the trained seeds {seeds}")
        write_records(folds, epochs, seeds, chosen, Path(args.write[1]))
    if args.json:
        args.json.write_text(json.dumps({"seeds": seeds, "speakers": sorted(folds), "subsets": rows}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(run_tool(main, "tools/loso_ensembles.py"))
