#!/usr/bin/env python3
"""Re-saves an artifact with the current model code: same weights, metadata and validation windows.

A TorchScript artifact carries the code it was exported with, so a faster implementation of the
same layers (as in drsn_stream/models/layers.py) reaches a shipped model only by re-exporting it.
This rebuilds the network from the artifact's model_config, loads its weights, and refuses to
write unless the new module gives the same labels on every validation window (or, without them,
on random windows) with probabilities within 1e-4 and the same noise index within 1e-5.

    python tools/reexport.py drsn_stream/artifacts/bearing-cwru.pt [--out OTHER.pt]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from drsn_stream.engine.bench import eager_from_artifact  # noqa: E402
from drsn_stream.models import load_artifact, save_artifact  # noqa: E402
from drsn_stream.models.artifact import load_validation, script_model  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("artifact")
    ap.add_argument("--out", help="write here instead of over the artifact")
    args = ap.parse_args(argv)
    old, meta = load_artifact(args.artifact)
    val = load_validation(args.artifact)
    x = val if val is not None else np.random.default_rng(0).standard_normal((256, meta.window)).astype(np.float32)
    model = eager_from_artifact(old, meta)
    new = script_model(model)
    with torch.inference_mode():
        xt = torch.from_numpy(x)
        lo, no = old(xt)
        ln, nn_ = new(xt)
    po, pn = torch.softmax(lo, 1), torch.softmax(ln, 1)
    same = float((po.argmax(1) == pn.argmax(1)).float().mean())
    dp, dn = float((po - pn).abs().max()), float((no - nn_).abs().max())
    print(f"{args.artifact}: {len(x)} windows, labels agree {same:.2%}, max |dp| {dp:.2e}, max |d noise| {dn:.2e}")
    if same < 1.0 or dp > 1e-4 or dn > 1e-5:
        print("refused: the re-exported module does not reproduce the artifact", file=sys.stderr)
        return 1
    save_artifact(model, args.out or args.artifact, meta, validation=val)
    print(f"wrote {args.out or args.artifact}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
