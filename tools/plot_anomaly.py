#!/usr/bin/env python3
"""The anomaly score over a CWRU normal -> fault sequence (docs/img/anomaly-normal-to-fault.png).

A baseline is learned on the first 75 % of ``normal_0`` (as ``drsn-stream baseline learn`` does:
the shipped model's pooled features and the windows' level, a Gaussian, the threshold from the
held-back fifth x margin);
then the rest of ``normal_0`` is followed by 5 s each of a small outer-race, ball and inner-race
fault, every window cut at the model's hop. Top: the anomaly score (log scale; 1.0 = the
threshold). Bottom: the label the monitor would show (``unknown`` where refused).

    python tools/plot_anomaly.py [--data ../shared/data/cwru] [--out docs/img/anomaly-normal-to-fault.png]

Needs matplotlib (``pip install -e '.[docs]'``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from drsn_stream.config import writable_file
from drsn_stream.dsp.normalize import normalize_with_level
from drsn_stream.errors import ConfigError, DataError, run_tool
from drsn_stream.models import load_artifact
from drsn_stream.models.ood import UNKNOWN, UnknownDetector
from drsn_stream.monitor.baseline import fit_stream, with_level
from drsn_stream.train import cwru

ROOT = Path(__file__).resolve().parents[1]

LEARN = 0.75  # of normal_0: 86 windows, over the floor of 85 for 16 features and the level
SEQUENCE = (  # (file, part of it, name on the plot)
    ("normal_0_97.mat", (LEARN, 1.0), "healthy (rest of normal_0)"),
    ("12k_Drive_End_OR007@6_1_131.mat", (0.0, 0.5), "outer race 0.007 in, 1 HP"),
    ("12k_Drive_End_B007_1_119.mat", (0.0, 0.5), "ball 0.007 in, 1 HP"),
    ("12k_Drive_End_IR007_1_106.mat", (0.0, 0.5), "inner race 0.007 in, 1 HP"),
)
SECONDS = 5.0
FORMATS = {".png", ".pdf", ".svg", ".svgz", ".jpg", ".jpeg", ".eps", ".ps", ".tif", ".tiff", ".webp", ".pgf"}


def figure_path(out: str) -> Path:
    """``--out`` if matplotlib can write a figure there (checked before the work)."""
    p = Path(out)
    if p.suffix.lower() not in FORMATS:
        raise ConfigError(f"--out {out}: matplotlib writes {', '.join(sorted(FORMATS))}; give a file name ending so")
    return writable_file(p, "--out")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=None)
    ap.add_argument("--out", default=str(ROOT / "docs" / "img" / "anomaly-normal-to-fault.png"))
    args = ap.parse_args(argv)
    out = figure_path(args.out)
    module, meta = load_artifact("bearing-cwru")
    unknown = UnknownDetector.from_dict(meta.unknown)
    folder = cwru.cwru_dir(args.data)
    manifest = cwru.read_manifest(folder)

    def run(name: str, bounds: tuple[float, float], seconds: float | None = None):
        rec = cwru.load_recording(folder / name, sample_rate=meta.sample_rate, manifest=manifest)
        seg = rec.part(bounds)
        if seconds is not None:
            seg = seg[: int(seconds * meta.sample_rate)]
        x = cwru.cut_windows(seg, cwru.window_starts(seg.size, meta.window, meta.hop), meta.window)
        if not len(x):
            raise DataError(f"{name}: the part {bounds} holds {seg.size} samples, shorter than one window of "
                            f"{meta.window}; re-copy it from the CWRU data set")
        y, levels = normalize_with_level(x.astype(np.float32), meta.normalization)
        with torch.no_grad():
            logits, _, f = module.forward_features(torch.from_numpy(y))
        labels = [meta.labels[i] for i in logits.argmax(1).tolist()]
        refused = unknown.score(f.numpy()) > 1.0
        return with_level(f.numpy(), levels), [UNKNOWN if r else lb for lb, r in zip(labels, refused)]

    learn, _ = run("normal_0_97.mat", (0.0, LEARN))
    base = fit_stream(learn, level=True)
    runs = [(run(name, bounds, None if name.startswith("normal") else SECONDS), title)
            for name, bounds, title in SEQUENCE]
    try:
        import matplotlib
    except ImportError:
        raise ConfigError("the figure needs matplotlib: pip install -e '.[docs]'") from None

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    hop_s = meta.hop / meta.sample_rate
    fig, (ax, axl) = plt.subplots(2, 1, figsize=(10, 5.2), sharex=True, gridspec_kw={"height_ratios": [3, 2]})
    t0 = 0.0
    shown: list[str] = []
    points = []
    for (feats, labels), title in runs:
        a = base.anomaly(feats)
        t = t0 + np.arange(a.size) * hop_s
        ax.semilogy(t, a, ".", ms=3, label=title)
        ax.axvline(t0, color="0.8", lw=0.8)
        for lb in labels:
            if lb not in shown:
                shown.append(lb)
        points.append((t, labels))
        t0 = t[-1] + hop_s
    for t, labels in points:
        axl.plot(t, [shown.index(lb) for lb in labels], ".", ms=3, color="0.3")
    axl.set_yticks(range(len(shown)), shown, fontsize=8)
    axl.set_ylabel("label shown")
    axl.set_xlabel("seconds (windows every %.0f ms)" % (hop_s * 1000))
    ax.axhline(1.0, color="red", lw=1.0, ls="--", label="threshold (anomaly 1.0)")
    ax.set_ylabel("anomaly score")
    ax.set_title(f"bearing-cwru: baseline of the features and the level, learned on the first {LEARN:.0%} of normal_0 "
                 f"({base.windows} windows)", fontsize=10)
    ax.legend(fontsize=7, loc="lower right", ncol=2)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(run_tool(main, "tools/plot_anomaly.py"))
