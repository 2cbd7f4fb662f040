"""Sensor health's level tests (flat line, clipping, level steps) for many streams at once.

``HealthMonitor`` judges one block of samples per stream at a time. A live monitor gets the
blocks of hundreds of single-channel streams in one poll of its socket; alone, each block costs a
few dozen numpy calls on one-element arrays (~40 us of Python per frame). Here the blocks of
one poll are stacked into one ``(samples, streams)`` array and every test runs once over all of
them, on state kept in arrays (``LevelBank``, one row per single-channel stream) and read and
written with one fancy index per array (sums of a block may round differently in the last bit
than a block alone, so a value exactly at a threshold could be judged differently; nothing else
differs). A stream alone goes through the same code with one row.

Multi-channel streams keep their state in ``health._Stream``'s own fields (this module does not
import ``health``, which imports it).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

MIN_LEVELS_FOR_CLIPPING = 16  # distinct sample values a frame needs before its extremes can be rails
STEP_NONE, STEP_DC, STEP_AMP = 0, 1, 2


def merge(a: tuple[Any, np.ndarray, np.ndarray], b: tuple[Any, np.ndarray, np.ndarray]) -> tuple[Any, np.ndarray, np.ndarray]:
    """Combine (n, mean, M2) of two sample sets (Chan et al.), per channel (or per stream, with
    arrays of n)."""
    n = a[0] + b[0]
    delta = b[1] - a[1]
    mean = a[1] + delta * (b[0] / n)
    return n, mean, a[2] + b[2] + delta**2 * (a[0] * b[0] / n)


def pool(chunks: Any) -> tuple[int, np.ndarray, np.ndarray]:
    """Combine many (n, mean, M2) at once: (total n, grand mean (ch,), M2 (ch,))."""
    chunks = list(chunks)
    ns = np.array([c[0] for c in chunks], dtype=np.float64)[:, None]
    means = np.stack([c[1] for c in chunks])
    m2s = np.stack([c[2] for c in chunks])
    total = float(ns.sum())
    grand = (ns * means).sum(axis=0) / total
    return int(total), grand, m2s.sum(axis=0) + (ns * (means - grand) ** 2).sum(axis=0)


def any_set(a: np.ndarray) -> bool:
    """``a.any()`` of a 1-D array, in a tenth of its time on small arrays (no ufunc reduction)."""
    return np.count_nonzero(a) > 0


def all_set(a: np.ndarray) -> bool:
    """``a.all()`` of a 1-D array, as ``any_set``."""
    return np.count_nonzero(a) == a.size


def distinct_levels(x: np.ndarray) -> np.ndarray:
    """Distinct values per channel of ``x`` (n, channels)."""
    return np.array([np.unique(x[:, c]).size for c in range(x.shape[1])])


def sums(x: np.ndarray, axis: int) -> np.ndarray:
    """``x.sum(axis, dtype=float64)``, the level tests' NaN/Inf test and mean in one pass, without
    numpy's warning where a block holds both +Inf and -Inf (inf - inf is NaN: found non-finite,
    counted, nothing to print on the monitor's terminal)."""
    with np.errstate(invalid="ignore", over="ignore"):
        return x.sum(axis=axis, dtype=np.float64)


class LevelBank:
    """The level tests' state of single-channel streams, one row (slot) per stream, in arrays.

    A stream's state lives here rather than in its ``health._Stream`` (which keeps only its
    ``slot``), so that the tests of a poll's streams read and write their state with one fancy
    index per array instead of a few dozen numpy calls on one-element arrays per stream.
    ``export``/``load`` turn a row into ``_Stream``'s own fields and back (checkpoints, tests).

    The per-frame bookkeeping of ``HealthMonitor``'s array path lives here too (``last_seq``,
    ``last_seen``, ``frames``, ``samples``, whether the stream needs Python at all (``busy``),
    and the samples gathered for the level tests: ``pend_n`` of them at the start of row ``pend``).
    """

    def __init__(self, rows: int = 64, chunks: int = 16) -> None:
        self._rows, self._k = 0, chunks
        self._free: list[int] = []
        self._scratch = [np.empty(0, np.uint8), np.empty(0, np.uint8)]
        self._alloc(rows)

    def _alloc(self, rows: int) -> None:
        old, k = self._rows, self._k
        grow = {
            # flat line: a ring of (n, mean, M2) chunks, first at chead, ccount of them, chunk_n samples
            "cn": ((rows, k), np.int64), "cmean": ((rows, k), np.float64), "cm2": ((rows, k), np.float64),
            "chead": ((rows,), np.int64), "ccount": ((rows,), np.int64), "chunk_n": ((rows,), np.int64),
            # clipping block
            "blk_n": ((rows,), np.int64), "blk_seen": ((rows,), bool), "blk_max": ((rows,), np.float64),
            "blk_min": ((rows,), np.float64), "blk_at_max": ((rows,), np.int64), "blk_at_min": ((rows,), np.int64),
            "blk_full": ((rows,), np.int64),
            # level steps
            "has_base": ((rows,), bool), "base_mean": ((rows,), np.float64), "base_logsd": ((rows,), np.float64),
            "learned": ((rows,), np.int64), "step_n": ((rows,), np.int64),
            # the log level under which the stream's machine is at rest (-inf: not known)
            "rest_logsd": ((rows,), np.float64),
            # per-frame bookkeeping (last_seen NaN: never seen)
            "last_seq": ((rows,), np.int64), "has_seq": ((rows,), bool), "last_seen": ((rows,), np.float64),
            "frames": ((rows,), np.int64), "samples": ((rows,), np.int64), "busy": ((rows,), bool),
            "pend_n": ((rows,), np.int64), "rate": ((rows,), np.float64),
        }
        for name, (shape, dtype) in grow.items():
            a = np.zeros(shape, dtype=dtype)
            if old:
                a[:old] = getattr(self, name)
            setattr(self, name, a)
        pend = np.zeros((rows, self.pend.shape[1] if old else 0), dtype=np.float32)
        if old:
            pend[:old] = self.pend
        self.pend = pend
        self._free += range(rows - 1, old - 1, -1)
        self._rows = rows

    def pend_room(self, samples: int) -> None:
        """Room for ``samples`` gathered samples in every row of ``pend``."""
        cap = self.pend.shape[1]
        if samples > cap:
            pend = np.zeros((self._rows, max(samples, 2 * cap)), dtype=np.float32)
            pend[:, :cap] = self.pend
            self.pend = pend

    def scratch(self, shape: tuple[int, int], dtype: Any, which: int) -> np.ndarray:
        """Buffer ``which`` (0 or 1) as an array of ``shape``, uninitialized, reused from call to call."""
        size = shape[0] * shape[1] * np.dtype(dtype).itemsize
        buf = self._scratch[which]
        if buf.size < size:
            buf = self._scratch[which] = np.empty(max(size, 2 * buf.size), dtype=np.uint8)
        return buf[:size].view(dtype).reshape(shape)

    def take(self) -> int:
        """A fresh row."""
        if not self._free:
            self._alloc(2 * self._rows)
        slot = self._free.pop()
        self.reset_tests(slot)
        self.reset_level(slot)
        self.rest_logsd[slot] = -math.inf
        return slot

    def release(self, slot: int) -> None:
        self._free.append(slot)

    def reset_tests(self, slot: int | np.ndarray) -> None:
        """Flat-line span and clipping block start again (a rate change, NaN/Inf samples)."""
        self.ccount[slot] = self.chunk_n[slot] = self.chead[slot] = self.blk_n[slot] = 0

    def reset_level(self, slot: int) -> None:
        """Nothing learned about the stream's level (a new channel layout)."""
        self.has_base[slot] = self.blk_seen[slot] = False
        self.learned[slot] = self.step_n[slot] = 0

    def export(self, slot: int, st: Any) -> None:
        """Write row ``slot`` into ``st``'s own fields (``health._Stream``, one channel)."""
        k = self._k
        st.chunks = deque((int(self.cn[slot, i % k]), self.cmean[slot, i % k : i % k + 1].copy(),
                           self.cm2[slot, i % k : i % k + 1].copy())
                          for i in range(self.chead[slot], self.chead[slot] + self.ccount[slot]))
        st.chunk_n, st.blk_n = int(self.chunk_n[slot]), int(self.blk_n[slot])
        blk = ("blk_max", "blk_min", "blk_at_max", "blk_at_min", "blk_full")
        for name in blk:
            setattr(st, name, getattr(self, name)[slot : slot + 1].copy() if self.blk_seen[slot] else None)
        for name in ("base_mean", "base_logsd"):
            setattr(st, name, getattr(self, name)[slot : slot + 1].copy() if self.has_base[slot] else None)
        st.learned, st.step_n = int(self.learned[slot]), int(self.step_n[slot])
        st.rest_logsd = float(self.rest_logsd[slot])

    def load(self, slot: int, st: Any) -> None:
        """Row ``slot`` from ``st``'s own fields (``export``'s inverse); the fields are cleared."""
        chunks = list(st.chunks)
        while len(chunks) > self._k:
            self._widen()
        self.reset_tests(slot)
        for i, (n, mean, m2) in enumerate(chunks):
            self.cn[slot, i], self.cmean[slot, i], self.cm2[slot, i] = n, mean[0], m2[0]
        self.ccount[slot], self.chunk_n[slot], self.blk_n[slot] = len(chunks), st.chunk_n, st.blk_n
        self.blk_seen[slot] = st.blk_max is not None
        if st.blk_max is not None:
            for name in ("blk_max", "blk_min", "blk_at_max", "blk_at_min", "blk_full"):
                getattr(self, name)[slot] = getattr(st, name)[0]
        self.has_base[slot] = st.base_mean is not None and st.base_logsd is not None
        if self.has_base[slot]:
            self.base_mean[slot], self.base_logsd[slot] = st.base_mean[0], st.base_logsd[0]
        self.learned[slot], self.step_n[slot] = st.learned, st.step_n
        self.rest_logsd[slot] = float(st.rest_logsd)
        st.chunks, st.blk_max, st.blk_min, st.blk_at_max, st.blk_at_min, st.blk_full = deque(), None, None, None, None, None
        st.base_mean = st.base_logsd = None

    def _widen(self) -> None:
        """Twice the chunks per ring, each ring's chunks from column 0 on."""
        k = self._k
        order = (self.chead[:, None] + np.arange(k)[None, :]) % k
        for name in ("cn", "cmean", "cm2"):
            a = np.take_along_axis(getattr(self, name), order, axis=1)
            setattr(self, name, np.concatenate([a, np.zeros_like(a)], axis=1))
        self.chead[:] = 0
        self._k = 2 * k


def levels_many(cfg: Any, bank: LevelBank, sts: Sequence[Any], x: np.ndarray, s1: np.ndarray,
                slots: np.ndarray | None = None, rate: np.ndarray | float | None = None,
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The level tests of one finite block per stream, as ``HealthMonitor._check_levels`` runs them.

    Args:
        cfg: the ``HealthConfig``.
        bank: the streams' level state, updated in place (their ``steps`` and ``clipped`` too).
        sts: the streams' states (``health._Stream``, one channel each, ``slot`` in ``bank``).
        x: ``(streams, n)``, row ``j`` the block of ``sts[j]``, every sample finite. Every result
            of a row depends on that row alone (row sums), so a stream judged alone or among
            others is judged the same, bit for bit.
        s1: ``x.sum(axis=1, dtype=float64)``.
        slots / rate: the streams' slots and sample rates (or one rate for all: the thresholds
            in samples are then reckoned once), when the caller has them; ``sts`` is then only
            indexed where a stream's ``steps`` or ``clipped`` count grows.

    Returns:
        (flat, clipping, step): ``(streams,)`` bools, bools and ``STEP_*`` codes.
    """
    n = x.shape[1]
    if slots is None:
        slots = np.fromiter([st.slot for st in sts], dtype=np.int64, count=len(sts))
    if rate is None:
        rate = np.fromiter([st.sample_rate for st in sts], dtype=np.float64, count=len(sts))
    mean = s1 / n
    # centred in the samples' own precision, summed in float64 (as dsp.normalize does); into a
    # buffer kept for the purpose: a fresh one is page faults, which cost more than the sums
    d = np.subtract(x, mean.astype(x.dtype)[:, None], out=bank.scratch(x.shape, x.dtype, 1))
    m2 = np.einsum("ij,ij->i", d, d, dtype=np.float64)
    flat = _flat(cfg, bank, slots, n, rate, mean, m2)
    clipping = _clipping(cfg, bank, sts, slots, x, rate)
    step = _step(cfg, bank, sts, slots, n, rate, mean, m2) if cfg.step_ratio != 0 else np.zeros(len(slots), np.int8)
    return flat, clipping, step


def _flat(cfg: Any, bank: LevelBank, slots: np.ndarray, n: int, rate: Any, mean: np.ndarray,
          m2: np.ndarray) -> np.ndarray:
    """``HealthMonitor._flat`` over rings of chunks: merge or append, trim to the span, judge."""
    floor2 = cfg.flat_std**2
    span = np.maximum(2, np.round(cfg.flat_span_s * rate).astype(np.int64))
    count = bank.ccount[slots]
    if int(count.max(initial=0)) + 1 > bank._k:
        bank._widen()
    k = bank._k
    head, chunk_n = bank.chead[slots], bank.chunk_n[slots]
    last = (head + count - 1) % k
    # tiny frames are merged into buckets of ~1/8 span, so that the ring stays short
    merged = (count > 0) & (bank.cn[slots, last] < span // 8)
    if any_set(merged):
        s, col = slots[merged], last[merged]
        bank.cn[s, col], bank.cmean[s, col], bank.cm2[s, col] = merge(
            (bank.cn[s, col], bank.cmean[s, col], bank.cm2[s, col]), (n, mean[merged], m2[merged]))
    new = ~merged
    if all_set(new):  # frames of 1/8 span or more (the common case): no masks
        col = (head + count) % k
        bank.cn[slots, col], bank.cmean[slots, col], bank.cm2[slots, col] = n, mean, m2
        count = count + 1
    elif any_set(new):
        s, col = slots[new], (head[new] + count[new]) % k
        bank.cn[s, col], bank.cmean[s, col], bank.cm2[s, col] = n, mean[new], m2[new]
        count = count + new
    chunk_n = chunk_n + n
    while True:  # drop the oldest chunks the span no longer needs
        cn_head = bank.cn[slots, head]
        drop = (count > 1) & (chunk_n - cn_head >= span)
        if not any_set(drop):
            break
        chunk_n = np.where(drop, chunk_n - cn_head, chunk_n)
        head = np.where(drop, (head + 1) % k, head)
        count = count - drop
    bank.ccount[slots], bank.chead[slots], bank.chunk_n[slots] = count, head, chunk_n
    last = (head + count - 1) % k
    # a span can only be flat if its newest part is; most streams stop here
    maybe = (chunk_n >= span) & (bank.cm2[slots, last] < floor2 * bank.cn[slots, last])
    if not any_set(maybe):
        return maybe
    flat = np.zeros(len(slots), dtype=bool)
    for j in np.flatnonzero(maybe):  # rare: pooled over the span
        s = int(slots[j])
        ring = [(int(bank.cn[s, i % k]), bank.cmean[s, i % k : i % k + 1], bank.cm2[s, i % k : i % k + 1])
                for i in range(bank.chead[s], bank.chead[s] + bank.ccount[s])]
        total_n, _, pooled = pool(ring)
        flat[j] = bool((pooled < floor2 * total_n).any())
    return flat


def _clipping(cfg: Any, bank: LevelBank, sts: Sequence[Any], slots: np.ndarray, x: np.ndarray,
              rate: Any) -> np.ndarray:
    n = x.shape[1]
    fmax, fmin = x.max(axis=1), x.min(axis=1)
    blk_n = bank.blk_n[slots]
    old = blk_n > 0  # a running block; else this block starts one
    bmax, bmin = np.where(old, bank.blk_max[slots], fmax), np.where(old, bank.blk_min[slots], fmin)
    # a new extreme restarts its count, an equal one adds to it, a lesser one leaves it (and
    # its samples at the frame's extreme are not counted: _at gives 0)
    new_max, new_min = ~old | (fmax > bmax), ~old | (fmin < bmin)
    at_max = _at(bank, x, fmax, new_max | (fmax == bmax))
    at_min = _at(bank, x, fmin, new_min | (fmin == bmin))
    bat_max = np.where(new_max, at_max, bank.blk_at_max[slots] + at_max)
    bat_min = np.where(new_min, at_min, bank.blk_at_min[slots] + at_min)
    bmax, bmin = np.maximum(bmax, fmax), np.minimum(bmin, fmin)
    full = bfull = None  # without a full scale, blk_full stays 0
    if cfg.full_scale is not None:
        full = np.count_nonzero(np.abs(x) >= cfg.full_scale, axis=1)
        bfull = np.where(old, bank.blk_full[slots], 0) + full
    blk_n = blk_n + n
    block = np.maximum(1, np.round(cfg.clip_span_s * rate).astype(np.int64))
    need = np.maximum(cfg.clip_min_samples, cfg.clip_fraction * blk_n)
    whole = blk_n >= block
    at_rail = whole & (bmax > bmin) & ((bat_max >= need) | (bat_min >= need))
    for j in np.flatnonzero(at_rail):  # rare: few distinct values are dithered silence, not a rail
        at_rail[j] = np.unique(x[j]).size >= MIN_LEVELS_FOR_CLIPPING
    clipping = at_rail | (bfull >= need) if bfull is not None else at_rail
    bank.blk_max[slots], bank.blk_min[slots] = bmax, bmin
    bank.blk_at_max[slots], bank.blk_at_min[slots] = bat_max, bat_min
    if bfull is not None:
        bank.blk_full[slots] = bfull
    bank.blk_seen[slots] = True
    bank.blk_n[slots] = np.where(whole, 0, blk_n)
    if full is not None:
        for j in np.flatnonzero(full):
            sts[j].clipped += int(full[j])
    return clipping


def _at(bank: LevelBank, x: np.ndarray, extreme: np.ndarray, need: np.ndarray) -> np.ndarray:
    """Samples of each row of ``x`` equal to its ``extreme`` (the row's max or min), counted where
    ``need`` is set (a frame that does not reach its block's extreme adds nothing to the block's
    count), else 0."""
    rows = None if all_set(need) else np.flatnonzero(need)
    xs = x if rows is None else x[rows]
    if not len(xs):
        return np.zeros(len(x), dtype=np.int64)
    eq = np.equal(xs, (extreme if rows is None else extreme[rows])[:, None], out=bank.scratch(xs.shape, bool, 1))
    # every row holds its extreme at least once; as many in all as rows: once each (a noisy
    # signal's rule), and the total costs a fraction of a count per row
    counts = np.ones(len(xs), dtype=np.int64) if np.count_nonzero(eq) == len(xs) else np.count_nonzero(eq, axis=1)
    if rows is None:
        return counts
    at = np.zeros(len(x), dtype=np.int64)
    at[rows] = counts
    return at


def _step(cfg: Any, bank: LevelBank, sts: Sequence[Any], slots: np.ndarray, n: int, rate: Any,
          mean: np.ndarray, m2: np.ndarray) -> np.ndarray:
    floor = max(cfg.flat_std, 1e-12) * 10  # below this a level is a flat line, not a level
    sd = np.sqrt(np.maximum(m2 / n, 0.0))
    live = sd > floor
    logsd = np.log(np.maximum(sd, floor))
    fresh = ~bank.has_base[slots]
    base_mean, base_logsd, learned = bank.base_mean[slots], bank.base_logsd[slots], bank.learned[slots]
    if any_set(fresh):
        base_mean = np.where(fresh, mean, base_mean)
        base_logsd = np.where(fresh, logsd, base_logsd)
        learned = np.where(fresh, 0, learned)
        bank.has_base[slots] = True
    step_n = bank.step_n[slots]
    learning = learned < cfg.learn_s * rate
    # once every stream has learned its level (most polls), the learning branch is not computed
    any_learning = any_set(learning)
    base_sd = np.exp(base_logsd)
    known = base_sd > floor
    dc = known & (np.abs(mean - base_mean) > cfg.dc_sigma * np.maximum(base_sd, sd))
    amp = known & live & (np.abs(logsd - base_logsd) > math.log(cfg.step_ratio))
    # a step from or to the level of the machine at rest is the machine stopping or starting,
    # not the sensor: its new level taken at once, not reported
    stop = amp & ~dc & (np.minimum(logsd, base_logsd) < bank.rest_logsd[slots])
    if any_learning:
        stop &= ~learning
    any_stop = any_set(stop)
    if any_stop:
        amp = amp & ~stop
    moved = ~learning & (dc | amp) if any_learning else dc | amp
    any_moved = any_set(moved)
    # no step: the learned level follows slowly
    a = np.minimum(1.0, n / (cfg.baseline_s * rate))
    calm_mean = base_mean + a * (mean - base_mean)
    calm_logsd = base_logsd + a * (logsd - base_logsd)
    if not any_learning and not any_moved and not any_stop:  # every stream calm
        held = moved
        bank.base_mean[slots], bank.base_logsd[slots] = calm_mean, calm_logsd
        bank.step_n[slots] = 0
    else:
        calm = ~learning & ~moved & ~stop
        held = moved & (step_n + n >= cfg.step_hold_s * rate)  # seen long enough: reported once, then the new level
        new = held | stop
        # learning: a running average
        w = n / (learned + n)
        learn_mean = base_mean + w * (mean - base_mean)
        learn_logsd = base_logsd + w * (logsd - base_logsd)
        bank.base_mean[slots] = np.where(learning, learn_mean, np.where(calm, calm_mean, np.where(new, mean, base_mean)))
        bank.base_logsd[slots] = np.where(learning, learn_logsd,
                                          np.where(calm, calm_logsd, np.where(new, logsd, base_logsd)))
        bank.learned[slots] = np.where(learning, learned + n, learned)
        bank.step_n[slots] = np.where(calm | new, 0, np.where(moved, step_n + n, step_n))
    for j in np.flatnonzero(held):
        sts[j].steps += 1
    return np.where(held, np.where(dc, STEP_DC, STEP_AMP), STEP_NONE).astype(np.int8)


def check_levels_many(cfg: Any, bank: LevelBank, sts: Sequence[Any], blocks: Sequence[np.ndarray],
                      one: Callable[[Any, np.ndarray], set[str]], reasons: tuple[str, str, str, str],
                      ) -> list[set[str]]:
    """The level tests' reasons for each (stream, block): blocks that can go together (one float32
    channel, the same length, every sample finite) through ``levels_many``, the rest one by one
    through ``one(st, block)`` (``HealthMonitor._check_levels``).

    Args:
        reasons: the reason strings for (flat, clipping, DC jump, amplitude step).
    """
    found: list[set[str]] = [set() for _ in sts]
    groups: dict[int, list[int]] = {}
    for j, x in enumerate(blocks):
        if sts[j].slot >= 0 and x.ndim == 2 and x.shape[1] == 1 and x.dtype == np.float32 and x.shape[0] > 0:
            groups.setdefault(x.shape[0], []).append(j)
        else:
            found[j] = one(sts[j], x)
    for idx in groups.values():
        if len(idx) == 1:
            found[idx[0]] = one(sts[idx[0]], blocks[idx[0]])
            continue
        x = bank.scratch((len(idx), blocks[idx[0]].shape[0]), np.float32, 0)  # (streams, n) rows
        for k, j in enumerate(idx):
            x[k] = blocks[j][:, 0]
        s1 = sums(x, 1)
        finite = np.isfinite(s1)
        if not finite.all():  # NaN/Inf: counted and the tests restarted, one by one
            for k in np.flatnonzero(~finite):
                found[idx[k]] = one(sts[idx[k]], blocks[idx[k]])
            keep = np.flatnonzero(finite)
            idx = [idx[k] for k in keep]
            x, s1 = x[keep], s1[keep]
            if not idx:
                continue
        flat, clipping, step = levels_many(cfg, bank, [sts[j] for j in idx], x, s1)
        for k, j in enumerate(idx):
            found[j] = reasons_of(flat[k], clipping[k], step[k], reasons)
    return found


def reasons_of(flat: bool, clipping: bool, step: int, reasons: tuple[str, str, str, str]) -> set[str]:
    """One stream's results of ``levels_many`` as reasons (flat, clipping, DC jump, amplitude step)."""
    found = set()
    if flat:
        found.add(reasons[0])
    if clipping:
        found.add(reasons[1])
    if step:
        found.add(reasons[2] if step == STEP_DC else reasons[3])
    return found
