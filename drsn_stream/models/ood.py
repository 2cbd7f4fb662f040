"""Refuse to guess: does a window look like the model's training data?

A network's pooled features (``forward_features``, the input of its last linear layer) of the
training windows of each class form a compact cloud. ``UnknownDetector`` keeps one Gaussian per
class (its mean, and its covariance shrunk toward the covariance shared by all classes, so that a
class with few windows still gets a stable matrix) and scores a window by its smallest squared
Mahalanobis distance to any class, divided by a threshold calibrated on the validation split.
A score above 1 means the label is not backed by the training data: the monitor shows
``unknown``. ``tools/fit_unknown.py`` fits it on the CWRU split the model was trained with and
stores it in the artifact's metadata (key ``unknown``, ``to_dict``).

``Gaussian`` is the one-class form the per-machine baselines (monitor/baseline.py) use.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from drsn_stream.errors import ArtifactError, DataError
from drsn_stream.types import Prediction, batch_columns

UNKNOWN = "unknown"  # the label shown where the model's label is refused
KIND = "class-gaussian-mahalanobis"
# Weight of the shared covariance in each class's matrix: a class-only covariance is tighter
# around its class, the shared one more stable.
DEFAULT_SHRINK = 0.3
_RIDGE = 1e-6  # relative to the mean variance: keeps a matrix of a degenerate cloud invertible


def _whitener(cov: np.ndarray) -> np.ndarray:
    """L with L @ L.T = inverse(cov): ``|(x - mean) @ L|^2`` is the squared Mahalanobis distance."""
    f = cov.shape[0]
    ridge = _RIDGE * max(float(np.trace(cov)) / f, 1e-12)
    prec = np.linalg.inv(cov + ridge * np.eye(f))
    prec = (prec + prec.T) / 2.0
    return np.linalg.cholesky(prec)


def check_gaussian(mean: np.ndarray, whitener: np.ndarray) -> None:
    """Raises ValueError unless ``mean`` (features,) and ``whitener`` (features, features) are
    what ``Gaussian.fit`` writes: finite, the whitener a Cholesky factor (lower triangular, its
    diagonal positive: full rank, so every feature counts). A NaN in either made every distance
    NaN, which no threshold is ever below or above: a stream that could never alarm, silently."""
    f = mean.shape[0] if mean.ndim == 1 else -1
    if f < 1 or whitener.shape != (f, f):
        raise ValueError(f"mean {mean.shape} and whitener {whitener.shape} do not fit together")
    if not (np.isfinite(mean).all() and np.isfinite(whitener).all()):
        raise ValueError("the mean or the whitener holds NaN or infinite numbers")
    if np.triu(whitener, 1).any() or not (np.diagonal(whitener) > 0).all():
        raise ValueError("the whitener is not a Cholesky factor (lower triangular, positive diagonal)")


def rounded(a: np.ndarray) -> list[Any]:
    """``a`` as nested lists of floats of 9 significant digits, for JSON (the last digits of
    float64 are noise here; rounding to decimals instead turned a whitener's small entries to 0)."""
    a = np.asarray(a, dtype=np.float64)
    return np.array([float(f"{v:.9g}") for v in a.ravel().tolist()]).reshape(a.shape).tolist()


def _covariance(x: np.ndarray, mean: np.ndarray) -> np.ndarray:
    c = x - mean
    return c.T @ c / max(1, len(c) - 1)


@dataclass
class Gaussian:
    """One Gaussian over features: ``distance2(x)`` is the squared Mahalanobis distance (b,)."""

    mean: np.ndarray  # (features,)
    whitener: np.ndarray  # (features, features)

    @classmethod
    def fit(cls, x: np.ndarray, *, shrink: float = 0.0, least_std: np.ndarray | None = None) -> Gaussian:
        """``x``: (windows, features). ``shrink``: weight of the covariance's diagonal in the
        matrix used (a few dozen windows estimate the off-diagonal terms of 16 features poorly).
        ``least_std``: per feature, the least standard deviation the Gaussian gives it (its
        variance raised to that square where the windows vary less)."""
        x = np.asarray(x, dtype=np.float64)
        if x.ndim != 2 or x.shape[0] < 2:
            raise ValueError(f"a Gaussian needs (windows >= 2, features), got {x.shape}")
        mean = x.mean(axis=0)
        cov = _covariance(x, mean)
        cov = (1.0 - shrink) * cov + shrink * np.diag(np.diag(cov))
        if least_std is not None:
            i = np.diag_indices_from(cov)
            cov[i] = np.maximum(cov[i], np.square(np.asarray(least_std, dtype=np.float64)))
        return cls(mean, _whitener(cov))

    def distance2(self, x: np.ndarray) -> np.ndarray:
        z = (np.asarray(x, dtype=np.float64) - self.mean) @ self.whitener
        return np.einsum("bf,bf->b", z, z)


@dataclass
class UnknownDetector:
    """Class-conditional Gaussians of a model's pooled features and the refusal threshold.

    Attributes:
        means: (classes, features) class means on the training split.
        whiteners: (classes, features, features) ``L`` per class (see ``_whitener``).
        threshold: squared distance above which a window is refused.
        calibration: how it was fitted and what it measured (stored with it, for people).
    """

    means: np.ndarray
    whiteners: np.ndarray
    threshold: float
    calibration: dict[str, Any] = field(default_factory=dict)
    refused_total: int = field(default=0, compare=False, repr=False)  # windows ``refuse`` refused so far

    @property
    def features(self) -> int:
        return int(self.means.shape[1])

    @classmethod
    def fit(cls, x: np.ndarray, y: np.ndarray, classes: int, *, shrink: float = DEFAULT_SHRINK) -> UnknownDetector:
        """Fits the Gaussians on training features ``x`` (n, features) with labels ``y`` (n,);
        the threshold is left at infinity until ``calibrate``."""
        x = np.asarray(x, dtype=np.float64)
        y = np.asarray(y)
        missing = [k for k in range(classes) if not np.any(y == k)]
        if missing:
            raise ValueError(f"no training windows of class(es) {missing}")
        means = np.stack([x[y == k].mean(axis=0) for k in range(classes)])
        shared = _covariance(x - means[y], np.zeros(x.shape[1]))
        whiteners = np.stack([
            _whitener((1.0 - shrink) * _covariance(x[y == k], means[k]) + shrink * shared) for k in range(classes)
        ])
        return cls(means, whiteners, float("inf"), {"shrink": shrink, "train_windows": int(len(x))})

    def distance2(self, x: np.ndarray) -> np.ndarray:
        """Smallest squared Mahalanobis distance to a class, (b,); ``x`` (b, features)."""
        x = np.asarray(x, dtype=np.float64)
        # (classes, b, features): every window whitened by every class's matrix
        z = np.matmul(x[None], self.whiteners) - np.einsum("cf,cfg->cg", self.means, self.whiteners)[:, None, :]
        return np.einsum("cbf,cbf->cb", z, z).min(axis=0)

    def score(self, x: np.ndarray) -> np.ndarray:
        """(b,) distance over the threshold: above 1 the window is ``unknown``."""
        return self.distance2(x) / self.threshold

    def refuse(self, preds: list[Prediction]) -> None:
        """Scores the predictions that carry features (one call per batch) and relabels those
        above the threshold ``unknown``, keeping the model's label in ``model_label``."""
        cols = batch_columns(preds)
        if cols is not None and cols.features is not None:  # the batch's features as the runner gave them
            rows, x = preds, cols.features
        else:
            rows = [p for p in preds if p.features is not None]
            if not rows:
                return
            x = np.array([p.features for p in rows])  # np.stack's rows, in fewer steps
        scores = self.score(x)
        self.refused_total += int(np.count_nonzero(~(scores <= 1.0)))
        for p, sc in zip(rows, scores.tolist()):
            p.unknown_score = sc
            if not sc <= 1.0:  # NaN features are refused too
                p.model_label = p.label
                p.label = UNKNOWN

    def calibrate(self, x: np.ndarray, *, percentile: float = 99.9, margin: float = 1.0) -> float:
        """Sets the threshold to ``percentile`` of the scores of held-out in-distribution features
        ``x`` times ``margin``; returns it. A threshold that is not a finite number > 0 (features
        with NaN, or none) is a DataError: written, it would turn unknown detection off."""
        threshold = float(np.percentile(self.distance2(x), percentile) * margin) if len(x) else math.nan
        if not (threshold > 0 and math.isfinite(threshold)):
            raise DataError(f"the unknown-input threshold from {len(x)} held-out windows is {threshold}; "
                            "their features are NaN, infinite or all at the class means - check the "
                            "recordings for NaN or flat stretches")
        self.threshold = threshold
        self.calibration.update({"percentile": percentile, "margin": margin, "calibration_windows": int(len(x))})
        return self.threshold

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": KIND,
            "means": rounded(self.means),
            "whiteners": rounded(self.whiteners),
            "threshold": self.threshold,
            "calibration": self.calibration,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any], *, where: str = "artifact", classes: int | None = None,
                  features: int | None = None) -> UnknownDetector:
        """From the artifact metadata's ``unknown`` entry; a malformed one, or one of other than
        ``classes`` x ``features`` (the model's, where given), is an ArtifactError."""
        try:
            if d.get("kind") != KIND:
                raise ValueError(f"kind {d.get('kind')!r} is not {KIND!r}")
            means = np.asarray(d["means"], dtype=np.float64)
            whiteners = np.asarray(d["whiteners"], dtype=np.float64)
            threshold = float(d["threshold"])
            c, f = means.shape
            if whiteners.shape != (c, f, f) or not threshold > 0 or not np.isfinite(threshold):
                raise ValueError(f"shapes {means.shape} / {whiteners.shape}, threshold {threshold}")
            if (classes is not None and c != classes) or (features is not None and f != features):
                raise ValueError(f"{c} classes of {f} features, the model has {classes} of {features}")
            for mean, whitener in zip(means, whiteners):
                check_gaussian(mean, whitener)
        except (KeyError, TypeError, ValueError) as exc:
            raise ArtifactError(f"{where}: metadata 'unknown' is malformed ({exc}); re-run tools/fit_unknown.py") from None
        return cls(means, whiteners, threshold, dict(d.get("calibration", {})))


__all__ = ["DEFAULT_SHRINK", "UNKNOWN", "Gaussian", "UnknownDetector", "check_gaussian", "rounded"]
