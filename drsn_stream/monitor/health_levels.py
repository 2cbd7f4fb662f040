"""Sensor health's level tests (flat line, clipping, level steps) for many streams at once.

``HealthMonitor`` judges one block of samples per stream at a time. A live monitor gets the
blocks of hundreds of single-channel streams in one poll of its socket; alone, each block costs a
few dozen numpy calls on one-element arrays (~40 us of Python per frame). Here the blocks of
one poll are stacked into one ``(samples, streams)`` array and every test runs once over all of
them, the per-stream state gathered into arrays and written back, with the per-stream code's
arithmetic element by element (sums of a block may round differently in the last bit, so a value
exactly at a threshold could be judged differently; nothing else differs).

The state is ``health._Stream``'s (read and written by attribute; this module does not import
``health``, which imports it).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

MIN_LEVELS_FOR_CLIPPING = 16  # distinct sample values a frame needs before its extremes can be rails
STEP_NONE, STEP_DC, STEP_AMP = 0, 1, 2


def merge(a: tuple[int, np.ndarray, np.ndarray], b: tuple[int, np.ndarray, np.ndarray]) -> tuple[int, np.ndarray, np.ndarray]:
    """Combine (n, mean, M2) of two sample sets (Chan et al.), per channel."""
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


def distinct_levels(x: np.ndarray) -> np.ndarray:
    """Distinct values per channel of ``x`` (n, channels)."""
    return np.array([np.unique(x[:, c]).size for c in range(x.shape[1])])


def levels_many(cfg: Any, sts: Sequence[Any], x: np.ndarray, s1: np.ndarray,
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The level tests of one finite block per stream, as ``HealthMonitor._check_levels`` runs them.

    Args:
        cfg: the ``HealthConfig``.
        sts: the streams' states (``health._Stream``, one channel each), updated in place.
        x: ``(n, streams)`` float32, column ``j`` the block of ``sts[j]``, every sample finite.
        s1: ``x.sum(axis=0, dtype=float64)``.

    Returns:
        (flat, clipping, step): ``(streams,)`` bools, bools and ``STEP_*`` codes.
    """
    n = x.shape[0]
    rate = np.array([st.sample_rate for st in sts], dtype=np.float64)
    mean = s1 / n
    d = x - mean
    m2 = np.einsum("ij,ij->j", d, d)
    flat = _flat(cfg, sts, n, rate, mean, m2)
    clipping = _clipping(cfg, sts, x, rate)
    step = _step(cfg, sts, n, rate, mean, m2) if cfg.step_ratio != 0 else np.zeros(len(sts), dtype=np.int8)
    return flat, clipping, step


def _flat(cfg: Any, sts: Sequence[Any], n: int, rate: np.ndarray, mean: np.ndarray, m2: np.ndarray) -> np.ndarray:
    floor2 = cfg.flat_std**2
    flat = np.zeros(len(sts), dtype=bool)
    # the newest block alone is flat: only then can the span be (most streams stop here)
    newest_flat = m2 < floor2 * n
    for j, st in enumerate(sts):
        span = max(2, int(round(cfg.flat_span_s * st.sample_rate)))
        chunk = (n, mean[j : j + 1], m2[j : j + 1])
        merged = bool(st.chunks) and st.chunks[-1][0] < span // 8
        if merged:  # tiny frames are merged into buckets of ~1/8 span (see HealthMonitor._flat)
            last = st.chunks[-1] = merge(st.chunks[-1], chunk)
        else:
            last = chunk
            st.chunks.append(chunk)
        st.chunk_n += n
        while len(st.chunks) > 1 and st.chunk_n - st.chunks[0][0] >= span:
            st.chunk_n -= st.chunks.popleft()[0]
        if st.chunk_n < span:
            continue
        if not ((last[2] < floor2 * last[0]).any() if merged else newest_flat[j]):
            continue
        total_n, _, pooled = pool(st.chunks)
        flat[j] = bool((pooled < floor2 * total_n).any())
    return flat


def _gather(sts: Sequence[Any], name: str, fresh: np.ndarray, fill: np.ndarray) -> np.ndarray:
    """Attribute ``name`` ((1,) arrays) of every stream as one array; ``fill`` where ``fresh``."""
    if fresh.all():
        return fill.copy()
    blank = fill[:1]
    out = np.concatenate([blank if f else getattr(st, name) for f, st in zip(fresh, sts)]).astype(fill.dtype, copy=False)
    out[fresh] = fill[fresh]
    return out


def _clipping(cfg: Any, sts: Sequence[Any], x: np.ndarray, rate: np.ndarray) -> np.ndarray:
    n = x.shape[0]
    fmax, fmin = x.max(axis=0), x.min(axis=0)
    at_max = np.count_nonzero(x == fmax, axis=0)
    at_min = np.count_nonzero(x == fmin, axis=0)
    fresh = np.array([st.blk_n == 0 or st.blk_max is None for st in sts])
    blk_n = np.array([0 if f else st.blk_n for f, st in zip(fresh, sts)], dtype=np.int64)
    bmax, bmin = _gather(sts, "blk_max", fresh, fmax), _gather(sts, "blk_min", fresh, fmin)
    bat_max = _gather(sts, "blk_at_max", fresh, at_max)
    bat_min = _gather(sts, "blk_at_min", fresh, at_min)
    bfull = _gather(sts, "blk_full", fresh, np.zeros(len(sts), dtype=np.int64))
    # a new extreme restarts its count, an equal one adds to it, a lesser one leaves it
    old = ~fresh
    bat_max = np.where(old & (fmax > bmax), at_max, bat_max + np.where(old & (fmax == bmax), at_max, 0))
    bat_min = np.where(old & (fmin < bmin), at_min, bat_min + np.where(old & (fmin == bmin), at_min, 0))
    bmax, bmin = np.maximum(bmax, fmax), np.minimum(bmin, fmin)
    if cfg.full_scale is not None:
        full = np.count_nonzero(np.abs(x) >= cfg.full_scale, axis=0)
        bfull = bfull + full
    blk_n += n
    block = np.array([max(1, int(round(cfg.clip_span_s * st.sample_rate))) for st in sts])
    need = np.maximum(cfg.clip_min_samples, cfg.clip_fraction * blk_n)
    whole = blk_n >= block
    at_rail = whole & (bmax > bmin) & ((bat_max >= need) | (bat_min >= need))
    for j in np.flatnonzero(at_rail):  # rare: few distinct values are dithered silence, not a rail
        at_rail[j] = distinct_levels(x[:, j : j + 1])[0] >= MIN_LEVELS_FOR_CLIPPING
    if cfg.full_scale is not None:
        clipping = at_rail | (bfull >= need)
    else:
        clipping = at_rail
    for j, st in enumerate(sts):
        st.blk_max, st.blk_min = bmax[j : j + 1], bmin[j : j + 1]
        st.blk_at_max, st.blk_at_min, st.blk_full = bat_max[j : j + 1], bat_min[j : j + 1], bfull[j : j + 1]
        if cfg.full_scale is not None:
            st.clipped += int(full[j])
        st.blk_n = 0 if whole[j] else int(blk_n[j])
    return clipping


def _step(cfg: Any, sts: Sequence[Any], n: int, rate: np.ndarray, mean: np.ndarray, m2: np.ndarray) -> np.ndarray:
    floor = max(cfg.flat_std, 1e-12) * 10  # below this a level is a flat line, not a level
    sd = np.sqrt(np.maximum(m2 / n, 0.0))
    live = sd > floor
    logsd = np.log(np.maximum(sd, floor))
    fresh = np.array([st.base_mean is None or st.base_logsd is None for st in sts])
    base_mean = _gather(sts, "base_mean", fresh, mean.astype(np.float64))
    base_logsd = _gather(sts, "base_logsd", fresh, logsd)
    learned = np.array([0 if f else st.learned for f, st in zip(fresh, sts)], dtype=np.int64)
    step_n = np.array([st.step_n for st in sts], dtype=np.int64)
    learning = learned < cfg.learn_s * rate
    # learning: a running average
    w = n / (learned + n)
    learn_mean = base_mean + w * (mean - base_mean)
    learn_logsd = base_logsd + w * (logsd - base_logsd)
    base_sd = np.exp(base_logsd)
    known = base_sd > floor
    dc = known & (np.abs(mean - base_mean) > cfg.dc_sigma * np.maximum(base_sd, sd))
    amp = known & live & (np.abs(logsd - base_logsd) > math.log(cfg.step_ratio))
    moved = ~learning & (dc | amp)
    calm = ~learning & ~moved
    # no step: the learned level follows slowly
    a = np.minimum(1.0, n / (cfg.baseline_s * rate))
    calm_mean = base_mean + a * (mean - base_mean)
    calm_logsd = base_logsd + a * (logsd - base_logsd)
    held = moved & (step_n + n >= cfg.step_hold_s * rate)  # seen long enough: reported once, then the new level
    new_mean = np.where(learning, learn_mean, np.where(calm, calm_mean, np.where(held, mean, base_mean)))
    new_logsd = np.where(learning, learn_logsd, np.where(calm, calm_logsd, np.where(held, logsd, base_logsd)))
    new_step_n = np.where(calm | held, 0, np.where(moved, step_n + n, step_n))
    step = np.where(held, np.where(dc, STEP_DC, STEP_AMP), STEP_NONE).astype(np.int8)
    for j, st in enumerate(sts):
        st.base_mean, st.base_logsd = new_mean[j : j + 1], new_logsd[j : j + 1]
        if learning[j]:
            st.learned = int(learned[j]) + n
        elif fresh[j]:
            st.learned = 0
        st.step_n = int(new_step_n[j])
        if held[j]:
            st.steps += 1
    return step


def check_levels_many(cfg: Any, sts: Sequence[Any], blocks: Sequence[np.ndarray],
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
        if x.ndim == 2 and x.shape[1] == 1 and x.dtype == np.float32 and x.shape[0] > 0:
            groups.setdefault(x.shape[0], []).append(j)
        else:
            found[j] = one(sts[j], x)
    for idx in groups.values():
        if len(idx) == 1:
            found[idx[0]] = one(sts[idx[0]], blocks[idx[0]])
            continue
        # (streams, n) rows, seen as (n, streams): each stream's samples stay contiguous
        x = np.stack([blocks[j].reshape(-1) for j in idx]).T
        s1 = x.sum(axis=0, dtype=np.float64)
        finite = np.isfinite(s1)
        if not finite.all():  # NaN/Inf: counted and the tests restarted, one by one
            for k in np.flatnonzero(~finite):
                found[idx[k]] = one(sts[idx[k]], blocks[idx[k]])
            keep = np.flatnonzero(finite)
            idx = [idx[k] for k in keep]
            x, s1 = x[:, keep], s1[keep]
            if not idx:
                continue
        flat, clipping, step = levels_many(cfg, [sts[j] for j in idx], x, s1)
        for k, j in enumerate(idx):
            if flat[k]:
                found[j].add(reasons[0])
            if clipping[k]:
                found[j].add(reasons[1])
            if step[k]:
                found[j].add(reasons[2] if step[k] == STEP_DC else reasons[3])
    return found
