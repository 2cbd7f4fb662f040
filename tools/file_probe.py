#!/usr/bin/env python3
"""File probe: damaged files of every kind the monitor and the training tools read.

For each kind (WAV, NPY, CSV, MATLAB v5 plain and compressed, MATLAB v5 with the signal in a
struct (a test rig's layout), MATLAB v4 and v7.3 (HDF5), TDMS, FLAC, Ogg Vorbis, MP3, a model artifact, a training
checkpoint) it makes a good file, then ``--count`` damaged copies of it (one bit
flipped, a few bytes set to anything, a few bytes inserted, the file cut short; half of them in
the first 512 bytes, where the headers are; seeded, so a run is repeatable) and reads each as
drsn-stream does (``read_recording``, ``load_artifact``, ``load_checkpoint``) in a child
process. One row per kind: how many were read, how many refused with drsn-stream's own one-line
error, how many raised anything else or warned (a traceback or a warning for the user) and how
many crashed the process (a signal: the child is started again after the file that killed it,
which is kept under ``--keep``), and how many bytes reached the process's stderr (a decoder's own
complaints land on the dashboard's terminal). Exit status 1 when any file did any of the last three.

    python tools/file_probe.py --count 2000
    python tools/file_probe.py --kinds mat5,mat4 --count 20000 --keep /tmp/crashes
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
KINDS = ("wav", "npy", "csv", "mat5", "mat5z", "mat5s", "mat4", "mat73", "tdms", "flac", "ogg", "mp3", "artifact",
         "checkpoint")
SOUND = {"flac": ("FLAC", "PCM_16"), "ogg": ("OGG", "VORBIS"), "mp3": ("MP3", "MPEG_LAYER_III")}


def good_file(kind: str) -> tuple[bytes, str]:
    """(the bytes of an undamaged file of ``kind``, its suffix)."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3000, 2))
    buf = io.BytesIO()
    if kind == "wav":
        from scipy.io import wavfile

        wavfile.write(buf, 12000, (x * 3000).astype(np.int16))
        return buf.getvalue(), ".wav"
    if kind == "npy":
        np.save(buf, x.astype(np.float32))
        return buf.getvalue(), ".npy"
    if kind == "csv":
        rows = "".join(f"{i / 12000:.6f},{a:.5f},{b:.5f}\n" for i, (a, b) in enumerate(x[:600]))
        return ("time,a,b\n" + rows).encode(), ".csv"
    if kind == "mat5s":  # MFPT's layout: the signal and its rate in a struct, text and a cell beside them
        import scipy.io

        rig = {"gs": x[:, :1], "sr": 48828.0, "rate": 25.0, "Name": "outer race", "c": np.array([x[:5, 1], "v"], object)}
        scipy.io.savemat(buf, {"bearing": rig})
        return buf.getvalue(), ".mat"
    if kind == "tdms":
        from nptdms import ChannelObject, GroupObject, RootObject, TdmsWriter

        wf = {"wf_increment": 1 / 12000, "unit_string": "g"}
        with TdmsWriter(buf) as w:
            w.write_segment([RootObject({"title": "probe"}), GroupObject("Vib"),
                             ChannelObject("Vib", "ai0", x[:1500, 0], properties=wf),
                             ChannelObject("Vib", "ai1", x[:1500, 1], properties=wf)])
            w.write_segment([ChannelObject("Vib", "ai0", x[1500:, 0]), ChannelObject("Vib", "ai1", x[1500:, 1])])
        return buf.getvalue(), ".tdms"
    if kind in SOUND:  # 1 s of two tones in noise, 16 kHz stereo
        import soundfile

        t = np.arange(16000) / 16000
        tones = np.stack([np.sin(2 * np.pi * 440 * t), np.sin(2 * np.pi * 1250 * t)], axis=1)
        fmt, subtype = SOUND[kind]
        soundfile.write(buf, 0.3 * tones + 0.05 * rng.standard_normal((16000, 2)), 16000, format=fmt, subtype=subtype)
        return buf.getvalue(), f".{kind}"
    if kind == "mat73":  # MFPT's layout as a v7.3 (HDF5) file, a cell and a struct array beside it
        import importlib.util

        # the tests' writer of MATLAB's v7.3 layout, loaded from its file (it needs no drsn_stream)
        spec = importlib.util.spec_from_file_location("_helpers", ROOT / "tests" / "helpers.py")
        helpers = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
        spec.loader.exec_module(helpers)  # type: ignore[union-attr]
        save_mat73 = helpers.save_mat73
        with tempfile.TemporaryDirectory() as tmp:
            rig = {"gs": x[:, :1], "sr": 48828.0, "Name": "outer race"}
            return save_mat73(Path(tmp) / "f.mat", {"bearing": rig, "c": (x[:5, 1], "v"),
                                                    "Y": [{"Data": x[:10, 0]}, {"Data": x[:10, 1]}]}).read_bytes(), ".mat"
    if kind.startswith("mat"):
        import scipy.io

        kw = {"format": "4"} if kind == "mat4" else {"do_compression": kind == "mat5z"}
        scipy.io.savemat(buf, {"X097_DE_time": x[:, :1], "X097_FE_time": x[:, 1:], "X097RPM": np.array([[1797.0]])}, **kw)
        return buf.getvalue(), ".mat"
    if kind == "artifact":
        from drsn_stream.models.meta import resolve_artifact

        return resolve_artifact("bearing-cwru").read_bytes(), ".pt"
    if kind == "checkpoint":
        import torch

        w = torch.from_numpy(rng.standard_normal((64, 16)).astype(np.float32))  # the same file in every process
        torch.save({"model_state": {"w": w}, "model_config": {"name": "x"}, "meta": {}}, buf)
        return buf.getvalue(), ".pt"
    raise SystemExit(f"unknown kind {kind!r}; kinds: {', '.join(KINDS)}")


def damaged(good: bytes, seed: int, index: int) -> bytes:
    """Damaged copy ``index`` of ``good``: the same for the same seed, in any process."""
    rng = random.Random(f"{seed}:{index}")
    d = bytearray(good)

    def where() -> int:  # half of them in the first 512 bytes, where the headers are
        return rng.randrange(min(len(d), 512) if rng.random() < 0.5 else len(d))

    how = index % 4
    if how == 0:
        d[where()] ^= 1 << rng.randrange(8)
    elif how == 1:
        for _ in range(rng.randrange(1, 6)):
            d[where()] = rng.randrange(256)
    elif how == 2:
        i = where()
        d[i:i] = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 9)))
    else:
        d = d[: rng.randrange(len(d))]
    return bytes(d)


def reader(kind: str):  # noqa: ANN201 - a callable of a path
    if kind == "artifact":
        from drsn_stream.models.artifact import load_artifact

        return load_artifact
    if kind == "checkpoint":
        from drsn_stream.train.loop import load_checkpoint

        return load_checkpoint
    from drsn_stream.sources.file import read_recording

    return lambda p: read_recording(p, rate=12000)


def _weights(kind: str, loaded: object) -> dict | None:
    """A model's or checkpoint's tensors by name; None for a recording."""
    if kind == "artifact":
        return dict(loaded[0].state_dict())  # type: ignore[index]
    if kind == "checkpoint":
        return dict(loaded["model_state"])  # type: ignore[index]
    return None


def _same(a: dict | None, b: dict | None) -> bool:
    import torch

    return a is None or (a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a))  # type: ignore[union-attr]


def child(kind: str, seed: int, start: int, count: int, folder: Path) -> int:
    """Reads damaged copies ``start`` .. ``count`` - 1; the index about to be read and the counts
    so far go to files in ``folder`` before each read, so a crash leaves both behind."""
    from drsn_stream.errors import DrsnStreamError

    warnings.simplefilter("error")  # a warning reaches the user's terminal: counted as "other"
    good, suffix = good_file(kind)
    read = reader(kind)
    path = folder / f"probe{suffix}"
    path.write_bytes(good)
    weights = _weights(kind, read(path))
    counts: dict[str, int] = {}
    for i in range(start, count):
        path.write_bytes(damaged(good, seed, i))
        (folder / "at").write_text(f"{i}\n{json.dumps(counts)}")
        try:
            got = _weights(kind, read(path))
            # a model's weights have checksums: one read with other weights is a failure
            out = "read" if _same(got, weights) else "other: read with changed weights"
        except DrsnStreamError:
            out = "refused"
        except (Exception, Warning) as exc:  # noqa: BLE001 - what the probe is for
            out = f"other: {type(exc).__name__}"
        counts[out] = counts.get(out, 0) + 1
    (folder / "at").write_text(f"{count}\n{json.dumps(counts)}")
    return 0


def probe(kind: str, seed: int, count: int, keep: Path | None) -> dict:
    counts: dict[str, int] = {}
    crashes: list[str] = []
    start, t0, stderr = 0, time.perf_counter(), ""
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        while start < count:
            res = subprocess.run([sys.executable, __file__, "--child", kind, "--seed", str(seed), "--start", str(start),
                                  "--count", str(count), "--dir", tmp], cwd=ROOT, capture_output=True, text=True,
                                 env=dict(os.environ, PYTHONPATH=str(ROOT)))
            stderr += res.stderr
            at, done = (folder / "at").read_text().split("\n", 1)
            for k, v in json.loads(done).items():
                counts[k] = counts.get(k, 0) + v
            if res.returncode == 0:
                break
            i = int(at)
            why = signal.Signals(-res.returncode).name if res.returncode < 0 else f"exit {res.returncode}"
            crashes.append(f"{i}: {why}")
            if keep is not None:
                keep.mkdir(parents=True, exist_ok=True)
                good, suffix = good_file(kind)
                (keep / f"{kind}-{seed}-{i}{suffix}").write_bytes(damaged(good, seed, i))
            start = i + 1
    counts["crashed"] = len(crashes)
    return {"kind": kind, "count": count, "seed": seed, "outcomes": counts, "crashes": crashes[:20],
            "stderr_bytes": len(stderr.encode()), "stderr_head": stderr[:400],
            "seconds": round(time.perf_counter() - t0, 1)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kinds", default=",".join(KINDS), help=f"comma-separated, of {', '.join(KINDS)}")
    ap.add_argument("--count", type=int, default=2000, help="damaged copies per kind (default 2,000)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--keep", type=Path, default=None, help="keep every file that crashed the reader here")
    ap.add_argument("--json", type=Path, default=None, help="also write the rows as JSON here")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--start", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--dir", type=Path, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        return child(args.child, args.seed, args.start, args.count, args.dir)
    rows, bad = [], False
    for kind in args.kinds.split(","):
        row = probe(kind.strip(), args.seed, args.count, args.keep)
        rows.append(row)
        o = row["outcomes"]
        others = {k: v for k, v in o.items() if k.startswith("other")}
        bad |= bool(others) or o["crashed"] > 0 or row["stderr_bytes"] > 0
        print(f"{kind:<11} {row['count']:>6} damaged: read {o.get('read', 0):>6}  refused {o.get('refused', 0):>6}  "
              f"crashed {o['crashed']:>4}  other {sum(others.values()):>4} {others or ''}  stderr {row['stderr_bytes']} "
              f"bytes  ({row['seconds']} s)", flush=True)
        if row["stderr_bytes"]:
            print(f"  stderr began: {row['stderr_head']!r}", flush=True)
    if args.json:
        args.json.write_text(json.dumps({"command": "python tools/file_probe.py " + " ".join(argv or sys.argv[1:]),
                                         "rows": rows}, indent=1) + "\n")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
