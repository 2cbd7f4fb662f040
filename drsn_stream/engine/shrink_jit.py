"""A shrinkage unit's elementwise tail compiled (numba): two passes over its activations
instead of ten torch kernels.

After a unit's two convolutions the channels-last form (cpu_layout.py) runs |r|, its sums, the
threshold net, the clamp, the subtraction, the zero test and its count, the shortcut's add and
the next unit's batch norm and ReLU as separate torch kernels, each a pass over the activations
(docs/performance-peers.md). Here one call per unit does the same per window in two passes over
its row (three where the shortcut is strided), which stays in the L1 cache between them: the sums
of |r| per channel (then the threshold net on those few values), and the soft thresholding, the
count of activations kept, the shortcut and the next unit's batch norm and ReLU (or, after the
last unit, the head's batch norm, ReLU and mean over positions). Rows of 64 values hold whole positions, so per-channel
constants repeat with period 64 and the inner loops vectorize.

The results equal the torch form's up to float rounding (the runner compares the two forms on
the artifact's validation windows before using this one; the tests run both). Used where numba
imports (``drsn_stream.jit``) and torch runs on one thread (these loops run on one).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from drsn_stream import jit

ROW = 64  # values per row of the fast loops: 64 % channels == 0 and positions * channels % 64 == 0


def _thresholds_py(g, c, shrink, f1w, f1b, f2w, f2b, z, tau):
    """The threshold net on g (c,), the mean |r| of each channel: tau[:c] = sigmoid(fc2(relu(
    fc1(g)))) * g for shrink 2 (channel-wise), * mean(g) for 1 (channel-shared); fc1 is ``f1w``
    (c, c) with its batch norm folded in and ``f1b``, fc2 ``f2w`` (c or 1, c) and ``f2b``; z (c,)
    scratch. Shared with the whole compiled pass (small_jit)."""
    zero = np.float32(0.0)
    one = np.float32(1.0)
    for o in range(c):
        s = f1b[o]
        for k in range(c):
            s += f1w[o, k] * g[k]
        z[o] = s if s > zero else zero
    if shrink == 2:
        for o in range(c):
            s = f2b[o]
            for k in range(c):
                s += f2w[o, k] * z[k]
            tau[o] = g[o] * np.float32(one / (one + np.float32(math.exp(-s))))
    else:
        s = f2b[0]
        for k in range(c):
            s += f2w[0, k] * z[k]
        gm = zero
        for k in range(c):
            gm += g[k]
        t0 = np.float32(gm / c) * np.float32(one / (one + np.float32(math.exp(-s))))
        for o in range(c):
            tau[o] = t0


def _tail_py(r, h, lo, c, stride, cin, shortcut, shrink, f1w, f1b, f2w, f2b, ns, nt, head, a_next, pooled, kept):
    """One unit's tail for a batch, in place.

    r (b, lo * c): conv2's output, replaced by the unit's output (soft-thresholded, shortcut
    added); h (b, positions * cin): the unit's input, the shortcut's source (every ``stride``-th
    position, channels beyond ``cin`` zero); shrink 0 none, 1 channel-shared, 2 channel-wise,
    with the threshold net fc1 (``f1w`` (c, c), bn folded in, ``f1b``) and fc2 (``f2w`` (m, c),
    ``f2b``); ``ns``, ``nt`` (c,): the next unit's bn1 (or the head's norm) as y * ns + nt.
    head 0: a_next (b, lo * c) gets relu(out * ns + nt); head 1: pooled (b, c) gets its mean over
    positions. kept (b,) += the share of the unit's activations the shrinkage left nonzero."""
    b = r.shape[0]
    n = lo * c
    zero = np.float32(0.0)
    rows = n % ROW == 0 and ROW % c == 0
    ident = shortcut != 0 and stride == 1 and cin == c
    w = max(ROW, c)  # per-slot constants: a row's 64 slots, or (more channels) one per channel
    acc = np.zeros(ROW, np.float32)
    g = np.zeros(c, np.float32)
    z = np.zeros(c, np.float32)
    tau = np.zeros(w, np.float32)
    srow = np.zeros(w, np.float32)
    trow = np.zeros(w, np.float32)
    prow = np.zeros(w, np.float32)
    for q in range(w):
        srow[q] = ns[q % c]
        trow[q] = nt[q % c]
    inv = np.float32(1.0 / lo)
    share = np.float32(1.0 / n)
    for i in range(b):
        ri = r[i]
        hi = h[i]
        if shrink > 0:
            # pass 1: the mean |r| of each channel
            for ch in range(c):
                g[ch] = zero
            if rows:
                for q in range(ROW):
                    acc[q] = zero
                for p in range(n // ROW):
                    p0 = p * ROW
                    for q in range(ROW):
                        acc[q] += abs(ri[p0 + q])
                for q in range(ROW):
                    g[q % c] += acc[q]
            else:
                for p in range(lo):
                    for ch in range(c):
                        g[ch] += abs(ri[p * c + ch])
            for ch in range(c):
                g[ch] *= inv
            _thresholds(g, c, shrink, f1w, f1b, f2w, f2b, z, tau)
        else:
            for o in range(c):
                tau[o] = zero
        for q in range(c, w):
            tau[q] = tau[q % c]
        # pass 2: soft thresholding (x - clamp(x, -tau, tau), as the torch form), the count of
        # activations kept, the shortcut, the next unit's bn1 and ReLU
        cnt = 0
        if rows:
            # one loop where the shortcut is the identity (or none): the next bn1 and ReLU (or the
            # head's pooling) read the value just made; else the shortcut's strided add comes first
            fused = ident or shortcut == 0
            an = a_next[i] if not head else a_next[0]
            for q in range(ROW):
                prow[q] = zero
            for p in range(n // ROW):
                p0 = p * ROW
                for q in range(ROW):
                    j = p0 + q
                    x = ri[j]
                    t = tau[q]
                    y = x - min(max(x, -t), t)
                    cnt += y != zero
                    if ident:
                        y = y + hi[j]
                    ri[j] = y
                    if fused:
                        a = max(y * srow[q] + trow[q], zero)
                        if head:
                            prow[q] += a
                        else:
                            an[j] = a
            if not fused:
                for p in range(lo):
                    for ch in range(cin):
                        ri[p * c + ch] += hi[p * stride * cin + ch]
                for p in range(n // ROW):
                    p0 = p * ROW
                    for q in range(ROW):
                        j = p0 + q
                        a = max(ri[j] * srow[q] + trow[q], zero)
                        if head:
                            prow[q] += a
                        else:
                            an[j] = a
        else:
            for q in range(w):
                prow[q] = zero
            for p in range(lo):
                for ch in range(c):
                    j = p * c + ch
                    x = ri[j]
                    t = tau[ch]
                    y = x - min(max(x, -t), t)
                    cnt += y != zero
                    if shortcut != 0 and ch < cin:
                        y = y + hi[p * stride * cin + ch]
                    ri[j] = y
                    a = max(y * srow[ch] + trow[ch], zero)
                    if head:
                        prow[ch] += a
                    else:
                        a_next[i, j] = a
        if head:
            for ch in range(c):
                pooled[i, ch] = zero
            for q in range(ROW if rows else c):
                pooled[i, q % c] += prow[q]
            for ch in range(c):
                pooled[i, ch] *= inv
        if shrink > 0:
            kept[i] += np.float32(cnt) * share


_thresholds: Any = None  # compiled by _build before _tail_py (which calls it by this name)


def _build() -> Any:
    global _thresholds
    _thresholds = jit.compile_kernel(_thresholds_py)
    tail = jit.compile_kernel(_tail_py)
    _run_tiny(tail)
    return tail


def _run_tiny(tail: Any) -> None:
    """One call on throwaway arrays of the types every real call uses."""
    f = np.float32
    r, h, a = np.ones((1, 64), f), np.ones((1, 64), f), np.zeros((1, 64), f)
    w, v, kept, pooled = np.eye(4, dtype=f), np.zeros(4, f), np.zeros(1, f), np.zeros((1, 4), f)
    tail(r, h, 16, 4, 1, 4, 1, 2, w, v, w, v, v + 1, v, 0, a, pooled, kept)


_compiled = jit.Kernels(_build)
# warm(): compile (or load from the cache) now, False where not available; why_not(): why not ("" when
# available); kernel(): the compiled function (warm() first)
warm, why_not, kernel = _compiled.warm, _compiled.why_not, _compiled.get
