"""Small shared helpers for tests (real data access)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

DATA = Path(os.environ.get("DRSN_DATA", Path(__file__).resolve().parents[1].parent / "shared" / "data"))
CWRU = DATA / "cwru"
needs_cwru = pytest.mark.skipif(
    not CWRU.is_dir(), reason=f"CWRU data not found at {CWRU}; set DRSN_DATA to the folder that holds cwru/"
)


def require_cwru() -> Path:
    if not (CWRU / "12k_Drive_End_IR014_0_169.mat").is_file():
        pytest.skip(f"CWRU data not found at {CWRU} (set DRSN_DATA to the shared data folder)")
    return CWRU


def cwru_signal(name: str = "12k_Drive_End_IR014_0_169.mat", channel: str = "DE") -> np.ndarray:
    """The raw drive-end signal of one CWRU file, float64 (n,)."""
    from scipy.io import loadmat

    root = require_cwru()
    mat = loadmat(root / name)
    key = next(k for k in mat if k.endswith(f"_{channel}_time"))
    return np.asarray(mat[key], dtype=np.float64).ravel()


def cwru_windows(n: int, *, window: int = 2048, name: str = "12k_Drive_End_IR014_0_169.mat") -> torch.Tensor:
    """n z-scored real windows (n, window) from one CWRU recording."""
    x = cwru_signal(name)
    starts = np.linspace(0, len(x) - window, n).astype(int)
    w = np.stack([x[s : s + window] for s in starts])
    w = (w - w.mean(1, keepdims=True)) / (w.std(1, keepdims=True) + 1e-8)
    return torch.from_numpy(w.astype(np.float32))
