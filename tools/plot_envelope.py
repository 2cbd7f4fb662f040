"""The envelope spectrum of a CWRU inner-race fault with the BPFI lines marked (docs/img/).

    python tools/plot_envelope.py [--data ../shared/data/cwru] [--out docs/img/envelope-inner-race.png]

Top: 1 second of IR014_0 (12 kHz drive end, 0 HP, 0.014 inch inner-race fault), the squared-envelope
spectrum of the band the BPFI evidence came from, with BPFI and its harmonics (and their shaft-rate
sidebands) at the speed the file records. Bottom: the healthy recording (resampled 48 -> 12 kHz), same
lines, same procedure. Needs matplotlib (``pip install -e '.[docs]'``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from scipy.signal import resample_poly

from drsn_stream.dsp.envelope import (
    EnvelopeSettings,
    _plan,
    analyse_block,
    bearing_geometry,
    envelope_spectra,
)
from drsn_stream.sources.file import mat_rpm, read_recording

ROOT = Path(__file__).resolve().parents[1]
RATE = 12000.0


def blocks(path: Path) -> tuple[np.ndarray, float]:
    """(1-second blocks (k, 12000), shaft Hz) of a recording's drive-end channel."""
    x, rate = read_recording(path)
    x = x[:, 0].astype(np.float64)
    if rate != RATE:
        x = resample_poly(x, int(RATE), int(rate))
    n = int(RATE)
    k = x.shape[0] // n
    return x[: k * n].reshape(k, n), mat_rpm(path) / 60.0


def panel(ax, xs: np.ndarray, shaft: float, title: str, settings: EnvelopeSettings) -> None:
    """The mean squared-envelope spectrum of the blocks, in the band block 0's BPFI evidence used."""
    geo = bearing_geometry("cwru-de")
    result = analyse_block(xs[0], RATE, shaft, geo, settings)
    plan = _plan(xs.shape[1], RATE, round(shaft, 4), geo, settings)
    lo, hi = result.bands["bpfi"]
    S = np.mean([envelope_spectra(x, RATE, np.array([lo]), plan["width"], plan["m"], plan["taper"])[0] for x in xs],
                axis=0)
    f = np.arange(S.shape[0]) * plan["df"]
    keep = (f > 2) & (f <= 600)
    amp = np.sqrt(S[keep])
    amp /= amp.max()
    ax.plot(f[keep], amp, lw=0.8, color="0.2")
    bpfi = geo.bpfi * shaft
    for h in (1, 2, 3):
        ax.axvline(h * bpfi, color="tab:red", ls="--", lw=1.0, label="BPFI x1..3" if h == 1 else None)
        for side in (-1, 1):
            ax.axvline(h * bpfi + side * shaft, color="tab:orange", ls=":", lw=1.0,
                       label="± shaft speed" if (h, side) == (1, -1) else None)
        ax.text(h * bpfi + 4, 1.02, f"{h}×BPFI {h * bpfi:.0f} Hz", color="tab:red", ha="left", va="bottom",
                fontsize=8)
    ev = result.evidence
    ax.set_title(f"{title}\nband {lo:.0f}-{hi:.0f} Hz; block 0 evidence: BPFI {ev['bpfi']:.1f}, BPFO {ev['bpfo']:.1f}, "
                 f"BSF {ev['bsf']:.1f} dB -> {result.fault_type}", fontsize=9)
    ax.set_ylabel("amplitude (of the largest)")
    ax.set_ylim(0, 1.12)
    ax.set_xlim(0, 600)
    ax.legend(loc="center right", fontsize=8)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "cwru")
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "img" / "envelope-inner-race.png")
    args = ap.parse_args(argv)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    settings = EnvelopeSettings()
    fig, axes = plt.subplots(2, 1, figsize=(9, 6.5), sharex=True)
    xs, shaft = blocks(args.data / "12k_Drive_End_IR014_0_169.mat")
    panel(axes[0], xs, shaft, f"IR014_0: inner race, 0.014 in, 0 HP, {shaft * 60:.0f} rpm; mean of {len(xs)} 1-s blocks",
          settings)
    xs, shaft = blocks(args.data / "normal_0_97.mat")
    panel(axes[1], xs, shaft, f"normal_0: healthy, {shaft * 60:.0f} rpm; mean of {len(xs)} 1-s blocks", settings)
    axes[1].set_xlabel("envelope frequency (Hz)")
    fig.suptitle("Squared-envelope spectrum, CWRU drive end (6205 bearing)", fontsize=11)
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=110)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
