"""Engine statistics: the one record of latency (per stream, over all streams, histogram),
throughput, batch-size histogram."""

from __future__ import annotations

import bisect
import math
import threading
import time
from collections import Counter, deque
from collections.abc import Iterable, Sequence

import numpy as np

from drsn_stream.view import LATENCY_BUCKETS_MS, LatencyCounts

STREAM_KEEP = 256  # latencies per stream kept for its percentiles (the dashboard's p50/p99)
ALL_KEEP = 8192  # latencies over all streams kept for the live percentiles (stats lines, summary)


class EngineStats:
    """Thread-safe counters the engine writes and the dashboard, the metrics endpoint, the stats
    lines and the benchmarks read: every latency is recorded here once.

    Latency is from the capture of a window's last sample to its result, ms. Per stream the last
    ``history`` latencies are kept for percentiles, over all streams the last 8192 (a few seconds
    at thousands of windows/s: a live view), and every one in a cumulative histogram (``histogram``,
    for the metrics endpoint); throughput is over the last few seconds. For a measurement over a
    longer span, ``start_recording()`` ... ``stop_recording()`` keeps every latency in between.
    """

    def __init__(self, *, history: int = STREAM_KEEP, rate_span_s: float = 5.0) -> None:
        self._lock = threading.Lock()
        # each stream's last ``history`` latencies: a ring per row of one array, so a batch of
        # distinct streams is recorded in one step instead of one Python call per window
        self._row: dict[str, int] = {}
        self._free: list[int] = []  # rows of forgotten streams
        self._lat = np.empty((64, history), dtype=np.float64)
        self._lat_n = np.zeros(64, dtype=np.int64)  # latencies recorded per row
        self._all: deque[float] = deque(maxlen=ALL_KEEP)
        self._history = history
        self.histogram = LatencyHistogram()
        self._done: deque[tuple[float, int]] = deque()
        self._span = rate_span_s
        self.batch_sizes: Counter[int] = Counter()
        self.windows = 0
        self.batches = 0
        self.infer_s = 0.0
        self.started = time.monotonic()  # rates over monotonic spans: the wall clock can step
        self._rec: list[float] | None = None
        self._rec_batches = 0
        self._rec_stages: list[np.ndarray] = []

    def record_batch(self, stream_ids: Sequence[str], latencies_ms: np.ndarray, infer_s: float) -> None:
        """One batch: its windows' stream ids and latencies (ms, (b,)), and its inference time (s)."""
        now = time.monotonic()
        values = np.asarray(latencies_ms, dtype=np.float64).reshape(-1)
        batch_size = values.size
        self.histogram.observe(values)
        vals = values.tolist()
        with self._lock:
            get = self._row.get
            rows = [get(sid) for sid in stream_ids]
            if None in rows:
                rows = [self._new_row(sid) if r is None else r for sid, r in zip(stream_ids, rows)]
            if len(set(rows)) == len(rows) == batch_size:  # each stream once: in one step
                at = np.array(rows, dtype=np.intp)
                n = self._lat_n[at]
                self._lat[at, n % self._history] = values
                self._lat_n[at] = n + 1
            else:  # a stream twice in a batch: its latencies in order
                for r, v in zip(rows, vals):
                    self._lat[r, self._lat_n[r] % self._history] = v
                    self._lat_n[r] += 1
            self._all.extend(vals)
            if self._rec is not None:
                self._rec.extend(vals)
                self._rec_batches += 1
            self.batch_sizes[batch_size] += 1
            self.windows += batch_size
            self.batches += 1
            self.infer_s += infer_s
            self._done.append((now, batch_size))
            while self._done and self._done[0][0] < now - self._span:
                self._done.popleft()

    def _new_row(self, sid: str) -> int:
        """The row of a stream seen for the first time (under the lock; the array doubled when full)."""
        row = self._row.get(sid)  # the same new stream twice in one batch
        if row is None and self._free:
            row = self._row[sid] = self._free.pop()
            self._lat_n[row] = 0
        elif row is None:
            row = self._row[sid] = len(self._row) + len(self._free)
            if row == len(self._lat_n):
                self._lat = np.concatenate([self._lat, np.empty_like(self._lat)])
                self._lat_n = np.concatenate([self._lat_n, np.zeros_like(self._lat_n)])
        return row

    def forget(self, sid: str) -> None:
        """Drop a stream's latencies (the monitor retired it); its row goes to the next new stream.
        The totals and the histogram keep them."""
        with self._lock:
            row = self._row.pop(sid, None)
            if row is not None:
                self._free.append(row)

    def _kept(self, sid: str) -> np.ndarray | None:
        """A copy of a stream's kept latencies (in no particular order; under the lock); None:
        never measured."""
        row = self._row.get(sid)
        if row is None:
            return None
        return self._lat[row, : min(int(self._lat_n[row]), self._history)].copy()

    @property
    def recording(self) -> bool:
        return self._rec is not None

    def start_recording(self) -> None:
        """Keep every latency from now until ``stop_recording()`` (a benchmark's measured span)."""
        with self._lock:
            self._rec = []
            self._rec_batches = 0
            self._rec_stages = []

    def record_stages(self, t_last: np.ndarray, t_ready: np.ndarray, t_batched: float, t_done: float) -> None:
        """While recording: one batch's windows' times (s) of their last sample's capture, of
        being formed, and the batch's send and finish times, for ``stage_ms``."""
        stages = np.stack([t_ready - t_last, t_batched - t_ready, np.full(t_last.shape, t_done - t_batched)], axis=1)
        with self._lock:
            if self._rec is not None:
                self._rec_stages.append(stages * 1000.0)

    def stop_recording(self) -> tuple[np.ndarray, int]:
        """(every latency recorded since ``start_recording()`` in ms, the number of batches)."""
        with self._lock:
            vals, self._rec = self._rec or [], None
            return np.asarray(vals, dtype=np.float64), self._rec_batches

    def stage_ms(self) -> dict[str, dict[str, float]]:
        """Of the last recording: p50/p99 (ms) of capture -> formed ("ingest"), formed -> sent
        ("queue") and sent -> done ("engine"); empty when no stages were recorded."""
        with self._lock:
            if not self._rec_stages:
                return {}
            st = np.concatenate(self._rec_stages)
        return {name: p50_p99(st[:, i]) for i, name in enumerate(("ingest", "queue", "engine"))}

    def totals(self) -> tuple[int, dict[int, int], float]:
        """(batches, {batch size: batches}, seconds of inference) so far, read together."""
        with self._lock:
            return self.batches, dict(self.batch_sizes), self.infer_s

    def windows_per_s(self) -> float:
        with self._lock:
            if not self._done:
                return 0.0
            now = time.monotonic()
            span = min(self._span, max(now - self.started, 1e-3))
            return sum(n for _, n in self._done) / span

    def avg_batch(self) -> float:
        return self.windows / self.batches if self.batches else 0.0

    def percentiles(self, stream: str | None = None, qs: tuple[float, ...] = (50, 95, 99)) -> tuple[float, ...]:
        """Latency percentiles in ms for one stream (or all); NaN when nothing was measured yet."""
        with self._lock:
            if stream is None:
                vals = np.fromiter(self._all, dtype=np.float64, count=len(self._all))
            else:
                kept = self._kept(stream)
                vals = kept if kept is not None else np.empty(0)
        if not vals.size:
            return tuple(float("nan") for _ in qs)
        return tuple(float(v) for v in np.percentile(vals, qs))

    def stream_p50_p99(self, streams: Iterable[str]) -> dict[str, tuple[float, float]]:
        """``{stream: (p50, p99)}`` in ms over each stream's last ``history`` windows, for the
        dashboard's rows; streams without a measurement are left out. The lock is held only to
        copy the rings, so a snapshot of hundreds of streams does not stall the engine."""
        with self._lock:
            raw = {sid: kept for sid in streams if (kept := self._kept(sid)) is not None}
        out = {}
        for sid, vals in raw.items():
            if vals.size:
                ordered = np.sort(vals)
                out[sid] = (_quantile(ordered, 0.50), _quantile(ordered, 0.99))
        return out

    def to_json(self) -> dict:
        p50, p95, p99 = self.percentiles()
        return {
            "windows": self.windows,
            "batches": self.batches,
            "windows_per_s": round(self.windows_per_s(), 1),
            "avg_batch": round(self.avg_batch(), 2),
            "latency_ms": {"p50": _r(p50), "p95": _r(p95), "p99": _r(p99)},
            "batch_sizes": {str(k): v for k, v in sorted(self.batch_sizes.items())},
        }


def _quantile(ordered: np.ndarray, q: float) -> float:
    """Linear-interpolated quantile of sorted values (numpy's default method), without its overhead."""
    pos = q * (ordered.size - 1)
    i = int(pos)
    j = min(i + 1, ordered.size - 1)
    return float(ordered[i] + (ordered[j] - ordered[i]) * (pos - i))


def _r(x: float) -> float | None:
    return None if x != x else round(x, 3)


def p50_p99(values: np.ndarray) -> dict[str, float]:
    """``{"p50": .., "p99": ..}`` of ``values``, rounded to 0.1."""
    p50, p99 = np.percentile(values, (50, 99))
    return {"p50": round(float(p50), 1), "p99": round(float(p99), 1)}


class LatencyHistogram:
    """Thread-safe cumulative histogram of latencies (ms) for the metrics endpoint."""

    def __init__(self, bounds_ms: Sequence[float] = LATENCY_BUCKETS_MS) -> None:
        self.bounds_ms = tuple(float(b) for b in bounds_ms)
        self._counts = np.zeros(len(self.bounds_ms) + 1, dtype=np.int64)
        self._sum = 0.0
        self._lock = threading.Lock()

    def observe(self, latency_ms: float | np.ndarray) -> None:
        """Add one latency or an array of them (ms); NaNs are ignored."""
        if isinstance(latency_ms, (float, int)):
            if not math.isfinite(latency_ms):
                return
            i = bisect.bisect_left(self.bounds_ms, latency_ms)  # one window: skip numpy's overhead
            with self._lock:
                self._counts[i] += 1
                self._sum += latency_ms
            return
        x = np.asarray(latency_ms, dtype=np.float64).reshape(-1)
        x = x[np.isfinite(x)]
        if not x.size:
            return
        # Bucket i holds bounds[i-1] < x <= bounds[i]; the cumulative sum comes at read time.
        idx = np.searchsorted(self.bounds_ms, x, side="left")
        with self._lock:
            self._counts += np.bincount(idx, minlength=self._counts.size)
            self._sum += float(x.sum())

    def read(self) -> LatencyCounts:
        with self._lock:
            cum = np.cumsum(self._counts)
            return LatencyCounts(self.bounds_ms, tuple(int(c) for c in cum), self._sum, int(cum[-1]))
