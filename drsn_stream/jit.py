"""numba, where it imports: the few per-sample loops that numpy runs as many small passes.

Each compiled kernel has a numpy path beside it that gives the same results (the tests run both),
so a machine without numba, or ``DRSN_STREAM_JIT=0`` in the environment, only runs slower.
Compiled code is cached on disk next to its module (or in numba's user cache), so only a first
start pays for compiling (a few seconds); where numba finds no folder to cache in, each process
compiles its own.
"""

from __future__ import annotations

import os
import threading
import warnings
from collections.abc import Callable
from typing import Any

from drsn_stream.runtime import signals_held

with signals_held():
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


class Kernels:
    """Kernels compiled together once per process, on the first ``get()``: ``build()`` compiles
    them (``compile_kernel``, or loads them from numba's cache) and runs them once on throwaway
    arrays. A failure is kept and said by ``why_not()``; the caller's numpy path stays."""

    def __init__(self, build: Callable[[], Any]) -> None:
        self._build = build
        self._lock = threading.Lock()
        self._built: Any = None
        self._failed: str | None = None

    def get(self) -> Any:
        """What ``build`` returned, or None (no numba, or it refused)."""
        if numba is None:
            return None
        built = self._built
        if built is not None:  # the hot path: no lock once built
            return built
        with self._lock:
            if self._built is None and self._failed is None:
                try:
                    with signals_held():  # a signal meanwhile stops the command after it, not inside llvmlite
                        self._built = self._build()
                except Exception as exc:  # noqa: BLE001 - the numpy path takes over
                    self._failed = f"{type(exc).__name__}: {exc}"
        return self._built

    def warm(self) -> bool:
        """Compile (or load from the cache) now: whether they can be used."""
        return self.get() is not None

    def available(self) -> bool:
        """Whether they can be used (numba imported and, once tried, compiled)."""
        return numba is not None and self._failed is None

    def why_not(self) -> str:
        """Why they cannot be used ("" when they can)."""
        if numba is None:
            return "numba is not installed (or DRSN_STREAM_JIT=0)"
        return self._failed or ""
