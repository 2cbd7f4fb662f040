"""A 1-D network's whole forward pass compiled (numba), for small batches.

Each torch convolution on the CPU pays a fixed cost before oneDNN runs it (its primitive
descriptor made again, the weights reordered; at batch 1 torch's own im2col path instead), tens
of microseconds, which a paper-size network pays 25 times per batch whatever its size. At batch
256 that is a few microseconds per window; at batch 1 to 16 it is most of the time, and ONNX
Runtime, whose convolutions cost less per call, ran such batches faster than the engine
(docs/performance-peers.md). Here one call per batch runs the stem, every unit (bn1 and ReLU,
both convolutions, the threshold net, the soft thresholding and its count, the shortcut) and the
head, window by window on activations laid out (channels, positions): a convolution is, per pair
of output and pair of input channels, one pass over positions that reads its taps from the input
rows, and such passes vectorize. Its cost per window does not depend on the batch size, so the
runner times it against the tails at start and uses it below the batch size where they catch up
(``cpu_layout.calibrate``).

The constants come from the channels-last form (``cpu_layout.ChannelsLastDRSN``: batch norms
folded the same way), and the results equal it up to float rounding (the runner compares the two
on the artifact's validation windows before using this one; the tests run every 1-D network).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from drsn_stream import jit

# The per-unit int table's columns (``units`` of ``forward``): channels, stride, lengths, kernel,
# offsets of the unit's constants in the flat weight array, and its shrinkage.
(U_CIN, U_COUT, U_STRIDE, U_LIN, U_LOUT, U_K, U_S1, U_T1, U_W1, U_B1, U_W2, U_B2,
 U_SHRINK, U_SHORTCUT, U_F1W, U_F1B, U_F2W, U_F2B, U_M) = range(19)
UNIT_FIELDS = 19
# The net's int table (``top``): buffer sizes, the stem, the head.
(T_CMAX, T_LMAX, T_STEM_C, T_STEM_K, T_STEM_STRIDE, T_L0, T_STEM_W, T_STEM_B,
 T_HS, T_HT, T_FC_W, T_FC_B, T_CLASSES, T_CHANNELS, T_SHRINK) = range(15)
TOP_FIELDS = 15
LANES = 16  # partial sums of a row's |r| kept apart, so that the loop vectorizes


def _taps3_py(ya, yb, two, x1, x2, jend, lout, a10, a11, a12, a20, a21, a22, b10, b11, b12, b20, b21, b22):
    """Stride 1: adds input rows x1 and x2's share to output rows ``ya`` and (where ``two``)
    ``yb``; output j reads x[j - 1], x[j], x[j + 1] (a10..a22: output a's weights of input 1 and
    2, taps 0..2; b: output b's). From j = jend on the right tap is padding. Few distinct rows per
    call: LLVM vectorizes a loop only while it needs few run-time checks that rows do not overlap."""
    ya[0] += a11 * x1[0] + a12 * x1[1] + (a21 * x2[0] + a22 * x2[1])  # the left tap: padding
    if two:
        yb[0] += b11 * x1[0] + b12 * x1[1] + (b21 * x2[0] + b22 * x2[1])
        for j in range(1, jend):
            p1, q1, s1 = x1[j - 1], x1[j], x1[j + 1]
            p2, q2, s2 = x2[j - 1], x2[j], x2[j + 1]
            ya[j] += a10 * p1 + a11 * q1 + a12 * s1 + (a20 * p2 + a21 * q2 + a22 * s2)
            yb[j] += b10 * p1 + b11 * q1 + b12 * s1 + (b20 * p2 + b21 * q2 + b22 * s2)
    else:
        for j in range(1, jend):
            ya[j] += a10 * x1[j - 1] + a11 * x1[j] + a12 * x1[j + 1] + (a20 * x2[j - 1] + a21 * x2[j] + a22 * x2[j + 1])
    for j in range(max(jend, 1), lout):
        ya[j] += a10 * x1[j - 1] + a11 * x1[j] + (a20 * x2[j - 1] + a21 * x2[j])
        if two:
            yb[j] += b10 * x1[j - 1] + b11 * x1[j] + (b20 * x2[j - 1] + b21 * x2[j])


def _taps3s2_py(ya, o1, e1, o2, e2, jend, lout, a10, a11, a12, a20, a21, a22):
    """Stride 2: adds two input rows' share to output row ``ya``, each given as its odd positions
    ``o`` and even ones ``e``: output j reads x[2j - 1] = o[j - 1], x[2j] = e[j], x[2j + 1] = o[j]."""
    ya[0] += a11 * e1[0] + a12 * o1[0] + (a21 * e2[0] + a22 * o2[0])
    for j in range(1, jend):
        ya[j] += a10 * o1[j - 1] + a11 * e1[j] + a12 * o1[j] + (a20 * o2[j - 1] + a21 * e2[j] + a22 * o2[j])
    for j in range(max(jend, 1), lout):
        ya[j] += a10 * o1[j - 1] + a11 * e1[j] + (a20 * o2[j - 1] + a21 * e2[j])


def _conv3_py(x, lin, cin, w, cout, stride, lout, y):
    """Adds ``_conv_py``'s taps to y for kernel 3 and padding 1 (the paper's): two output and two
    input channels per pass over positions (each input row read once for both outputs), the
    positions whose taps all lie inside the row without a bounds test. A stride of 2 reads the
    even and odd positions of each input row from copies of their own, so that every pass reads
    consecutive values."""
    zero = np.float32(0.0)
    if stride == 1:
        jend = lin - 1  # the right tap j + 1 <= lin - 1
        ev = np.empty((0, 0), np.float32)
        od = ev
    else:
        jend = (lin - 2) // 2 + 1  # the right tap 2j + 1 <= lin - 1
        half = (lin + 1) // 2
        ev = np.empty((cin, half), np.float32)  # ev[ci, j] = x[ci, 2j], od[ci, j] = x[ci, 2j + 1]
        od = np.zeros((cin, half), np.float32)
        for ci in range(cin):
            xi, e, o = x[ci], ev[ci], od[ci]
            for j in range(lin // 2):
                e[j] = xi[2 * j]
                o[j] = xi[2 * j + 1]
            if lin % 2:
                e[half - 1] = xi[lin - 1]
    if jend > lout:
        jend = lout
    for co in range(0, cout, 2):
        two = co + 1 < cout
        ya = y[co]
        yb = y[co + 1] if two else ya
        for ci in range(0, cin, 2):
            pair = ci + 1 < cin
            cb = ci + 1 if pair else ci
            # an absent second input or output: its weights zero
            a10, a11, a12 = w[co, ci, 0], w[co, ci, 1], w[co, ci, 2]
            a20, a21, a22 = zero, zero, zero
            b10, b11, b12, b20, b21, b22 = zero, zero, zero, zero, zero, zero
            if pair:
                a20, a21, a22 = w[co, cb, 0], w[co, cb, 1], w[co, cb, 2]
            if two:
                b10, b11, b12 = w[co + 1, ci, 0], w[co + 1, ci, 1], w[co + 1, ci, 2]
                if pair:
                    b20, b21, b22 = w[co + 1, cb, 0], w[co + 1, cb, 1], w[co + 1, cb, 2]
            if stride == 1:
                _taps3(ya, yb, two, x[ci], x[cb], jend, lout,
                       a10, a11, a12, a20, a21, a22, b10, b11, b12, b20, b21, b22)
            else:
                _taps3s2(ya, od[ci], ev[ci], od[cb], ev[cb], jend, lout, a10, a11, a12, a20, a21, a22)
                if two:
                    _taps3s2(yb, od[ci], ev[ci], od[cb], ev[cb], jend, lout, b10, b11, b12, b20, b21, b22)


def _conv_py(x, lin, cin, w, bias, cout, k, stride, pad, lout, relu, y):
    """y[co, p] = bias[co] + sum over ci, t of w[co, ci, t] * x[ci, p * stride + t - pad] (zero
    outside the row), p < lout; then ReLU where ``relu``. x (cin, >= lin), y (cout, >= lout)."""
    zero = np.float32(0.0)
    for co in range(cout):
        yo = y[co]
        bv = bias[co]
        for p in range(lout):
            yo[p] = bv
    if k == 3 and pad == 1 and lin >= 3:
        _conv3(x, lin, cin, w, cout, stride, lout, y)
    else:
        _conv_taps(x, lin, cin, w, cout, k, stride, pad, lout, y)
    if relu:
        for co in range(cout):
            yo = y[co]
            for p in range(lout):
                if yo[p] < zero:
                    yo[p] = zero


def _conv_taps_py(x, lin, cin, w, cout, k, stride, pad, lout, y):
    """Adds ``_conv_py``'s taps to y, any kernel, stride and padding: per output channel, input
    channel and tap, one pass over the outputs whose tap lies inside the row."""
    for co in range(cout):
        yo = y[co]
        for ci in range(cin):
            xi = x[ci]
            for t in range(k):
                wv = w[co, ci, t]
                off = t - pad
                p0 = 0  # the outputs whose tap t lies inside the row: p0 <= p < p1
                while p0 < lout and p0 * stride + off < 0:
                    p0 += 1
                p1 = lout
                while p1 > p0 and (p1 - 1) * stride + off >= lin:
                    p1 -= 1
                n = p1 - p0
                if n <= 0:
                    continue
                yv = yo[p0:p1]
                xv = xi[p0 * stride + off:]
                for j in range(n):  # from 0: the index is known not to wrap around, so this vectorizes
                    yv[j] += wv * xv[j * stride]


def _absmeans_py(r, cout, n, g, acc):
    """g[c] = the mean of |r[c, :n]| for c < cout; ``acc`` (LANES,) scratch."""
    m = n // LANES
    for c in range(cout):
        rc = r[c]
        for q in range(LANES):
            acc[q] = np.float32(0.0)
        for j in range(m):
            for q in range(LANES):
                acc[q] += abs(rc[j * LANES + q])
        s = np.float32(0.0)
        for q in range(LANES):
            s += acc[q]
        for p in range(m * LANES, n):
            s += abs(rc[p])
        g[c] = s / np.float32(n)


def _forward_py(x, fw, units, top, logits, noise, pooled):
    """The network on windows x (b, samples): logits (b, classes), noise index (b,) and pooled
    features (b, channels) written. ``fw`` holds every constant, ``units`` / ``top`` where."""
    b, n = x.shape
    zero = np.float32(0.0)
    one = np.float32(1.0)
    cmax, lmax = top[T_CMAX], top[T_LMAX]
    sc, sk, ss, l0 = top[T_STEM_C], top[T_STEM_K], top[T_STEM_STRIDE], top[T_L0]
    classes, c_last = top[T_CLASSES], top[T_CHANNELS]
    stem_w = fw[top[T_STEM_W]:top[T_STEM_W] + sc * sk].reshape(sc, 1, sk)
    stem_b = fw[top[T_STEM_B]:top[T_STEM_B] + sc]
    hs = fw[top[T_HS]:top[T_HS] + c_last]
    ht = fw[top[T_HT]:top[T_HT] + c_last]
    fc_w = fw[top[T_FC_W]:top[T_FC_W] + classes * c_last].reshape(classes, c_last)
    fc_b = fw[top[T_FC_B]:top[T_FC_B] + classes]
    nu = units.shape[0]
    h = np.empty((cmax, lmax), np.float32)  # a unit's input, then (swapped) its output
    r = np.empty((cmax, lmax), np.float32)
    a = np.empty((cmax, lmax), np.float32)
    c1 = np.empty((cmax, lmax), np.float32)
    g = np.empty(cmax, np.float32)
    z = np.empty(cmax, np.float32)
    tau = np.empty(cmax, np.float32)
    lanes = np.empty(LANES, np.float32)
    for i in range(b):
        _conv(x[i:i + 1], n, 1, stem_w, stem_b, sc, sk, ss, sk // 2, l0, False, h)
        kept = zero
        lo = l0
        for u in range(nu):
            cin, cout, stride = units[u, U_CIN], units[u, U_COUT], units[u, U_STRIDE]
            lin, lo, k = units[u, U_LIN], units[u, U_LOUT], units[u, U_K]
            s1 = fw[units[u, U_S1]:units[u, U_S1] + cin]
            t1 = fw[units[u, U_T1]:units[u, U_T1] + cin]
            w1 = fw[units[u, U_W1]:units[u, U_W1] + cout * cin * k].reshape(cout, cin, k)
            b1 = fw[units[u, U_B1]:units[u, U_B1] + cout]
            w2 = fw[units[u, U_W2]:units[u, U_W2] + cout * cout * k].reshape(cout, cout, k)
            b2 = fw[units[u, U_B2]:units[u, U_B2] + cout]
            for c in range(cin):  # bn1 and its ReLU
                sv, tv = s1[c], t1[c]
                hc, ac = h[c], a[c]
                for p in range(lin):
                    v = hc[p] * sv + tv
                    ac[p] = v if v > zero else zero
            # conv1 (bn2 folded in) and its ReLU, then conv2
            _conv(a, lin, cin, w1, b1, cout, k, stride, k // 2, lo, True, c1)
            _conv(c1, lo, cout, w2, b2, cout, k, 1, k // 2, lo, False, r)
            if units[u, U_SHRINK] > 0:
                m = units[u, U_M]
                f1w = fw[units[u, U_F1W]:units[u, U_F1W] + cout * cout].reshape(cout, cout)
                f1b = fw[units[u, U_F1B]:units[u, U_F1B] + cout]
                f2w = fw[units[u, U_F2W]:units[u, U_F2W] + m * cout].reshape(m, cout)
                f2b = fw[units[u, U_F2B]:units[u, U_F2B] + m]
                # the thresholds from each channel's mean |r| (the compiled tails' threshold net)
                _absmeans(r, cout, lo, g, lanes)
                _thresholds(g, cout, units[u, U_SHRINK], f1w, f1b, f2w, f2b, z, tau)
                # soft thresholding (x - clamp(x, -tau, tau), as the torch forms) and its count
                cnt = 0
                for c in range(cout):
                    t = tau[c]
                    rc = r[c]
                    for p in range(lo):
                        v = rc[p]
                        y = v - min(max(v, -t), t)
                        cnt += y != zero
                        rc[p] = y
                kept += np.float32(cnt) * np.float32(one / np.float32(cout * lo))
            if units[u, U_SHORTCUT] != 0:  # every stride-th position; new channels add zeros
                for c in range(cin):
                    rc, hc = r[c], h[c]
                    if stride == 1:
                        for p in range(lo):
                            rc[p] += hc[p]
                    else:
                        for p in range(lo):
                            rc[p] += hc[p * stride]
            h, r = r, h
        # the head: batch norm, ReLU, mean over positions, the classifier
        inv = np.float32(one / np.float32(lo))
        for c in range(c_last):
            sv, tv = hs[c], ht[c]
            hc = h[c]
            acc = zero
            for p in range(lo):
                v = hc[p] * sv + tv
                if v > zero:
                    acc += v
            pooled[i, c] = acc * inv
        for o in range(classes):
            s = fc_b[o]
            for c in range(c_last):
                s += fc_w[o, c] * pooled[i, c]
            logits[i, o] = s
        noise[i] = one - kept / np.float32(nu) if top[T_SHRINK] != 0 else zero


# the compiled helpers, set by _build before _forward_py is compiled (it calls them by these names)
_taps3: Any = None
_taps3s2: Any = None
_conv3: Any = None
_conv_taps: Any = None
_conv: Any = None
_absmeans: Any = None
_thresholds: Any = None


def _build() -> Any:
    global _taps3, _taps3s2, _conv3, _conv_taps, _conv, _absmeans, _thresholds
    from drsn_stream.engine import shrink_jit

    if not shrink_jit.warm():  # the threshold net is the compiled tails' own
        raise RuntimeError(shrink_jit.why_not())
    _thresholds = shrink_jit._thresholds
    _taps3 = jit.compile_kernel(_taps3_py)
    _taps3s2 = jit.compile_kernel(_taps3s2_py)
    _conv3 = jit.compile_kernel(_conv3_py)
    _conv_taps = jit.compile_kernel(_conv_taps_py)
    _conv = jit.compile_kernel(_conv_py)
    _absmeans = jit.compile_kernel(_absmeans_py)
    forward = jit.compile_kernel(_forward_py)
    _run_tiny(forward)
    return forward


def _run_tiny(forward: Any) -> None:
    """One call on a throwaway one-unit network of the types every real call uses."""
    f = np.float32
    top = np.zeros(TOP_FIELDS, np.int64)
    top[[T_CMAX, T_LMAX, T_STEM_C, T_STEM_K, T_STEM_STRIDE, T_L0, T_CLASSES, T_CHANNELS]] = [2, 8, 2, 3, 1, 8, 2, 2]
    units = np.zeros((1, UNIT_FIELDS), np.int64)
    units[0, [U_CIN, U_COUT, U_STRIDE, U_LIN, U_LOUT, U_K, U_SHORTCUT, U_SHRINK, U_M]] = [2, 2, 1, 8, 8, 3, 1, 2, 2]
    forward(np.ones((1, 8), f), np.full(64, 0.1, f), units, top, np.zeros((1, 2), f), np.zeros(1, f), np.zeros((1, 2), f))


_compiled = jit.Kernels(_build)
# warm(): compile (or load from the cache) now, False where not available; why_not(): why not ("" when
# available); kernel(): the compiled function (warm() first)
warm, why_not, kernel = _compiled.warm, _compiled.why_not, _compiled.get
