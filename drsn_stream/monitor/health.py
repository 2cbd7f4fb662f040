"""Sensor health, kept apart from machine condition: is this stream's signal worth classifying?

Integration (pipeline thread; ``state``/``states``/``healthy`` are safe from any thread)::

    health = HealthMonitor(HealthConfig(full_scale=1.0))
    for frame in source:                      # drsn_stream.types.Frame, samples (n, channels)
        events += health.push(frame)          # raw frames, before resampling/normalizing
    events += health.tick(time.time())        # a few times a second: finds streams gone quiet
    decisions.update(pred, healthy=health.healthy(pred.stream_id))

Checks, per frame and vectorized over its samples and channels:

- ``no data``: nothing arrived for ``timeout_s`` seconds (found by ``tick``; wall clock, up to
  when the monitor last read its sources, so that its own stalls are not taken for silent sensors).
- ``sequence gap``: ``Frame.seq`` jumped forward (a lower seq is taken as a source restart).
- ``flat line``: a channel's standard deviation over the last ``flat_span_s`` seconds of
  samples is below ``flat_std``.
- ``clipping``: over blocks of ``clip_span_s`` seconds, at least ``clip_fraction`` of a channel's
  samples sit exactly at the block's extreme value (a converter at its rail), or at or beyond
  ``full_scale`` when that is configured.
- ``NaN/Inf samples`` and ``input overflow`` (``Frame.overflow`` > 0).
- ``rate change``: a frame's sample rate differs from the stream's previous one.
- ``DC offset jump`` / ``amplitude step``: after ``learn_s`` seconds of signal have taught the
  stream's own level (mean and log standard deviation per channel, then followed slowly over
  ``baseline_s``), the mean moves by more than ``dc_sigma`` standard deviations, or the standard
  deviation changes by more than ``step_ratio`` times (either way), for ``step_hold_s`` seconds.
  The new level then becomes the baseline, so the reason clears after ``recovery_s`` once the
  operator had a look. A real machine fault changes a vibration's level far less (the CWRU
  faults: at most x10 against the healthy bearing) and leaves its mean at 0. Where the level
  of a stream's machine at rest is known (``set_rest_levels``: the monitor gives it from the
  stream's learned baseline), an amplitude step from or to under that level is the machine
  stopping or starting, not the sensor: the new level is taken at once and nothing is reported.

A reason stays active until ``recovery_s`` seconds of clean signal (counted in samples, so a
fast file replay recovers as fast as it plays) have arrived after it was last seen; this keeps
the state from flapping. State is ``OK`` with no active reason, else ``CHECK_SENSOR`` (NAMUR
NE107's "check function"). Every state change returns
``Event(type="health", stream_id, time, data={"from", "to", "reasons"})``.
"""

from __future__ import annotations

import bisect
import copy
import itertools
import math
import threading
import time
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from drsn_stream.clock import WallSteps, before_step
from drsn_stream.config import from_table
from drsn_stream.errors import ConfigError
from drsn_stream.monitor import levels_jit
from drsn_stream.monitor.health_levels import (
    MIN_LEVELS_FOR_CLIPPING,
    LevelBank,
    all_set,
    any_set,
    check_levels_many,
    distinct_levels,
    levels_many,
    merge,
    pool,
    reasons_of,
    sums,
)
from drsn_stream.types import Event, Frame, channel_ids, rounds_by_stream, split_channels

OK = "OK"
CHECK_SENSOR = "CHECK_SENSOR"

NO_DATA = "no data"
GAP = "sequence gap"
FLAT = "flat line"
CLIPPING = "clipping"
NON_FINITE = "NaN/Inf samples"
OVERFLOW = "input overflow"
RATE_CHANGE = "rate change"
DC_JUMP = "DC offset jump"
AMP_STEP = "amplitude step"
LEVEL_REASONS = (FLAT, CLIPPING, DC_JUMP, AMP_STEP)  # what the level tests find, in reasons_of's order
_SEQ_MAX = 1 << 62  # a seq the array path can hold (int64, with room for seq + 1)
_F32 = np.dtype(np.float32)
_F32_TINY, _F32_MAX = float(np.finfo(np.float32).tiny), float(np.finfo(np.float32).max)
_FEW_ROWS = 4  # a round of fewer rows takes the Python path: the array path's numpy calls cost more


@dataclass(frozen=True)
class HealthConfig:
    """Sensor-health thresholds.

    Attributes:
        timeout_s: seconds without a frame before a stream is "no data".
        flat_std: a channel whose std over ``flat_span_s`` is below this (signal units) is flat.
        flat_span_s: seconds of samples the flat-line test looks at.
        sound_flat_span_s: ``flat_span_s`` for the streams of a sound model (one whose labels a
            word detector reads: ``digits-fsdd``). Recordings and noise-gated microphones hold
            digital silence between words; a 0.1-s span called it a flat line, and the stream,
            held in CHECK_SENSOR for ``recovery_s`` after each, never gave a word. A muted or
            unplugged microphone is flat for far longer.
        clip_fraction: share of a block's samples at its extreme value that counts as clipping.
        clip_min_samples: fewest samples at the extreme that can count (guards short blocks).
        clip_span_s: seconds of samples per clipping block.
        full_scale: the converter's full scale (signal units); samples with ``|x| >= full_scale``
            count as clipped. None: only the "same extreme value" test.
        recovery_s: seconds of clean signal before a reason clears.
        check_every_s: the level tests (NaN/Inf, flat line, clipping) run on at least this many
            seconds of samples at once: shorter frames are gathered first (at 12 kHz, three
            512-sample frames per test instead of one; a third of the per-frame cost). Gaps and
            overflows are still judged on every frame. 0 tests every frame.
        learn_s: seconds of signal that teach a stream its level before steps are judged.
        baseline_s: time constant (s of signal) with which the learned level follows slow drift.
        dc_sigma: a mean that moves by more than this many standard deviations is a DC jump.
        step_ratio: a standard deviation this many times larger or smaller is an amplitude step
            (0 turns both step tests off).
        step_hold_s: seconds a step must last before it counts (speech and impacts are shorter).

    The spans are short on purpose: the model's windows are ~0.1-1 s, and a dead or clipping
    sensor must be flagged before the alarm logic's set delay could turn its windows into an
    alarm. A flat line of 0.1 s at ``flat_std`` = 1e-6 does not happen on a live sensor.
    """

    timeout_s: float = 2.0
    flat_std: float = 1e-6
    flat_span_s: float = 0.1
    sound_flat_span_s: float = 2.0
    clip_fraction: float = 0.01
    clip_min_samples: int = 8
    clip_span_s: float = 0.25
    full_scale: float | None = None
    recovery_s: float = 2.0
    check_every_s: float = 0.1
    learn_s: float = 3.0
    baseline_s: float = 30.0
    dc_sigma: float = 4.0
    step_ratio: float = 30.0
    step_hold_s: float = 1.0

    def __post_init__(self) -> None:
        problems = []
        for name in ("timeout_s", "flat_span_s", "sound_flat_span_s", "clip_span_s"):
            if not getattr(self, name) > 0:
                problems.append(f"{name} must be > 0 seconds, not {getattr(self, name)!r}")
        if not self.recovery_s >= 0:  # NaN too
            problems.append(f"recovery_s must be >= 0 seconds, not {self.recovery_s!r}")
        if not 0 <= self.check_every_s <= min(self.flat_span_s, self.sound_flat_span_s):
            problems.append(f"check_every_s must be in [0, flat_span_s] and at most sound_flat_span_s, "
                            f"not {self.check_every_s!r}")
        if not self.flat_std >= 0:  # NaN too: it would turn the flat-line test off without a word
            problems.append(f"flat_std must be >= 0, not {self.flat_std!r}")
        if not (isinstance(self.clip_min_samples, int) and not isinstance(self.clip_min_samples, bool)
                and 1 <= self.clip_min_samples <= 1_000_000_000):
            problems.append(f"clip_min_samples must be a whole number from 1 to 1,000,000,000, not {self.clip_min_samples!r}")
        if not 0 < self.clip_fraction <= 1:
            problems.append(f"clip_fraction must be in (0, 1], not {self.clip_fraction!r}")
        for name in ("learn_s", "baseline_s", "dc_sigma", "step_hold_s"):
            if not getattr(self, name) > 0:
                problems.append(f"{name} must be > 0, not {getattr(self, name)!r}")
        if self.step_ratio != 0 and not self.step_ratio > 1:
            problems.append(f"step_ratio must be > 1 (or 0: off), not {self.step_ratio!r}")
        # compared with the float32 samples: a value float32 rounds to 0 or Inf would call every
        # sample clipped, or none
        if self.full_scale is not None and not _F32_TINY <= self.full_scale <= _F32_MAX:
            problems.append(f"full_scale must be > 0 (signal units) and within float32's range "
                            f"({_F32_TINY:.3g} .. {_F32_MAX:.3g}), or None, not {self.full_scale!r}")
        if problems:
            raise ConfigError("health config: " + "; ".join(problems))

    @classmethod
    def from_dict(cls, table: Mapping[str, Any]) -> HealthConfig:
        """Build from a TOML ``[health]`` table; an unknown key is an error listing the valid ones."""
        return from_table(cls, dict(table), "[health]")


@dataclass(frozen=True)
class StreamHealth:
    """A stream's sensor health (a copy; safe to hand to other threads).

    Attributes:
        state: ``OK`` or ``CHECK_SENSOR``.
        reasons: active reasons, e.g. ("flat line", "sequence gap").
        since: wall-clock time (s) of the last state change.
        last_seen: wall-clock time (s) the latest frame arrived.
        frames / samples: received so far.
        gaps: frames lost to sequence gaps; overflows: summed ``Frame.overflow``.
        non_finite / clipped: samples seen that were NaN/Inf / at the clipping level.
        rate_changes / steps: sample-rate changes and level steps (DC jumps, amplitude steps) seen.
    """

    stream_id: str
    state: str = OK
    reasons: tuple[str, ...] = ()
    since: float | None = None
    last_seen: float | None = None
    frames: int = 0
    samples: int = 0
    gaps: int = 0
    overflows: int = 0
    non_finite: int = 0
    clipped: int = 0
    rate_changes: int = 0
    steps: int = 0

    @property
    def ok(self) -> bool:
        return self.state == OK


@dataclass
class _Stream:
    sample_rate: float = 0.0
    channels: int = 0
    last_seq: int | None = None
    last_seen: float | None = None
    state: str = OK
    since: float | None = None
    # reason -> clean samples still needed before it clears
    active: dict[str, float] = field(default_factory=dict)
    # flat line: (n, mean (ch,), M2 (ch,)) per frame, trimmed to the span
    chunks: deque[tuple[int, np.ndarray, np.ndarray]] = field(default_factory=deque)
    chunk_n: int = 0
    # clipping block: running extremes and how many samples sit at them
    blk_n: int = 0
    blk_max: np.ndarray | None = None
    blk_min: np.ndarray | None = None
    blk_at_max: np.ndarray | None = None
    blk_at_min: np.ndarray | None = None
    blk_full: np.ndarray | None = None
    # frames waiting for the level tests (check_every_s)
    pending: list[np.ndarray] = field(default_factory=list)
    pending_n: int = 0
    frames: int = 0
    samples: int = 0
    gaps: int = 0
    overflows: int = 0
    non_finite: int = 0
    clipped: int = 0
    rate_changes: int = 0
    steps: int = 0
    # level steps: learned mean and log std per channel, samples learned, samples a step has lasted
    base_mean: np.ndarray | None = None
    base_logsd: np.ndarray | None = None
    learned: int = 0
    step_n: int = 0
    # the log level under which the stream's machine is at rest (set_rest_levels; -inf: not known)
    rest_logsd: float = -math.inf
    # a single-channel stream's row in HealthMonitor's LevelBank, which then holds its flat-line,
    # clipping and level-step state instead of the fields above, and its last_seq, last_seen,
    # frames, samples and (unless ``pending`` holds them) gathered samples; -1: the fields hold it
    slot: int = -1


@dataclass(eq=False)
class _Group:
    """The streams a frame's channels feed (a plain frame's: its own), all single-channel streams
    with a LevelBank slot at the frame's rate: a frame of them takes the array path. Valid while
    ``version`` is the monitor's (a stream's restart, forget or restore changes that)."""

    ids: tuple[str, ...]
    sts: list[_Stream]
    slots: np.ndarray
    rate: float
    every: int  # samples gathered before the level tests run (<= 1: every frame)
    version: int
    one: int = -1  # the slot of a group of one stream, else -1
    first: int = -1  # the first slot where the slots are consecutive, else -1


class _Rows:
    """The streams of a round's rows (its groups' streams one after another), looked up by row
    only where Python work is needed; and the round's layout in the bank, made once for the same
    groups in the same order (a source's polls bring the same streams in the same slices)."""

    def __init__(self, groups: list[_Group]) -> None:
        self.groups = groups
        ones = [g.one for g in groups]
        self.ones = min(ones) >= 0
        self.every = np.array([g.every for g in groups], dtype=np.int64)
        self.rate = np.array([g.rate for g in groups], dtype=np.float64)
        if self.ones:  # plain streams, the live case, where rounds differ from poll to poll: few numpy calls
            k = len(groups)
            self.starts = range(k)
            self.counts = np.ones(k, dtype=np.int64)
            self.slots = np.array(ones, dtype=np.int64)
            a = ones[0]
            together = (self.slots == np.arange(a, a + k)).all()
        else:  # a row per channel: each group's values repeated over its rows. Made from what each
            # group knows of itself: with --phases a source's polls bring other groups each time
            counts = [len(g.ids) for g in groups]
            self.starts = list(itertools.accumulate(counts[:-1], initial=0))
            k = self.starts[-1] + counts[-1]
            self.counts = np.array(counts, dtype=np.int64)
            self.slots = np.concatenate([g.slots for g in groups])
            self.every, self.rate = np.repeat(self.every, self.counts), np.repeat(self.rate, self.counts)
            a = groups[0].first
            together = a >= 0 and all(g.first == a + start for g, start in zip(groups, self.starts))
        # consecutive slots (a frame's channels, streams that started together): slices, not fancy indexes
        self.at: slice | np.ndarray = slice(a, a + k) if together else self.slots
        # per multi-channel group: its first row and, where its slots are consecutive, its first slot
        self.blocks = None if self.ones else [(start, g.first, len(g.ids)) for g, start in zip(groups, self.starts)]

    def _at(self, j: int) -> tuple[_Group, int]:
        if self.ones:
            return self.groups[j], 0
        i = bisect.bisect_right(self.starts, j) - 1
        return self.groups[i], j - self.starts[i]

    def __getitem__(self, j: int) -> _Stream:
        g, k = self._at(int(j))
        return g.sts[k]

    def id(self, j: int) -> str:
        g, k = self._at(int(j))
        return g.ids[k]


class _Named:
    """Streams ``ids[idx[j]]`` by row ``j`` (``_Rows`` for ``flush_many``)."""

    def __init__(self, ids: list[str], idx: np.ndarray, streams: dict[str, _Stream]) -> None:
        self.ids, self.idx, self.streams = ids, idx, streams

    def __getitem__(self, j: int) -> _Stream:
        return self.streams[self.ids[self.idx[j]]]

    def id(self, j: int) -> str:
        return self.ids[self.idx[j]]


class _Sub:
    """Rows ``idx`` of ``rows``, indexed from 0 (what ``levels_many`` indexes its ``sts`` with)."""

    def __init__(self, rows: Any, idx: np.ndarray) -> None:
        self.rows, self.idx = rows, idx

    def __getitem__(self, j: int) -> _Stream:
        return self.rows[self.idx[j]]


class HealthMonitor:
    """Per-stream sensor health from raw frames and arrival times.

    Args:
        config: thresholds; defaults when None.
    """

    def __init__(self, config: HealthConfig | None = None, *, compiled: bool | None = None) -> None:
        self.config = config if config is not None else HealthConfig()
        # the level tests of a round's single-channel streams compiled (levels_jit) where numba
        # is there (compiled or loaded now, not on the first round); False: numpy (levels_many),
        # the same results
        self.compiled = levels_jit.warm() if compiled is None or compiled else False
        if compiled and not self.compiled:
            raise RuntimeError(f"compiled level tests asked for, but they are not available: {levels_jit.why_not()}")
        self._streams: dict[str, _Stream] = {}
        self._bank = LevelBank()
        self._lock = threading.Lock()
        # the array path: frames' stream groups, valid while _version stands; the slot of each
        # single-channel stream; streams not OK; streams that take the Python path: their gathered
        # samples are in their ``pending`` list (another dtype or layout), or their last seq does
        # not fit the bank
        self._groups: dict[Any, _Group] = {}
        self._rounds: dict[tuple[_Group, ...], _Rows] = {}
        self._rounds_version = 0
        self._rates = np.empty(0)  # _rates_of
        self._version = 0
        self._slot_of: dict[str, int] = {}
        self._sick: set[str] = set()
        self._listed: set[str] = set()
        self._steps = WallSteps()  # arrival stamps move with a step of the wall clock (tick)
        self._ended: set[str] = set()  # streams that announced their end: no "no data" until they send again
        self._rest: dict[str, float] = {}  # stream: the log level its machine rests under (set_rest_levels)

    def set_rest_levels(self, levels: Mapping[str, float | None]) -> None:
        """The level (RMS, signal units) under which each stream's machine is at rest, from what
        was learned of it (a baseline): an amplitude step from or to under it is the machine
        stopping or starting, not taken for the sensor's. None, NaN or <= 0 forgets a stream's."""
        with self._lock:
            for sid, level in levels.items():
                if level is not None and math.isfinite(level) and level > 0:
                    self._rest[sid] = math.log(level)
                else:
                    self._rest.pop(sid, None)
                st = self._streams.get(sid)
                if st is not None:
                    st.rest_logsd = self._rest.get(sid, -math.inf)
                    if st.slot >= 0:
                        self._bank.rest_logsd[st.slot] = st.rest_logsd

    def watch(self, stream_ids: Iterable[str], *, now: float | None = None) -> None:
        """Expect these streams from ``now`` on, so that one that never sends is "no data"."""
        now = time.time() if now is None else now
        with self._lock:
            for sid in stream_ids:
                if sid not in self._streams:
                    self._streams[sid] = _Stream(last_seen=now, since=now, rest_logsd=self._rest.get(sid, -math.inf))

    def push(self, frame: Frame, *, now: float | None = None) -> list[Event]:
        """Check one raw frame; return the health events it caused.

        Args:
            frame: samples (n, channels) or (n,), any float dtype, at ``frame.sample_rate`` Hz.
            now: arrival time (wall clock, s); ``time.time()`` when None.
        """
        return self.push_many((frame,), now=now)

    def push_many(self, frames: Sequence[Frame], *, now: float | None = None) -> list[Event]:
        """``push`` for each frame, in order, with the same results and events; the checks of
        frames of different single-channel streams run together (numpy passes over arrays of
        streams, not Python per frame). A stream's later frames in ``frames`` are judged after
        its earlier ones."""
        return self._push_all(frames, False, now)

    def push_channels(self, frames: Sequence[Frame], *, now: float | None = None,
                      finite: list[bool] | None = None) -> list[Event]:
        """``push_many`` of every channel of ``frames`` as its own stream, under the frame's
        ``channel_ids`` (``push_many(split_channels(f))`` for a multi-channel or named frame, the
        frame itself for one plain channel), with the same results and events; a frame whose
        channels' streams are known is judged with no Python per channel.

        ``finite``: a list as long as ``frames``; ``finite[i]`` is set True where frame ``i``'s
        samples were all read here and found finite (no NaN/Inf), for a caller that would check
        them again (``FrameDSP.push``); the others are left as they are."""
        return self._push_all(frames, True, now, finite)

    def _push_all(self, frames: Sequence[Frame], split: bool, now: float | None,
                  finite: list[bool] | None = None) -> list[Event]:
        now = time.time() if now is None else now
        events: list[Event] = []
        with self._lock:
            if self._ended:
                self._resume(frames, split)
            rest = list(frames)
            if len({f.stream_id for f in rest}) == len(rest):  # the common case: one round
                return self._push_frames(rest, split, now, finite)
            for this in rounds_by_stream(rest, lambda frame: frame.stream_id):
                events += self._push_frames(this, split, now)
        return events

    def push_block(self, ids: Sequence[str], x: np.ndarray, seqs: np.ndarray, rate: float, *,
                   now: float | None = None) -> list[Event] | None:
        """``push_channels`` of plain single-channel frames of distinct streams ``ids``, whose
        samples are the rows of ``x`` ((frames, n) float32), their sequence numbers ``seqs``
        (int64), all at ``rate`` Hz and with no overflow: the same results and events, with no
        Python per frame but a lookup of its stream. None, with nothing done, where a stream
        cannot take the array path (a new one, a restart, one that ended, a rate of its own...)
        or the round is small: the caller then pushes the frames."""
        if len(ids) < _FEW_ROWS or not len(seqs) or not (int(seqs.min()) > -_SEQ_MAX and int(seqs.max()) < _SEQ_MAX):
            return None
        now = time.time() if now is None else now
        with self._lock:
            gs = self._block_groups(ids, rate)
            if gs is None:
                return None
            return self._push_fast(gs, None, [], now, block=(x, seqs))

    def _block_groups(self, ids: Sequence[str], rate: float) -> list[_Group] | None:
        """The groups of a block's single-channel streams ``ids`` at ``rate`` (``push_block``,
        ``push_judged``), or None where one cannot take the array path. Under the lock."""
        if self._ended:
            return None
        groups, version = self._groups, self._version
        gs: list[_Group] = []
        for sid in ids:
            g = groups.get(sid)
            if g is None or g.version != version:
                g = self._group(sid, (sid,), rate)
                if g is None:
                    return None
            if g.rate != rate:
                return None
            gs.append(g)
        return gs

    def push_judged(self, ids: Sequence[str], x: np.ndarray, seqs: np.ndarray, rate: float,
                    judged: Sequence[int], *, now: float | None = None) -> tuple[list[Event], list[Event]] | None:
        """``push_block``, then ``flush_many`` of the streams of rows ``judged`` (the frames whose
        windows are handed on, in order; repeats allowed): their events, ``(push, flush)``. With
        the compiled level tests, the bookkeeping and the gather of every row and the level tests
        of those due or flushed are two compiled calls, with Python only for rows where something
        was found or a reason is active. None, with nothing done, as for ``push_block``."""
        if not self.compiled:
            events = self.push_block(ids, x, seqs, rate, now=now)
            if events is None:
                return None
            return events, self.flush_many([ids[i] for i in dict.fromkeys(judged)], now=now)
        m = len(ids)
        if m < _FEW_ROWS or len(seqs) != m:
            return None
        now = time.time() if now is None else now
        with self._lock:
            gs = self._block_groups(ids, rate)
            if gs is None:
                return None
            sts = [g.sts[0] for g in gs]
            slots = np.array([g.one for g in gs], dtype=np.int64)
            mask = np.zeros(m, dtype=np.uint8)
            mask[list(judged)] = 1
            x = np.ascontiguousarray(x, dtype=np.float32)
            bank = self._bank
            pushed = levels_jit.push_rows(bank, slots, x, seqs, _SEQ_MAX, now, int(self.config.check_every_s * rate), mask)
            if pushed is None:  # a seq past what the bank's counters hold: the caller pushes the frames
                return None
            gap, flags, order, tslot, tlen, front, back, python = pushed
            codes = None
            found_sets: dict[int, set[str]] = {}
            if front or back:
                codes = np.zeros(m, dtype=np.int8)
                rates = self._rates_of(rate, m)
                wrote = False
                if front:  # judged on their frames alone, read from the block
                    di = order[:front]
                    wrote |= self._levels_compiled(sts, di, tslot[:front], rates[:front], tlen[:front], codes,
                                                   found_sets, src=x, src_rows=di)
                if back:  # on samples gathered before too
                    wrote |= self._levels_compiled(sts, order[m - back :], tslot[m - back :], rates[:back],
                                                   tlen[m - back :], codes, found_sets)
                if not wrote or not codes.any():
                    codes = None
            events: list[Event] = []
            flushed: list[Event] = []
            if not python and codes is None:  # most rounds: nothing found, nothing active
                return events, flushed
            need = (flags & levels_jit.NEEDS_PYTHON) != 0
            if codes is not None:
                need |= ((flags & levels_jit.TESTED) != 0) & (codes != 0)
            n = x.shape[1]
            for j in np.flatnonzero(need).tolist():
                levels = (_level_reasons(codes, found_sets, j)
                          if codes is not None and codes[j] and flags[j] & levels_jit.TESTED else None)
                events += self._row_found(ids[j], sts[j], int(gap[j]), 0, levels, n, now)
            flush = (flags & levels_jit.FLUSHED) != 0
            flush &= bank.busy[slots] if codes is None else bank.busy[slots] | (codes != 0)
            for j in np.flatnonzero(flush).tolist():  # as _flush_fast
                found = _level_reasons(codes, found_sets, j) if codes is not None else set()
                flushed += self._found_banked(ids[j], sts[j], found, now)
            return events, flushed

    def _resume(self, frames: Sequence[Frame], split: bool) -> None:
        """Streams of ``frames`` that had announced their end send again: watched for silence again."""
        for f in frames:
            if split and not _plain(f):
                self._ended.difference_update(channel_ids(f.stream_id, f.samples.shape[1], f.names))
            else:
                self._ended.discard(f.stream_id)

    def end(self, streams: Iterable[str], *, now: float | None = None) -> list[Event]:
        """These streams announced their end (the wire format's end of stream): their silence from
        now on is no sensor fault, so no "no data" (one already shown is cleared) until they send
        again. Returns the health events."""
        now = time.time() if now is None else now
        events: list[Event] = []
        with self._lock:
            for sid in streams:
                st = self._streams.get(sid)
                if st is None:
                    continue
                self._ended.add(sid)
                # a stream that starts again after its end starts a new sequence: no gap from the old one
                st.last_seq = None
                if st.slot >= 0:
                    self._bank.has_seq[st.slot] = False
                if st.active.pop(NO_DATA, None) is not None:
                    events += self._settle(sid, st, now)
                    if st.slot >= 0:
                        self._bank.busy[st.slot] = _busy(st)
        return events

    def _push_frames(self, frames: list[Frame], split: bool, now: float,
                     finite: list[bool] | None = None) -> list[Event]:
        """Frames of distinct streams: those of known streams (``_Group``) through the array path
        (``_push_fast``), the rest (new streams, restarts, other dtypes) one by one
        (``_push_round``); the events in the order of the frames' channels."""
        groups, version = self._groups, self._version
        fast: list[_Group] = []
        xs: list[np.ndarray] = []
        fast_frames: list[Frame] = []
        fast_plain: list[bool] = []
        fast_at: list[int] = []  # their places in ``frames``
        slow: list[Frame] = []
        idss: list[tuple[str, ...]] | None = None  # the rows' streams, frame by frame, once a frame is split
        f32 = _F32
        for i, frame in enumerate(frames):
            x = frame.samples
            if split and not _plain(frame):
                key: Any = (frame.stream_id, x.shape[1], frame.names)
                if idss is None:
                    idss = [(f.stream_id,) for f in frames[:i]]
                plain = False
            else:
                key, plain = frame.stream_id, True
            g = groups.get(key)
            if g is None or g.version != version:
                ids = (frame.stream_id,) if plain else channel_ids(frame.stream_id, x.shape[1], frame.names)
                g = self._group(key, ids, _rate(frame))
            if idss is not None:
                idss.append((frame.stream_id,) if g is None and plain else g.ids if g is not None else
                            channel_ids(frame.stream_id, x.shape[1], frame.names))
            # a frame's rate equal to its group's is the rate the group was made for (_rate)
            if (g is not None and type(x) is np.ndarray and x.dtype is f32 and frame.sample_rate == g.rate
                    and (x.ndim == 2 and x.shape[1] == len(g.ids) or x.ndim == 1 and len(g.ids) == 1)
                    and -_SEQ_MAX < frame.seq < _SEQ_MAX):
                fast.append(g)
                xs.append(x if x.ndim == 2 else x[:, None])
                fast_frames.append(frame)
                fast_plain.append(plain)
                fast_at.append(i)
            else:
                slow += (frame,) if plain else split_channels(frame)
        if idss is not None and len(set().union(*idss)) != sum(map(len, idss)):
            # channels of two frames feed one stream: judged as push_many(parts) would, in rounds
            parts = [p for f in frames for p in (split_channels(f) if not _plain(f) else (f,))]
            events: list[Event] = []
            for this in rounds_by_stream(parts, lambda frame: frame.stream_id):
                events += self._push_round(this, now)
            return events
        if fast and sum(len(g.ids) for g in fast) < _FEW_ROWS:  # a few rows: Python costs less than numpy calls
            for frame, plain in zip(fast_frames, fast_plain):
                slow += (frame,) if plain else split_channels(frame)
            fast = []
        events = self._push_round(slow, now) if slow else []
        if not fast:
            return events
        more = self._push_fast(fast, fast_frames, xs, now, None if finite is None else (finite, fast_at))
        if not events or not more:
            return events or more
        rows = (sid for ids in idss for sid in ids) if idss is not None else (f.stream_id for f in frames)
        order = {sid: i for i, sid in enumerate(rows)}
        return sorted(events + more, key=lambda e: order[e.stream_id])

    def _group(self, key: Any, ids: tuple[str, ...], rate: float) -> _Group | None:
        """The array path's group of these streams, or None while one of them cannot take it."""
        sts = []
        for sid in ids:
            st = self._streams.get(sid)
            if st is None or st.slot < 0 or st.channels != 1 or st.sample_rate != rate or sid in self._listed:
                return None
            sts.append(st)
        if len(set(ids)) != len(ids):
            return None
        slots = [st.slot for st in sts]
        first = slots[0] if slots == list(range(slots[0], slots[0] + len(slots))) else -1
        g = _Group(ids, sts, np.array(slots, dtype=np.int64), rate, int(self.config.check_every_s * rate),
                   self._version, slots[0] if len(sts) == 1 else -1, first)
        self._groups[key] = g
        return g

    def _push_fast(self, gs: list[_Group], frames: list[Frame] | None, xs: list[np.ndarray], now: float,
                   finite: tuple[list[bool], list[int]] | None = None, *,
                   block: tuple[np.ndarray, np.ndarray] | None = None) -> list[Event]:
        """``_push_round`` for frames of known streams, one row per channel: the bookkeeping and
        the level tests in numpy over all rows at once, Python only for rows where something
        was found or a reason is active. ``finite``: ``push_channels``'s list and each frame's
        place in it. ``block``: ``push_block``'s samples and seqs, for frames of single-channel
        streams with no overflow (then ``frames`` and ``xs`` are not read)."""
        bank = self._bank
        if self._rounds_version != self._version:  # the rows' layouts of groups no longer valid
            self._rounds.clear()
            self._rounds_version = self._version
        key = tuple(gs)
        rows = self._rounds.get(key)
        if rows is None:
            if len(self._rounds) >= 256:
                self._rounds.clear()
            rows = self._rounds[key] = _Rows(gs)
        slots, at = rows.slots, rows.at
        if block is not None:
            n_row: Any = block[0].shape[1]
            seqs = block[1]
        else:
            assert frames is not None
            n = xs[0].shape[0]
            if all(x.shape[0] == n for x in xs):
                n_row = n
            else:
                n_row = np.repeat(np.fromiter((x.shape[0] for x in xs), dtype=np.int64, count=len(xs)), rows.counts)
            seqs = np.fromiter((f.seq for f in frames), dtype=np.int64, count=len(frames))
        seq_row = seqs if rows.ones else np.repeat(seqs, rows.counts)
        bank.last_seen[at] = now
        bank.frames[at] += 1
        bank.samples[at] += n_row
        last = bank.last_seq[at].copy()  # a view where ``at`` is a slice
        gap = bank.has_seq[at] & (seq_row > last + 1)
        bank.last_seq[at] = seq_row
        bank.has_seq[at] = True
        # gathered for the level tests until check_every_s of samples are in (_take_pending)
        pn = bank.pend_n[at].copy()
        new_pn = pn + n_row
        due = (n_row > 0) & (new_pn >= rows.every)
        bank.pend_room(int(new_pn.max()))
        ok = self._gather(rows, pn, n_row, xs, None if block is None else block[0])
        if finite is not None and ok is not None:
            out, places = finite
            for i, good in zip(places, ok.tolist()):
                if good:
                    out[i] = True
        bank.pend_n[at] = np.where(due, 0, new_pn)
        codes = None
        found_sets: dict[int, set[str]] = {}
        if any_set(due):
            codes = np.zeros(len(slots), dtype=np.int8)
            di = np.flatnonzero(due)
            self._levels_rows(rows, di, slots[di], rows.rate[di], new_pn[di], codes, found_sets)
        need = bank.busy[at] | gap
        ov_row = None
        if frames is not None and any(f.overflow > 0 for f in frames):
            ov_row = np.repeat(np.array([f.overflow for f in frames], dtype=np.int64), rows.counts)
            need |= ov_row > 0
        if codes is not None:
            need |= codes != 0
        events: list[Event] = []
        for j in np.flatnonzero(need):
            levels = _level_reasons(codes, found_sets, j) if codes is not None and codes[j] else None
            events += self._row_found(rows.id(j), rows[j], int(seq_row[j] - last[j] - 1) if gap[j] else 0,
                                      int(ov_row[j]) if ov_row is not None else 0, levels,
                                      int(n_row if isinstance(n_row, int) else n_row[j]), now)
        return events

    def _row_found(self, sid: str, st: _Stream, gaps: int, overflow: int, levels: set[str] | None, n: int,
                   now: float) -> list[Event]:
        """A bank stream's frame of ``n`` samples that needs Python on the array path: its gaps and
        overflows counted, the reasons found (``levels``: its level tests', None: none) active,
        the others aged, its state settled (``_found_banked``)."""
        found = _counted(st, gaps, overflow)
        if levels:
            found = levels if found is None else found | levels
        if st.active:
            self._age(st, n, found or set())
        return self._found_banked(sid, st, found, now)

    def _found_banked(self, sid: str, st: _Stream, found: set[str] | None, now: float) -> list[Event]:
        """``_found`` for a stream in the bank, whose ``busy`` flag then says again whether its
        next frames need Python."""
        events = self._found(sid, st, found, now)
        self._bank.busy[st.slot] = _busy(st)
        return events

    def _gather(self, rows: _Rows, pn: np.ndarray, n_row: Any, xs: list[np.ndarray],
                block: np.ndarray | None = None) -> np.ndarray | None:
        """Each row's samples into the bank's ``pend``, after those gathered before; where the
        gather looked at them, whether each frame's samples are all finite (else None).
        ``block``: the rows' samples as one (rows, n) array (single-channel streams), in place
        of ``xs``."""
        pend, slots = self._bank.pend, rows.slots
        if self.compiled and not rows.ones:
            # frames of channels: read where they lie, in their own layout, and written to their
            # rows wherever those are, in one pass (numpy: a transposing copy, then another)
            return levels_jit.gather_frames(pend, slots, pn, xs)
        if isinstance(n_row, int):
            n = n_row
            if n == 0:
                return
            p = int(pn[0])
            if all_set(pn == p):
                if block is not None:
                    pend[rows.at if isinstance(rows.at, slice) else slots, p : p + n] = block
                elif isinstance(rows.at, slice):  # straight into the rows: one copy
                    np.concatenate([x.T for x in xs], out=pend[rows.at, p : p + n])
                else:
                    pend[slots, p : p + n] = np.concatenate([x.T for x in xs])
                return
            if rows.blocks is not None:  # frames of channels whose counts differ (--phases): each
                self._gather_frames(rows, pn, n, xs)  # frame straight into its rows, one copy
                return
            x = block if block is not None else np.concatenate([x.T for x in xs])  # (rows, n)
            for p in np.unique(pn):
                m = pn == p
                pend[slots[m], p : p + n] = x[m]
            return
        j = 0
        for x in xs:
            for k in range(x.shape[1]):
                pend[slots[j], pn[j] : pn[j] + x.shape[0]] = x[:, k]
                j += 1

    def _gather_frames(self, rows: _Rows, pn: np.ndarray, n: int, xs: list[np.ndarray]) -> None:
        """``_gather`` of multi-channel frames of ``n`` samples whose rows' gathered counts differ
        from frame to frame: a frame's channels were gathered and judged together, so they share
        one count, and each frame's ``(n, channels)`` samples go into their rows in one copy."""
        pend, slots = self._bank.pend, rows.slots
        assert rows.blocks is not None
        for (start, s0, c), x in zip(rows.blocks, xs):
            p = int(pn[start])
            if s0 >= 0 and (c == 1 or all_set(pn[start : start + c] == p)):
                pend[s0 : s0 + c, p : p + n] = x.T
            else:
                for k in range(c):
                    q = int(pn[start + k])
                    pend[slots[start + k], q : q + n] = x[:, k]

    def _levels_rows(self, rows: Any, di: np.ndarray, slots: np.ndarray, rate: np.ndarray,
                     lengths: np.ndarray, codes: np.ndarray, found_sets: dict[int, set[str]]) -> None:
        """The level tests of rows ``di`` on their gathered samples (``lengths`` of them, from the
        bank's ``pend``): ``codes[di]`` = flat | clipping << 1 | step code << 2, or -1 with the
        reasons in ``found_sets`` (NaN/Inf samples: ``_check_levels`` alone)."""
        bank, cfg = self._bank, self.config
        if self.compiled:
            self._levels_compiled(rows, di, slots, rate, lengths, codes, found_sets)
            return
        same = lengths.min() == lengths.max()
        for length in lengths[:1] if same else np.unique(lengths):
            m = slice(None) if same else lengths == length
            sub, sl, rt = di[m], slots[m], rate[m]
            a = int(sl[0])
            if sl[-1] - a == len(sl) - 1 and (len(sl) == 1 or all_set(np.diff(sl) == 1)):
                x = bank.pend[a : a + len(sl), : int(length)]  # (rows, n), a view
            else:
                x = bank.pend[sl, : int(length)]  # a copy
            s1 = sums(x, 1)
            finite = np.isfinite(s1)
            if not all_set(finite):  # NaN/Inf: counted and the tests restarted, one by one
                for k in np.flatnonzero(~finite):
                    j = int(sub[k])
                    found_sets[j] = self._check_levels(rows[j], x[k][:, None])
                    codes[j] = -1
                sub, sl, rt, x, s1 = sub[finite], sl[finite], rt[finite], x[finite], s1[finite]
                if not len(sub):
                    continue
            one_rate = rt[0] == rt[-1] and all_set(rt == rt[0])  # the common case: thresholds reckoned once
            flat, clipping, step = levels_many(cfg, bank, _Sub(rows, sub), x, s1, slots=sl,
                                               rate=float(rt[0]) if one_rate else rt)
            if any_set(flat) or any_set(clipping) or any_set(step):  # most polls find nothing
                codes[sub] = flat.astype(np.int8) | (clipping.astype(np.int8) << 1) | (step.astype(np.int8) << 2)

    def _levels_compiled(self, rows: Any, di: np.ndarray, slots: np.ndarray, rate: np.ndarray,
                         lengths: np.ndarray, codes: np.ndarray, found_sets: dict[int, set[str]], *,
                         src: np.ndarray | None = None, src_rows: np.ndarray | None = None) -> bool:
        """``_levels_rows`` by ``levels_jit``: every row in one call, reading the bank in place
        (or rows ``src_rows`` of ``src``: ``levels_jit.levels_rows``). False: nothing found, and
        ``codes`` not written."""
        got, clipped, steps = levels_jit.levels_rows(self.config, self._bank, slots, lengths, rate,
                                                     src=src, src_rows=src_rows)
        if not np.count_nonzero(got) and not np.count_nonzero(clipped):  # most polls find nothing
            return False  # (a few samples at full scale are counted without being clipping yet)
        for k in np.flatnonzero(got == levels_jit.CODE_NON_FINITE):  # counted and restarted, one by one
            j = int(di[k])
            x = self._bank.pend[slots[k]] if src is None else src[src_rows[k]]  # type: ignore[index]
            found_sets[j] = self._check_levels(rows[j], x[: int(lengths[k]), None])
        codes[di] = got
        for k in np.flatnonzero(clipped):
            rows[int(di[k])].clipped += int(clipped[k])
        for k in np.flatnonzero(steps):
            rows[int(di[k])].steps += int(steps[k])
        return True

    def _rates_of(self, rate: float, m: int) -> np.ndarray:
        """At least ``m`` copies of ``rate`` (one per row of the level tests), made once per rate."""
        rates = self._rates
        if rates.shape[0] < m or rates[0] != rate:
            rates = self._rates = np.full(max(m, 256), rate)
        return rates

    def _push_round(self, frames: list[Frame], now: float) -> list[Event]:
        """Frames of distinct streams: bookkeeping one by one, the level tests together. Nothing
        found is None rather than an empty set, and a stream with no active reason in state OK
        is not settled: most frames of a live monitor find nothing."""
        sts, ns, founds, changes = [], [], [], []
        due: list[int] = []  # frames whose gathered samples are due for the level tests
        blocks: list[np.ndarray] = []
        streams, every_s = self._streams, self.config.check_every_s
        for frame in frames:
            x = frame.samples
            if type(x) is not np.ndarray or x.ndim != 2:
                x = np.asarray(x)
                x = (x[:, None] if x.ndim == 1 else x).reshape(x.shape[0], -1)
            st = streams.get(frame.stream_id)
            if st is None:
                st = streams[frame.stream_id] = _Stream(since=now, rest_logsd=self._rest.get(frame.stream_id, -math.inf))
            elif st.slot >= 0:
                self._pull(st)
            rate = _rate(frame)
            changed = st.sample_rate > 0 and rate != st.sample_rate
            if rate != st.sample_rate or x.shape[1] != st.channels:
                self._restart_signal(st, rate, x.shape[1])
            n = x.shape[0]
            st.last_seen = now
            st.frames += 1
            st.samples += n
            # gaps and overflows are judged on every frame
            gaps = frame.seq - st.last_seq - 1 if st.last_seq is not None and frame.seq > st.last_seq + 1 else 0
            st.last_seq = frame.seq
            found = _counted(st, gaps, int(frame.overflow))
            if n:  # the level tests: on at least check_every_s of samples, gathered first
                every = int(every_s * st.sample_rate)
                block = x
                if every > 1:
                    st.pending.append(x)
                    st.pending_n += n
                    if st.pending_n < every:
                        block = None
                    else:
                        block = _take_pending(st)
                if block is not None:
                    due.append(len(sts))
                    blocks.append(block)
            sts.append(st)
            ns.append(n)
            founds.append(found)
            changes.append(changed)
        if due:
            for j, levels in zip(due, self._levels([sts[j] for j in due], blocks)):
                if levels:
                    founds[j] = levels if founds[j] is None else founds[j] | levels
        events: list[Event] = []
        for frame, st, n, found, changed in zip(frames, sts, ns, founds, changes):
            if changed:
                st.rate_changes += 1
                found = (found or set()) | {RATE_CHANGE}
            if st.active:
                self._age(st, n, found or ())
            events += self._found(frame.stream_id, st, found, now)
            self._after(frame.stream_id, st)
        return events

    def flush(self, stream: str, *, now: float | None = None) -> list[Event]:
        """Run the level tests on samples still gathered for ``check_every_s`` now; the monitor
        calls it before it hands a stream's new windows on, so a window is never judged healthy
        on samples the tests have not seen yet."""
        return self.flush_many((stream,), now=now)

    def flush_many(self, streams: Iterable[str], *, now: float | None = None) -> list[Event]:
        """``flush`` for each of ``streams`` (distinct), their level tests run together."""
        now = time.time() if now is None else now
        with self._lock:
            order = list(dict.fromkeys(streams))
            listed = self._listed
            events = self._flush_listed([sid for sid in order if sid in listed], now) if listed else []
            more = self._flush_fast(order, now)
            if not events or not more:
                return events or more
            pos = {sid: i for i, sid in enumerate(order)}
            return sorted(events + more, key=lambda e: pos[e.stream_id])

    def _flush_listed(self, ids: list[str], now: float) -> list[Event]:
        """``flush_many`` of streams whose samples are gathered in their ``pending`` lists."""
        sts, blocks, keep = [], [], []
        for sid in ids:
            st = self._streams.get(sid)
            if st is None or not st.pending:
                continue
            blocks.append(_take_pending(st))
            keep.append(sid)
            sts.append(st)
        events: list[Event] = []
        if not sts:
            return events
        for sid, st, found in zip(keep, sts, self._levels(sts, blocks)):
            events += self._found(sid, st, found, now)
            self._after(sid, st)
        return events

    def _flush_fast(self, ids: list[str], now: float) -> list[Event]:
        """``flush_many`` of streams whose samples are gathered in the bank: the level tests of
        all at once, Python only where something was found or a reason is active."""
        bank, get = self._bank, self._slot_of.get
        if len(ids) < _FEW_ROWS:  # a few streams: Python costs less than numpy calls over them
            events: list[Event] = []
            for sid in ids:
                slot = get(sid, -1)
                pn = int(bank.pend_n[slot]) if slot >= 0 else 0
                if pn:
                    st = self._streams[sid]
                    found = self._check_levels(st, bank.pend[slot, :pn, None])
                    bank.pend_n[slot] = 0
                    events += self._found_banked(sid, st, found, now)
            return events
        slots = np.array([get(sid, -1) for sid in ids], dtype=np.int64)
        if not len(slots):
            return []
        pn = np.where(slots >= 0, bank.pend_n[slots], 0)
        di = np.flatnonzero(pn > 0)
        if not len(di):
            return []
        rows = _Named(ids, di, self._streams)
        codes = np.zeros(len(di), dtype=np.int8)
        found_sets: dict[int, set[str]] = {}
        sl = slots[di]
        self._levels_rows(rows, np.arange(len(di)), sl, bank.rate[sl], pn[di], codes, found_sets)
        bank.pend_n[sl] = 0
        events: list[Event] = []
        for k in np.flatnonzero((codes != 0) | bank.busy[sl]):
            events += self._found_banked(rows.id(k), rows[k], _level_reasons(codes, found_sets, k), now)
        return events

    def _found(self, stream: str, st: _Stream, found: set[str] | None, now: float) -> list[Event]:
        """Reasons found in a stream's samples are active for ``recovery_s`` of its signal; its
        state settles (a stream with no active reason in state OK has nothing to settle)."""
        if found:
            for reason in found:
                st.active[reason] = self.config.recovery_s * st.sample_rate
        if st.active or st.state != OK:
            return self._settle(stream, st, now)
        return []

    def tick(self, now: float | None = None) -> list[Event]:
        """Mark streams that sent nothing for ``timeout_s`` before ``now`` as "no data"; return the
        events. ``now``: the time up to which the sources have been read (``sources.base.read_to``),
        ``time.time()`` when None. Arrival times taken before a step of the wall clock move with
        it (``drsn_stream.clock``): a silence is measured in the time that passed."""
        now = time.time() if now is None else now
        events: list[Event] = []
        with self._lock:
            seen = self._bank.last_seen
            step = self._steps.check()
            if step is not None:  # else a step forward made every stream "no data" at once
                seen[before_step(seen, *step)] += step[0]
                for st in self._streams.values():
                    if st.slot < 0 and st.last_seen is not None and before_step(st.last_seen, *step):
                        st.last_seen += step[0]
            ended = self._ended
            for sid, st in self._streams.items():
                if sid in ended:
                    continue
                last_seen = st.last_seen if st.slot < 0 else _seen(seen[st.slot])
                if last_seen is not None and now - last_seen > self.config.timeout_s:
                    # Infinite until data returns; the clean-signal countdown starts then.
                    st.active[NO_DATA] = math.inf
                    events += self._settle(sid, st, now)
                    if st.slot >= 0:
                        self._bank.busy[st.slot] = True
        return events

    def healthy(self, stream: str) -> bool:
        """True while the stream is OK (an unknown stream counts as healthy)."""
        with self._lock:
            return stream not in self._sick

    def unhealthy(self, streams: Iterable[str], *, no_data: bool = True) -> set[str]:
        """Those of ``streams`` that are not OK now (``healthy`` for many, in one lock hold).
        ``no_data=False`` leaves out the streams whose only reason is "no data": a result that
        comes out late is not blamed on a silence that began after its window."""
        with self._lock:
            if not self._sick:
                return set()
            sick = self._sick.intersection(streams)
            if not no_data and sick:
                sick = {sid for sid in sick if not silent_only(self._streams[sid].active)}
            return sick

    def state(self, stream: str) -> StreamHealth:
        with self._lock:
            st = self._streams.get(stream)
            return StreamHealth(stream) if st is None else self._freeze(stream, st)

    def states(self, streams: Iterable[str] | None = None) -> dict[str, StreamHealth]:
        """Health of many streams in one lock hold."""
        with self._lock:
            ids = list(self._streams) if streams is None else list(streams)
            return {
                sid: (self._freeze(sid, self._streams[sid]) if sid in self._streams else StreamHealth(sid))
                for sid in ids
            }

    @property
    def streams(self) -> list[str]:
        with self._lock:
            return list(self._streams)

    def last_seen_many(self, streams: Iterable[str]) -> list[float | None]:
        """When each of ``streams`` last sent a frame (wall clock, following its steps as the
        no-data test does; None: never or unknown), in one lock hold."""
        with self._lock:
            out: list[float | None] = []
            for sid in streams:
                st = self._streams.get(sid)
                if st is None:
                    out.append(None)
                else:
                    out.append(_seen(self._bank.last_seen[st.slot]) if st.slot >= 0 else st.last_seen)
            return out

    def forget(self, stream: str) -> None:
        """Drop a stream's state (it moved to another host, or its sensor was removed for good)."""
        with self._lock:
            st = self._streams.pop(stream, None)
            if st is not None and st.slot >= 0:
                self._bank.release(st.slot)
            self._slot_of.pop(stream, None)
            self._sick.discard(stream)
            self._listed.discard(stream)
            self._ended.discard(stream)
            self._version += 1
            # every group is stale now (the version) and made again when its frames come; a
            # forgotten stream's group would otherwise keep its state alive for good
            self._groups.clear()
            self._rounds.clear()

    def export_state(self, stream: str) -> Any:
        """A picklable copy of the stream's health state and signal statistics; None if unknown."""
        with self._lock:
            st = self._streams.get(stream)
            if st is None:
                return None
            out = copy.deepcopy(st)
            if st.slot >= 0:
                self._bank.export(st.slot, out)
                self._pull(out, st.slot, move=False)
            out.slot = -1
            return out

    def restore_state(self, stream: str, state: Any, *, now: float | None = None) -> None:
        """Continue a stream from ``export_state``'s copy. The frames missed meanwhile are the
        monitor's gap, not the sensor's: the sequence check and the no-data clock start afresh."""
        if not isinstance(state, _Stream):
            raise ConfigError(f"cannot restore the health of {stream}: not a saved health state")
        st = copy.deepcopy(state)
        st.last_seq = None
        st.last_seen = time.time() if now is None else now
        st.rest_logsd = self._rest.get(stream, -math.inf)  # what this monitor knows of its machine
        with self._lock:
            slot = -1
            if st.channels == 1:  # into a row of its own first: a damaged state leaves the stream as it was
                slot = self._bank.take()
                try:
                    self._bank.load(slot, st)
                except (TypeError, ValueError, IndexError, AttributeError) as exc:
                    self._bank.release(slot)
                    raise ConfigError(f"cannot restore the health of {stream}: the saved state is damaged "
                                      f"({type(exc).__name__}: {str(exc)[:200]}); the stream starts afresh without it") from None
            old = self._streams.get(stream)
            if old is not None and old.slot >= 0:
                self._bank.release(old.slot)
            st.slot = slot
            self._streams[stream] = st
            self._listed.discard(stream)
            self._version += 1
            self._after(stream, st)

    # -- internals ------------------------------------------------------------------------

    def _pull(self, st: _Stream, slot: int | None = None, *, move: bool = True) -> None:
        """A slot stream's bookkeeping from the bank into its own fields (``_after``'s inverse),
        its gathered samples into ``pending`` (taken out of the bank unless not ``move``)."""
        bank = self._bank
        slot = st.slot if slot is None else slot
        if bank.has_seq[slot]:
            st.last_seq = int(bank.last_seq[slot])
        elif st.last_seq is not None and -_SEQ_MAX < st.last_seq < _SEQ_MAX:
            st.last_seq = None  # else a seq beyond int64, which only the fields hold (_after)
        st.last_seen = _seen(bank.last_seen[slot])
        st.frames, st.samples = int(bank.frames[slot]), int(bank.samples[slot])
        pn = int(bank.pend_n[slot])
        if pn:
            st.pending = [bank.pend[slot, :pn].reshape(pn, 1).copy()]
            st.pending_n = pn
            if move:
                bank.pend_n[slot] = 0

    def _after(self, sid: str, st: _Stream) -> None:
        """After Python work on a stream: a slot stream's bookkeeping into the bank, its gathered
        samples too where they fit (float32, one channel); the monitor's sets follow its state."""
        if st.state != OK:
            self._sick.add(sid)
        else:
            self._sick.discard(sid)
        if st.slot < 0:
            self._slot_of.pop(sid, None)
            if st.pending:
                self._listed.add(sid)
            else:
                self._listed.discard(sid)
            return
        bank, slot = self._bank, st.slot
        self._slot_of[sid] = slot
        odd_seq = st.last_seq is not None and not -_SEQ_MAX < st.last_seq < _SEQ_MAX  # beyond int64
        bank.has_seq[slot] = st.last_seq is not None and not odd_seq
        bank.last_seq[slot] = st.last_seq if bank.has_seq[slot] else 0
        bank.last_seen[slot] = math.nan if st.last_seen is None else st.last_seen
        bank.frames[slot], bank.samples[slot] = st.frames, st.samples
        bank.rate[slot] = st.sample_rate
        bank.busy[slot] = _busy(st)
        bank.pend_n[slot] = 0
        if st.pending and all(p.dtype == np.float32 and p.ndim == 2 and p.shape[1] == 1 for p in st.pending):
            block = _take_pending(st)
            bank.pend_room(block.shape[0])
            bank.pend[slot, : block.shape[0]] = block[:, 0]
            bank.pend_n[slot] = block.shape[0]
        if st.pending or odd_seq:
            if sid not in self._listed:
                self._listed.add(sid)
                self._version += 1
        else:
            self._listed.discard(sid)

    def _restart_signal(self, st: _Stream, rate: float, channels: int) -> None:
        self._version += 1  # the array path's groups of this stream are rebuilt
        if channels != st.channels:
            st.base_mean = st.base_logsd = None  # a rate change keeps the learned level
            st.learned = st.step_n = 0
            if st.slot >= 0:
                self._bank.reset_level(st.slot)
        if channels == 1 and st.slot < 0:
            st.slot = self._bank.take()
            self._bank.rest_logsd[st.slot] = st.rest_logsd
        elif channels != 1 and st.slot >= 0:
            self._bank.release(st.slot)
            st.slot = -1
        if st.slot >= 0:
            self._bank.reset_tests(st.slot)
        st.sample_rate, st.channels = rate, channels
        st.pending.clear()
        st.pending_n = 0
        st.chunks.clear()
        st.chunk_n = 0
        st.blk_n = 0

    def _levels(self, sts: list[_Stream], blocks: list[np.ndarray]) -> list[set[str]]:
        """The level tests' reasons for each stream's block (``_check_levels``, many at once)."""
        if len(sts) == 1:
            return [self._check_levels(sts[0], blocks[0])]
        return check_levels_many(self.config, self._bank, sts, blocks, self._check_levels, LEVEL_REASONS)

    def _check_levels(self, st: _Stream, x: np.ndarray) -> set[str]:
        found: set[str] = set()
        # One float64 sum per channel serves the NaN/Inf test and the flat test's mean.
        s1 = sums(x, 0)
        if not np.isfinite(s1).all():
            bad = int(x.size - np.count_nonzero(np.isfinite(x)))
            if bad:
                st.non_finite += bad
                found.add(NON_FINITE)
                # The level tests would be meaningless on this frame; restart them.
                st.chunks.clear()
                st.chunk_n = 0
                st.blk_n = 0
                if st.slot >= 0:
                    self._bank.reset_tests(st.slot)
                return found
            x = x.astype(np.float64)  # finite, but too large for a float32 sum
            s1 = x.sum(axis=0)
        if st.slot >= 0:
            flat, clipping, step = levels_many(self.config, self._bank, [st], x.T, s1)
            return found | reasons_of(flat[0], clipping[0], step[0], LEVEL_REASONS)
        if self._flat(st, x, s1):
            found.add(FLAT)
        if self._clipping(st, x):
            found.add(CLIPPING)
        step = self._step(st, x, s1)
        if step:
            found.add(step)
        return found

    def _step(self, st: _Stream, x: np.ndarray, s1: np.ndarray) -> str | None:
        """DC jump or amplitude step of this block against the stream's learned level, or None."""
        cfg = self.config
        if cfg.step_ratio == 0:
            return None
        n = x.shape[0]
        mean = s1 / n
        sd = np.sqrt(np.maximum(np.einsum("ij,ij->j", x - mean, x - mean) / n, 0.0))
        floor = max(cfg.flat_std, 1e-12) * 10  # below this a level is a flat line, not a level
        live = sd > floor
        logsd = np.log(np.maximum(sd, floor))
        if st.base_mean is None or st.base_logsd is None:
            st.base_mean, st.base_logsd, st.learned = mean.astype(np.float64), logsd, 0
        if st.learned < cfg.learn_s * st.sample_rate:  # learning: a running average
            w = n / (st.learned + n)
            st.base_mean = st.base_mean + w * (mean - st.base_mean)
            st.base_logsd = st.base_logsd + w * (logsd - st.base_logsd)
            st.learned += n
            return None
        base_sd = np.exp(st.base_logsd)
        known = base_sd > floor
        dc = known & (np.abs(mean - st.base_mean) > cfg.dc_sigma * np.maximum(base_sd, sd))
        amp = known & live & (np.abs(logsd - st.base_logsd) > math.log(cfg.step_ratio))
        stop = amp & ~dc & (np.minimum(logsd, st.base_logsd) < st.rest_logsd)  # the machine stopped or started
        amp &= ~stop
        if not (dc | amp).any():
            st.step_n = 0
            a = min(1.0, n / (cfg.baseline_s * st.sample_rate))
            st.base_mean = np.where(stop, mean, st.base_mean + a * (mean - st.base_mean))
            st.base_logsd = np.where(stop, logsd, st.base_logsd + a * (logsd - st.base_logsd))
            return None
        st.step_n += n
        if st.step_n < cfg.step_hold_s * st.sample_rate:
            return None
        # Seen long enough: report it once and take the new level as the stream's own.
        st.steps += 1
        st.step_n = 0
        st.base_mean, st.base_logsd = mean.astype(np.float64), logsd
        return DC_JUMP if dc.any() else AMP_STEP

    def _flat(self, st: _Stream, x: np.ndarray, s1: np.ndarray) -> bool:
        n = x.shape[0]
        mean = s1 / n
        d = x - mean
        m2 = np.einsum("ij,ij->j", d, d)
        span = max(2, int(round(self.config.flat_span_s * st.sample_rate)))
        # Tiny frames are merged into buckets of ~1/8 span, so the deque stays short (<= ~9).
        if st.chunks and st.chunks[-1][0] < span // 8:
            last = st.chunks[-1] = merge(st.chunks[-1], (n, mean, m2))
        else:
            last = (n, mean, m2)
            st.chunks.append(last)
        st.chunk_n += n
        while len(st.chunks) > 1 and st.chunk_n - st.chunks[0][0] >= span:
            st.chunk_n -= st.chunks.popleft()[0]
        if st.chunk_n < span:
            return False
        floor2 = self.config.flat_std**2
        # A span can only be flat if its newest part is; most frames stop here.
        if not (last[2] < floor2 * last[0]).any():
            return False
        total_n, _, pooled = pool(st.chunks)
        return bool((pooled < floor2 * total_n).any())

    def _clipping(self, st: _Stream, x: np.ndarray) -> bool:
        cfg = self.config
        fmax, fmin = x.max(axis=0), x.min(axis=0)
        if st.blk_n == 0 or st.blk_max is None:
            st.blk_max, st.blk_min = fmax, fmin
            st.blk_at_max = np.count_nonzero(x == fmax, axis=0)
            st.blk_at_min = np.count_nonzero(x == fmin, axis=0)
            st.blk_full = np.zeros(x.shape[1], dtype=np.int64)
        else:
            # Count samples at an extreme only when this frame reaches the block's extreme:
            # a new extreme restarts its count, an equal one adds to it.
            if (fmax >= st.blk_max).any():
                at = np.count_nonzero(x == fmax, axis=0)
                st.blk_at_max = np.where(
                    fmax > st.blk_max, at, st.blk_at_max + np.where(fmax == st.blk_max, at, 0)
                )
                st.blk_max = np.maximum(st.blk_max, fmax)
            if (fmin <= st.blk_min).any():
                at = np.count_nonzero(x == fmin, axis=0)
                st.blk_at_min = np.where(
                    fmin < st.blk_min, at, st.blk_at_min + np.where(fmin == st.blk_min, at, 0)
                )
                st.blk_min = np.minimum(st.blk_min, fmin)
        if cfg.full_scale is not None:
            full = np.count_nonzero(np.abs(x) >= cfg.full_scale, axis=0)
            st.clipped += int(full.sum())
            st.blk_full = st.blk_full + full
        st.blk_n += x.shape[0]
        block = max(1, int(round(cfg.clip_span_s * st.sample_rate)))
        need = max(cfg.clip_min_samples, cfg.clip_fraction * st.blk_n)
        if st.blk_n < block:
            # Judge full-scale hits right away; the extreme-value test needs a whole block.
            return cfg.full_scale is not None and bool((st.blk_full >= need).any())
        moving = st.blk_max > st.blk_min  # a constant channel is a flat line, not clipping
        at_rail = moving & ((st.blk_at_max >= need) | (st.blk_at_min >= need))
        if at_rail.any():
            # A signal only a few quantization steps wide (dithered silence: -1, 0, +1 LSB) has
            # many samples at its extremes without any rail: a clipped signal takes many levels.
            at_rail &= distinct_levels(x) >= MIN_LEVELS_FOR_CLIPPING
        st.blk_n = 0
        return bool((at_rail | (st.blk_full >= need)).any())

    def _age(self, st: _Stream, n: int, found: set[str]) -> None:
        for reason in list(st.active):
            if reason in found:
                continue
            left = st.active[reason]
            if reason == NO_DATA and math.isinf(left):
                left = self.config.recovery_s * st.sample_rate  # data is back: start the countdown
            left -= n
            if left <= 0:
                del st.active[reason]
            else:
                st.active[reason] = left

    def _settle(self, sid: str, st: _Stream, now: float) -> list[Event]:
        new = CHECK_SENSOR if st.active else OK
        if new == st.state:
            return []
        event = Event(
            type="health",
            stream_id=sid,
            time=now,
            data={"from": st.state, "to": new, "reasons": sorted(st.active)},
        )
        st.state, st.since = new, now
        if new == OK:
            self._sick.discard(sid)
        else:
            self._sick.add(sid)
        return [event]

    def _freeze(self, sid: str, st: _Stream) -> StreamHealth:
        bank, slot = self._bank, st.slot
        return StreamHealth(
            stream_id=sid,
            state=st.state,
            reasons=tuple(sorted(st.active)),
            since=st.since,
            last_seen=st.last_seen if slot < 0 else _seen(bank.last_seen[slot]),
            frames=st.frames if slot < 0 else int(bank.frames[slot]),
            samples=st.samples if slot < 0 else int(bank.samples[slot]),
            gaps=st.gaps,
            overflows=st.overflows,
            non_finite=st.non_finite,
            clipped=st.clipped,
            rate_changes=st.rate_changes,
            steps=st.steps,
        )


def _counted(st: _Stream, gaps: int, overflow: int) -> set[str] | None:
    """A frame's missing seqs and overflowed samples counted on its stream: the reasons they give
    (None: none; most frames)."""
    found: set[str] | None = None
    if gaps > 0:
        st.gaps += gaps
        found = {GAP}
    if overflow > 0:
        st.overflows += overflow
        found = (found or set()) | {OVERFLOW}
    return found


def _level_reasons(codes: np.ndarray, found_sets: dict[int, set[str]], j: int) -> set[str]:
    """Row ``j``'s reasons from ``_levels_rows``' code (its own set where the code is -1)."""
    c = int(codes[j])
    return found_sets[j] if c < 0 else reasons_of(c & 1, c & 2, c >> 2, LEVEL_REASONS)


def _busy(st: _Stream) -> bool:
    """Whether a bank stream's next frames need Python work: a reason active or a state to settle."""
    return bool(st.active) or st.state != OK


def _take_pending(st: _Stream) -> np.ndarray:
    """The samples a stream gathered for its level tests, as one block; the gathering starts over."""
    block = st.pending[0] if len(st.pending) == 1 else np.concatenate(st.pending)
    st.pending.clear()
    st.pending_n = 0
    return block


def silent_only(reasons: Iterable[str]) -> bool:
    """Whether a stream's only active reason is "no data"."""
    reasons = set(reasons)
    return bool(reasons) and reasons <= {NO_DATA}


def _seen(t: float) -> float | None:
    """A bank's ``last_seen`` as ``_Stream.last_seen`` (NaN: never)."""
    return None if math.isnan(t) else float(t)


def _plain(frame: Frame) -> bool:
    """A frame of one unnamed channel: its stream is its own (``types.channel_ids``)."""
    x = frame.samples
    return frame.names is None and (x.ndim < 2 or x.shape[1] == 1)


def _rate(frame: Frame) -> float:
    """The rate a frame is judged at (Hz); 1 where it has none."""
    return float(frame.sample_rate) if frame.sample_rate and frame.sample_rate > 0 else 1.0
