"""The envelope spectrum of a CWRU inner-race fault with the BPFI lines marked (docs/img/).

    python tools/plot_envelope.py [--data ../shared/data/cwru] [--out docs/img/envelope-inner-race.png]

Top: 1 second of IR014_0 (12 kHz drive end, 0 HP, 0.014 inch inner-race fault), the squared-envelope
spectrum of the band the BPFI evidence came from, with BPFI and its harmonics (and their shaft-rate
sidebands) at the speed the file records. Bottom: the healthy recording (resampled 48 -> 12 kHz), same
lines, same procedure. Needs matplotlib (``pip install -e '.[docs]'``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from scipy.signal import resample_poly

from drsn_stream.config import writable_file
from drsn_stream.dsp.envelope import (
    EnvelopeSettings,
    _plan,
    analyse_block,
    bearing_geometry,
    envelope_spectra,
)
from drsn_stream.errors import ConfigError, DataError, run_tool
from drsn_stream.sources.file import mat_rpm, read_recording

ROOT = Path(__file__).resolve().parents[1]
RATE = 12000.0
FORMATS = {".png", ".pdf", ".svg", ".svgz", ".jpg", ".jpeg", ".eps", ".ps", ".tif", ".tiff", ".webp", ".pgf"}


def figure_path(out: Path) -> Path:
    """``--out`` if matplotlib can write a figure there (checked before the work)."""
    if out.suffix.lower() not in FORMATS:
        raise ConfigError(f"--out {out}: matplotlib writes {', '.join(sorted(FORMATS))}; give a file name ending so")
    return writable_file(out, "--out")


def blocks(path: Path) -> tuple[np.ndarray, float]:
    """(1-second blocks (k, 12000), shaft Hz) of a recording's drive-end channel; blocks with NaN or
    infinite samples are left out (and said)."""
    x, rate = read_recording(path)
    x = x[:, 0].astype(np.float64)
    if rate != RATE:
        x = resample_poly(x, int(RATE), int(rate))
    rpm = mat_rpm(path)
    if rpm is None:
        raise DataError(f"{path.name}: no RPM variable in the file; the envelope needs the shaft speed")
    n = int(RATE)
    k = x.shape[0] // n
    if k == 0:
        raise DataError(f"{path.name}: {x.shape[0] / RATE:.2f} s of signal, shorter than one 1-second block")
    xs = x[: k * n].reshape(k, n)
    finite = np.isfinite(xs).all(axis=1)
    if not finite.all():
        print(f"{path.name}: left out {int((~finite).sum())} of {k} blocks with NaN or infinite samples",
              file=sys.stderr)
        xs = xs[finite]
    if not len(xs):
        raise DataError(f"{path.name}: every 1-second block holds NaN or infinite samples; re-copy it from the "
                        "CWRU data set")
    return xs, rpm / 60.0


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
    out = figure_path(args.out)
    ir, ir_shaft = blocks(args.data / "12k_Drive_End_IR014_0_169.mat")
    normal, normal_shaft = blocks(args.data / "normal_0_97.mat")
    try:
        import matplotlib
    except ImportError:
        raise ConfigError("the figure needs matplotlib: pip install -e '.[docs]'") from None

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    settings = EnvelopeSettings()
    fig, axes = plt.subplots(2, 1, figsize=(9, 6.5), sharex=True)
    panel(axes[0], ir, ir_shaft,
          f"IR014_0: inner race, 0.014 in, 0 HP, {ir_shaft * 60:.0f} rpm; mean of {len(ir)} 1-s blocks", settings)
    panel(axes[1], normal, normal_shaft,
          f"normal_0: healthy, {normal_shaft * 60:.0f} rpm; mean of {len(normal)} 1-s blocks", settings)
    axes[1].set_xlabel("envelope frequency (Hz)")
    fig.suptitle("Squared-envelope spectrum, CWRU drive end (6205 bearing)", fontsize=11)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(run_tool(main, "tools/plot_envelope.py"))
