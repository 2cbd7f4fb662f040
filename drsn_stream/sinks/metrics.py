"""Prometheus metrics (``--metrics-address HOST:PORT``), served by prometheus_client.

Integration::

    metrics = MetricsServer(snapshot_fn, address="127.0.0.1:9464")   # loopback by default
    metrics.start()          # daemon thread; metrics.port is the bound port (port 0 picks one)
    ...
    metrics.stop()

``GET /metrics`` answers in the Prometheus text format (the monitor's server also answers the
probes ``/healthz`` and ``/readyz``: ``MetricsServer(health=...)``); every scrape calls
``snapshot_fn()`` once, in a server thread, through ``SnapshotCollector`` on a registry of its
own (never the global one, which any imported library may fill). ``format_metrics(snapshot)`` is
the pure part.

Names follow the Prometheus conventions: base units (``_seconds``, ``_bytes``, ratios 0-1),
counters (``_total``) for everything ``rate()`` should compute, labelled series present at 0 from
the first scrape, latency and batch size as histograms. ``docs/grafana/drsn-stream.json`` queries
them. A per-stream gauge is one line in ``STREAM_GAUGES``.

The HTTP server is prometheus_client's WSGI server with two limits of ours: an idle or slow
connection is closed after ``IDLE_TIMEOUT_S``, and at most ``MAX_CONNECTIONS`` are served at once
(more are closed at once), so idle clients cannot pile up threads.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterable, Iterator
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer

from prometheus_client import CollectorRegistry, ProcessCollector, generate_latest, make_wsgi_app
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from drsn_stream import __version__
from drsn_stream.dsp.envelope import FAULT_TYPES
from drsn_stream.errors import ConfigError
from drsn_stream.models.ood import UNKNOWN
from drsn_stream.sources.wire import REASONS
from drsn_stream.view import LEVELS, Snapshot, StreamRow

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 9464
IDLE_TIMEOUT_S = 10.0  # Prometheus sends its request at once; a connection silent this long is not a scraper
MAX_CONNECTIONS = 32  # served at once; scrapes are short and few, so this only bounds abuse

# Per-stream gauges: (name, help, value of the stream's dashboard row). One line adds one.
STREAM_GAUGES: tuple[tuple[str, str, Callable[[StreamRow], float]], ...] = (
    ("drsn_stream_alarm_level", "Alarm level: 0 NORMAL, 1 ALERT, 2 DANGER.", lambda r: LEVELS.index(r.level)),
    ("drsn_stream_confidence_ratio", "Confidence of the smoothed label, 0-1 (0 while the sensor needs "
     "checking).", lambda r: r.confidence),
    ("drsn_stream_noise_index_ratio", "Averaged DRSN noise index, 0-1.", lambda r: r.noise_index),
    ("drsn_stream_sensor_ok", "1 while the stream's sensor is healthy, 0 while it needs checking.",
     lambda r: int(r.healthy)),
    ("drsn_stream_alarm_held_seconds", "Time the stream has held its alarm level.", lambda r: r.held_s),
    ("drsn_stream_alarm_unacknowledged", "1 while the stream's alarm waits for acknowledgement.",
     lambda r: int(r.unacknowledged)),
)

# Per-stream counters from the sensor-health totals: (name without _total, help, attribute).
STREAM_HEALTH_COUNTERS: tuple[tuple[str, str, str], ...] = (
    ("drsn_stream_frames", "Frames received.", "frames"),
    ("drsn_stream_samples", "Samples received.", "samples"),
    ("drsn_stream_lost_frames", "Frames lost to sequence gaps.", "gaps"),
    ("drsn_stream_lost_samples", "Samples the source lost to input overflows.", "overflows"),
    ("drsn_stream_nonfinite_samples", "NaN or infinite samples received.", "non_finite"),
    ("drsn_stream_clipped_samples", "Samples at the clipping level.", "clipped"),
)

DROP_CAUSES = ("stale", "queue_overflow", "output_overflow", "engine_restart")
STREAM_DROP_CAUSES = ("stale", "queue_overflow")
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


class SnapshotCollector:
    """A prometheus_client collector: every ``collect()`` reads one snapshot and yields its metrics.

    A failing ``snapshot_fn`` never fails the scrape: it is counted in
    ``drsn_metrics_snapshot_errors_total`` and only that counter is exposed for that scrape.
    """

    def __init__(self, snapshot_fn: Callable[[], Snapshot]) -> None:
        self.snapshot_fn = snapshot_fn
        self.errors = 0
        self._lock = threading.Lock()

    def describe(self) -> list[Metric]:
        return []  # no snapshot at registration: the names come with the first scrape

    def families(self) -> list[Metric]:
        """This scrape's metric families (a subclass with another source overrides this only)."""
        return list(snapshot_metrics(self.snapshot_fn()))

    def collect(self) -> Iterator[Metric]:
        try:
            families = self.families()
        except Exception:  # noqa: BLE001 - a scrape must never take the monitor down
            with self._lock:
                self.errors += 1
            families = []
        err = CounterMetricFamily("drsn_metrics_snapshot_errors", "Scrapes whose snapshot failed.")
        err.add_metric([], self.errors)
        yield from families
        yield err


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, value=float(value))


def _counter(name: str, doc: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(name, doc, value=float(value))


def _cumulative(bounds: Iterable[float], counts: dict[int, int]) -> list[tuple[str, float]]:
    buckets, total = [], 0
    sizes = sorted(counts)
    i = 0
    for b in bounds:
        while i < len(sizes) and sizes[i] <= b:
            total += counts[sizes[i]]
            i += 1
        buckets.append((repr(float(b)), float(total)))
    buckets.append(("+Inf", float(sum(counts.values()))))
    return buckets


def snapshot_metrics(snap: Snapshot) -> Iterator[Metric]:
    """The metric families of one snapshot (what ``/metrics`` shows, less the process ones)."""
    h, f, c = snap.header, snap.footer, snap.counters
    ids = [r.stream_id for r in snap.rows]

    info = GaugeMetricFamily("drsn_model_info", "The model being run (always 1).",
                             labels=["model", "device", "version"])
    info.add_metric([h.model, h.device, __version__], 1.0)
    yield info
    yield _gauge("drsn_ready", "1 once the model is warmed up.", int(h.ready))
    yield _gauge("drsn_streams", "Streams known to the monitor.", len(snap.rows))
    yield _gauge("drsn_queue_windows", "Windows waiting in the batcher.", f.queue_depth)

    yield _counter("drsn_windows", "Windows classified.", f.windows_total)
    yield _counter("drsn_batches", "Batches the model ran.", c.batches)
    yield _counter("drsn_inference_seconds", "Time the model spent running batches.", c.infer_s)
    batch = HistogramMetricFamily("drsn_batch_size_windows", "Windows per batch the model ran.")
    batch.add_metric([], _cumulative(BATCH_BUCKETS, dict(c.batch_sizes)),
                     sum_value=float(sum(k * n for k, n in c.batch_sizes.items())))
    yield batch

    lat = snap.latency
    latency = HistogramMetricFamily("drsn_latency_seconds", "Capture-to-label latency of every window.")
    buckets = [(repr(b / 1000.0), float(n)) for b, n in zip(lat.bounds_ms, lat.counts)]
    latency.add_metric([], [*buckets, ("+Inf", float(lat.counts[-1]))], sum_value=lat.sum_ms / 1000.0)
    yield latency

    dropped = CounterMetricFamily("drsn_dropped_windows", "Windows dropped before their result was used, "
                                  "by cause.", labels=["cause"])
    for cause in (*DROP_CAUSES, *sorted(set(c.dropped) - set(DROP_CAUSES))):
        dropped.add_metric([cause], float(c.dropped.get(cause, 0)))
    yield dropped
    sdrop = CounterMetricFamily("drsn_stream_dropped_windows", "Windows of the stream dropped, by cause.",
                                labels=["stream", "cause"])
    for sid in ids:
        for cause in STREAM_DROP_CAUSES:
            sdrop.add_metric([sid, cause], float(c.stream_dropped.get((sid, cause), 0)))
    yield sdrop
    malformed = CounterMetricFamily("drsn_malformed_messages", "Source messages rejected, by reason.",
                                    labels=["reason"])
    for reason in sorted(set(REASONS) | set(c.malformed)):
        malformed.add_metric([reason], float(c.malformed.get(reason, 0)))
    yield malformed

    counts = snap.level_counts()
    alarm = GaugeMetricFamily("drsn_alarm_streams", "Streams at each alarm level.", labels=["level"])
    for level in LEVELS:
        alarm.add_metric([level], float(counts[level]))
    yield alarm
    yield _gauge("drsn_check_sensor_streams", "Streams whose sensor needs checking.", counts["CHECK_SENSOR"])
    changes = CounterMetricFamily("drsn_alarm_changes", "Alarm level changes of the stream, by the level "
                                  "entered.", labels=["stream", "to"])
    keys = {(sid, level) for sid in ids for level in LEVELS} | set(c.alarm_changes)
    for sid, to in sorted(keys):
        changes.add_metric([sid, to], float(c.alarm_changes.get((sid, to), 0)))
    yield changes

    for name, doc, value in STREAM_GAUGES:
        g = GaugeMetricFamily(name, doc, labels=["stream"])
        for r in snap.rows:
            g.add_metric([r.stream_id], float(value(r)))
        yield g
    label = GaugeMetricFamily("drsn_stream_label", "1 for the stream's smoothed label, 0 for the others "
                              "(all 0 while the sensor needs checking).", labels=["stream", "label"])
    for r in snap.rows:
        for lb in (*h.labels, *((UNKNOWN,) if h.refuses and UNKNOWN not in h.labels else ())):
            label.add_metric([r.stream_id, lb], float(r.label == lb))
    yield label
    anomaly = GaugeMetricFamily("drsn_stream_anomaly_ratio", "Latest anomaly score against the stream's learned "
                                "baseline (1 = its alarm threshold); absent without a baseline.", labels=["stream"])
    scored = [r for r in snap.rows if r.anomaly is not None]
    for r in scored:
        anomaly.add_metric([r.stream_id], float(r.anomaly))
    if scored:
        yield anomaly
    turning = [r for r in snap.rows if r.rpm is not None]
    if turning:
        rpm = GaugeMetricFamily("drsn_stream_shaft_rpm", "Shaft speed the stream's latest frame carried (the wire "
                                "format's rpm); absent where its frames carry none.", labels=["stream"])
        for r in turning:
            rpm.add_metric([r.stream_id], float(r.rpm))
        yield rpm
    enveloped = [r for r in snap.rows if r.envelope is not None]
    if enveloped:
        evidence = GaugeMetricFamily("drsn_stream_envelope_evidence_decibels", "Envelope evidence of the bearing-fault "
                                     "family the stream's latest block named (its strongest where none), dB over white "
                                     "noise; absent without a bearing configured.", labels=["stream"])
        fault = GaugeMetricFamily("drsn_stream_envelope_fault", "1 for the fault type the envelope named on the "
                                  "stream's latest block (none: no fault lines), 0 for the others.",
                                  labels=["stream", "type"])
        held = GaugeMetricFamily("drsn_stream_envelope_held", "1 where the envelope's fault type held over the "
                                 "stream's last three blocks in a row (what its alarm asks; the dashboard shows a type "
                                 "not held as a maybe), else 0.", labels=["stream"])
        for r in enveloped:
            evidence.add_metric([r.stream_id], float(r.envelope_db))
            for kind in FAULT_TYPES:
                fault.add_metric([r.stream_id, kind], float(r.envelope == kind))
            held.add_metric([r.stream_id], float(r.envelope_held))
        yield evidence
        yield fault
        yield held
    windows = CounterMetricFamily("drsn_stream_windows", "Windows of the stream classified.", labels=["stream"])
    for r in snap.rows:
        windows.add_metric([r.stream_id], float(r.windows))
    yield windows
    for name, doc, attr in STREAM_HEALTH_COUNTERS:
        m = CounterMetricFamily(name, doc, labels=["stream"])
        for sid in ids:
            st = c.health.get(sid)
            m.add_metric([sid], float(getattr(st, attr, 0) if st is not None else 0))
        yield m

    if c.outputs:
        outputs = CounterMetricFamily("drsn_output_objects", "Objects an output handled, by output and result "
                                      "(webhook: sent, failed; any output: raised).", labels=["output", "result"])
        for (name, result), n in sorted(c.outputs.items()):
            outputs.add_metric([name, result], float(n))
        yield outputs

    # Known only where measurable: a missing series is honest, a 0 would not be.
    if c.engine_quiet_s is not None:
        yield _gauge("drsn_engine_quiet_seconds", "Seconds since the engine loop last turned (it turns at least "
                     "every 0.1 s; a batch that hangs stops it): alert on this, not on a silent plant.",
                     c.engine_quiet_s)
    if c.cpu_s is not None:
        yield _counter("drsn_cpu_seconds", "CPU time of the monitor and its engine process.", c.cpu_s)
    if f.rss_mb is not None:
        yield _gauge("drsn_resident_memory_bytes", "Resident memory of the monitor and its engine process.",
                     f.rss_mb * 2**20)
    if f.gpu_percent is not None:
        yield _gauge("drsn_gpu_utilization_ratio", "GPU utilization, 0-1.", f.gpu_percent / 100.0)
    if f.gpu_mem_mb is not None:
        yield _gauge("drsn_gpu_memory_reserved_bytes", "GPU memory reserved by the monitor.", f.gpu_mem_mb * 2**20)


def make_registry(collector: SnapshotCollector, *, process: bool = True) -> CollectorRegistry:
    """A registry of its own with the snapshot collector (and the standard ``process_*`` metrics)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)  # type: ignore[arg-type]
    if process:
        ProcessCollector(registry=registry)
    return registry


def format_metrics(snapshot: Snapshot) -> str:
    """The Prometheus exposition text (format 0.0.4) of one snapshot, without process metrics."""
    return generate_latest(make_registry(SnapshotCollector(lambda: snapshot), process=False)).decode("utf-8")


def parse_address(text: str) -> tuple[str, int]:
    """``HOST:PORT``, ``[IPV6]:PORT``, ``:PORT`` or ``PORT`` -> (host, port); loopback by default."""
    s = str(text).strip()
    host, sep, port_s = s.rpartition(":")
    if not sep:
        host, port_s = "", s
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise ConfigError(f"metrics address {text!r}: write an IPv6 host in brackets, e.g. [::1]:9464")
    try:
        port = int(port_s)
    except ValueError:
        port = -1
    if not 0 <= port <= 65535:
        raise ConfigError(f"metrics address {text!r}: expected HOST:PORT with a port 0-65535, e.g. 127.0.0.1:9464")
    return host or DEFAULT_HOST, port


class _Handler(WSGIRequestHandler):
    timeout = IDLE_TIMEOUT_S  # socketserver puts it on the socket: reads and writes give up after it

    def handle(self) -> None:
        try:
            super().handle()
        except OSError:  # timed out (idle or slow client) or reset: the connection just ends
            self.close_connection = True

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass  # workers never print; the dashboard owns the terminal


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True
    max_connections = MAX_CONNECTIONS
    request_queue_size = 64  # listen backlog: a burst of connections is accepted (and refused) quickly

    def __init__(self, address: tuple[str, int], handler: type[WSGIRequestHandler]) -> None:
        self._slots = threading.BoundedSemaphore(self.max_connections)
        self.refused = 0  # connections closed unserved because max_connections were busy
        self.errors = 0
        super().__init__(address, handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            self.refused += 1
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()

    def handle_error(self, request: Any, client_address: Any) -> None:
        self.errors += 1  # socketserver would print a traceback over the dashboard


def _routes(app: Callable[..., Any], health: Callable[[], str | None] | None) -> Callable[..., Any]:
    """``/metrics`` (and ``/``), and with ``health`` the probes: ``/healthz`` (liveness: 503 only
    once the monitor has started and stopped working) and ``/readyz`` (200 only while it works).
    ``health()`` is None while starting, "" while working, else why not."""
    def text() -> list[tuple[str, str]]:  # a new list per response: wsgiref adds Content-Length to it
        return [("Content-Type", "text/plain; charset=utf-8")]

    def wsgi(environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        path = environ.get("PATH_INFO", "/")
        if path in ("/metrics", "/"):
            return app(environ, start_response)
        if health is not None and path in ("/healthz", "/readyz"):
            try:
                why = health()
            except Exception as exc:  # noqa: BLE001 - a probe that cannot judge says so
                why = f"cannot tell: {type(exc).__name__}"
            if why == "" or (why is None and path == "/healthz"):
                start_response("200 OK", text())
                return [b"ok\n" if why == "" else b"starting\n"]
            start_response("503 Service Unavailable", text())
            return [f"{why or 'starting'}\n".encode()]
        start_response("404 Not Found", text())
        return [b"not found: scrape /metrics" + (b" (probes: /healthz, /readyz)" if health is not None else b"") + b"\n"]

    return wsgi


class MetricsServer:
    """Serves the metrics of ``snapshot_fn()`` at ``http://HOST:PORT/metrics``.

    Args:
        snapshot_fn: returns the current Snapshot (thread-safe; called once per scrape).
        address: "HOST:PORT" (see ``parse_address``); overrides ``host`` and ``port``.
        port: TCP port; 0 picks a free one (read ``port`` after ``start``).
        host: address to bind; loopback by default, "0.0.0.0" to let other hosts scrape.
        max_connections / idle_timeout_s: the server's limits (see the module docstring).
        collector: serves this collector instead of ``SnapshotCollector(snapshot_fn)`` (the
            cluster's, which labels every series with its host).
        health: with it, ``/healthz`` and ``/readyz`` answer for container probes (``_routes``):
            returns None while the monitor starts, "" while it works, else why it does not.
    """

    def __init__(
        self,
        snapshot_fn: Callable[[], Snapshot],
        *,
        address: str | None = None,
        port: int = DEFAULT_PORT,
        host: str = DEFAULT_HOST,
        max_connections: int = MAX_CONNECTIONS,
        idle_timeout_s: float = IDLE_TIMEOUT_S,
        collector: SnapshotCollector | None = None,
        health: Callable[[], str | None] | None = None,
    ) -> None:
        self.health = health
        self.host, self.port = parse_address(address) if address is not None else (host, int(port))
        self.collector = collector if collector is not None else SnapshotCollector(snapshot_fn)
        self.registry = make_registry(self.collector)
        self.max_connections = int(max_connections)
        self.idle_timeout_s = float(idle_timeout_s)
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def errors(self) -> int:
        """Scrapes whose snapshot failed."""
        return self.collector.errors

    @property
    def refused(self) -> int:
        """Connections closed unserved because ``max_connections`` were busy."""
        return self._server.refused if self._server is not None else 0

    def start(self) -> MetricsServer:
        try:
            family = socket.getaddrinfo(self.host, self.port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0][0]
            attrs = {"address_family": family, "max_connections": self.max_connections}
            handler = type("Handler", (_Handler,), {"timeout": self.idle_timeout_s})
            server = type("Server", (_Server,), attrs)((self.host, self.port), handler)
        except OSError as exc:
            raise ConfigError(
                f"cannot serve metrics on {self.host}:{self.port} ({exc.strerror or exc}); choose another "
                "--metrics-address HOST:PORT or stop what uses this one"
            ) from exc
        server.set_app(_routes(make_wsgi_app(self.registry), self.health))
        self._server = server
        self.port = int(server.server_address[1])
        self._thread = threading.Thread(target=server.serve_forever, name="drsn-metrics", daemon=True)
        self._thread.start()
        return self

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/metrics"

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(2.0)
            self._thread = None

    def __enter__(self) -> MetricsServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
