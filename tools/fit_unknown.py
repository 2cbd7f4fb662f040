#!/usr/bin/env python3
"""Fits the "unknown" statistics of a CWRU artifact and writes them into it (same weights).

Rebuilds the network from the artifact's model_config (with ``forward_features``), checks that it
reproduces the artifact on its validation windows, computes the pooled features of the clean
windows of the split the model was trained with (metadata ``training.split``: train part, hop
256), fits the class-conditional Gaussians (models/ood.py), sets the threshold to the 99.9th
percentile of the validation part's windows (hop 512), measures the refused share of the held-out
test part and of synthetic signals, and re-saves the artifact with ``outputs.features`` and
``unknown`` in its metadata. Prints the figures; one command, so it can be re-run after any
re-export of the weights:

    python tools/fit_unknown.py drsn_stream/artifacts/bearing-cwru.pt [--data ../shared/data/cwru] [--out X.pt]

Another model (not trained on CWRU) gets ``forward_features`` and ``outputs.features`` only: it can
then learn baselines, and never shows ``unknown``.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from drsn_stream.config import writable_file
from drsn_stream.dsp.normalize import normalize
from drsn_stream.errors import ArtifactError, DataError, run_tool
from drsn_stream.models import load_artifact, save_artifact
from drsn_stream.models.artifact import load_validation, resolve_artifact
from drsn_stream.models.ood import UnknownDetector, check_gaussian
from drsn_stream.models.outputs import Probabilities
from drsn_stream.models.registry import build_from_config
from drsn_stream.train import cwru

TRAIN_HOP = 256
EVAL_HOP = 512
PERCENTILE = 99.9


class ScoresAs(nn.Module):
    """The rebuilt network with its first output turned into what the artifact declares
    (``outputs.scores``): the network gives logits (one) or log-probabilities (an ensemble)."""

    def __init__(self, net: nn.Module, kind: str) -> None:
        super().__init__()
        self.net = net
        self.kind = kind

    def _as(self, s: Tensor) -> Tensor:
        if self.kind == "probs":
            return torch.softmax(s, dim=1)
        if self.kind == "log_probs":
            return torch.log_softmax(s, dim=1)
        return s

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        s, n, _ = self.net.forward_features(x)
        return self._as(s), n

    @torch.jit.export
    def forward_features(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        s, n, f = self.net.forward_features(x)
        return self._as(s), n, f


def rebuild(module: Any, meta: Any) -> nn.Module:
    """The artifact's network as eager PyTorch with ``forward_features``, first output as declared."""
    if not meta.model_config:
        raise ArtifactError(f"{meta.source}: the artifact carries no model_config; it cannot be rebuilt")
    net = build_from_config(meta.model_config)
    state = module.state_dict()
    want = set(net.state_dict())
    if set(state) != want:  # a wrapper around the network: drop its attribute name
        state = {k.partition(".")[2]: v for k, v in state.items()}
    net.load_state_dict(state)
    native = "log_probs" if int(meta.model_config.get("ensemble", 1) or 1) > 1 else "logits"
    if meta.scores == "probs":
        return Probabilities(net).eval()  # the shipped form (models/outputs.py)
    model = net if meta.scores == native else ScoresAs(net, meta.scores)
    return model.eval()


def features_of(model: nn.Module, x: np.ndarray, norm: dict[str, Any], batch: int = 512) -> np.ndarray:
    out = []
    with torch.inference_mode():
        for i in range(0, len(x), batch):
            _, _, f = model.forward_features(torch.from_numpy(normalize(x[i : i + batch], norm)))
            out.append(f.numpy())
    return np.concatenate(out) if out else np.zeros((0, 0), np.float32)


def synthetic(rate: int, window: int, seconds: float = 20.0, seed: int = 0) -> dict[str, np.ndarray]:
    """Windows (hop window/4) of signals no bearing makes: sine, square, white noise, chirp."""
    t = np.arange(int(seconds * rate)) / rate
    rng = np.random.default_rng(seed)
    f_hi = 0.45 * rate
    signals = {
        "sine 440 Hz": np.sin(2 * np.pi * 440 * t),
        "square 50 Hz": np.sign(np.sin(2 * np.pi * 50 * t)),
        "white noise": rng.standard_normal(t.size),
        f"chirp 20-{f_hi:.0f} Hz": np.sin(2 * np.pi * (20 * t + (f_hi - 20) / (2 * t[-1]) * t**2)),
    }
    starts = cwru.window_starts(t.size, window, window // 4)
    return {k: cwru.cut_windows(v.astype(np.float32), starts, window) for k, v in signals.items()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("artifact")
    ap.add_argument("--data", default=None, help="folder of the CWRU .mat files (default: ../shared/data/cwru)")
    ap.add_argument("--out", help="write here instead of over the artifact")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    out = writable_file(args.out or str(resolve_artifact(args.artifact)), "--out")
    old, meta = load_artifact(args.artifact)
    val = load_validation(args.artifact)
    model = rebuild(old, meta)
    x = val if val is not None else np.random.default_rng(0).standard_normal((256, meta.window)).astype(np.float32)
    with torch.inference_mode():
        xt = torch.from_numpy(x)
        so, no = old(xt)
        sn, nn_ = model(xt)
    same = float((so.argmax(1) == sn.argmax(1)).float().mean())
    ds, dn = float((so - sn).abs().max()), float((no - nn_).abs().max())
    print(f"rebuilt: {len(x)} windows, labels agree {same:.2%}, max |d scores| {ds:.2e}, max |d noise| {dn:.2e}")
    if same < 1.0 or ds > 1e-3 or dn > 1e-5:
        print("refused: the rebuilt network does not reproduce the artifact", file=sys.stderr)
        return 1

    if meta.training.get("dataset") != "cwru":
        # no split to fit on here: export the pooled features only (baselines work, "unknown" stays off)
        d = meta.to_dict()
        with torch.inference_mode():
            width = int(model.forward_features(xt[:1])[2].shape[1])
        d["outputs"] = {**d.get("outputs", {}), "scores": meta.scores, "features": width}
        save_artifact(model, out, d, validation=val)
        print(f"not a CWRU model: wrote {out} with forward_features ({width} features) and no unknown statistics")
        return 0
    data = meta.training["data"]
    split = meta.training["split"]
    recs = cwru.load_set(args.data, meta.labels, files=data["files"], channel=data.get("channel", "DE"),
                         sample_rate=meta.sample_rate)
    parts = {}
    for name, hop in (("train", TRAIN_HOP), ("val", EVAL_HOP), ("test", EVAL_HOP)):
        ws = cwru.windows_of(recs, meta.labels, tuple(split[name]), window=meta.window, hop=hop)
        parts[name] = (features_of(model, ws.x, meta.normalization), ws.y)
    try:
        det = UnknownDetector.fit(*parts["train"], len(meta.labels))
    except ValueError as exc:  # a class with no training window (a recording shorter than a window)
        raise DataError(f"cannot fit the unknown statistics: {exc}; re-copy the recordings from the CWRU data set") from None
    det.calibrate(parts["val"][0], percentile=PERCENTILE)
    try:  # (calibrate refuses a threshold that is not a finite number > 0 itself)
        for mean, whitener in zip(det.means, det.whiteners):
            check_gaussian(mean, whitener)
    except ValueError as exc:
        raise DataError(f"the fitted unknown statistics are unusable ({exc}); nothing written - check the "
                        "recordings in --data for NaN or infinite samples") from None
    test_refused = float((det.score(parts["test"][0]) > 1.0).mean())
    print(f"fitted on {len(parts['train'][1])} train windows; threshold {det.threshold:.2f} "
          f"({PERCENTILE} th percentile of {len(parts['val'][1])} validation windows)")
    print(f"in-distribution test part: {test_refused:.2%} of {len(parts['test'][1])} windows refused (unknown)")
    refused = {}
    for name, w in synthetic(meta.sample_rate, meta.window).items():
        share = float((det.score(features_of(model, w, meta.normalization)) > 1.0).mean())
        refused[name] = round(share, 4)
        print(f"{name}: {share:.2%} of {len(w)} windows refused")
    det.calibration.update({
        "data": "CWRU, the artifact's training.data files, clean windows",
        "fit": f"split {split['train']} hop {TRAIN_HOP}",
        "threshold": f"split {split['val']} hop {EVAL_HOP}",
        "test_refused": round(test_refused, 4),
        "test_windows": int(len(parts["test"][1])),
        "synthetic_refused": refused,
        "tool": "tools/fit_unknown.py",
    })
    d = meta.to_dict()
    d["outputs"] = {**d.get("outputs", {}), "scores": meta.scores, "features": det.features}
    d["unknown"] = det.to_dict()
    save_artifact(model, out, d, validation=val)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(run_tool(main, "tools/fit_unknown.py"))
