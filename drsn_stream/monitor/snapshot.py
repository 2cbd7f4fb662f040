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
            latency=stats,                        # EngineStats: the engine's one latency record
            footer=Footer(windows_per_s=..., avg_batch=..., queue_depth=..., dropped=...,
                          malformed=..., windows_total=decisions.windows_total, **usage.read()),
            events=events.recent(), transcript=("3", "1", "4"), drops={"sim/m0": 2},
        )

Times: ``Snapshot.time`` is wall clock (s); ``StreamRow.held_s`` is how long the row's alarm
level has been held (s); latencies are milliseconds.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING

from drsn_stream.types import Event
from drsn_stream.view import (
    Counters,
    EventLog,
    Footer,
    Header,
    LatencyCounts,
    Snapshot,
    StreamRow,
    natural_key,
)

if TYPE_CHECKING:
    from drsn_stream.engine.stats import EngineStats
    from drsn_stream.monitor.decision import DecisionEngine
    from drsn_stream.monitor.health import HealthMonitor


def build_rows(
    decisions: DecisionEngine | None,
    health: HealthMonitor | None,
    *,
    drops: Mapping[str, int] | None = None,
    streams: Iterable[str] | None = None,
    envelope: Mapping[str, tuple[str, float, bool, bool]] | None = None,
    baseline: Mapping[str, tuple[str, float, tuple[float, ...]]] | None = None,
    latency: EngineStats | None = None,
    speeds: Mapping[str, float] | None = None,
) -> tuple[StreamRow, ...]:
    """One row per stream known to either part (or the given ``streams``), in natural id order.

    An unhealthy stream is never shown with a confident label: label "?", confidence 0, no top-3.
    ``drops`` adds stale-window drops per stream; frames lost to sequence gaps are added here.
    ``envelope``: {stream: (fault type, evidence dB, held, own)} from the envelope stage.
    ``baseline``: {stream: (state, latest anomaly, recent anomalies)} from the baseline stage.
    ``latency``: the engine's latency record, for each stream's p50/p99.
    ``speeds``: {stream: the shaft speed (rpm) its latest frame carried}, for those that carry one.
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
    speeds = speeds or {}
    base = baseline if baseline is not None else {}
    lat = latency.stream_p50_p99(ids) if latency is not None else {}
    nan2 = (math.nan, math.nan)
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
                latency_p50_ms=lat.get(sid, nan2)[0],
                latency_p99_ms=lat.get(sid, nan2)[1],
                drops=int(drops.get(sid, 0)) + (h.gaps if h is not None else 0),
                latched=d.latched if d is not None else False,
                unacknowledged=d.unacknowledged if d is not None else False,
                windows=d.windows if d is not None else 0,
                envelope=envelope[sid][0] if sid in envelope and healthy else None,
                envelope_db=envelope[sid][1] if sid in envelope and healthy else math.nan,
                envelope_held=bool(envelope[sid][2]) if sid in envelope and healthy else False,
                envelope_own=bool(envelope[sid][3]) if sid in envelope and healthy else False,
                anomaly=(d.anomaly if d is not None else None) if healthy else None,
                anomalies=base[sid][2] if sid in base else (),
                baseline=(base[sid][0] if sid in base else "waiting") if baseline is not None else None,
                rpm=speeds.get(sid),
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
    envelope: Mapping[str, tuple[str, float, bool, bool]] | None = None,
    baseline: Mapping[str, tuple[str, float, tuple[float, ...]]] | None = None,
    latency: EngineStats | None = None,
    speeds: Mapping[str, float] | None = None,
) -> Snapshot:
    """Assemble a Snapshot from the live parts (safe to call from the dashboard thread).

    ``footer.windows_total`` is filled from ``decisions`` when left at 0; the rows' latency
    percentiles and the latency histogram both come from ``latency``, the engine's one record.
    """
    footer = footer if footer is not None else Footer()
    if decisions is not None and footer.windows_total == 0:
        from dataclasses import replace

        footer = replace(footer, windows_total=decisions.windows_total)
    log = events if isinstance(events, EventLog) else None
    return Snapshot(
        time=time.time() if now is None else now,
        header=header,
        rows=build_rows(decisions, health, drops=drops, streams=streams, envelope=envelope, baseline=baseline,
                        latency=latency, speeds=speeds),
        footer=footer,
        events=log.recent() if log is not None else tuple(events),
        transcript=tuple(transcript),
        latency=latency.histogram.read() if latency is not None else LatencyCounts(),
        alarm_changes=log.alarm_changes() if log is not None else {},
        counters=counters if counters is not None else Counters(),
    )
