"""Reading compressed sound files: one decoding child per file against one shared child
(``drsn_stream.audiofile.decoding``, what training uses for a data set), in the same run
(prints figures, asserts nothing).

    python tools/bench_decode.py                    # 100 one-second FLAC clips, 3 alternating rounds
    python tools/bench_decode.py --clips 300 --format mp3

Figures: seconds to read every clip each way, milliseconds per clip, the ratio, and whether both
ways gave the same samples.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from drsn_stream.audiofile import decoding, read_audio
from drsn_stream.errors import run_tool

FORMATS = {"flac": ("FLAC", "PCM_16"), "ogg": ("OGG", "VORBIS"), "mp3": ("MP3", "MPEG_LAYER_III")}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clips", type=int, default=100, help="clips to read (default 100)")
    ap.add_argument("--format", choices=sorted(FORMATS), default="flac")
    ap.add_argument("--rounds", type=int, default=3, help="alternating rounds of the two ways (default 3)")
    args = ap.parse_args()
    import soundfile

    rng = np.random.default_rng(0)
    t = np.arange(8000) / 8000
    with tempfile.TemporaryDirectory() as tmp:
        paths = []
        for i in range(args.clips):  # one second at 8 kHz: a tone in noise, as a spoken-digit clip is long
            x = 0.3 * np.sin(2 * np.pi * (200 + 5 * i) * t) + 0.02 * rng.standard_normal(t.size)
            paths.append(Path(tmp) / f"clip{i}.{args.format}")
            fmt, subtype = FORMATS[args.format]
            soundfile.write(paths[-1], x, 8000, format=fmt, subtype=subtype)
        print(f"{args.clips} {args.format} clips of 1 s at 8 kHz, {args.rounds} alternating rounds")
        for r in range(args.rounds):
            t0 = time.perf_counter()
            alone = [read_audio(p)[0] for p in paths]
            t1 = time.perf_counter()
            with decoding():
                shared = [read_audio(p)[0] for p in paths]
            t2 = time.perf_counter()
            same = all(np.array_equal(a, b) for a, b in zip(alone, shared))
            print(f"round {r + 1}: one child per file {t1 - t0:.2f} s ({1e3 * (t1 - t0) / args.clips:.1f} ms per clip), "
                  f"one shared child {t2 - t1:.2f} s ({1e3 * (t2 - t1) / args.clips:.2f} ms per clip): "
                  f"{(t1 - t0) / (t2 - t1):.1f}x; same samples: {same}")
    return 0


if __name__ == "__main__":
    raise SystemExit(run_tool(main, "tools/bench_decode.py"))
