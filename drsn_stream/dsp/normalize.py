"""Per-window normalization, the one implementation shared by training, evaluation and the live DSP.

The artifact's ``normalization`` dict names the kind; see ``docs/CONTRACTS.md``. The live monitor
normalizes whole batches with ``BatchNormalizer``, the DSP step the app hands to the inference loop.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from drsn_stream import jit
from drsn_stream.errors import ConfigError
from drsn_stream.types import Window

KINDS = ("zscore", "none", "affine", "rms")
ZSCORE_EPS = 1e-8
RMS_FLOOR = 1e-3  # used when an "rms" spec carries no floor of its own


def _zscore_py(y, level, eps):
    """The z-score of each row of float32 ``y`` (rows, n), written over it, and each row's level
    (its RMS about its mean) before it into ``level``: ``_in_place``'s numpy steps for "zscore"
    in one pass to sum and one to centre and square (float64 sums of the float32 samples), then
    the scaling, with the same float32 and float64 operations. Only the order of the sums' terms
    differs: a float32 window's sum in float64 is exact either way, its sum of squares can differ
    in its last bit, and a sample then, rarely, by one float32 ulp. (Compiled by numba; as plain
    Python it runs too, slowly: the tests compare it with numpy that way.)"""
    b, n = y.shape
    for i in range(b):
        s = 0.0
        for j in range(n):
            s += np.float64(y[i, j])
        mean = s / n
        m32 = np.float32(mean)
        q = 0.0
        for j in range(n):
            v = y[i, j] - m32
            y[i, j] = v
            q += np.float64(v) * np.float64(v)
        var = q / n
        level[i] = math.sqrt(var)
        scale = np.float32(1.0 / (math.sqrt(var) + eps))
        for j in range(n):
            y[i, j] *= scale
    return b


def _build() -> Any:
    # reassociating the sums lets them run in SIMD lanes (the order of their terms is all it changes)
    kernel = jit.compile_kernel(_zscore_py, fastmath={"reassoc"})
    kernel(np.ones((1, 2), dtype=np.float32), np.zeros(1), ZSCORE_EPS)  # compiled (or loaded) now
    return kernel


_kernels = jit.Kernels(_build)


def warm() -> bool:
    """Compile (or load from numba's cache) the z-score kernel now; False where numpy normalizes."""
    return _kernels.get() is not None


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
    """Like ``normalize``, plus each row's level before normalization (float64, shape
    ``x.shape[:-1]``): its RMS about its own mean, the vibration's or sound's level without the
    sensor's DC offset. A DC-coupled sensor (a MEMS accelerometer reads 1 g at rest) would
    otherwise give a level that is mostly its offset: a machine vibrating twice as hard would
    change it by a fraction of a percent, and one at rest would never be quieter than a share of
    what it was learned at (the baselines' level input and rest test, sensor health's rest level).

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
    # the output buffer; float32 holds int16 samples exactly
    return _in_place(a.astype(np.float32, copy=True), spec, kind)


def _in_place(y: np.ndarray, spec: dict[str, Any], kind: str) -> tuple[np.ndarray, np.ndarray]:
    """``normalize_with_level`` of float32 ``y``, written over ``y``; ``kind`` is ``spec``'s, known good."""
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
    if kind == "zscore" and y.dtype == np.float32 and y.flags.c_contiguous:
        kernel = _kernels.get()
        if kernel is not None:  # ~5x less CPU than the numpy steps below, the same results
            level = np.empty(y.size // n)
            kernel(y.reshape(-1, n), level, ZSCORE_EPS)
            return y, (level.reshape(y.shape[:-1]) if y.ndim > 1 else level[0])
    if kind == "zscore":
        mean = y.sum(axis=-1, dtype=np.float64, keepdims=True) / n
        y -= mean.astype(np.float32)
        var = np.einsum(sub, y, y, dtype=np.float64) / n  # centred: no cancellation
        level = np.sqrt(var)
        y *= (1.0 / (np.sqrt(var) + ZSCORE_EPS)).astype(np.float32)[..., None]
        return y, level
    square = np.einsum(sub, y, y, dtype=np.float64) / n
    mean_row = y.sum(axis=-1, dtype=np.float64) / n
    # about the mean: the float32 samples' squares are exact in float64, so the difference loses
    # far less of the level under a large offset than the float32 samples themselves lost
    level = np.sqrt(np.maximum(square - mean_row * mean_row, 0.0))
    if kind == "rms":
        y *= (1.0 / np.maximum(np.sqrt(square), floor)).astype(np.float32)[..., None]
    elif kind == "affine":
        y -= np.float32(mean)
        y *= np.float32(1.0 / std)
    return y, level


class BatchNormalizer:
    """The DSP's normalization step for a batch of windows: ``(model input, levels)``.

    The monitor's DSP hands out raw windows (``StreamDSP(normalize=False)``) and this step
    normalizes each batch in one vectorized call, instead of two calls per window on the ingest
    thread. Rows are normalized one by one in float64 (``normalize_with_level``), so a window gives
    the same bits here as normalized alone. Windows the DSP already normalized pass through with
    their own level. Windows are only read, never written.

    Args:
        spec: the artifact's normalization dict; a bad one is refused here, before any window.
    """

    def __init__(self, spec: dict[str, Any] | None) -> None:
        self.spec = dict(spec or {"kind": "none"})
        normalize_with_level(np.zeros(1, np.float32), self.spec)
        self.kind = self.spec.get("kind", "none")

    def __call__(self, windows: Sequence[Window]) -> tuple[np.ndarray, np.ndarray]:
        """``windows`` (b of them, n samples each) -> (input (b, n) float32, levels (b,) float64):
        each window's level before normalization (``normalize_with_level``)."""
        # np.array of equal-shaped rows: np.stack's array, without its per-row steps (ragged rows
        # are refused the same)
        x = np.array([w.data for w in windows])
        raw = [i for i, w in enumerate(windows) if not w.normalized]
        if len(raw) == len(windows):
            if x.dtype == np.float32 and x.ndim == 2:  # a fresh stack of the DSP's float32 windows: no second copy
                return self.in_place(x)
            return normalize_with_level(x, self.spec)
        levels = np.fromiter([w.level for w in windows], dtype=np.float64, count=len(windows))
        if raw:
            x[raw], levels[raw] = normalize_with_level(x[raw], self.spec)
        return x, levels

    def in_place(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Raw float32 windows ``x`` (b, n) normalized over themselves: ``(x, levels)``, each row
        the same bits as ``__call__`` gives it (the ingest processes normalize a slot of windows
        where they are cut, app/shards.py)."""
        return _in_place(x, self.spec, self.kind)
