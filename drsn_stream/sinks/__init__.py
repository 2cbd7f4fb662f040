"""Sinks: where results go. Every sink takes the same objects (``Prediction.to_json()`` and
``Event.to_json()`` dicts) through ``write(obj)`` and ends with ``close()``.

``make_sink("jsonl", "run.jsonl")`` builds one by kind; registering a new kind is one entry in
``SINK_KINDS`` (a ``"module:Class"`` string imported only when used, as for sources). The dashboard
and the metrics endpoint read ``Snapshot`` views (``drsn_stream.view``) instead of objects; event
captures (``sinks.capture``) follow events and frames.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Iterable
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
}


def make_sink(kind: str, target: str = "", **options: Any) -> Sink:
    if kind not in SINK_KINDS:
        raise ConfigError(f"unknown sink kind {kind!r}; valid kinds: {', '.join(SINK_KINDS)}")
    return load_entry(SINK_KINDS[kind], f"sink kind {kind!r}")(target, **options)


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


__all__ = ["SINK_KINDS", "Outputs", "Sink", "make_sink"]
