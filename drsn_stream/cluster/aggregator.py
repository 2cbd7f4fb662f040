"""Fan-in: one view of the whole cluster from every host's results and 1 Hz summaries.

``Aggregator`` is plain Python (the Ray actor in ``ray_app`` wraps it):

- ``push(host, objects)``: results and events as the hosts send them. Objects with an ``id``
  (alarm, health, gap events) are passed on once: a copy re-sent after a failover is dropped
  and counted. Everything else goes to the sinks as it comes (one JSONL file, one ZeroMQ feed).
- ``summary(dict)``: a host's snapshot of its own streams, replaced every second.
- ``snapshot()``: one ``Snapshot`` for the one dashboard, rows from every host with a host
  column, events from the de-duplicated log, figures summed.
- ``ClusterCollector``: the Prometheus series of every host's snapshot, each with a ``host`` label.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.samples import Sample

from drsn_stream.sinks import Outputs
from drsn_stream.sinks.metrics import SnapshotCollector, snapshot_metrics
from drsn_stream.types import Event
from drsn_stream.view import Counters, EventLog, Footer, Header, LatencyCounts, Snapshot, natural_key

SEEN_IDS_KEEP = 1_000_000  # event ids remembered for de-duplication (alarm changes are rare)
HANDOVERS_KEEP = 65_536  # streams whose hosts are remembered (the first seen leave first: ids come and go)
HANDOVER_CHANGES_KEEP = 16  # changes of host remembered per stream
EVENT_TYPES = ("alarm", "health", "gap", "note", "detection")


class Aggregator:
    """Merges what the hosts send.

    Args:
        sinks: objects with ``write(dict)`` and ``close()`` (``JsonlSink``, ``ZmqResultSink``,
            ``WebhookSink``), fanned out by ``sinks.Outputs`` as on one machine: one that raises (a
            full disk, a webhook down) is counted (``outputs.failures``) and said once per message
            as a note, and the others go on.
        source: what the header names as the source (the gateway address).
    """

    def __init__(self, *, sinks: list[Any] | None = None, source: str = "") -> None:
        self.outputs = Outputs(sinks or [], on_error=self._output_failed)
        self.source = source
        self._lock = threading.Lock()
        self._summaries: dict[str, dict[str, Any]] = {}
        self._seen: OrderedDict[str, None] = OrderedDict()
        self.events = EventLog(maxlen=200)
        self.duplicates = 0
        self.results = 0
        self.failovers = 0
        # stream -> [(host, arrival of its first result from that host)], one entry per change of
        # host; bounded (HANDOVERS_KEEP streams, HANDOVER_CHANGES_KEEP changes each)
        self.handovers: dict[str, list[tuple[str, float]]] = {}
        self._notes: set[str] = set()

    def _output_failed(self, line: str) -> None:
        """A sink's failure, said once per line as a note on the view (not written to the sinks)."""
        if line not in self._notes:
            self._notes.add(line)
            self.events.append(Event("note", "*", time.time(), {"message": line}))

    # ------------------------------------------------------------------ input
    def push(self, host: str, objects: list[dict[str, Any]]) -> None:
        now = time.time()
        with self._lock:
            for obj in objects:
                oid = obj.get("id")
                if isinstance(oid, str):
                    if oid in self._seen:
                        self.duplicates += 1
                        continue
                    self._seen[oid] = None
                    if len(self._seen) > SEEN_IDS_KEEP:
                        self._seen.popitem(last=False)
                kind = obj.get("type")
                sid = str(obj.get("stream", ""))
                if kind == "prediction":
                    self.results += 1
                    seen = self.handovers.get(sid)
                    if seen is None:
                        seen = self.handovers[sid] = []
                        if len(self.handovers) > HANDOVERS_KEEP:
                            del self.handovers[next(iter(self.handovers))]
                    if not seen or seen[-1][0] != host:
                        seen.append((host, now))
                        del seen[:-HANDOVER_CHANGES_KEEP]
                elif kind in EVENT_TYPES:
                    if kind == "note" and sid == "*":  # said once per host; shown once for the cluster
                        msg = str(obj.get("message", ""))
                        if msg in self._notes:
                            continue
                        self._notes.add(msg)
                    data = {k: v for k, v in obj.items() if k not in ("type", "stream", "time")}
                    self.events.append(Event(str(kind), sid, float(obj.get("time", now)), data))
                self.outputs.write(obj)

    def summary(self, summary: dict[str, Any]) -> None:
        with self._lock:
            self._summaries[str(summary["host"])] = summary

    def host_down(self, host: str, moved: Mapping[str, str]) -> None:
        """A host is gone: its rows leave the view; a note says where its streams went."""
        with self._lock:
            self._summaries.pop(host, None)
            self.failovers += 1
            targets = Counter(moved.values())
            where = ", ".join(f"{n} to {h}" for h, n in sorted(targets.items())) or "none"
            ev = Event("note", "*", time.time(), {"message": f"host {host} lost; its {len(moved)} streams moved: {where}",
                                                  "host": host})
            self.events.append(ev)
            self.outputs.write(ev.to_json())

    def note(self, message: str) -> None:
        """A note for the whole cluster (the coordinator's), shown and written once per message."""
        with self._lock:
            if message in self._notes:
                return
            self._notes.add(message)
            ev = Event("note", "*", time.time(), {"message": message})
            self.events.append(ev)
            self.outputs.write(ev.to_json())

    def close(self) -> None:
        self.outputs.close()

    # ------------------------------------------------------------------ views
    def host_snapshots(self) -> dict[str, Snapshot]:
        with self._lock:
            return {h: s["snapshot"] for h, s in sorted(self._summaries.items())}

    def summaries(self) -> dict[str, dict[str, Any]]:
        with self._lock:
            return {h: {k: v for k, v in s.items() if k != "snapshot"} for h, s in self._summaries.items()}

    def snapshot(self) -> Snapshot:
        """The whole cluster as one snapshot (what the one dashboard shows)."""
        with self._lock:
            summaries = sorted(self._summaries.values(), key=lambda s: s["time"])
            events = self.events.recent()
        rows: dict[str, Any] = {}
        for s in summaries:  # the newest summary wins a stream that just moved
            for r in s["snapshot"].rows:
                rows[r.stream_id] = dataclasses.replace(r, host=s["host"])
        snaps = [s["snapshot"] for s in summaries]
        first = snaps[0].header if snaps else Header()
        hosts = [s["host"] for s in summaries]
        header = dataclasses.replace(
            first,
            sources=(self.source,) if self.source else first.sources,
            device=f"{len(hosts)} host{'s' if len(hosts) != 1 else ''}: " + ", ".join(
                f"{h} ({s.header.device})" for h, s in zip(hosts, snaps)),
            ready=bool(snaps) and all(s.header.ready for s in snaps),
            status=next((s.header.status for s in snaps if s.header.status), ""),
        )
        return Snapshot(
            time=time.time(),
            header=header,
            rows=tuple(sorted(rows.values(), key=lambda r: natural_key(r.stream_id))),
            footer=_sum_footers([s.footer for s in snaps]),
            events=events,
            latency=_sum_latency([s.latency for s in snaps]),
            alarm_changes=dict(sum((Counter(s.alarm_changes) for s in snaps), Counter())),
            counters=_sum_counters([s.counters for s in snaps]),
        )


def _sum_footers(footers: list[Footer]) -> Footer:
    if not footers:
        return Footer()

    def total(name: str) -> Any:
        values = [getattr(f, name) for f in footers if getattr(f, name) is not None]
        return sum(values) if values else None

    return Footer(
        windows_per_s=total("windows_per_s"),
        avg_batch=sum(f.avg_batch for f in footers) / len(footers),
        queue_depth=total("queue_depth"),
        dropped=total("dropped"),
        malformed=total("malformed"),
        windows_total=total("windows_total"),
        cpu_percent=total("cpu_percent"),
        rss_mb=total("rss_mb"),
        gpu_percent=total("gpu_percent"),
        gpu_mem_mb=total("gpu_mem_mb"),
    )


def _sum_latency(parts: list[LatencyCounts]) -> LatencyCounts:
    if not parts:
        return LatencyCounts()
    counts = [sum(c) for c in zip(*(p.counts for p in parts))]
    return LatencyCounts(bounds_ms=parts[0].bounds_ms, counts=tuple(counts),
                         sum_ms=sum(p.sum_ms for p in parts), count=sum(p.count for p in parts))


def _sum_counters(parts: list[Counters]) -> Counters:
    def merged(name: str) -> dict[Any, Any]:
        out: Counter[Any] = Counter()
        for p in parts:
            out.update(dict(getattr(p, name)))
        return dict(out)

    health: dict[str, Any] = {}
    for p in parts:
        health.update(p.health)
    cpu = [p.cpu_s for p in parts if p.cpu_s is not None]
    return Counters(
        batches=sum(p.batches for p in parts),
        batch_sizes=merged("batch_sizes"),
        infer_s=sum(p.infer_s for p in parts),
        dropped=merged("dropped"),
        stream_dropped=merged("stream_dropped"),
        malformed=merged("malformed"),
        alarm_changes=merged("alarm_changes"),
        health=health,
        cpu_s=sum(cpu) if cpu else None,
    )


def labelled_families(snapshots: Mapping[str, Snapshot]) -> Iterator[Metric]:
    """Every host's metric families merged by name, each sample labelled with its ``host``."""
    merged: dict[str, Metric] = {}
    for host, snap in snapshots.items():
        for fam in snapshot_metrics(snap):
            out = merged.get(fam.name)
            if out is None:
                out = merged[fam.name] = Metric(fam.name, fam.documentation, fam.type, fam.unit)
            for s in fam.samples:
                out.samples.append(Sample(s.name, {**s.labels, "host": host}, s.value, s.timestamp, s.exemplar))
    yield from merged.values()


class ClusterCollector(SnapshotCollector):
    """The cluster's Prometheus collector: per-host series plus the aggregator's own counters."""

    def __init__(self, aggregator_fn: Callable[[], tuple[dict[str, Snapshot], dict[str, float]]]) -> None:
        super().__init__(lambda: Snapshot(time=0.0))
        self.aggregator_fn = aggregator_fn

    def families(self) -> list[Metric]:
        snaps, figures = self.aggregator_fn()
        families = list(labelled_families(snaps))
        families.append(GaugeMetricFamily("drsn_cluster_hosts", "Hosts sending summaries.", value=len(snaps)))
        for name, doc in (("drsn_cluster_duplicate_events", "Events received again after a failover, dropped."),
                          ("drsn_cluster_failovers", "Hosts lost and their streams moved.")):
            families.append(CounterMetricFamily(name, doc, value=float(figures.get(name, 0))))
        return families


__all__ = ["Aggregator", "ClusterCollector", "labelled_families"]
