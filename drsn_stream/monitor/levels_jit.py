"""The level tests of ``health_levels.levels_many`` compiled (numba), one pass per stream.

``levels_many`` runs each test as numpy passes over a round's ``(streams, samples)`` block, some
forty numpy calls per round however many streams it holds, and the samples are read five or
six times (sum, centring, sum of squares, max, min, counts at the extremes). Here each stream's
gathered samples are read in place from the ``LevelBank``'s ``pend`` rows, twice, and its
flat-line, clipping and level-step state is updated in the same loop: the same tests on the same
state, with no numpy call per round and no copy of the samples.

The results are ``levels_many``'s: the same booleans and step codes, and the same state, except
that sums over a block are added in another order and ``log``/``exp`` are the C library's, so a
value could differ in its last bits, and one exactly at a threshold could be judged differently
(as ``levels_many`` already says of a block judged among others and alone). ``tests/test_health.py``
runs both on the same signals and compares every result and every state array.

Used where numba imports (``drsn_stream.jit``; ``DRSN_STREAM_JIT=0`` turns it off, e.g. to
compare); without it ``levels_many`` is the path, with the same results. ``warm()`` compiles (or
loads from numba's cache) before a monitor's streams arrive.
"""

from __future__ import annotations

import ctypes
import functools
import math
from types import SimpleNamespace
from typing import Any

import numpy as np

from drsn_stream import jit
from drsn_stream.monitor.health_levels import MIN_LEVELS_FOR_CLIPPING, LevelBank

CODE_NON_FINITE = -1  # a row with NaN/Inf samples: not judged here (HealthMonitor._check_levels)
NEEDS_WIDER = 1  # _levels_py: a chunk ring is full (LevelBank._widen, then again)


def _build() -> tuple[Any, Any, Any]:
    _frame_at_compiled()
    kernel = jit.compile_kernel(_levels_py, fastmath={"reassoc", "nsz", "contract"})
    gather = jit.compile_kernel(_gather_py)
    push = jit.compile_kernel(_push_rows_py)
    _run_tiny(kernel, gather, push)
    return kernel, gather, push


_compiled = jit.Kernels(_build)  # (the level tests, the gather, a block's bookkeeping)


def available() -> bool:
    """Whether the compiled path can be used (numba imported and, once tried, compiled)."""
    return _compiled.available()


def _compile() -> Any:
    built = _compiled.get()
    return built[0] if built is not None else None


def why_not() -> str:
    """Why the compiled path is not available ("" when it is)."""
    return _compiled.why_not()


def warm() -> bool:
    """Compile (or load from the cache) now rather than on a round's first level tests; False
    when the compiled path is not available."""
    return _compiled.get() is not None


def _levels_py(src, src_rows, slots, lengths, rate, codes, clipped, steps,  # noqa: C901, PLR0912, PLR0913, PLR0915
               cn, cmean, cm2, chead, ccount, chunk_n,
               blk_n, blk_seen, blk_max, blk_min, blk_at_max, blk_at_min, blk_full,
               has_base, base_mean, base_logsd, learned, step_n, rest_logsd,
               flat_std, flat_span_s, clip_fraction, clip_min_samples, clip_span_s,
               has_full, full_scale, do_step, learn_s, baseline_s, dc_sigma, log_ratio, step_hold_s):
    """Row ``j``: the first ``lengths[j]`` samples of ``src[src_rows[j]]`` (the bank's ``pend``
    rows, or a block of frames not gathered there), at ``rate[j]`` Hz, of the stream whose state
    is in bank row ``slots[j]``.
    ``codes[j]`` = flat | clipping << 1 | step code << 2 (``CODE_NON_FINITE``: not judged);
    ``clipped[j]``, ``steps[j]``: what the stream's counters grow by. Returns 0; with nothing
    changed, ``NEEDS_WIDER`` when a row's chunk ring has no room for one more chunk
    (``LevelBank._widen`` first), -1 when a row, a slot or a length lies past its array (memory
    safety: nothing is bounds-checked after). (Compiled by numba; as plain Python it runs too,
    slowly: the tests compare it with ``levels_many`` that way.)"""
    k = cn.shape[1]
    m = slots.shape[0]
    if not (src_rows.shape[0] == m and lengths.shape[0] == m and rate.shape[0] == m and codes.shape[0] == m
            and clipped.shape[0] == m and steps.shape[0] == m):
        return -1
    wider = False
    for j in range(m):
        s = slots[j]
        if not (0 <= s < cn.shape[0] and 0 <= src_rows[j] < src.shape[0] and 0 <= lengths[j] <= src.shape[1]):
            return -1
        wider |= ccount[s] + 1 > k
    if wider:
        return NEEDS_WIDER
    floor2 = flat_std * flat_std
    floor = max(flat_std, 1e-12) * 10.0
    bits = src.view(np.int32)
    ext = np.empty(2, dtype=np.int32)  # a row's extremes as bits, read back as float32 (ext_f)
    ext_f = ext.view(np.float32)
    for j in range(slots.shape[0]):
        s = slots[j]
        q = src_rows[j]
        n = lengths[j]
        r = rate[j]
        codes[j] = 0
        clipped[j] = 0
        steps[j] = 0
        # pass 1: sum and extremes in one read (the extremes meaningless with NaN/Inf: s1 says so).
        # The extremes as integers: a float's bits with all but the sign flipped where it is
        # negative order as the float does (-0.0 just below 0.0, which compare equal), and an
        # integer max the compiler vectorizes (a float one, with NaN rules to keep, it does not)
        s1 = 0.0
        hi_k = np.int32(-2147483648)
        lo_k = np.int32(2147483647)
        for i in range(n):
            s1 += np.float64(src[q, i])
            b = bits[q, i]
            key = b ^ ((b >> 31) & 0x7FFFFFFF)
            hi_k = max(hi_k, key)
            lo_k = min(lo_k, key)
        if not math.isfinite(s1):
            codes[j] = CODE_NON_FINITE
            continue
        ext[0] = hi_k ^ ((hi_k >> 31) & 0x7FFFFFFF)
        ext[1] = lo_k ^ ((lo_k >> 31) & 0x7FFFFFFF)
        hi = ext_f[0]
        lo = ext_f[1]
        mean = s1 / n
        mean32 = np.float32(mean)
        # pass 2: centred sum of squares, samples at the extremes, at full scale
        m2 = 0.0
        at_hi = 0
        at_lo = 0
        full = 0
        for i in range(n):
            v = src[q, i]
            d = np.float64(v - mean32)
            m2 += d * d
            at_hi += v == hi
            at_lo += v == lo
            if has_full:
                full += abs(v) >= full_scale
        code = 0
        # flat line: a ring of (n, mean, M2) chunks over the span
        span = max(2, np.int64(np.rint(flat_span_s * r)))
        count = ccount[s]
        head = chead[s]
        cnt_n = chunk_n[s]
        last = (head + count - 1 + k) % k
        if count > 0 and cn[s, last] < span // 8:  # merged into the newest chunk (Chan et al.)
            a0 = cn[s, last]
            tot = a0 + n
            delta = mean - cmean[s, last]
            cmean[s, last] = cmean[s, last] + delta * (n / tot)
            cm2[s, last] = cm2[s, last] + m2 + delta**2 * (a0 * n / tot)
            cn[s, last] = tot
        else:
            col = (head + count) % k
            cn[s, col] = n
            cmean[s, col] = mean
            cm2[s, col] = m2
            count += 1
        cnt_n += n
        while count > 1 and cnt_n - cn[s, head] >= span:
            cnt_n -= cn[s, head]
            head = (head + 1) % k
            count -= 1
        ccount[s] = count
        chead[s] = head
        chunk_n[s] = cnt_n
        last = (head + count - 1 + k) % k
        if cnt_n >= span and cm2[s, last] < floor2 * cn[s, last]:  # rare: pooled over the span
            total = 0.0
            weighted = 0.0
            for i in range(head, head + count):
                total += cn[s, i % k]
                weighted += cn[s, i % k] * cmean[s, i % k]
            grand = weighted / total
            pooled = 0.0
            spread = 0.0
            for i in range(head, head + count):
                pooled += cm2[s, i % k]
                spread += cn[s, i % k] * (cmean[s, i % k] - grand) ** 2
            if pooled + spread < floor2 * np.int64(total):
                code |= 1
        # clipping: the block's running extremes and the samples at them
        old = blk_n[s] > 0
        fmax = np.float64(hi)
        fmin = np.float64(lo)
        bmax = blk_max[s] if old else fmax
        bmin = blk_min[s] if old else fmin
        new_max = not old or fmax > bmax
        new_min = not old or fmin < bmin
        add_max = at_hi if (new_max or fmax == bmax) else 0
        add_min = at_lo if (new_min or fmin == bmin) else 0
        bat_max = add_max if new_max else blk_at_max[s] + add_max
        bat_min = add_min if new_min else blk_at_min[s] + add_min
        bmax = max(bmax, fmax)
        bmin = min(bmin, fmin)
        bfull = 0
        if has_full:
            bfull = (blk_full[s] if old else 0) + full
        bn = blk_n[s] + n
        block = max(1, np.int64(np.rint(clip_span_s * r)))
        need = max(np.float64(clip_min_samples), clip_fraction * bn)
        whole = bn >= block
        at_rail = whole and bmax > bmin and (bat_max >= need or bat_min >= need)
        if at_rail:  # rare: a few distinct values are dithered silence, not a rail
            at_rail = np.unique(src[q, :n]).size >= MIN_LEVELS_FOR_CLIPPING
        if at_rail or (has_full and bfull >= need):
            code |= 2
        blk_max[s] = bmax
        blk_min[s] = bmin
        blk_at_max[s] = bat_max
        blk_at_min[s] = bat_min
        if has_full:
            blk_full[s] = bfull
            clipped[j] = full
        blk_seen[s] = True
        blk_n[s] = 0 if whole else bn
        # level steps against the learned level
        if do_step:
            sd = math.sqrt(max(m2 / n, 0.0))
            live = sd > floor
            logsd = math.log(max(sd, floor))
            if not has_base[s]:
                bm, bl, lrn = mean, logsd, 0
                has_base[s] = True
            else:
                bm, bl, lrn = base_mean[s], base_logsd[s], learned[s]
            sn = step_n[s]
            learning = lrn < learn_s * r
            base_sd = math.exp(bl)
            known = base_sd > floor
            dc = known and abs(mean - bm) > dc_sigma * max(base_sd, sd)
            amp = known and live and abs(logsd - bl) > log_ratio
            # from or to the level of the machine at rest: it stopped or started (levels_many's)
            stop = amp and not dc and not learning and min(logsd, bl) < rest_logsd[s]
            if stop:
                amp = False
            moved = not learning and (dc or amp)
            if learning:
                w = n / (lrn + n)
                base_mean[s] = bm + w * (mean - bm)
                base_logsd[s] = bl + w * (logsd - bl)
                learned[s] = lrn + n
                step_n[s] = sn
            elif stop:  # the new level at once, not reported
                base_mean[s] = mean
                base_logsd[s] = logsd
                learned[s] = lrn
                step_n[s] = 0
            elif not moved:  # calm: the learned level follows slowly
                a = min(1.0, n / (baseline_s * r))
                base_mean[s] = bm + a * (mean - bm)
                base_logsd[s] = bl + a * (logsd - bl)
                learned[s] = lrn
                step_n[s] = 0
            elif sn + n >= step_hold_s * r:  # seen long enough: reported once, then the new level
                base_mean[s] = mean
                base_logsd[s] = logsd
                learned[s] = lrn
                step_n[s] = 0
                steps[j] = 1
                code |= (1 if dc else 2) << 2
            else:
                base_mean[s] = bm
                base_logsd[s] = bl
                learned[s] = lrn
                step_n[s] = sn + n
        codes[j] = code
    return 0


def _args(cfg: Any, bank: Any, src: np.ndarray, src_rows: np.ndarray, slots: np.ndarray, lengths: np.ndarray,
          rate: np.ndarray, codes: np.ndarray, clipped: np.ndarray, steps: np.ndarray) -> tuple:
    fs = cfg.full_scale
    return (src, src_rows, slots, lengths, rate, codes, clipped, steps,
            bank.cn, bank.cmean, bank.cm2, bank.chead, bank.ccount, bank.chunk_n,
            bank.blk_n, bank.blk_seen, bank.blk_max, bank.blk_min, bank.blk_at_max, bank.blk_at_min, bank.blk_full,
            bank.has_base, bank.base_mean, bank.base_logsd, bank.learned, bank.step_n, bank.rest_logsd,
            float(cfg.flat_std), float(cfg.flat_span_s), float(cfg.clip_fraction), int(cfg.clip_min_samples),
            float(cfg.clip_span_s), fs is not None, np.float32(fs if fs is not None else 0.0),
            cfg.step_ratio != 0, float(cfg.learn_s), float(cfg.baseline_s), float(cfg.dc_sigma),
            math.log(cfg.step_ratio) if cfg.step_ratio != 0 else 0.0, float(cfg.step_hold_s))


def levels_rows(cfg: Any, bank: Any, slots: np.ndarray, lengths: np.ndarray, rate: np.ndarray, *,
                src: np.ndarray | None = None, src_rows: np.ndarray | None = None,
                kernel: Any = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The level tests of streams ``slots`` on the first ``lengths`` samples gathered in their
    ``bank.pend`` rows, at ``rate`` Hz, their state in ``bank`` updated in place. ``src``,
    ``src_rows``: the samples are in rows ``src_rows`` of ``src`` (float32, C-ordered) instead,
    e.g. a block of frames judged as they came, never gathered.

    Returns ``(codes, clipped, steps)`` per row: ``codes`` flat | clipping << 1 | step code << 2
    as ``levels_many`` gives them, or ``CODE_NON_FINITE`` for a row with NaN/Inf samples (nothing
    of its state touched: ``HealthMonitor._check_levels`` counts them and restarts its tests);
    what each stream's ``clipped`` and ``steps`` counters grow by. ``kernel``: another
    implementation of ``_levels_py`` (the tests pass the plain Python one); default the compiled.
    """
    if kernel is None:
        kernel = _compile()
        if kernel is None:
            raise RuntimeError(f"the compiled level tests are not available: {why_not()}")
    m = len(slots)
    slots = np.ascontiguousarray(slots, dtype=np.int64)
    lengths = np.ascontiguousarray(lengths, dtype=np.int64)
    if src is None:
        src, src_rows = bank.pend, slots
    else:
        src_rows = np.ascontiguousarray(src_rows, dtype=np.int64)
        if src.dtype != np.float32 or not src.flags.c_contiguous or src.ndim != 2:
            raise ValueError("the samples to judge must be a C-ordered float32 (rows, samples) array")
    rate = np.ascontiguousarray(rate, dtype=np.float64)
    codes = np.empty(m, dtype=np.int8)
    clipped = np.empty(m, dtype=np.int64)
    steps = np.empty(m, dtype=np.int64)
    for _ in range(2):
        status = kernel(*_args(cfg, bank, src, src_rows, slots, lengths, rate, codes, clipped, steps))
        if status != NEEDS_WIDER:
            break
        bank._widen()  # room in the chunk rings for one more (checked by the kernel, nothing changed)
    if status != 0:
        raise ValueError(f"rows, slots or lengths past the samples or the bank to judge them in ({status})")
    return codes, clipped, steps


def _frame_at(address, n, channels):
    """The float32 ``(n, channels)`` C-ordered array at ``address`` (a frame's samples where they
    lie, the caller keeping the frame alive). In compiled code, ``_frame_at_compiled``'s."""
    n, channels = int(n), int(channels)
    return np.ctypeslib.as_array((ctypes.c_float * (n * channels)).from_address(int(address))).reshape(n, channels)


@functools.cache  # registered with numba once per process, however often the kernels are built
def _frame_at_compiled() -> None:
    """``_frame_at`` for numba: the address as a pointer, an array over it (numba takes no list of
    arrays without a conversion that costs more than the copy it would save)."""
    from numba import carray, types
    from numba.extending import intrinsic, overload

    @intrinsic
    def f32_at(typingctx, address):  # noqa: ANN001, ANN202, ARG001 - numba's signature
        def codegen(context, builder, signature, args):  # noqa: ANN001, ANN202, ARG001
            return builder.inttoptr(args[0], context.get_value_type(types.CPointer(types.float32)))
        return types.CPointer(types.float32)(types.int64), codegen

    @overload(_frame_at)
    def frame_at(address, n, channels):  # noqa: ANN001, ANN202, ARG001
        return lambda address, n, channels: carray(f32_at(address), (n, channels))


def _gather_py(pend, slots, pn, addresses, ns, channels, finite):
    """Channel ``c`` of frame ``f`` (float32, ``(ns[f], channels[f])``, C-ordered, at
    ``addresses[f]``) into ``pend`` row ``slots[r]`` from column ``pn[r]`` on, the frames'
    channels numbered on from frame to frame (``r``): read where they lie, in one pass, written to
    their rows wherever those are; ``finite[f]``: 1 where every sample of frame ``f`` is finite,
    else 0. Returns 0, or -1 with nothing written when a frame's channels would not fit their rows
    or a row is not in ``pend`` (no bounds are checked while copying)."""
    rows = 0
    for f in range(addresses.shape[0]):
        rows += channels[f]
    if rows != slots.shape[0] or rows != pn.shape[0]:  # first: the checks below index both
        return -1
    r = 0
    for f in range(addresses.shape[0]):
        for k in range(channels[f]):
            if not (0 <= slots[r + k] < pend.shape[0] and 0 <= pn[r + k] and pn[r + k] + ns[f] <= pend.shape[1]):
                return -1
        r += channels[f]
    r = 0
    for f in range(addresses.shape[0]):
        n, c = ns[f], channels[f]
        x = _frame_at(addresses[f], n, c)
        # first, in the order the samples lie (the frame's first read, which the copy then
        # finds in the cache): NaN and Inf are the floats whose exponent bits are all set
        bits = x.reshape(n * c).view(np.int32)
        top = 0
        for i in range(n * c):
            top = max(top, bits[i] & 0x7F800000)
        finite[f] = top < 0x7F800000
        for k in range(c):
            # the row's columns as a view indexed from 0: no wrap-around per sample
            dst = pend[slots[r + k], pn[r + k] : pn[r + k] + n]
            for i in range(n):
                dst[i] = x[i, k]
        r += c
    return 0


def gather_frames(pend: np.ndarray, slots: np.ndarray, pn: np.ndarray, xs: list[np.ndarray], *,
                  kernel: Any = None) -> np.ndarray:
    """Frames ``xs`` (float32 like ``pend``, ``(n, channels)`` each) into ``pend`` as ``_gather_py``
    says, compiled (``warm()`` first) unless ``kernel`` is given (the tests pass the plain Python
    one). Where the frames lie: no stacked copy of them first. Returns, per frame, whether all
    of its samples are finite (bool)."""
    f32 = np.dtype(np.float32)
    # C-ordered float32 (n, channels) each, as the kernel reads them; kept alive through the call
    xs = [x if x.dtype == f32 and x.flags.c_contiguous else np.ascontiguousarray(x, dtype=f32) for x in xs]
    m = len(xs)
    addresses = np.fromiter((x.ctypes.data for x in xs), dtype=np.int64, count=m)
    ns = np.fromiter((x.shape[0] for x in xs), dtype=np.int64, count=m)
    channels = np.fromiter((x.shape[1] for x in xs), dtype=np.int64, count=m)
    finite = np.empty(m, dtype=np.uint8)
    if (kernel or _compiled.get()[1])(pend, slots, pn, addresses, ns, channels, finite) != 0:
        raise ValueError("frames do not fit the rows they are gathered into (pend_room first)")
    return finite.view(np.bool_)


# ``push_rows``' flags per row
TESTED = 1  # its gathered samples are due (check_every_s of them): judged with the push
FLUSHED = 2  # not due, but its stream hands windows on: judged with the flush after the push
NEEDS_PYTHON = 4  # a gap, or its stream is busy (a reason active, a state to settle)
FROM_BLOCK = 8  # judged now on its frame alone (nothing gathered before): its samples are the block's row


def _push_rows_py(pend, pend_n, last_seen, frames, samples, last_seq, has_seq, busy,
                  slots, x, seqs, seq_max, now, every, judged, gap, flags, order, tslot, tlen):
    """The array path's bookkeeping of a block of plain frames (``HealthMonitor.push_block``), one
    row per frame: frame ``j`` (``x[j]``, float32, sequence number ``seqs[j]``) of the stream in
    bank row ``slots[j]``, arrived at ``now``. Its stream's counters move on; ``gap[j]``: the
    sequence numbers it skipped; its samples are gathered after the stream's pending ones. When
    ``every`` samples are in, they are due (flag ``TESTED``); else, where ``judged[j]`` (its
    stream hands windows on), whatever is gathered is (flag ``FLUSHED``); either way the gathering
    starts over. A row judged on its frame alone is not gathered at all (flag ``FROM_BLOCK``: its
    samples are ``x[j]``). ``NEEDS_PYTHON``: a gap or a busy stream. The rows to test are listed
    in ``order`` with their slots (``tslot``) and sample counts (``tlen``): those ``FROM_BLOCK``
    from the front, the others from the back.

    Returns ``(status, rows from the block, rows from pend, rows needing Python)``: status 0;
    with nothing changed, -1 when a row's samples would not fit ``pend`` (``pend_room`` first),
    -2 when the arrays do not match (memory safety, not a case), -3 when a sequence number is not
    within ``seq_max`` of 0 (the bank's int64 counters could not hold it and the next). Rows must
    be distinct streams: a slot that repeats is -4, the bank left part-way (never written past)."""
    m = x.shape[0]
    n = x.shape[1]
    if not (slots.shape[0] == m and seqs.shape[0] == m and judged.shape[0] == m and gap.shape[0] == m
            and flags.shape[0] == m and order.shape[0] == m and tslot.shape[0] == m and tlen.shape[0] == m):
        return -2, 0, 0, 0
    for j in range(m):
        s = slots[j]
        if not 0 <= s < pend.shape[0]:
            return -2, 0, 0, 0
        if not -seq_max < seqs[j] < seq_max:
            return -3, 0, 0, 0
    for j in range(m):
        if pend_n[slots[j]] + n > pend.shape[1]:
            return -1, 0, 0, 0
    front = 0
    back = m
    python = 0
    for j in range(m):
        s = slots[j]
        last_seen[s] = now
        frames[s] += 1
        samples[s] += n
        q = seqs[j]
        g = q - last_seq[s] - 1 if has_seq[s] and q > last_seq[s] + 1 else 0
        gap[j] = g
        last_seq[s] = q
        has_seq[s] = True
        p0 = pend_n[s]
        p = p0 + n
        f = NEEDS_PYTHON if g > 0 or busy[s] else 0
        if n > 0 and p >= every:
            f |= TESTED
        elif judged[j] and p > 0:
            f |= FLUSHED
        if f & (TESTED | FLUSHED) and p0 == 0:
            f |= FROM_BLOCK  # judged on x[j] itself: no copy gathered
        else:
            if p > pend.shape[1]:  # only where a slot repeats (the first loop checked each once)
                return -4, 0, 0, 0
            dst = pend[s, p0 : p0 + n]  # a view indexed from 0: no wrap-around per sample
            src = x[j]
            for i in range(n):
                dst[i] = src[i]
        if f & (TESTED | FLUSHED):
            if f & FROM_BLOCK:
                k = front
                front += 1
            else:
                back -= 1
                k = back
            order[k] = j
            tslot[k] = s
            tlen[k] = p
            pend_n[s] = 0
        else:
            pend_n[s] = p
        flags[j] = f
        python += (f & NEEDS_PYTHON) != 0
    return 0, front, m - back, python


def push_rows(bank: Any, slots: np.ndarray, x: np.ndarray, seqs: np.ndarray, seq_max: int, now: float, every: int,
              judged: np.ndarray, *, kernel: Any = None) -> tuple[Any, ...] | None:
    """``_push_rows_py`` on ``bank`` (a ``LevelBank``), compiled unless ``kernel`` is given (the
    tests pass the plain Python one); ``pend`` made wide enough first. Returns ``(gap, flags,
    order, tslot, tlen, rows from the block, rows from pend, rows needing Python)``, or None, with
    nothing done, where a sequence number is not within ``seq_max`` of 0."""
    kernel = kernel or _compiled.get()[2]
    m = x.shape[0]
    gap = np.empty(m, dtype=np.int64)
    flags = np.empty(m, dtype=np.uint8)
    order, tslot, tlen = np.empty(m, dtype=np.int64), np.empty(m, dtype=np.int64), np.empty(m, dtype=np.int64)
    x = np.ascontiguousarray(x, dtype=np.float32)
    for _ in range(2):
        status, front, back, python = kernel(bank.pend, bank.pend_n, bank.last_seen, bank.frames, bank.samples,
                                             bank.last_seq, bank.has_seq, bank.busy, slots, x, seqs, int(seq_max),
                                             float(now), int(every), judged, gap, flags, order, tslot, tlen)
        if status != -1:
            break
        bank.pend_room(int(bank.pend_n[slots].max()) + x.shape[1])
    if status == -3:
        return None
    if status != 0:
        raise ValueError(f"a block's rows do not match its frames ({status})")
    return gap, flags, order, tslot, tlen, front, back, python


def _run_tiny(kernel: Any, gather: Any, push: Any = None) -> None:
    """One call on a throwaway bank: compiles (or loads) the types every real call uses (the
    config's values are arguments, not types: one compiled version serves every config)."""
    bank = LevelBank(rows=2)
    bank.pend_room(8)
    slot = bank.take()
    cfg = SimpleNamespace(flat_std=1e-6, flat_span_s=0.1, clip_fraction=0.01, clip_min_samples=8,
                          clip_span_s=0.25, full_scale=None, learn_s=3.0, baseline_s=30.0, dc_sigma=4.0,
                          step_ratio=30.0, step_hold_s=1.0)
    levels_rows(cfg, bank, np.array([slot]), np.array([8]), np.array([12000.0]), kernel=kernel)
    gather_frames(bank.pend, np.array([slot]), np.array([0]), [np.zeros((8, 1), dtype=np.float32)], kernel=gather)
    if push is not None:
        push_rows(bank, np.array([slot]), np.zeros((1, 8), dtype=np.float32), np.zeros(1, dtype=np.int64), 1 << 62,
                  0.0, 8, np.zeros(1, dtype=np.uint8), kernel=push)
