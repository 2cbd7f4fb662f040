#!/usr/bin/env python3
"""How long `drsn-stream train --data MANIFEST --from bearing-cwru` takes on ~10 minutes of recordings.

The recordings: the drive-end and fan-end channels of every CWRU file (74 recordings, 12.4 min of
signal, 10 classes by fault and size; the 48 kHz healthy baseline is resampled). Measured in one
process, phase by phase: reading + resampling + splitting, fine-tuning (the default recipe:
10 epochs of 256 windows per class, noise augmentation), held-out evaluation and export; the
baseline measured in the same run is what a user would run without a pretrained network: the
same data from scratch with its default recipe (30 epochs at learning rate 0.1).
CPU time is shared with whatever else runs: say so with the figures.

    nice python tools/finetune_time.py [--data ../shared/data/cwru] [--threads 0] [--no-baseline]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from drsn_stream.errors import run_tool
from drsn_stream.train.cwru import cwru_dir, scan
from drsn_stream.train.finetune import UserRun, train_user


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=None, help="CWRU folder (default: ../shared/data/cwru)")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--no-baseline", action="store_true",
                    help="fine-tuning only (the scratch run takes three times as long)")
    args = ap.parse_args(argv)
    folder = cwru_dir(args.data).resolve()  # the manifest lives in a temp folder: its paths must not be relative
    with tempfile.TemporaryDirectory() as tmp:
        m = Path(tmp) / "ten-minutes.csv"
        # both channels of a file share its recording id: they are one stretch of time and stay in one role
        rows = ["path,label,channel,recording"]
        for info in scan(folder):
            for ch in ("DE", "FE"):
                rows.append(f"{folder / info.name},{info.label_with_size},{ch},{info.name}")
        m.write_text("\n".join(rows) + "\n")
        figures = {}
        for base in ("bearing-cwru",) if args.no_baseline else ("bearing-cwru", "scratch"):
            run = UserRun(base=base, threads=args.threads)  # each start's default recipe
            t0, c0 = time.perf_counter(), time.process_time()
            rep = train_user(m, run, out_dir=Path(tmp) / base, artifact=Path(tmp) / f"{base}.pt", progress=False)
            wall, cpu = time.perf_counter() - t0, time.process_time() - c0
            figures[base] = (wall, rep["train_seconds"], rep["accuracy"]["clean"])
            print(f"from {base}: {wall:.0f} s end to end, {cpu:.0f} s of CPU time over {torch.get_num_threads()} "
                  f"thread(s) (training {rep['train_seconds']:.0f} s, evaluation "
                  f"{rep['eval_seconds']:.0f} s); held-out clean accuracy {100 * rep['accuracy']['clean']:.2f} % "
                  f"on {rep['accuracy']['n']} windows", flush=True)
    ft = figures["bearing-cwru"]
    if "scratch" not in figures:
        return 0
    sc = figures["scratch"]
    print(f"fine-tuning / from scratch: x{ft[0] / sc[0]:.2f} end to end; target <= 120 s: "
          f"{'met' if ft[0] <= 120 else 'NOT met'} ({ft[0]:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(run_tool(main, "tools/finetune_time.py"))
