"""Windows of many single-channel streams at the model's rate, cut together from one array.

The common live case is hundreds of single-channel streams already at the model's rate: no
resampling, only windowing. A ``StreamDSP`` per stream costs a few dozen small numpy and Python
calls per frame; here every stream of an ingest thread is a row of one array, a poll's
frames (one per stream, the same length) are written into their rows with one fancy index, and
the windows they complete are views of their rows. Each stream gets exactly the windows (index,
``t_last``, samples bit for bit) its own ``StreamDSP`` would give.

A stream whose frame does not fit (another rate, a frame longer than ``max_frame``) leaves the
bank for good: ``BankDSP`` hands its state to a ``StreamDSP``, which carries on (a rate change
then is counted there as usual).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from drsn_stream.dsp import bank_jit
from drsn_stream.dsp.resample import StreamingResampler
from drsn_stream.dsp.stream import StreamDSP, _Meta
from drsn_stream.types import Frame, Window


class WindowBank:
    """The rows of the single-channel, model-rate streams of one ingest thread.

    Row ``r`` holds its stream's samples from column ``a - shift[r]`` for absolute sample ``a``,
    written forward only: a window is a read-only view of its row (no copy per window), and
    when a row runs out of room every row's kept samples move to the front of a fresh array
    (the old one lives on while a window still refers to it). Frames of up to ``max_frame``
    samples fit. Not thread-safe: one bank per ingest thread.
    """

    def __init__(self, meta: _Meta, hop: int | None = None, *, rows: int = 64, compiled: bool | None = None) -> None:
        """Args:
        meta, hop: as for ``StreamDSP``.
        rows: rows to start with (doubled when they run out).
        compiled: the step of a round compiled (``bank_jit``, where numba is there: compiled or
            loaded now); False: numpy; True: compiled or an error.
        """
        self.meta, self.hop_arg = meta, hop
        self.compiled = bank_jit.warm() if compiled is None or compiled else False
        if compiled and not self.compiled:
            raise RuntimeError(f"the compiled window bank step is asked for, but it is not available: {bank_jit.why_not()}")
        self._out = np.empty((5, 0), dtype=np.int64)
        self._spare: tuple[np.ndarray, np.ndarray] | None = None  # the array the last move left, and its view
        self.rate = float(meta.sample_rate)
        self.window = int(meta.window)
        self.hop = int(hop if hop is not None else meta.hop)
        self.max_frame = 2 * max(self.window, self.hop) - self.window
        # a row keeps < window samples between frames, so after a move at least half is free
        self.width = 4 * max(self.window, self.hop)
        self._rows = 0
        self._free: list[int] = []
        self._alloc(rows)

    def _alloc(self, rows: int) -> None:
        old = self._rows
        data = np.zeros((rows, self.width), dtype=np.float32)
        state = {name: np.zeros(rows, dtype=np.int64)
                 for name in ("seen", "next", "count", "nonfinite", "windows", "shift")}
        if old:
            data[:old] = self.data
            for name, a in state.items():
                a[:old] = getattr(self, name)
        self._use(data)
        for name, a in state.items():
            setattr(self, name, a)
        self._free += range(rows - 1, old - 1, -1)
        self._rows = rows

    def _use(self, data: np.ndarray) -> None:
        self.data = data
        self._view = sliding_window_view(data, self.window, axis=1)  # (rows, width - window + 1, window), read-only

    def take(self, start: int = 0) -> int:
        """A free row for a new stream whose window 0 starts at sample ``start``."""
        if not self._free:
            self._alloc(2 * self._rows)
        row = self._free.pop()
        # on from the row's last column: windows of the stream that had it may still be in use
        self.shift[row] -= self.seen[row]
        for name in ("seen", "count", "nonfinite", "windows"):
            getattr(self, name)[row] = 0
        self.next[row] = start
        return row

    def release(self, row: int) -> None:
        self._free.append(row)

    def fits(self, frame: Frame) -> bool:
        """Whether a frame can go through the bank: one channel, the model's rate, short enough."""
        x = frame.samples
        return (frame.sample_rate == self.rate and frame.names is None and 0 < x.shape[0] <= self.max_frame
                and (x.ndim == 1 or (x.ndim == 2 and x.shape[1] == 1)))

    def push_many(self, dsps: Sequence[BankDSP], frames: Sequence[Frame]) -> list[list[Window]]:
        """One frame per stream (distinct streams, every frame ``fits``, all of one length): the
        windows each completes, as its ``StreamDSP`` would give them."""
        out: list[list[Window]] = [[] for _ in dsps]
        windows, of = self.push_flat(dsps, frames)
        for w, i in zip(windows, of):
            out[i].append(w)
        return out

    def push_flat(self, dsps: Sequence[BankDSP], frames: Sequence[Frame],
                  x: np.ndarray | None = None) -> tuple[list[Window], list[int]]:
        """``push_many``'s windows in one list, frame by frame (each frame's in order), and the
        index of the frame each came from. ``x``: the frames' samples as ``samples_of`` gives
        them, where the caller has them already."""
        rows = np.fromiter([d.row for d in dsps], dtype=np.int64, count=len(dsps))
        t = np.fromiter([f.t_capture for f in frames], dtype=np.float64, count=len(frames))
        if x is None:
            x = samples_of(frames)
        found = self._step_compiled(rows, x, t) if self.compiled else self._step(rows, x, t)
        if found is None:
            return [], []
        row_w, col_w, index, j, t_last = found
        view = self._view
        data = [view[r, c] for r, c in zip(row_w.tolist(), col_w.tolist())]
        j_list = j.tolist()
        now = time.time()
        windows = [Window(dsps[i].stream_id, ix, tl, d, now, 0.0, False)
                   for i, ix, tl, d in zip(j_list, index.tolist(), t_last.tolist(), data)]
        return windows, j_list

    def _step(self, rows: np.ndarray, x: np.ndarray, t: np.ndarray) -> tuple[np.ndarray, ...] | None:
        """Frames ``x`` (frames, n), captured from ``t`` on, into rows ``rows``, the streams'
        counters moved on; for the windows they complete (None: none), frame by frame: each one's
        row, column, index, frame and its last sample's capture time."""
        n = x.shape[1]
        finite = np.isfinite(x)  # (not a sum: see StreamDSP.push)
        if not finite.all():
            bad = ~finite
            self.nonfinite[rows] += np.count_nonzero(bad, axis=1)
            x = np.where(bad, np.float32(0.0), x)
        seen = self.seen[rows]
        col = seen - self.shift[rows]
        if int(col.max()) + n > self.width:
            self._move()
            col = seen - self.shift[rows]
        self._write(rows, col, x)
        n_in = seen  # input samples before this frame (no resampler: the same count as the windower's)
        seen = seen + n
        self.seen[rows] = seen
        nxt = self.next[rows]
        ready = seen - self.window - nxt
        k = np.where(ready >= 0, ready // self.hop + 1, 0)  # windows each frame completes
        total = int(k.sum())
        if not total:
            return None
        has = np.flatnonzero(k)
        per = k[has]
        if total == len(has):  # one window per frame that completes any: no repeats needed
            j, step = has, np.zeros(total, dtype=np.int64)
        else:
            j = np.repeat(has, per)  # the frame of each window
            step = np.arange(total) - np.repeat(np.cumsum(per) - per, per)  # its place among its frame's windows
        rows_j = rows[j]
        start = nxt[j] + step * self.hop
        # as StreamDSP._t_last: t_capture + (end - 1 - out_base) / rate - frame_start / rate, where
        # out_base is 0 (a bank stream never changed its rate)
        t_last = t[j] + (start + self.window - 1) / self.rate - n_in[j] / self.rate
        found = (rows_j, start - self.shift[rows_j], self.count[rows_j] + step, j, t_last)
        rows_has = rows[has]
        self.next[rows_has] += per * self.hop
        self.count[rows_has] += per
        self.windows[rows_has] += per
        return found

    def _step_compiled(self, rows: np.ndarray, x: np.ndarray, t: np.ndarray) -> tuple[np.ndarray, ...] | None:
        """``_step`` in one compiled call (``bank_jit``)."""
        m, n = x.shape
        cap = m * ((n - 1) // self.hop + 1)  # a frame completes at most this many windows each
        if self._out.shape[1] < cap:
            self._out = np.empty((5, 2 * cap), dtype=np.int64)
        out, kernel = self._out, bank_jit.kernel()
        t_last = np.empty(out.shape[1])
        x = np.ascontiguousarray(x)
        for _ in range(2):
            total = kernel(self.data, rows, x, t, self.seen, self.shift, self.next, self.count, self.windows,
                           self.nonfinite, self.width, self.window, self.hop, self.rate, out, t_last)
            if total != -1:
                break
            self._move()  # a frame did not fit its row: after the move every one does
        if total < 0:
            raise RuntimeError(f"the window bank's step refused a round of {m} frames of {n} samples ({total})")
        if not total:
            return None
        o = out[:, :total]
        return o[0], o[1], o[2], o[3], t_last[:total]

    def _write(self, rows: np.ndarray, col: np.ndarray, x: np.ndarray) -> None:
        """Frame ``x[i]`` into row ``rows[i]`` from column ``col[i]``."""
        data, n = self.data, x.shape[1]
        for c, m in _by_column(col):
            data[rows[m], c : c + n] = x[m]

    def _move(self) -> None:
        """Every row's kept samples (from its next window's start) to the front of another array:
        the one the move before left, where no window refers to it any more, else a fresh one."""
        keep = np.minimum(self.next, self.seen)
        old, w = self.data, self.window
        spare, self._spare = self._spare, None
        # a window (and any view of one) refers to the bank's sliding-window view, not to the
        # array: none is left where only this tuple and getrefcount's argument refer to that view.
        # glibc's malloc gives a block of 32 MB or more (a bank of 1,024 streams) as new memory
        # every time: each of its pages faulted in and zeroed by the kernel at its first write
        if spare is not None and spare[0].shape == old.shape and sys.getrefcount(spare[1]) == 2:
            data = spare[0]
        else:
            data = np.empty_like(old)
        del spare
        for c, m in _by_column(keep - self.shift):  # the column each row keeps from
            k = min(w, self.width - c)  # at most window - 1 samples are kept; the rest is not read
            data[m, :k] = old[m, c : c + k]
        self._spare = (old, self._view)
        self.shift = keep
        self._use(data)


def _by_column(col: np.ndarray) -> list[tuple[int, Any]]:
    """``(column, which rows)`` for each distinct column of ``col``. Streams that started together
    sit at the same column: one copy per distinct column, not one per stream (an index array of
    every sample would cost more than the copies)."""
    c0 = int(col[0])
    if (col == c0).all():
        return [(c0, slice(None))]
    return [(c, col == c) for c in np.unique(col).tolist()]


class BankDSP:
    """One stream of a ``WindowBank``, used where a ``StreamDSP`` is (``push``, counters); after a
    frame the bank cannot take, a ``StreamDSP`` with the same state does the work.

    Args:
        bank: the ingest thread's bank.
        stream_id: the stream's id (its windows carry it).
        start: where its window 0 starts (``window.window_start``).
    """

    def __init__(self, bank: WindowBank, stream_id: str, start: int = 0) -> None:
        self.bank, self.stream_id, self.start = bank, stream_id, start
        self.row = bank.take(start)
        self.own: StreamDSP | None = None  # set once the stream left the bank
        self.rate_changes = 0

    @property
    def nonfinite(self) -> int:
        return self.own.nonfinite if self.own is not None else int(self.bank.nonfinite[self.row])

    @property
    def windows(self) -> int:
        return self.own.windows if self.own is not None else int(self.bank.windows[self.row])

    @property
    def seconds_seen(self) -> float:
        """``StreamDSP.seconds_seen``."""
        return self.own.seconds_seen if self.own is not None else int(self.bank.seen[self.row]) / self.bank.rate

    @property
    def first_window_end(self) -> int:
        """``StreamDSP.first_window_end``."""
        return self.start + self.bank.window

    def counters(self) -> dict[str, int]:
        own = self.own
        if own is not None:
            return own.counters()
        return {"dsp.nonfinite": self.nonfinite, "dsp.rate_changes": 0, "dsp.windows": self.windows}

    def completes(self, frame: Frame) -> bool:
        """``StreamDSP.completes``."""
        if self.own is not None:
            return self.own.completes(frame)
        b, r = self.bank, self.row
        return int(b.seen[r]) + frame.samples.shape[0] >= int(b.next[r]) + b.window

    def in_bank(self, frame: Frame) -> bool:
        return self.own is None and self.bank.fits(frame)

    def push(self, frame: Frame) -> list[Window]:
        """As ``StreamDSP.push``."""
        if self.own is None and not self.bank.fits(frame):
            self.leave()
        if self.own is not None:
            return self.own.push(frame)
        return self.bank.push_many((self,), (frame,))[0]

    def leave(self) -> StreamDSP:
        """A ``StreamDSP`` in this stream's state; the row goes back to the bank."""
        b, r = self.bank, self.row
        own = StreamDSP(b.meta, hop=b.hop_arg, normalize=False, start=self.start)
        seen, nxt = int(b.seen[r]), int(b.next[r])
        if seen:
            own._in_rate = b.rate
            own._resampler = StreamingResampler(b.rate, b.rate)
            own._n_in = seen  # its _out_base stays 0: the rate never changed in the bank
        own.nonfinite, own.windows = int(b.nonfinite[r]), int(b.windows[r])
        w = own._windower
        w._n, w._next, w.count = seen, nxt, int(b.count[r])
        w._buf_start = min(nxt, seen)
        w._len = seen - w._buf_start
        q = w._buf_start - int(b.shift[r])
        w._buf[: w._len] = b.data[r, q : q + w._len]
        b.release(r)
        self.own = own
        return own


def samples_of(frames: Sequence[Frame], *, float32: bool = False) -> np.ndarray:
    """The samples of single-channel frames of one length, (n,) or (n, 1) each, as one (frames, n)
    float32 array. ``float32``: the caller checked that every frame's samples are float32 (and
    of one length): where they are C-ordered, their bytes are joined, with no numpy call per
    frame."""
    xs = [f.samples for f in frames]
    if float32 and xs:
        try:
            x = np.frombuffer(bytearray().join(xs), dtype=np.float32)  # writable, as a copy is
        except (BufferError, TypeError):  # a strided view among them (no simple buffer)
            pass
        else:
            if x.size == len(xs) * xs[0].shape[0]:
                return x.reshape(len(xs), -1)
    try:  # every frame (n, 1), or every one (n,), all of one length: one concatenation
        x = np.concatenate(xs)
    except ValueError:
        x = np.concatenate([a.reshape(-1) for a in xs])
    return x.reshape(len(xs), -1).astype(np.float32, copy=False)


def bank_items(items: Sequence[tuple[Frame, Any]]) -> tuple[dict[tuple[int, int], list[int]], list[int]]:
    """Items ``(frame, dsp)`` of distinct streams split into groups for ``WindowBank.push_many``
    ({(bank id, frame length): item indexes}) and the indexes of the rest (pushed one by one)."""
    groups: dict[tuple[int, int], list[int]] = {}
    rest: list[int] = []
    for i, (frame, dsp) in enumerate(items):
        # BankDSP.in_bank, without two calls per frame
        if type(dsp) is BankDSP and dsp.own is None and dsp.bank.fits(frame):
            key = (id(dsp.bank), frame.samples.shape[0])
            group = groups.get(key)
            if group is None:
                groups[key] = [i]
            else:
                group.append(i)
        else:
            rest.append(i)
    return groups, rest
