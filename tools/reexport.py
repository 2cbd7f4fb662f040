#!/usr/bin/env python3
"""Re-saves artifacts with the current model code: same weights and metadata (every member, known or not).

A TorchScript artifact carries the code it was exported with, so a faster implementation of the
same layers (drsn_stream/models/layers.py) or an output wrapper reaches a shipped model only by
re-exporting it. This rebuilds the network from the artifact's model_config, loads its weights,
and refuses to write unless the new module gives the same labels, probabilities within 1e-4 and
noise index within 1e-5 on every validation window the artifact carries and on 256 seeded random
windows.

--probs      wrap the network in models/outputs.Probabilities: the first output becomes
             probabilities (metadata outputs.scores = "probs"). An artifact already wrapped is
             re-saved as it is, so the command is idempotent.
--max-validation N   keep at most N of the stored validation windows, spread evenly over them
             (default 64; the GPU runner's fp16 check and the CPU layout check use them).

The zip's top folder becomes ``archive/`` (artifacts are serialized to bytes, then written whole).

    python tools/reexport.py --probs drsn_stream/artifacts/*.pt
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

from drsn_stream.config import rewritable_file, writable_file
from drsn_stream.engine.bench import eager_from_artifact
from drsn_stream.errors import ConfigError, run_tool
from drsn_stream.models import load_artifact, save_artifact
from drsn_stream.models.artifact import load_validation, read_meta_dict, script_model
from drsn_stream.models.outputs import Probabilities, is_wrapped, to_probs

DEFAULT_MAX_VALIDATION = 64


def spread(windows: np.ndarray, keep: int) -> np.ndarray:
    """At most ``keep`` rows, evenly spaced (the stored windows come in blocks of noise conditions)."""
    if keep <= 0:
        return windows[:0]
    if len(windows) <= keep:
        return windows
    return windows[np.linspace(0, len(windows) - 1, keep).round().astype(int)]


def reexport(path: str, *, out: str | None = None, probs: bool = False,
             max_validation: int = DEFAULT_MAX_VALIDATION) -> int:
    old, meta = load_artifact(path)
    d = read_meta_dict(path)  # every member: ones this drsn-stream does not know survive
    val = load_validation(path)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((256, meta.window)).astype(np.float32)
    if val is not None:
        x = np.concatenate([val, x])
    try:
        model = eager_from_artifact(old, meta)
    except (RuntimeError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0]
        print(f"{path}: refused: its weights do not fit its model_config ({first}); re-export it from training",
              file=sys.stderr)
        return 1
    if probs and not is_wrapped(model):
        model = Probabilities(model).eval()
    new = script_model(model)
    new_kind = "probs" if is_wrapped(model) else meta.scores
    same, dp, dn = 0, 0.0, 0.0
    with torch.inference_mode():
        for i in range(0, len(x), 256):
            xt = torch.from_numpy(x[i : i + 256])
            so, no = old(xt)
            sn, nn_ = new(xt)
            po, pn = to_probs(so, meta.scores), to_probs(sn, new_kind)
            same += int((po.argmax(1) == pn.argmax(1)).sum())
            dp = max(dp, float((po - pn).abs().max()))
            dn = max(dn, float((no - nn_).abs().max()))
    agree = same / len(x)
    print(f"{path}: {len(x)} windows, labels agree {agree:.2%}, max |dp| {dp:.2e}, max |d noise| {dn:.2e}"
          f" ({meta.scores} -> {new_kind})")
    if agree < 1.0 or dp > 1e-4 or dn > 1e-5:
        print(f"{path}: refused: the re-exported module does not reproduce the artifact", file=sys.stderr)
        return 1
    if val is not None:
        val = spread(val, max_validation)
        described = d.get("training", {}).get("validation_windows")
        if isinstance(described, dict):
            described["count"] = int(len(val))
            if len(val):
                described["sample"] = "evenly spaced over the conditions above"
    dest = out or path
    save_artifact(model, dest, d, validation=val if val is not None and len(val) else None)  # a failed write: one line (WriteError)
    print(f"wrote {dest} ({Path(dest).stat().st_size:,} bytes, first output: {new_kind})")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("artifacts", nargs="+")
    ap.add_argument("--out", help="write here instead of over the artifact (one artifact only)")
    ap.add_argument("--probs", action="store_true", help="first output: probabilities (idempotent)")
    ap.add_argument("--max-validation", type=int, default=DEFAULT_MAX_VALIDATION,
                    help=f"validation windows kept at most (default {DEFAULT_MAX_VALIDATION})")
    args = ap.parse_args(argv)
    if args.out and len(args.artifacts) > 1:
        ap.error("--out takes one artifact")
    if args.max_validation < 0:
        raise ConfigError(f"--max-validation must be 0 or more, not {args.max_validation}")
    if args.out:
        writable_file(args.out, "--out")
    else:
        for path in args.artifacts:
            rewritable_file(path, "give the path of a .pt file to rewrite, e.g. drsn_stream/artifacts/bearing-cwru.pt "
                                  "(or --out to write elsewhere)")
    rc = 0
    for path in args.artifacts:
        rc |= reexport(path, out=args.out, probs=args.probs, max_validation=args.max_validation)
    return rc


if __name__ == "__main__":
    raise SystemExit(run_tool(main, "tools/reexport.py"))
