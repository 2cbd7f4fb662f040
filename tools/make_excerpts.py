"""Build drsn_stream/data/cwru_excerpts.npz, the recordings the built-in ``sim:bearing`` replays.

For each of the 10 classes of the 0 HP drive-end CWRU set (normal + ball/inner/outer at 0.007,
0.014, 0.021 inch) it stores up to 3 s of the drive-end signal taken from the END of the
recording, inside its final 25 % - the part the model trainers hold out for testing - so the
simulator never replays what a model was trained on. ``normal_0_97.mat`` is sampled at 48 kHz and
is first brought to 12 kHz with ``scipy.signal.resample_poly(x, 1, 4)``.

Samples are stored as int16 with one float scale per class (g per count). Credit: Case Western
Reserve University Bearing Data Center.

    python tools/make_excerpts.py [--data ../shared/data] [--out drsn_stream/data/cwru_excerpts.npz]
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import numpy as np
from scipy.signal import resample_poly

from drsn_stream.errors import DataError, run_tool
from drsn_stream.sources.file import load_mat

RATE = 12000
MAX_SECONDS = 3.0
HELD_OUT_FRACTION = 0.25
EDGE_TRIM = 16  # samples at 12 kHz, > the resampling filter's half length (10)
MIN_SECONDS = 1.0  # an excerpt shorter than this replays as a stutter: refuse the recording
FILES = {
    "normal": "normal_0_97.mat",
    "ball_007": "12k_Drive_End_B007_0_118.mat",
    "ball_014": "12k_Drive_End_B014_0_185.mat",
    "ball_021": "12k_Drive_End_B021_0_222.mat",
    "inner_007": "12k_Drive_End_IR007_0_105.mat",
    "inner_014": "12k_Drive_End_IR014_0_169.mat",
    "inner_021": "12k_Drive_End_IR021_0_209.mat",
    "outer_007": "12k_Drive_End_OR007@6_0_130.mat",
    "outer_014": "12k_Drive_End_OR014@6_0_197.mat",
    "outer_021": "12k_Drive_End_OR021@6_0_234.mat",
}
ROOT = Path(__file__).resolve().parents[1]


def drive_end(path: Path) -> np.ndarray:
    mat = load_mat(path, DataError)
    keys = [k for k in mat if k.endswith("_DE_time")]
    if len(keys) != 1:
        raise DataError(f"{path.name}: expected one *_DE_time array, found {keys}; re-copy it from the CWRU data set")
    x = np.asarray(mat[keys[0]], dtype=np.float64).reshape(-1)
    bad = int(x.size - np.count_nonzero(np.isfinite(x)))
    if bad:
        raise DataError(f"{path.name}: {bad} of its {x.size} samples are NaN or infinite; re-copy it from the CWRU "
                        "data set")
    return x


def main() -> int:
    default_data = Path(os.environ.get("DRSN_DATA", ROOT.parent / "shared" / "data"))
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=default_data, help="folder holding cwru/")
    ap.add_argument("--out", type=Path, default=ROOT / "drsn_stream" / "data" / "cwru_excerpts.npz")
    args = ap.parse_args()
    cwru = args.data / "cwru"
    if not cwru.is_dir():
        raise DataError(f"{cwru} not found: pass --data pointing at the folder that holds cwru/")

    arrays: dict[str, np.ndarray] = {}
    info: dict[str, dict] = {}
    for label, name in FILES.items():
        x = drive_end(cwru / name)
        if label == "normal":
            x = resample_poly(x, 1, 4)  # 48 kHz -> 12 kHz, see shared/data/README.md
        n = x.size
        held_out_start = int(np.ceil((1.0 - HELD_OUT_FRACTION) * n))
        if label == "normal":
            # The last outputs fade where the filter runs past the recording's end: drop them
            # rather than replay a dip on every loop.
            x = x[:-EDGE_TRIM]
        start = max(held_out_start, x.size - int(MAX_SECONDS * RATE))
        seg = x[start:]
        if seg.size < MIN_SECONDS * RATE:
            raise DataError(f"{name}: its held-out part gives a {seg.size / RATE:.2f} s excerpt, shorter than "
                            f"{MIN_SECONDS:g} s; re-copy it from the CWRU data set")
        scale = float(np.max(np.abs(seg))) / 32767.0
        if not scale > 0:
            raise DataError(f"{name}: the excerpt is silent (every sample 0); re-copy it from the CWRU data set")
        arrays[label] = np.round(seg / scale).astype(np.int16)
        arrays[f"{label}__scale"] = np.array(scale, dtype=np.float64)
        info[label] = {"file": name, "start": start, "n": int(seg.size), "recording_n": n}
        print(f"{label:10s} {name:34s} samples {start}..{n} ({seg.size / RATE:.2f} s), scale {scale:.3e} g")
    meta = {
        "rate": RATE,
        "labels": list(FILES),
        "source": info,
        "credit": "Case Western Reserve University Bearing Data Center",
        "note": "drive-end, 0 HP, excerpts from the final 25 % (held-out test part) of each recording",
    }
    arrays["meta"] = np.array(json.dumps(meta))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(args.out, **arrays)
    print(f"wrote {args.out} ({args.out.stat().st_size / 1024:.0f} KiB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(run_tool(main, "tools/make_excerpts.py"))
