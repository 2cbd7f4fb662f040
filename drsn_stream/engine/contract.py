"""The engine's contract, without torch: batch limits, the ``RunnerLike`` protocol every runner
keeps (``Runner`` on the CPU or CUDA, ``ProcessRunner`` in a child process), the input check they
share, and the device a run will use.

The monitor's own process imports only this: with the engine in a child process (the CPU
default) torch is loaded there alone, not also in the process that reads the sources.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from drsn_stream.errors import ConfigError

# On the CPU a batch is run in slices of at most this many windows: beyond it the activations of
# one slice no longer fit the caches and throughput drops (docs/performance.md).
CPU_SLICE = 256
# The live monitor on the CPU sends a batch as soon as this many windows wait while the engine is
# idle: at 64 windows a batch already runs near the best speed per window (docs/performance.md),
# and the rest of a burst gathers while it runs instead of waiting for the whole burst.
CPU_EAGER_BATCH = 64
# The largest batch on the CPU with live sources (the monitor's default there): a burst of 128
# windows runs as two batches of 64, the second sent as soon as it is full, and after a delay no
# batch grows to 128-256 windows that the next ones must wait for: a lower p99 at 128 streams
# (docs/perf/ab/max-batch-64-128.json).
CPU_LIVE_MAX_BATCH = 64
# When the engine has fallen behind (more than CPU_LIVE_MAX_BATCH windows wait as it takes a batch),
# the live monitor on the CPU takes up to this many at once: a batch of 128 costs less per window
# than two of 64 (`drsn-stream bench`), so a backlog drains sooner, and nothing changes while the
# engine keeps up.
CPU_CATCH_UP_BATCH = 128
# The largest batch otherwise (CUDA, and replays with --fast, where throughput counts).
MAX_BATCH = 256
# When the engine on CUDA has fallen behind (more than MAX_BATCH windows wait as it takes a batch),
# it takes up to this many at once. There the monitor process's Python per window, not the GPU, is
# the limit (a batch costs a fixed number of numpy calls, and one interpreter lock serves every
# thread): after ingest one process takes some 20 % more windows/s in batches of up to 1,024 than
# of 256 (`tools/bench_stages.py --catch-up`), and the GPU runs them faster too. While the engine
# keeps up nothing changes. A backlog's batch holds at most CUDA_CATCH_UP_SAMPLES samples (the
# largest power of two of windows that fit, no catch-up where that is MAX_BATCH or fewer): the
# runner captures a CUDA graph per batch size at start-up, and a model of long windows (the
# speech model's 8,000 samples) would hold GPU memory for batches its few streams never make.
CUDA_CATCH_UP_BATCH = 1024
CUDA_CATCH_UP_SAMPLES = 1024 * 2048
# The batch sizes `drsn-stream bench` measures unless told.
BENCH_BATCH_SIZES = (1, 4, 16, 64, 256, 1024)
# The most any setting or flag may ask for: buffers are sized from a batch, threads started from
# a count (2^63 of either raised from inside numpy or torch).
BATCH_LIMIT = 16_384
THREADS_LIMIT = 1024


def cuda_catch_up_batch(window: int) -> int:
    """The largest batch a backlog leaves in on CUDA for windows of ``window`` samples (0: none
    larger than MAX_BATCH); see CUDA_CATCH_UP_SAMPLES."""
    fit = min(CUDA_CATCH_UP_BATCH, CUDA_CATCH_UP_SAMPLES // max(1, window))
    b = 1 << (fit.bit_length() - 1) if fit >= 1 else 0
    return b if b > MAX_BATCH else 0


def default_batch_sizes(max_batch: int) -> list[int]:
    """Powers of two up to max_batch (and max_batch itself): 1, 2, 4, ..., max_batch."""
    sizes = []
    b = 1
    while b < max_batch:
        sizes.append(b)
        b *= 2
    sizes.append(max_batch)
    return sizes


def cpu_threads_for_inference() -> int:
    """All cores but one (ingest needs one), at least one."""
    return max(1, (os.cpu_count() or 2) - 1)


@dataclass
class Pending:
    """A submitted batch: on the CPU its results, on CUDA the lane whose event marks them ready
    (a ``_GraphSlot``; the ProcessRunner's lane number). ``features`` (rows, features) is set by
    ``collect`` when the runner returns pooled features (``features > 0``)."""

    rows: int
    slot: Any = None
    probs: np.ndarray | None = None
    noise: np.ndarray | None = None
    features: np.ndarray | None = None


def split_packed(res: np.ndarray, features: int, pending: Pending) -> tuple[np.ndarray, np.ndarray]:
    """(rows, classes + 1 + features) packed outputs -> (probs, noise); features into ``pending``."""
    c = res.shape[1] - 1 - features
    if features:
        pending.features = res[:, c + 1 :]
    return res[:, :c], res[:, c]


class RunnerLike(Protocol):
    """What the inference loop needs of a runner: ``Runner`` (CPU, CUDA) and ``ProcessRunner`` (CPU
    in a child process) both keep it. At most ``lanes`` batches may be submitted and not collected;
    ``collect`` takes them in submission order."""

    window: int
    max_batch: int
    lanes: int
    notes: list[str]

    @property
    def device_name(self) -> str: ...

    def warmup(self) -> None: ...

    def submit(self, x: np.ndarray) -> Pending: ...

    def done(self, pending: Pending) -> bool: ...

    def collect(self, pending: Pending) -> tuple[np.ndarray, np.ndarray]: ...

    def infer(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]: ...


def check_windows(x: np.ndarray, window: int, max_batch: int | None = None) -> None:
    """The input check every runner makes: (b, window) windows, at most ``max_batch`` of them."""
    if x.ndim != 2 or x.shape[1] != window:
        raise ValueError(f"expected windows of shape (b, {window}), got {x.shape}")
    if max_batch is not None and x.shape[0] > max_batch:
        raise ValueError(f"submit takes at most {max_batch} windows, got {x.shape[0]}; use infer()")


def infer_in_slices(runner: RunnerLike, x: np.ndarray, step: int) -> tuple[np.ndarray, np.ndarray]:
    """Runs ``x`` through ``runner.submit`` / ``collect`` in slices of ``step`` rows, keeping up to
    ``runner.lanes`` slices in flight; results in order (Runner and ProcessRunner)."""
    outs_p, outs_n, pending = [], [], []
    for i in range(0, x.shape[0], step):
        if len(pending) >= runner.lanes:
            p, n = runner.collect(pending.pop(0))
            outs_p.append(p)
            outs_n.append(n)
        pending.append(runner.submit(x[i : i + step]))
    for h in pending:
        p, n = runner.collect(h)
        outs_p.append(p)
        outs_n.append(n)
    return np.concatenate(outs_p), np.concatenate(outs_n)


def device_spec(spec: str = "auto") -> str:
    """The device a run asks for, checked: ``cpu``, ``cuda`` or ``cuda:N``. ``auto`` is cuda when
    torch sees a GPU, else cpu; ``cuda`` without a GPU and an unknown name are clear errors.
    Torch is imported only where the answer needs it (a CUDA device asked for, or ``auto`` with a
    torch build that has CUDA or ROCm)."""
    s = (spec or "auto").lower()
    if s == "cpu" or (s == "auto" and not _torch_has_gpu_build()):
        return "cpu"
    if s != "auto" and not s.startswith("cuda"):
        raise ConfigError(f"unknown device {spec!r}; use auto, cpu or cuda[:N]")
    import torch

    if s == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if not torch.cuda.is_available():
        raise ConfigError("--device cuda: no CUDA GPU is visible to torch; use --device cpu (or auto)")
    return s


def device_type(spec: str = "auto") -> str:
    """``cpu`` or ``cuda``: where a run with ``--device spec`` runs its model (``device_spec``)."""
    return device_spec(spec).split(":")[0]


def _torch_has_gpu_build() -> bool:
    """False only where the installed torch is a CPU-only build (no CUDA or ROCm library beside
    it): its ``torch.cuda.is_available()`` is then False on any machine."""
    found = importlib.util.find_spec("torch")
    if found is None or found.origin is None:
        return True  # let the import say what is wrong
    lib = Path(found.origin).parent / "lib"
    return any(lib.glob("libtorch_cuda*")) or any(lib.glob("libtorch_hip*")) or not lib.is_dir()
