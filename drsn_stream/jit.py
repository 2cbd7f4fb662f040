"""numba, where it imports: the few per-sample loops that numpy runs as many small passes.

Each compiled kernel has a numpy path beside it that gives the same results (the tests run both),
so a machine without numba, or ``DRSN_STREAM_JIT=0`` in the environment, only runs slower.
Compiled code is cached on disk next to its module (or in numba's user cache), so only a first
start pays for compiling (a few seconds); where numba finds no folder to cache in, each process
compiles its own.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from typing import Any

try:  # a missing or broken numba leaves the numpy paths, never the monitor without them
    if os.environ.get("DRSN_STREAM_JIT", "1") == "0":
        raise ImportError("DRSN_STREAM_JIT=0")
    import numba
except Exception:  # noqa: BLE001 - any failure to import it means: no compiled paths
    numba = None


def available() -> bool:
    """Whether numba is there to compile with."""
    return numba is not None


def compile_kernel(fn: Callable[..., Any], **options: Any) -> Callable[..., Any]:
    """``fn`` as ``numba.njit(nogil=True, **options)`` compiles it, cached on disk where numba
    can; raises ``RuntimeError`` when numba is missing or refuses it (the caller keeps numpy)."""
    if numba is None:
        raise RuntimeError("numba is not installed (or DRSN_STREAM_JIT=0)")
    error: Exception | None = None
    for cache in (True, False):  # no folder to cache in (numba says so at once): this process only
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # numba's warnings about its cache
                return numba.njit(cache=cache, nogil=True, **options)(fn)
        except Exception as exc:  # noqa: BLE001 - said below, with numba's reason
            error = exc
    raise RuntimeError(f"numba cannot compile {fn.__name__}: {type(error).__name__}: {error}") from error
