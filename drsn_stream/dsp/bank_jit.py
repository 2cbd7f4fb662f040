"""The ``WindowBank``'s step for a round of frames compiled (numba): one call instead of some
thirty numpy calls per round.

``WindowBank.push_flat`` writes a round's frames into their rows and finds the windows they
complete with numpy over arrays of streams; a live poll's rounds hold a few dozen frames, so
the fixed cost of those calls is paid for few frames. Here the same bookkeeping runs in one
loop over the round's frames: each frame's samples copied into its row (NaN/Inf written as 0
and counted), its stream's counters moved on, and every window it completes listed (row,
column, index, frame, start). The windows themselves, views of the rows, are made by the bank
as before: the same windows, bit for bit, as the numpy path gives (the tests run both).

Used where numba imports (``drsn_stream.jit``); without it the numpy path runs. ``warm()``
compiles (or loads from numba's cache) before a monitor's streams arrive.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from drsn_stream import jit


def _step_py(data, rows, x, t, seen, shift, nxt, count, windows, nonfinite, width, window, hop, rate, out, t_last):
    """Frame ``i`` of ``x`` (frames, samples), captured from ``t[i]`` on at ``rate`` Hz, into row
    ``rows[i]`` of ``data``, after the samples the row holds. Returns how many windows the frames
    complete, listed in ``out`` (row, column, index, frame, start; frame by frame, each frame's in
    order) with each one's last sample's capture time in ``t_last`` (as ``StreamDSP`` reckons
    it), or -1, with nothing changed, when a frame does not fit its row (the bank moves its rows
    to a fresh array first); -2 when ``out`` or ``t_last`` is too small for the windows (its
    caller sizes it: a frame of ``n`` samples completes at most ``(n - 1) // hop + 1``).
    (Compiled by numba; as plain Python it runs too, slowly: the tests compare it with the numpy
    path that way.)"""
    m = x.shape[0]
    n = x.shape[1]
    for i in range(m):
        r = rows[i]
        if seen[r] - shift[r] + n > width:
            return -1
    total = 0
    bits = x.view(np.int32)
    for i in range(m):
        r = rows[i]
        c = seen[r] - shift[r]
        # the row's columns as a view indexed from 0: an index that cannot be negative needs no
        # wrap-around, and the copy is vectorized. NaN and Inf are the floats whose exponent
        # bits are all set: found in the same pass, and only then the frame copied again with
        # zeros for them (a select per sample is not vectorized)
        dst = data[r, c : c + n]
        src = x[i]
        b = bits[i]
        top = 0
        for k in range(n):
            dst[k] = src[k]
            top = max(top, b[k] & 0x7F800000)
        if top >= 0x7F800000:
            bad = 0
            for k in range(n):
                ok = (b[k] & 0x7F800000) != 0x7F800000  # by its bits: no float warning run as plain Python
                dst[k] = src[k] if ok else np.float32(0.0)
                bad += not ok
            nonfinite[r] += bad
        n_in = seen[r]  # the stream's samples before this frame
        s = seen[r] + n
        seen[r] = s
        ready = s - window - nxt[r]
        if ready >= 0:
            more = ready // hop + 1
            if total + more > out.shape[1] or total + more > t_last.shape[0]:  # (memory safety, not a case)
                return -2
            for q in range(more):
                start = nxt[r] + q * hop
                out[0, total] = r
                out[1, total] = start - shift[r]
                out[2, total] = count[r] + q
                out[3, total] = i
                out[4, total] = start
                # as StreamDSP._t_last: t_capture + (end - 1 - out_base) / rate - frame_start / rate,
                # where out_base is 0 (a bank stream never changed its rate)
                t_last[total] = t[i] + (start + window - 1) / rate - n_in / rate
                total += 1
            nxt[r] += more * hop
            count[r] += more
            windows[r] += more
    return total


def _build() -> Any:
    kernel = jit.compile_kernel(_step_py)
    _run_tiny(kernel)
    return kernel


_compiled = jit.Kernels(_build)


def warm() -> bool:
    """Compile (or load from the cache) now rather than on a poll's first round; False when the
    compiled path is not available."""
    return _compiled.get() is not None


def why_not() -> str:
    """Why the compiled step is not available ("" when it is)."""
    return _compiled.why_not()


def kernel() -> Any:
    """The compiled step (``warm()`` first)."""
    return _compiled.get()


def _run_tiny(kernel: Any) -> None:
    """One call on throwaway arrays of the types every real call uses."""
    z = np.zeros(1, dtype=np.int64)
    kernel(np.zeros((1, 8), dtype=np.float32), z.copy(), np.zeros((1, 2), dtype=np.float32), np.zeros(1), z.copy(),
           z.copy(), z.copy(), z.copy(), z.copy(), z.copy(), 8, 2, 1, 12000.0, np.zeros((5, 2), dtype=np.int64),
           np.zeros(2))
