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
        float32 array of the same shape. Statistics are taken in float64 per row, so a window
        normalized alone and inside a batch gives the same bits.
    """
    spec = spec or {"kind": "none"}
    kind = spec.get("kind", "none")
    a = np.asarray(x)
    if a.ndim not in (1, 2):
        raise ConfigError(f"normalize expects (n,) or (batch, n) windows, got shape {a.shape}")
    if kind == "none":
        return a.astype(np.float32, copy=True)
    a64 = a.astype(np.float64, copy=False)
    if kind == "zscore":
        mean = a64.mean(axis=-1, keepdims=True)
        centred = a64 - mean
        std = np.sqrt((centred * centred).mean(axis=-1, keepdims=True))
        return (centred / (std + ZSCORE_EPS)).astype(np.float32)
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
        return ((a64 - mean) / std).astype(np.float32)
    if kind == "rms":
        floor = float(spec.get("floor", RMS_FLOOR))
        if not floor > 0:
            raise ConfigError(f"rms normalization needs floor > 0, got {floor}")
        rms = np.sqrt((a64 * a64).mean(axis=-1, keepdims=True))
        return (a64 / np.maximum(rms, floor)).astype(np.float32)
    raise ConfigError(f"unknown normalization kind {kind!r}; valid kinds: {', '.join(KINDS)}")
