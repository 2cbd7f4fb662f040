"""Training speed of the paper-size networks on the CWRU 0 HP set, and the shipped recipe's time.

Trains each network for a few epochs with the shipped model's data pipeline (random windows,
noise augmentation, z-score) and prints windows/s, the ratio to ResNet (the paper's Table V
says DRSN takes about 1.6 x ResNet) and the projected time of the full shipped recipe
(configs/bearing-cwru.toml). CPU time is shared with whatever else runs: say so with the figures.

    nice python tools/train_time.py [--data ../shared/data/cwru] [--threads 1] [--epochs 2]
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from drsn_stream.dsp.normalize import normalize  # noqa: E402
from drsn_stream.models import create_model  # noqa: E402
from drsn_stream.train.config import load_config  # noqa: E402
from drsn_stream.train.cwru import RandomWindows  # noqa: E402
from drsn_stream.train.loop import fit  # noqa: E402
from drsn_stream.train.run import load_data  # noqa: E402

NETS = ("convnet_paper", "resnet_paper", "drsn_cs_paper", "drsn_cw_paper")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=None)
    ap.add_argument("--config", type=Path, default=ROOT / "configs" / "bearing-cwru.toml")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--windows-per-class", type=int, default=128)
    args = ap.parse_args()

    cfg = load_config(args.config)
    recs, _ = load_data(cfg, args.data)
    train = RandomWindows(
        recs, cfg.data.labels, cfg.data.train_part, window=cfg.data.window, per_class=args.windows_per_class
    )
    recipe = replace(cfg.recipe, epochs=args.epochs, threads=args.threads)
    full_windows = cfg.recipe.epochs * cfg.data.windows_per_class * len(cfg.data.labels)
    rates = {}
    print(
        f"{args.threads} thread(s), {args.epochs} epochs x {len(train)} windows, noise augmentation on, z-score"
    )
    warm = train.epoch(0, np.random.default_rng(0))
    warm_xy = (warm.x[: recipe.batch_size], warm.y[: recipe.batch_size])
    prepare = lambda x: normalize(x, {"kind": "zscore"})  # noqa: E731
    for net in NETS:
        torch.manual_seed(0)
        model = create_model(net, len(cfg.data.labels))
        # One untimed batch first: the first call pays for thread pools and allocator warm-up.
        fit(model, warm_xy, recipe=replace(recipe, epochs=1), prepare=prepare, progress=False)
        t0 = time.perf_counter()
        res = fit(
            model,
            train,
            recipe=recipe,
            augment=cfg.augment,
            prepare=prepare,
            progress=False,
        )
        dt = time.perf_counter() - t0
        rates[net] = res.windows_seen / dt
    base = rates["resnet_paper"]
    print(f"{'network':16s} {'windows/s':>10s} {'x ResNet time':>14s} {'shipped recipe (min)':>21s}")
    for net, r in rates.items():
        print(f"{net:16s} {r:10.0f} {base / r:14.2f} {full_windows / r / 60:21.1f}")
    print(
        f"shipped recipe: {cfg.recipe.epochs} epochs x {cfg.data.windows_per_class * len(cfg.data.labels)} windows "
        f"= {full_windows} windows (plus validation each epoch)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
