"""Held-out evaluation: accuracy on a time part of every recording, clean and with seeded noise.

Noise is added to the raw recording part BEFORE windowing, at an SNR relative to that part's
clean power, with a generator seeded by (seed, noise kind, SNR, recording), so every network and
every run sees exactly the same noisy test signals.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from drsn_stream.dsp.noise import NOISE_KINDS, add_noise
from drsn_stream.dsp.normalize import normalize
from drsn_stream.train.cwru import Recording, cut_windows, window_starts
from drsn_stream.train.loop import predict

Model = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


def noise_rng(seed: int, kind: str, snr_db: float, rec_index: int) -> np.random.Generator:
    """The generator of one (kind, SNR, recording) test signal; independent of evaluation order."""
    k = NOISE_KINDS.index(kind) if kind in NOISE_KINDS else len(NOISE_KINDS)
    return np.random.default_rng([seed, k, int(round(snr_db * 100)) + 100_000, rec_index])


def part_windows(
    recs: Sequence[Recording],
    labels: Sequence[str],
    bounds: tuple[float, float],
    *,
    window: int,
    hop: int,
    kind: str = "none",
    snr_db: float | None = None,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Raw windows ``(n, window)`` and labels ``(n,)`` of one time part, noise added first if asked."""
    xs, ys = [], []
    for i, r in enumerate(recs):
        seg = r.part(bounds)
        if kind != "none":
            seg = add_noise(seg, float(snr_db), kind, noise_rng(seed, kind, float(snr_db), i))
        starts = window_starts(seg.size, window, hop)
        xs.append(cut_windows(seg, starts, window))
        ys.append(np.full(starts.size, labels.index(r.label), dtype=np.int64))
    return np.concatenate(xs).astype(np.float32, copy=False), np.concatenate(ys)


def confusion(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> np.ndarray:
    """``(true, predicted)`` counts, ``(n_classes, n_classes)`` int."""
    m = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(m, (y_true, y_pred), 1)
    return m


def evaluate(
    model: Model,
    recs: Sequence[Recording],
    labels: Sequence[str],
    bounds: tuple[float, float],
    *,
    window: int,
    hop: int,
    normalization: dict[str, Any],
    kinds: Sequence[str] = (),
    snrs: Sequence[float] = (),
    seed: int = 1234,
    with_confusion: bool = True,
    scores: str = "logits",
) -> dict[str, Any]:
    """Accuracy clean and for every kind x SNR on one time part.

    Returns ``{"results": [{"noise": "none", "accuracy", "n", "noise_index"}, {"noise": kind,
    "snr_db", "accuracy", "n", "noise_index"}, ...], "confusion": (clean) [[...]]}``.
    """

    def prep(x: np.ndarray) -> np.ndarray:
        return normalize(x, normalization)

    settings: list[tuple[str, float | None]] = [("none", None)]
    settings += [(k, float(s)) for k in kinds for s in snrs]
    results: list[dict[str, Any]] = []
    out: dict[str, Any] = {}
    for kind, snr in settings:
        x, y = part_windows(recs, labels, bounds, window=window, hop=hop, kind=kind, snr_db=snr, seed=seed)
        probs, ni = predict(model, x, prepare=prep, scores=scores)
        pred = probs.argmax(1)
        row: dict[str, Any] = {"noise": kind}
        if snr is not None:
            row["snr_db"] = snr
        row.update(accuracy=float(np.mean(pred == y)), n=int(y.size), noise_index=float(np.mean(ni)))
        results.append(row)
        if kind == "none" and with_confusion:
            out["confusion"] = confusion(y, pred, len(labels)).tolist()
    out["results"] = results
    return out


def summary(results: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The artifact's ``accuracy`` entries: clean, and ``<kind>@<snr>dB`` for each noisy result."""
    d: dict[str, Any] = {}
    for r in results:
        key = "clean" if r["noise"] == "none" else f"{r['noise']}@{r['snr_db']:g}dB"
        d[key] = round(r["accuracy"], 5)
    return d
