"""Prometheus text endpoint (``--metrics-port PORT``), read from a snapshot callable.

Integration::

    metrics = MetricsServer(snapshot_fn, port=args.metrics_port)   # host 127.0.0.1 by default
    metrics.start()          # daemon thread; metrics.port is the bound port (port=0 picks one)
    ...
    metrics.stop()

``GET /metrics`` answers in the Prometheus text format (version 0.0.4); every scrape calls
``snapshot_fn()`` once, in the server's thread. ``format_metrics(snapshot)`` is the pure part.
Latencies are exported in seconds, as Prometheus names them.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from drsn_stream.errors import ConfigError
from drsn_stream.monitor.snapshot import LEVELS, Snapshot

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _value(x: float | int) -> str:
    if isinstance(x, float):
        if math.isnan(x):
            return "NaN"
        if math.isinf(x):
            return "+Inf" if x > 0 else "-Inf"
        return repr(x)
    return str(x)


def _metric(name: str, kind: str, help_text: str, samples: Iterable[tuple[str, float | int]]) -> list[str]:
    lines = [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"]
    lines += [f"{name}{labels} {_value(v)}" for labels, v in samples]
    return lines


def format_metrics(snapshot: Snapshot) -> str:
    """The Prometheus exposition text for one snapshot."""
    f = snapshot.footer
    counts = snapshot.level_counts()
    out: list[str] = []
    out += _metric(
        "drsn_ready", "gauge", "1 once the model is warmed up.", [("", int(snapshot.header.ready))]
    )
    out += _metric("drsn_streams", "gauge", "Streams known to the monitor.", [("", len(snapshot.rows))])
    out += _metric("drsn_windows_total", "counter", "Windows classified.", [("", f.windows_total)])
    out += _metric(
        "drsn_windows_per_second", "gauge", "Windows classified per second.", [("", float(f.windows_per_s))]
    )
    out += _metric("drsn_batch_size_average", "gauge", "Mean micro-batch size.", [("", float(f.avg_batch))])
    out += _metric("drsn_queue_depth", "gauge", "Windows waiting in the batcher.", [("", f.queue_depth)])
    out += _metric("drsn_dropped_windows_total", "counter", "Stale windows dropped.", [("", f.dropped)])
    out += _metric(
        "drsn_malformed_messages_total", "counter", "Source messages rejected.", [("", f.malformed)]
    )
    lat = snapshot.latency
    buckets = [(f'{{le="{b / 1000.0!r}"}}', c) for b, c in zip(lat.bounds_ms, lat.counts, strict=False)]
    buckets.append(('{le="+Inf"}', lat.counts[-1]))
    out += [
        "# HELP drsn_latency_seconds Capture-to-label latency of every window.",
        "# TYPE drsn_latency_seconds histogram",
    ]
    out += [f"drsn_latency_seconds_bucket{labels} {v}" for labels, v in buckets]
    out += [
        f"drsn_latency_seconds_sum {_value(lat.sum_ms / 1000.0)}",
        f"drsn_latency_seconds_count {lat.count}",
    ]
    out += _metric(
        "drsn_alarm_streams",
        "gauge",
        "Streams per alarm state.",
        [(f'{{state="{name}"}}', counts[name]) for name in LEVELS],
    )
    out += _metric(
        "drsn_alarm_changes_total",
        "counter",
        "Alarm state changes, by the state entered.",
        [(f'{{to="{_escape(to)}"}}', n) for to, n in sorted(snapshot.alarm_changes.items())],
    )
    out += _metric(
        "drsn_sensor_check_streams",
        "gauge",
        "Streams whose sensor needs checking.",
        [("", counts["CHECK_SENSOR"])],
    )
    out += _metric(
        "drsn_stream_alarm_level",
        "gauge",
        "Alarm level per stream (0 NORMAL, 1 ALERT, 2 DANGER).",
        [(f'{{stream="{_escape(r.stream_id)}"}}', LEVELS.index(r.level)) for r in snapshot.rows],
    )
    out += _metric(
        "drsn_stream_sensor_ok",
        "gauge",
        "1 while the stream's sensor is healthy.",
        [(f'{{stream="{_escape(r.stream_id)}"}}', int(r.healthy)) for r in snapshot.rows],
    )
    out += _metric(
        "drsn_stream_drops_total",
        "counter",
        "Windows dropped and frames lost, per stream.",
        [(f'{{stream="{_escape(r.stream_id)}"}}', r.drops) for r in snapshot.rows],
    )
    for name, value, help_text in (
        ("drsn_process_cpu_percent", f.cpu_percent, "Process CPU use (100 = one core)."),
        (
            "drsn_process_resident_memory_bytes",
            None if f.rss_mb is None else f.rss_mb * 2**20,
            "Resident memory.",
        ),
        ("drsn_gpu_utilization_percent", f.gpu_percent, "GPU utilization."),
        (
            "drsn_gpu_memory_bytes",
            None if f.gpu_mem_mb is None else f.gpu_mem_mb * 2**20,
            "GPU memory reserved.",
        ),
    ):
        if value is not None:
            out += _metric(name, "gauge", help_text, [("", float(value))])
    return "\n".join(out) + "\n"


class MetricsServer:
    """Serves ``format_metrics(snapshot_fn())`` at ``http://HOST:PORT/metrics``.

    Args:
        snapshot_fn: returns the current Snapshot (thread-safe; called once per scrape).
        port: TCP port; 0 picks a free one (read ``port`` after ``start``).
        host: address to bind; loopback by default, "0.0.0.0" to let other hosts scrape.
    """

    def __init__(
        self, snapshot_fn: Callable[[], Snapshot], *, port: int = 9464, host: str = "127.0.0.1"
    ) -> None:
        self.snapshot_fn = snapshot_fn
        self.host = host
        self.port = port
        self.errors = 0
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> MetricsServer:
        handler = _handler_for(self)
        try:
            self._server = ThreadingHTTPServer((self.host, self.port), handler)
        except OSError as exc:
            raise ConfigError(
                f"cannot serve metrics on {self.host}:{self.port}: {exc}; "
                "choose another --metrics-port or stop what uses this one"
            ) from exc
        self._server.daemon_threads = True
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(target=self._server.serve_forever, name="drsn-metrics", daemon=True)
        self._thread.start()
        return self

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/metrics"

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


def _handler_for(server: MetricsServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - the name http.server calls
            if self.path.split("?", 1)[0] not in ("/metrics", "/"):
                self._send(404, "not found: scrape /metrics\n")
                return
            try:
                body = format_metrics(server.snapshot_fn())
            except Exception as exc:  # noqa: BLE001 - a scrape must never take the monitor down
                server.errors += 1
                self._send(500, f"snapshot failed: {type(exc).__name__}: {exc}\n")
                return
            self._send(200, body)

        def _send(self, code: int, text: str) -> None:
            data = text.encode("utf-8")
            self.send_response(code)
            self.send_header("Content-Type", CONTENT_TYPE)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002
            pass  # workers never print; the dashboard owns the terminal

    return Handler
