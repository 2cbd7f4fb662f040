"""Readable lines (``--headless``): one line per prediction and per event, the only place their
text is formatted."""

from __future__ import annotations

import math
import sys
import threading
import time
from collections import Counter
from typing import IO, Any

from drsn_stream.dsp.envelope import FAULT_TYPES
from drsn_stream.errors import ConfigError

Part = tuple[str, str]  # (text, role); roles: "" plain, "dim", "alarm:LEVEL", "health:OK|BAD", "heard"


def event_parts(kind: str, stream: str, data: dict[str, Any]) -> list[Part]:
    """The text of one event, in parts with a role each: the readable lines join the texts, the
    dashboard styles each part by its role. The one place where event text is worded."""
    if kind == "alarm":
        to = str(data.get("to", "?"))
        parts = [("ALARM  ", f"alarm:{to}"), (f"{stream}  {data.get('from', '?')} → ", ""), (to, f"alarm:{to}"),
                 (f"  {data.get('label', '')}", "")]
        conf = data.get("confidence")
        if isinstance(conf, (int, float)):
            parts.append((f" {conf * 100:.0f}%", ""))
        # what else spoke: the baseline's anomaly, the envelope's fault type and its rise
        anomaly = data.get("anomaly")
        if isinstance(anomaly, (int, float)) and not isinstance(anomaly, bool):
            parts.append((f"  anomaly {anomaly:.2f}", ""))
        env = data.get("envelope")
        if isinstance(env, dict) and env.get("type") in FAULT_TYPES and env.get("type") != "none":
            rise = env.get("rise_db")
            more = f" {rise:+.1f} dB" if isinstance(rise, (int, float)) and not isinstance(rise, bool) else ""
            # a type its family did not hold over the last blocks: a "?", as on the dashboard ("outer?")
            maybe = "?" if env.get("held") is False else ""
            parts.append((f"  envelope {env['type']}{maybe}{more}", ""))
        if data.get("acknowledged"):
            parts.append(("  (acknowledged)", "dim"))
        return parts
    if kind == "health":
        to = str(data.get("to", "?"))
        parts = [("HEALTH ", "health:OK" if to == "OK" else "health:BAD"), (f"{stream}  {data.get('from', '?')} → {to}", "")]
        reasons = data.get("reasons") or []
        if reasons:
            parts.append((f"  ({', '.join(map(str, reasons))})", ""))
        return parts
    if kind == "detection":
        parts = [("HEARD  ", "heard"), (f"{stream}  {data.get('label', data.get('text', '?'))}", "")]
        conf = data.get("confidence")
        if isinstance(conf, (int, float)):
            parts.append((f" {conf * 100:.0f}%", ""))
        return parts
    if kind == "gap":  # cluster mode: a failover or hand-over left the stream unclassified
        parts = [("GAP    ", "gap"), (f"{stream}  {data.get('seconds', '?')} s not classified", "")]
        if data.get("previous_host") or data.get("host"):
            parts.append((f" ({data.get('previous_host', '?')} → {data.get('host', '?')})", "dim"))
        return parts
    if kind == "note":
        return [("NOTE   ", "dim"), (f"{stream}  {data.get('message', '')}", "")]
    return [(f"{kind.upper():<6} ", "dim"), (f"{stream}  " + " ".join(f"{k}={v}" for k, v in data.items()), "")]


def _clock(t: Any) -> str:
    """HH:MM:SS of a wall-clock time; a time the platform cannot show is ``??:??:??``."""
    try:
        return time.strftime("%H:%M:%S", time.localtime(float(t or 0.0)))
    except (OverflowError, OSError, ValueError, TypeError):
        return "??:??:??"


def format_line(obj: dict[str, Any]) -> str | None:
    """The readable line of one result object; None for objects that have none (stats)."""
    kind = str(obj.get("type"))
    sid = str(obj.get("stream", ""))
    when = _clock(obj.get("time"))
    if kind == "stats":
        return None
    if kind == "prediction":
        refused = obj.get("label") == "unknown"  # a refused label has no confidence to show
        conf = "  -  " if refused else f"{float(obj.get('confidence') or 0.0):5.2f}"
        line = (
            f"{when} {sid:<14} {obj.get('label', '?'):<10} {conf}  "
            f"smoothed {obj.get('smoothed', '?')}/{obj.get('level', '?'):<6} "
            f"noise {float(obj.get('noise_index') or 0.0):4.2f} latency {float(obj.get('latency_ms') or 0.0):7.1f} ms"
        )
        if obj.get("anomaly") is not None:
            line += f" anomaly {float(obj['anomaly']):.2f}"
        env = obj.get("envelope")
        if env:
            line += _envelope_text(env)
        return line
    data = {k: v for k, v in obj.items() if k not in ("type", "stream", "time")}
    return when + " " + "".join(text for text, _ in event_parts(kind, sid, data))


def _envelope_text(env: dict[str, Any]) -> str:
    """`` env inner? 9.1dB at 1797rpm``: a prediction's envelope, worded as the dashboard's cell."""
    evidence = env.get("evidence") or {}
    maybe = "?" if env.get("held") is False else ""  # named by its block alone, as the dashboard's
    kind = "learned" if env.get("own") else env.get("type")  # the machine's own lines, as the dashboard's
    text = f" env {kind}{maybe} {max(evidence.values(), default=0.0):.1f}dB"
    if isinstance(env.get("rpm"), (int, float)):
        text += f" at {env['rpm']:.0f}rpm"  # the speed it was computed at (a tachometer's may move)
    return text


class _Tally:
    """One stream's predictions since the last summary line."""

    __slots__ = ("windows", "labels", "level", "latency", "latency_max", "noise", "anomaly", "envelope")

    def __init__(self) -> None:
        self.windows = 0
        self.labels: Counter[str] = Counter()
        self.level = "?"
        self.latency = 0.0  # sums and the largest: a span's list of them (thousands of streams, a
        self.latency_max = 0.0  # minute each) would hold hundreds of MB
        self.noise = 0.0
        self.anomaly: float | None = None
        self.envelope: dict[str, Any] | None = None

    def add(self, obj: dict[str, Any]) -> None:
        self.windows += 1
        self.labels[str(obj.get("label", "?"))] += 1
        self.level = str(obj.get("level", self.level))
        latency = _number(obj.get("latency_ms"))
        self.latency += latency
        self.latency_max = max(self.latency_max, latency)
        self.noise += _number(obj.get("noise_index"))
        if obj.get("anomaly") is not None:
            self.anomaly = max(self.anomaly or 0.0, _number(obj["anomaly"]))
        if isinstance(obj.get("envelope"), dict):
            self.envelope = obj["envelope"]


def _number(value: Any) -> float:
    try:
        out = float(value)
    except (TypeError, ValueError):
        return 0.0
    return out if math.isfinite(out) else 0.0


def summary_line(stream: str, tally: _Tally, when: float, seconds: float) -> str:
    """One stream's line of ``--every``: its labels' shares, the alarm level it ended at, the
    windows, mean noise index, mean / largest latency, the highest anomaly and the latest envelope."""
    shares = ", ".join(f"{label} {100.0 * n / tally.windows:.0f}%" for label, n in tally.labels.most_common(3))
    more = len(tally.labels) - 3
    if more > 0:
        shares += f", {more} more"
    n = tally.windows
    line = (f"{_clock(when)} {stream:<14} {tally.level:<6} {shares}  ({n} window{'s' if n != 1 else ''} in {seconds:.0f} s, "
            f"noise {tally.noise / n:4.2f}, latency mean/max {tally.latency / n:.1f}/{tally.latency_max:.1f} ms)")
    if tally.anomaly is not None:
        line += f" anomaly max {tally.anomaly:.2f}"
    if tally.envelope:
        line += _envelope_text(tally.envelope)
    return line


def row_line(row: Any, when: float) -> str:
    """A stream's state now as one line, from a snapshot's ``StreamRow`` (the cluster's ``--every``,
    where the head node has the hosts' rows, not their predictions)."""
    if not row.healthy:
        label = f"check_sensor ({', '.join(row.health_reasons) or row.health})"
    else:
        label = f"{row.label} {100.0 * row.confidence:.0f}%" if row.windows else "no windows yet"
    latency = (f"{row.latency_p50_ms:.1f}/{row.latency_p99_ms:.1f} ms" if math.isfinite(row.latency_p99_ms)
               else "-")
    line = (f"{_clock(when)} {row.stream_id:<14} {row.level:<6} {label}  ({row.windows} windows, noise "
            f"{row.noise_index:4.2f}, latency p50/p99 {latency}{', host ' + row.host if row.host else ''})")
    if row.anomaly is not None:
        line += f" anomaly {row.anomaly:.2f}"
    return line


class LineSink:
    """Prints ``format_line`` of each object to stdout (``-``) or ``stderr``; a closed pipe is counted.

    With ``every`` (seconds) predictions are summed up instead: one ``summary_line`` per stream
    every ``every`` seconds (a stream that sent no window since the last one says so once), and
    every event still as it happens. A journal or a terminal then shows a stream's state at a
    readable pace, where a line per decision is ~23 lines a second per stream."""

    def __init__(self, target: str = "-", every: float | None = None) -> None:
        if target not in ("", "-", "stdout", "stderr"):
            raise ConfigError(f"lines sink: target must be - (stdout) or stderr, not {target!r}")
        if every is not None and not 0 < every < math.inf:
            raise ConfigError(f"lines sink: every must be a number of seconds > 0, not {every!r}")
        self.stream: IO[str] = sys.stderr if target == "stderr" else sys.stdout
        self.errors = 0
        self.every = every
        self._lock = threading.Lock()  # the output and the tallies
        self._tallies: dict[str, _Tally] = {}
        self._silent: set[str] = set()  # streams said to have sent nothing since; not said again
        self._since = time.monotonic()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if every is not None:
            self._thread = threading.Thread(target=self._summaries, name="drsn-lines", daemon=True)
            self._thread.start()

    def write(self, obj: dict[str, Any]) -> None:
        if self.every is not None and obj.get("type") == "prediction":
            sid = str(obj.get("stream", ""))
            with self._lock:
                tally = self._tallies.get(sid)
                if tally is None:
                    tally = self._tallies[sid] = _Tally()
                tally.add(obj)
            return
        line = format_line(obj)
        if line is not None:
            self._print([line])

    def _print(self, lines: list[str]) -> None:
        with self._lock:
            try:
                for line in lines:
                    print(line, file=self.stream)
                self.stream.flush()
            except (BrokenPipeError, ValueError, OSError):  # | head: the monitor goes on
                self.errors += 1

    def _summaries(self) -> None:
        assert self.every is not None
        while not self._stop.wait(self.every):
            self.summarize()

    def summarize(self) -> None:
        """Prints one line per stream for what came since the last call (and once for a stream
        that sent nothing since), and starts the next span."""
        from drsn_stream.view import natural_key

        now = time.monotonic()
        with self._lock:
            tallies = self._tallies
            self._tallies = {sid: _Tally() for sid in tallies if tallies[sid].windows or sid not in self._silent}
            seconds, self._since = now - self._since, now
        when = time.time()
        lines = []
        for sid in sorted(tallies, key=natural_key):
            tally = tallies[sid]
            if tally.windows:
                self._silent.discard(sid)
                lines.append(summary_line(sid, tally, when, seconds))
            elif sid not in self._silent:
                self._silent.add(sid)
                lines.append(f"{_clock(when)} {sid:<14} no windows in the last {seconds:.0f} s")
            else:
                self._silent.discard(sid)  # said once, and left out of the tallies from now on
        if lines:
            self._print(lines)

    def close(self) -> None:
        if self._thread is not None and not self._stop.is_set():
            self._stop.set()
            self._thread.join(timeout=5.0)
            if any(t.windows for t in self._tallies.values()):
                self.summarize()  # the last, shorter span
        with self._lock:
            try:
                self.stream.flush()
            except (BrokenPipeError, ValueError, OSError):
                pass
