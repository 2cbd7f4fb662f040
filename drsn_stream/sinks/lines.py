"""Readable lines (``--headless``): one line per prediction and per event, the only place their
text is formatted."""

from __future__ import annotations

import sys
import threading
import time
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
            evidence = env.get("evidence") or {}
            maybe = "?" if env.get("held") is False else ""  # named by its block alone, as the dashboard's
            kind = "learned" if env.get("own") else env.get("type")  # the machine's own lines, as the dashboard's
            line += f" env {kind}{maybe} {max(evidence.values(), default=0.0):.1f}dB"
            if isinstance(env.get("rpm"), (int, float)):
                line += f" at {env['rpm']:.0f}rpm"  # the speed it was computed at (a tachometer's may move)
        return line
    data = {k: v for k, v in obj.items() if k not in ("type", "stream", "time")}
    return when + " " + "".join(text for text, _ in event_parts(kind, sid, data))


class LineSink:
    """Prints ``format_line`` of each object to stdout (``-``) or ``stderr``; a closed pipe is counted."""

    def __init__(self, target: str = "-") -> None:
        if target not in ("", "-", "stdout", "stderr"):
            raise ConfigError(f"lines sink: target must be - (stdout) or stderr, not {target!r}")
        self.stream: IO[str] = sys.stderr if target == "stderr" else sys.stdout
        self.errors = 0
        self._lock = threading.Lock()

    def write(self, obj: dict[str, Any]) -> None:
        line = format_line(obj)
        if line is None:
            return
        with self._lock:
            try:
                print(line, file=self.stream, flush=True)
            except (BrokenPipeError, ValueError, OSError):  # | head: the monitor goes on
                self.errors += 1

    def close(self) -> None:
        with self._lock:
            try:
                self.stream.flush()
            except (BrokenPipeError, ValueError, OSError):
                pass
