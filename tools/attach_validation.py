#!/usr/bin/env python3
"""Stores validation windows inside a bearing artifact (for the GPU runner's fp16 check).

The runner uses half precision on CUDA only where the artifact's own validation windows give
>= 99.9 % label agreement with fp32; an artifact without them runs in fp32. This re-saves the
artifact (same weights, same metadata) with normalized windows cut from the validation part of
the CWRU recordings it was trained on (never the held-out test part), clean and at 0 dB noise.

    python tools/attach_validation.py drsn_stream/artifacts/bearing-cwru.pt --data ../shared/data/cwru
"""

from __future__ import annotations

import argparse

import numpy as np

from drsn_stream.config import rewritable_file
from drsn_stream.dsp.normalize import normalize
from drsn_stream.engine.bench import eager_from_artifact
from drsn_stream.errors import ConfigError, DataError, run_tool
from drsn_stream.models import load_artifact, save_artifact
from drsn_stream.train.cwru import load_set
from drsn_stream.train.evaluate import part_windows

MAX_PER_KIND = 1000  # 3000 windows of 2048 float16 samples: 12 MB in the artifact already


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("artifact")
    ap.add_argument("--data", default=None, help="CWRU folder (default: ../shared/data/cwru)")
    ap.add_argument("--per-kind", type=int, default=22,
                    help="windows per noise condition (default 22: 66 in all keep the file small; the fp16 and "
                         "channels-last checks need no more)")
    args = ap.parse_args(argv)
    if not 1 <= args.per_kind <= MAX_PER_KIND:
        raise ConfigError(f"--per-kind must be between 1 and {MAX_PER_KIND}, not {args.per_kind}")
    path = rewritable_file(args.artifact, "give the path of a .pt file to rewrite, e.g. "
                                          "drsn_stream/artifacts/bearing-cwru.pt")
    module, meta = load_artifact(path)
    if meta.input.get("kind", "raw") != "raw" or meta.training.get("dataset") not in (None, "cwru"):
        raise ConfigError(f"{path} is not a CWRU bearing model; validation windows are cut from the CWRU "
                          "recordings, so only a bearing model trained on them takes them")
    d = meta.training.get("data", {})
    split = meta.training.get("split", {})
    val = tuple(split.get("val", d.get("val_part", (0.60, 0.75))))
    recs = load_set(args.data, meta.labels, loads=d.get("loads", (0,)), channel=d.get("channel", "DE"),
                    sample_rate=meta.sample_rate, files=d.get("files"))
    rng = np.random.default_rng(0)
    parts = []
    for kind, snr in (("none", None), ("gaussian", 0.0), ("pink", 0.0)):
        x, _ = part_windows(recs, meta.labels, val, window=meta.window, hop=meta.hop, kind=kind, snr_db=snr, seed=7)
        if not len(x):
            raise DataError(f"no validation window in part {val} of the recordings; point --data at the CWRU folder")
        pick = rng.choice(len(x), size=min(args.per_kind, len(x)), replace=False)
        parts.append(normalize(x[pick], meta.normalization))
    windows = np.concatenate(parts).astype(np.float32)
    model = eager_from_artifact(module, meta)
    meta.training["validation_windows"] = {"part": list(val), "conditions": ["clean", "gaussian 0 dB", "pink 0 dB"],
                                           "count": int(len(windows))}
    save_artifact(model, path, meta, validation=windows)  # a failed write: one line (WriteError)
    print(f"{path}: stored {len(windows)} validation windows from part {val}")
    return 0


if __name__ == "__main__":
    raise SystemExit(run_tool(main, "tools/attach_validation.py"))
