"""View records: what the dashboard, the metrics endpoint and other sinks show, frozen at one instant.

A neutral module: the monitor builds these records (``drsn_stream.monitor.snapshot``), sinks read
them, and neither imports the other. Times: ``Snapshot.time`` is wall clock (s);
``StreamRow.held_s`` is how long the row's alarm level has been held (s); latencies are milliseconds.
"""

from __future__ import annotations

import math
import re
import threading
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from drsn_stream.types import Event

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
        levels: recent input levels (RMS about the mean, signal units), oldest first, for the sparkline.
        health: "OK" | "CHECK_SENSOR"; health_reasons: e.g. ("flat line",).
        latency_p50_ms / latency_p99_ms: capture-to-label latency (NaN before any window).
        drops: windows of this stream dropped (stale) plus frames lost to gaps.
        latched / unacknowledged: alarm held by latching / not yet acknowledged.
        windows: windows classified.
        envelope / envelope_db: the envelope fault type ("outer_race", "inner_race", "ball", "none")
            and its evidence (dB over noise); None / NaN where no envelope evidence is configured.
        envelope_held: the fault type held over the stream's last three blocks in a row (what the
            envelope's alarm asks); False where only the latest block named it.
        envelope_own: the type is ``none`` only because the stream's learned normal holds its
            strongest lines (they reach the threshold, not the margin over the machine's own).
        anomaly: the latest anomaly score against the stream's baseline (1.0 = its threshold);
            None without one. anomalies: recent scores, oldest first, for the sparkline.
        baseline: the baseline's state ("learning 40%", "fitting", "monitoring", "at rest",
            "starting", "stopping", "other speed", "no baseline"); None without a baseline stage.
        rpm: the shaft speed the stream's latest frame carried (the wire format's rpm); None where
            it carries none.
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
    envelope_held: bool = False
    envelope_own: bool = False
    anomaly: float | None = None
    anomalies: tuple[float, ...] = ()
    baseline: str | None = None
    host: str = ""
    rpm: float | None = None

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
        engine_quiet_s: seconds since the engine loop last turned (it turns at least every 0.1 s;
            it does not while a batch hangs); None before it runs.
        outputs: {(output, result): objects}: the webhook's posts ("sent", "failed") and any
            output's failures ("raised"), where there are such outputs.
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
    engine_quiet_s: float | None = None
    outputs: Mapping[tuple[str, str], int] = field(default_factory=dict)


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

    def forget(self, streams: Iterable[str]) -> None:
        """Streams no longer monitored leave the per-stream counts (``alarm_changes`` keeps them)."""
        gone = set(streams)
        with self._lock:
            for key in [k for k in self._by_stream if k[0] in gone]:
                del self._by_stream[key]


def natural_key(stream_id: str) -> tuple[Any, ...]:
    """Sort "m2" before "m10"."""
    return tuple(int(part) if part.isdigit() else part for part in re.split(r"(\d+)", stream_id))
