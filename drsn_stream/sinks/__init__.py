"""Sinks: where results go. Every sink takes the same objects (``Prediction.to_json()`` and
``Event.to_json()`` dicts) through ``write(obj)`` and ends with ``close()``.

``make_sink("jsonl", "run.jsonl")`` builds one by kind; registering a new kind is one entry in
``SINK_KINDS`` (a ``"module:Class"`` string imported only when used, as for sources). A run's
outputs are its config's ``[sinks]`` table (``SinksConfig``: ``--jsonl``, ``--publish``,
``--headless``, ``--every``, ``--metrics-address``, ``--webhook``); ``make_sinks`` builds them. The dashboard
and the metrics endpoint read ``Snapshot`` views (``drsn_stream.view``) instead of objects; event
captures (``sinks.capture``) follow events and frames.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from drsn_stream.errors import ConfigError
from drsn_stream.sources import load_entry


@runtime_checkable
class Sink(Protocol):
    def write(self, obj: dict[str, Any]) -> None:
        """Takes one result object; must not block the monitor for long, must not raise for bad data."""

    def close(self) -> None:
        """Flushes and releases what the sink holds. Idempotent."""


SINK_KINDS: dict[str, str] = {
    "jsonl": "drsn_stream.sinks.jsonl:JsonlSink",  # target: a file, or - for stdout
    "zmq": "drsn_stream.sinks.jsonl:ZmqResultSink",  # target: tcp://HOST:PORT to bind
    "lines": "drsn_stream.sinks.lines:LineSink",  # target: - (stdout) or stderr; readable lines
    "webhook": "drsn_stream.sinks.webhook:WebhookSink",  # target: an http(s) URL; alarms and health changes
}


def make_sink(kind: str, target: str = "", **options: Any) -> Sink:
    if kind not in SINK_KINDS:
        raise ConfigError(f"unknown sink kind {kind!r}; valid kinds: {', '.join(SINK_KINDS)}")
    return load_entry(SINK_KINDS[kind], f"sink kind {kind!r}")(target, **options)


@dataclass(frozen=True)
class SinksConfig:
    """The ``[sinks]`` table: where a run's results go (the same fields as the flags of that name).

    Attributes:
        jsonl: JSON lines into this file, or ``-`` for stdout (lines for people then go to stderr).
        publish: a ZeroMQ PUB address to bind (``tcp://HOST:PORT``) for the same objects.
        headless: no dashboard; one readable line per decision.
        every: with the readable lines, one line per stream every this many seconds instead of one
            per decision (its labels' shares, alarm level, latency; ``--every 10s``), and each
            event as it happens; sets ``headless``. None: a line per decision.
        publish_curve_key: the feed CURVE-encrypted with this key pair (``NAME.key_secret``).
        publish_curve_allow: a folder of the feed's readers' public keys (``NAME.key``), the only
            ones let in (with ``publish_curve_key``).
        metrics_address: serve Prometheus metrics at ``http://HOST:PORT/metrics``.
        webhook: POST each alarm and sensor-health change as JSON to this http(s) URL.
        webhook_digest: at most one webhook POST per this many seconds, the events since the
            last one gathered into it (``--webhook-digest 1m``, for chat rooms); None: one per event.
    """

    jsonl: str | None = None
    publish: str | None = None
    publish_curve_key: str | None = None
    publish_curve_allow: str | None = None
    headless: bool = False
    every: float | None = None
    metrics_address: str | None = None
    webhook: str | None = None
    webhook_digest: float | None = None

    def __post_init__(self) -> None:
        if self.every is not None:
            if not 0.1 <= self.every <= 86400:
                raise ConfigError(f"sinks: every must be from 0.1 s to 1 day (e.g. 10s, 1m), not {self.every!r}")
            object.__setattr__(self, "headless", True)  # a summary of the lines is the lines
        if self.jsonl == "":
            raise ConfigError("sinks: jsonl must be a file path or - (stdout), not empty")
        if self.publish == "":
            raise ConfigError("sinks: publish must be an address to bind, e.g. tcp://127.0.0.1:5556, not empty")
        if (self.publish_curve_key or self.publish_curve_allow) and not self.publish:
            raise ConfigError("sinks: publish_curve_key / publish_curve_allow encrypt the --publish feed: give "
                              "--publish tcp://HOST:PORT too")
        if self.publish_curve_allow and not self.publish_curve_key:
            raise ConfigError("sinks: publish_curve_allow needs publish_curve_key (the feed's own key pair, "
                              "NAME.key_secret from `drsn-stream keys NAME`)")
        if self.webhook is not None:
            from drsn_stream.sinks.webhook import check_url

            check_url(self.webhook)
        if self.webhook_digest is not None:
            from drsn_stream.sinks.webhook import check_digest

            if self.webhook is None:
                raise ConfigError("sinks: webhook_digest gathers the events of a webhook: give --webhook URL too "
                                  "(or drop --webhook-digest)")
            check_digest(self.webhook_digest)
        if self.metrics_address is not None:
            from drsn_stream.sinks.metrics import parse_address

            parse_address(self.metrics_address)

    @property
    def human(self) -> str:
        """Where lines for people go: stderr when stdout carries JSON lines."""
        return "stderr" if self.jsonl == "-" else "-"


def make_sinks(config: SinksConfig) -> list[Sink]:
    """The sinks of a run's ``[sinks]`` table (the dashboard and metrics read snapshots instead)."""
    sinks: list[Sink] = []
    try:
        if config.jsonl:
            sinks.append(make_sink("jsonl", config.jsonl))
        if config.publish:
            sinks.append(make_sink("zmq", config.publish, curve_key=config.publish_curve_key,
                                   curve_allow=config.publish_curve_allow))
        if config.headless:
            sinks.append(make_sink("lines", config.human, every=config.every))
        if config.webhook:
            sinks.append(make_sink("webhook", config.webhook, digest_s=config.webhook_digest))
    except BaseException:
        for s in sinks:
            s.close()
        raise
    return sinks


class Outputs:
    """Fans each object out to every sink. A sink that raises is counted and shown; the others go on."""

    def __init__(self, sinks: Iterable[Sink] = (), *, on_error: Callable[[str], None] | None = None) -> None:
        """``on_error`` gets one line per failure (the monitor shows it and counts repeats)."""
        self.sinks: list[Sink] = list(sinks)
        self.on_error = on_error
        self.failures: Counter[str] = Counter()  # by sink class
        self.last_error: str | None = None
        self._lock = threading.Lock()

    def __bool__(self) -> bool:
        return bool(self.sinks)

    def add(self, sink: Sink) -> None:
        self.sinks.append(sink)

    def write(self, obj: dict[str, Any]) -> None:
        for s in self.sinks:
            try:
                s.write(obj)
            except Exception as exc:  # noqa: BLE001 - one broken sink must not silence the others
                self._failed(s, exc)

    def close(self) -> None:
        for s in self.sinks:
            try:
                s.close()
            except Exception as exc:  # noqa: BLE001
                self._failed(s, exc)

    def _failed(self, sink: Sink, exc: Exception) -> None:
        with self._lock:
            self.failures[type(sink).__name__] += 1
            self.last_error = f"sink {type(sink).__name__}: {exc!r}"
        if self.on_error is not None:
            self.on_error(f"output {type(sink).__name__}: {type(exc).__name__}: {str(exc)[:200]}")


__all__ = ["SINK_KINDS", "Outputs", "Sink", "SinksConfig", "make_sink", "make_sinks"]
