"""Snapshots: everything the dashboard and the metrics endpoint show, frozen at one instant.

Views are pure functions of a ``Snapshot``; the pipeline builds one on demand (the dashboard
calls ``snapshot_fn`` 4 times a second from its own thread)::

    events = EventLog(maxlen=200)             # pipeline: events.extend(new_events) as they come
    usage = ResourceMeter()
    header = Header(sources=("sim:4",), model=meta.name, labels=tuple(meta.labels),
                    sample_rate=meta.sample_rate, window=meta.window, hop=meta.hop, device="cpu")

    def snapshot_fn() -> Snapshot:
        return build_snapshot(
            header=dataclasses.replace(header, ready=runner_ready),
            decisions=decisions, health=health,   # DecisionEngine, HealthMonitor (thread-safe reads)
            footer=Footer(windows_per_s=..., avg_batch=..., queue_depth=..., dropped=...,
                          malformed=..., windows_total=decisions.windows_total, **usage.read()),
            events=events.recent(), transcript=("3", "1", "4"), drops={"sim/m0": 2},
        )

Times: ``Snapshot.time`` is wall clock (s); ``StreamRow.held_s`` is how long the row's alarm
level has been held (s); latencies are milliseconds.
"""

from __future__ import annotations

import bisect
import math
import os
import re
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from drsn_stream.types import Event

if TYPE_CHECKING:
    from drsn_stream.monitor.decision import DecisionEngine
    from drsn_stream.monitor.health import HealthMonitor

LEVELS = ("NORMAL", "ALERT", "DANGER")
# Prometheus-style upper bounds (ms) of the latency histogram; the last bucket is +Inf.
LATENCY_BUCKETS_MS = (1.0, 2.5, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0)


@dataclass(frozen=True)
class Header:
    """What runs: sources, model and device.

    Attributes:
        sources: source specs as given ("sim:4", "zmq:tcp://*:5555", ...).
        model: artifact name; labels: its labels.
        sample_rate: model rate (Hz); window / hop: samples.
        device: e.g. "cuda:0 (NVIDIA H100, fp16)" or "cpu (2 threads)".
        ready: warm-up finished; status: free text shown beside it ("warming up 3/5").
        refuses: labels may be shown as "unknown" (the artifact carries statistics to decide).
    """

    sources: tuple[str, ...] = ()
    model: str = ""
    labels: tuple[str, ...] = ()
    sample_rate: float = 0.0
    window: int = 0
    hop: int = 0
    device: str = ""
    ready: bool = False
    status: str = ""
    refuses: bool = False  # the model's labels can be refused as "unknown" (models/ood.py)


@dataclass(frozen=True)
class StreamRow:
    """One stream's line on the dashboard.

    Attributes:
        label: smoothed label ("?" while the sensor is unhealthy); confidence: 0..1.
        level: "NORMAL" | "ALERT" | "DANGER"; held_s: seconds at this level.
        top3: ((label, probability), ...) best first.
        noise_index: averaged DRSN noise index, 0..1.
        levels: recent input RMS levels (signal units), oldest first, for the sparkline.
        health: "OK" | "CHECK_SENSOR"; health_reasons: e.g. ("flat line",).
        latency_p50_ms / latency_p99_ms: capture-to-label latency (NaN before any window).
        drops: windows of this stream dropped (stale) plus frames lost to gaps.
        latched / unacknowledged: alarm held by latching / not yet acknowledged.
        windows: windows classified.
        envelope / envelope_db: the envelope fault type ("outer_race", "inner_race", "ball", "none")
            and its evidence (dB over noise); None / NaN where no envelope evidence is configured.
        anomaly: the latest anomaly score against the stream's baseline (1.0 = its threshold);
            None without one. anomalies: recent scores, oldest first, for the sparkline.
        baseline: the baseline's state ("learning 40%", "monitoring", "no baseline"); None
            without a baseline stage.
        host: the cluster host that classifies the stream ("" on one machine: no host column).
    """

    stream_id: str
    label: str = "?"
    level: str = "NORMAL"
    held_s: float = 0.0
    confidence: float = 0.0
    top3: tuple[tuple[str, float], ...] = ()
    noise_index: float = 0.0
    levels: tuple[float, ...] = ()
    health: str = "OK"
    health_reasons: tuple[str, ...] = ()
    latency_p50_ms: float = math.nan
    latency_p99_ms: float = math.nan
    drops: int = 0
    latched: bool = False
    unacknowledged: bool = False
    windows: int = 0
    envelope: str | None = None
    envelope_db: float = math.nan
    anomaly: float | None = None
    anomalies: tuple[float, ...] = ()
    baseline: str | None = None
    host: str = ""

    @property
    def healthy(self) -> bool:
        return self.health == "OK"

    @property
    def severity(self) -> int:
        """Sort key, worst highest: DANGER 4-5, ALERT 2-3, CHECK_SENSOR 1, NORMAL 0."""
        return LEVELS.index(self.level) * 2 + (0 if self.healthy else 1)


@dataclass(frozen=True)
class LatencyCounts:
    """A cumulative latency histogram (Prometheus semantics).

    Attributes:
        bounds_ms: upper bounds of the buckets (ms); counts: samples <= each bound, plus a last
            entry for +Inf (so ``len(counts) == len(bounds_ms) + 1``); sum_ms / count: totals.
    """

    bounds_ms: tuple[float, ...] = LATENCY_BUCKETS_MS
    counts: tuple[int, ...] = (0,) * (len(LATENCY_BUCKETS_MS) + 1)
    sum_ms: float = 0.0
    count: int = 0


@dataclass(frozen=True)
class Footer:
    """Engine and process figures.

    Attributes:
        windows_per_s: classified windows per second; avg_batch: mean batch size.
        queue_depth: windows waiting in the batcher; dropped: stale windows dropped in total;
        malformed: rejected source messages in total; windows_total: windows classified in total.
        cpu_percent: process CPU use (100 = one core); rss_mb: resident memory (MiB).
        gpu_percent / gpu_mem_mb: GPU use and memory held by this process; None where unknown.
    """

    windows_per_s: float = 0.0
    avg_batch: float = 0.0
    queue_depth: int = 0
    dropped: int = 0
    malformed: int = 0
    windows_total: int = 0
    cpu_percent: float | None = None
    rss_mb: float | None = None
    gpu_percent: float | None = None
    gpu_mem_mb: float | None = None


@dataclass(frozen=True)
class Counters:
    """Totals since the start, for Prometheus counters (``rate()`` works on them); they only grow,
    except across an engine-process restart (Prometheus treats a drop as a reset).

    Attributes:
        batches: batches the model ran; batch_sizes: {size: batches of that size};
            infer_s: seconds the model spent on them.
        dropped: {cause: windows}: "stale", "queue_overflow", "output_overflow", "engine_restart".
        stream_dropped: {(stream, cause): windows} for the per-stream causes ("stale", "queue_overflow").
        malformed: {reason: source messages rejected} (reasons of sources/wire.py).
        alarm_changes: {(stream, level): alarm changes into that level}.
        health: {stream: StreamHealth} (frames, samples, gaps, overflows, non-finite, clipped).
        cpu_s: CPU seconds of the monitor and its engine process; None where unknown.
    """

    batches: int = 0
    batch_sizes: Mapping[int, int] = field(default_factory=dict)
    infer_s: float = 0.0
    dropped: Mapping[str, int] = field(default_factory=dict)
    stream_dropped: Mapping[tuple[str, str], int] = field(default_factory=dict)
    malformed: Mapping[str, int] = field(default_factory=dict)
    alarm_changes: Mapping[tuple[str, str], int] = field(default_factory=dict)
    health: Mapping[str, Any] = field(default_factory=dict)
    cpu_s: float | None = None


@dataclass(frozen=True)
class Snapshot:
    """Everything on screen at one instant. ``rows`` are in stream-id order."""

    time: float
    header: Header = field(default_factory=Header)
    rows: tuple[StreamRow, ...] = ()
    footer: Footer = field(default_factory=Footer)
    events: tuple[Event, ...] = ()  # oldest first
    transcript: tuple[str, ...] = ()  # recent speech detections, oldest first
    latency: LatencyCounts = field(default_factory=LatencyCounts)
    alarm_changes: Mapping[str, int] = field(default_factory=dict)  # alarm events so far, by "to" level
    counters: Counters = field(default_factory=Counters)  # totals for the metrics endpoint

    def level_counts(self) -> dict[str, int]:
        """Streams per alarm level plus "CHECK_SENSOR" for unhealthy ones."""
        counts = dict.fromkeys((*LEVELS, "CHECK_SENSOR"), 0)
        for row in self.rows:
            counts[row.level] += 1
            if not row.healthy:
                counts["CHECK_SENSOR"] += 1
        return counts


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


class EventLog:
    """Thread-safe bounded log of recent events (alarm, health, detection) for the dashboard."""

    def __init__(self, maxlen: int = 200) -> None:
        self._events: deque[Event] = deque(maxlen=maxlen)
        self._changes: dict[str, int] = {}
        self._by_stream: dict[tuple[str, str], int] = {}
        self._lock = threading.Lock()

    def extend(self, events: Iterable[Event]) -> None:
        with self._lock:
            for event in events:
                self._events.append(event)
                if event.type == "alarm":
                    to = str(event.data.get("to", "?"))
                    self._changes[to] = self._changes.get(to, 0) + 1
                    key = (event.stream_id, to)
                    self._by_stream[key] = self._by_stream.get(key, 0) + 1

    def append(self, event: Event) -> None:
        self.extend((event,))

    def recent(self, n: int | None = None) -> tuple[Event, ...]:
        """The last ``n`` events (all kept when None), oldest first."""
        with self._lock:
            items = tuple(self._events)
        return items if n is None else items[-n:] if n > 0 else ()

    def alarm_changes(self) -> dict[str, int]:
        """Alarm events so far by the level they went to, e.g. {"ALERT": 3, "NORMAL": 2}."""
        with self._lock:
            return dict(self._changes)

    def alarm_changes_by_stream(self) -> dict[tuple[str, str], int]:
        """Alarm events so far by (stream, level they went to)."""
        with self._lock:
            return dict(self._by_stream)


class ResourceMeter:
    """CPU and memory of this process, GPU use where torch sees CUDA; ``read()`` gives Footer fields.

    CPU comes from ``/proc/self/stat`` (user + system ticks between two reads; 100 = one core),
    memory from ``/proc/self/statm``; processes in ``extra_pids`` (the engine process) are added.
    GPU figures come from ``torch.cuda`` only if torch is already imported (reading them must not
    import it) and CUDA is up; else None.
    """

    def __init__(self) -> None:
        self._last: tuple[float, float] | None = None
        self._tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
        self._page = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
        self.extra_pids: list[int] | Callable[[], list[int]] = []  # a callable follows restarts
        self.cpu_s: float | None = None  # CPU seconds of all the processes at the last read

    def _procs(self) -> list[str]:
        extra = self.extra_pids() if callable(self.extra_pids) else self.extra_pids
        return ["self", *(str(p) for p in extra)]

    def read(self) -> dict[str, float | None]:
        """{"cpu_percent", "rss_mb", "gpu_percent", "gpu_mem_mb"}; None where not available."""
        return {
            "cpu_percent": self._cpu(),
            "rss_mb": self._rss(),
            **_gpu(),
        }

    def _cpu(self) -> float | None:
        cpu_s = 0.0
        rest: list[str] = []
        for proc in self._procs():
            try:
                with open(f"/proc/{proc}/stat", encoding="ascii") as f:
                    # The command name may hold spaces; the fields after its ")" are fixed.
                    fields = f.read().rsplit(")", 1)[1].split()
                cpu_s += (int(fields[11]) + int(fields[12])) / self._tick
            except (OSError, IndexError, ValueError):
                if proc == "self":
                    return None
                continue
            if proc == "self":
                rest = fields
        self.cpu_s = cpu_s
        now = time.monotonic()
        last, self._last = self._last, (now, cpu_s)
        if last is None:
            # First read: the average since the process started (field 22, ticks after boot).
            try:
                with open("/proc/uptime", encoding="ascii") as f:
                    alive = float(f.read().split()[0]) - int(rest[19]) / self._tick
            except (OSError, IndexError, ValueError):
                return None
            return 100.0 * cpu_s / alive if alive > 0 else None
        if now <= last[0]:
            return None
        return 100.0 * (cpu_s - last[1]) / (now - last[0])

    def _rss(self) -> float | None:
        pages = 0
        for proc in self._procs():
            try:
                with open(f"/proc/{proc}/statm", encoding="ascii") as f:
                    pages += int(f.read().split()[1])
            except (OSError, IndexError, ValueError):
                if proc == "self":
                    return None
        return pages * self._page / 2**20


def _gpu() -> dict[str, float | None]:
    out: dict[str, float | None] = {"gpu_percent": None, "gpu_mem_mb": None}
    torch = sys.modules.get("torch")
    if torch is None:
        return out
    try:
        if not torch.cuda.is_available() or not torch.cuda.is_initialized():
            return out
        out["gpu_mem_mb"] = torch.cuda.memory_reserved() / 2**20
        out["gpu_percent"] = float(torch.cuda.utilization())  # needs pynvml; absent: stays None
    except Exception:  # noqa: BLE001 - a missing NVML must never reach the dashboard
        pass
    return out


def natural_key(stream_id: str) -> tuple[Any, ...]:
    """Sort "m2" before "m10"."""
    return tuple(int(part) if part.isdigit() else part for part in re.split(r"(\d+)", stream_id))


def build_rows(
    decisions: DecisionEngine | None,
    health: HealthMonitor | None,
    *,
    drops: Mapping[str, int] | None = None,
    streams: Iterable[str] | None = None,
    envelope: Mapping[str, tuple[str, float]] | None = None,
    baseline: Mapping[str, tuple[str, float, tuple[float, ...]]] | None = None,
) -> tuple[StreamRow, ...]:
    """One row per stream known to either part (or the given ``streams``), in natural id order.

    An unhealthy stream is never shown with a confident label: label "?", confidence 0, no top-3.
    ``drops`` adds stale-window drops per stream; frames lost to sequence gaps are added here.
    ``envelope``: {stream: (fault type, evidence dB)} from the envelope stage.
    ``baseline``: {stream: (state, latest anomaly, recent anomalies)} from the baseline stage.
    """
    if streams is None:
        known = set(decisions.streams if decisions is not None else ()) | set(
            health.streams if health else ()
        )
        ids = sorted(known, key=natural_key)
    else:
        ids = list(streams)
    dec = decisions.states(ids) if decisions is not None else {}
    hs = health.states(ids) if health is not None else {}
    drops = drops or {}
    envelope = envelope or {}
    base = baseline if baseline is not None else {}
    rows = []
    for sid in ids:
        d = dec.get(sid)
        h = hs.get(sid)
        healthy = h is None or h.ok
        show = d is not None and healthy and d.healthy
        rows.append(
            StreamRow(
                stream_id=sid,
                label=d.label if show else "?",
                level=d.level.name if d is not None else "NORMAL",
                held_s=d.held_s if d is not None else 0.0,
                confidence=d.confidence if show else 0.0,
                top3=d.top3 if show else (),
                noise_index=d.noise_index if d is not None else 0.0,
                levels=d.levels if d is not None else (),
                health=h.state if h is not None else "OK",
                health_reasons=h.reasons if h is not None else (),
                latency_p50_ms=d.latency_p50_ms if d is not None else math.nan,
                latency_p99_ms=d.latency_p99_ms if d is not None else math.nan,
                drops=int(drops.get(sid, 0)) + (h.gaps if h is not None else 0),
                latched=d.latched if d is not None else False,
                unacknowledged=d.unacknowledged if d is not None else False,
                windows=d.windows if d is not None else 0,
                envelope=envelope[sid][0] if sid in envelope and healthy else None,
                envelope_db=envelope[sid][1] if sid in envelope and healthy else math.nan,
                anomaly=(d.anomaly if d is not None else None) if healthy else None,
                anomalies=base[sid][2] if sid in base else (),
                baseline=(base[sid][0] if sid in base else "waiting") if baseline is not None else None,
            )
        )
    return tuple(rows)


def build_snapshot(
    *,
    header: Header,
    decisions: DecisionEngine | None = None,
    health: HealthMonitor | None = None,
    footer: Footer | None = None,
    events: Sequence[Event] | EventLog = (),
    transcript: Sequence[str] = (),
    drops: Mapping[str, int] | None = None,
    streams: Iterable[str] | None = None,
    now: float | None = None,
    counters: Counters | None = None,
    envelope: Mapping[str, tuple[str, float]] | None = None,
    baseline: Mapping[str, tuple[str, float, tuple[float, ...]]] | None = None,
) -> Snapshot:
    """Assemble a Snapshot from the live parts (safe to call from the dashboard thread).

    ``footer.windows_total`` is filled from ``decisions`` when left at 0; the latency histogram
    comes from ``decisions.latency``.
    """
    footer = footer if footer is not None else Footer()
    if decisions is not None and footer.windows_total == 0:
        from dataclasses import replace

        footer = replace(footer, windows_total=decisions.windows_total)
    log = events if isinstance(events, EventLog) else None
    return Snapshot(
        time=time.time() if now is None else now,
        header=header,
        rows=build_rows(decisions, health, drops=drops, streams=streams, envelope=envelope, baseline=baseline),
        footer=footer,
        events=log.recent() if log is not None else tuple(events),
        transcript=tuple(transcript),
        latency=decisions.latency.read() if decisions is not None else LatencyCounts(),
        alarm_changes=log.alarm_changes() if log is not None else {},
        counters=counters if counters is not None else Counters(),
    )
