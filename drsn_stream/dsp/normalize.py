"""Per-window normalization, the one implementation shared by training, evaluation and the live DSP.

The artifact's ``normalization`` dict names the kind; see ``docs/CONTRACTS.md``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from drsn_stream.errors import ConfigError

KINDS = ("zscore", "none", "affine", "rms")
ZSCORE_EPS = 1e-8
RMS_FLOOR = 1e-3  # used when an "rms" spec carries no floor of its own


def normalize(x: np.ndarray, spec: dict[str, Any] | None) -> np.ndarray:
    """Normalize one window or a batch of windows.

    Args:
        x: ``(n,)`` or ``(batch, n)`` samples (any float or int dtype); each row is one window.
        spec: ``{"kind": "zscore"}``, ``{"kind": "none"}``, ``{"kind": "affine", "mean": m, "std": s}``
            or ``{"kind": "rms", "floor": f}``; ``None`` means ``none``.

    Returns:
        float32 array of the same shape. Per-row statistics are accumulated in float64 over the
        float32 samples, and everything is per row, so a window normalized alone and inside a
        batch gives the same bits.
    """
    return normalize_with_level(x, spec)[0]


def normalize_with_level(x: np.ndarray, spec: dict[str, Any] | None) -> tuple[np.ndarray, np.ndarray]:
    """Like ``normalize``, plus each row's RMS before normalization (float64, shape ``x.shape[:-1]``).

    Three passes over float32 memory (row sums, centred sums of squares, scaling) instead of a
    float64 copy and its passes, because the monitor's inference loop normalizes every batch this
    way (timings in commit 8aca2e0).
    """
    spec = spec or {"kind": "none"}
    kind = spec.get("kind", "none")
    a = np.asarray(x)
    if a.ndim not in (1, 2):
        raise ConfigError(f"normalize expects (n,) or (batch, n) windows, got shape {a.shape}")
    if kind not in KINDS:
        raise ConfigError(f"unknown normalization kind {kind!r}; valid kinds: {', '.join(KINDS)}")
    y = a.astype(np.float32, copy=True)  # the output buffer; float32 holds int16 samples exactly
    n = y.shape[-1]
    if n == 0:
        return y, np.zeros(y.shape[:-1])
    if kind == "affine":
        try:
            mean = float(spec["mean"])
            std = float(spec["std"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(
                f"affine normalization needs numeric 'mean' and 'std' in the artifact, got {spec!r}"
            ) from exc
        if not std > 0:
            raise ConfigError(f"affine normalization needs std > 0, got {std}")
    if kind == "rms":
        floor = float(spec.get("floor", RMS_FLOOR))
        if not floor > 0:
            raise ConfigError(f"rms normalization needs floor > 0, got {floor}")
    sub = "...i,...i->..."
    if kind == "zscore":
        mean = y.sum(axis=-1, dtype=np.float64, keepdims=True) / n
        y -= mean.astype(np.float32)
        var = np.einsum(sub, y, y, dtype=np.float64) / n  # centred: no cancellation
        level = np.sqrt(var + mean[..., 0] ** 2)
        y *= (1.0 / (np.sqrt(var) + ZSCORE_EPS)).astype(np.float32)[..., None]
        return y, level
    level = np.sqrt(np.einsum(sub, y, y, dtype=np.float64) / n)
    if kind == "rms":
        y *= (1.0 / np.maximum(level, floor)).astype(np.float32)[..., None]
    elif kind == "affine":
        y -= np.float32(mean)
        y *= np.float32(1.0 / std)
    return y, level
