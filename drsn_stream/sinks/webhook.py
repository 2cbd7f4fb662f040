"""Alarms and sensor-health changes posted to a webhook (``--webhook URL``): chat rooms, paging
and ticket systems take one JSON object per HTTP POST.

Each event is posted as its JSON object (``Event.to_json()``: ``type``, ``stream``, ``time`` and
the event's fields) plus ``host`` (this machine's name) and ``text``, its readable line as the
``--headless`` lines word it (``sinks.lines.format_line``), which Slack, Mattermost and
Rocket.Chat incoming webhooks show as the message. Predictions, notes and stats are not posted.

With ``digest_s`` (``--webhook-digest 1m``) a chat room is not flooded when many streams alarm at
once: at most one POST per ``digest_s``, the first event after a quiet span at once and the events
of the span after it gathered into one ``{"type": "digest", "host", "count", "events": [...],
"text"}`` object, whose ``events`` are the objects as posted one by one (without ``host`` and
``text``) and whose ``text`` is one readable line per event (at most ``DIGEST_LINES``).

Posting runs on a thread of its own behind a bounded queue, so a slow or unreachable endpoint never
holds the monitor up: an event that cannot be delivered after ``TRIES`` tries (a refused
connection, a timeout, a 5xx answer, a 429 after its Retry-After; another 4xx answer is not tried
again) is dropped and counted, and the next ``write`` raises a ``WriteError`` that the monitor
shows and counts. The URL's path and query (which often hold a secret token) and its
``user:password@`` (sent as HTTP basic authentication) never appear in a message.
"""

from __future__ import annotations

import base64
import queue
import socket
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import Counter
from typing import Any

from drsn_stream.errors import ConfigError, WriteError
from drsn_stream.sinks.jsonl import dumps
from drsn_stream.sinks.lines import format_line

EVENTS = ("alarm", "health")
QUEUE = 1000  # events waiting; beyond, the oldest is dropped (and counted)
TIMEOUT_S = 5.0
TRIES = 3
CLOSE_WAIT_S = 5.0  # what is still queued when the run ends gets this long to go out
DIGEST_MOST = 200  # events in one digest POST; more wait for the next one
DIGEST_LINES = 20  # readable lines in a digest's text (a chat message); its events list has them all
DIGEST_S = (1.0, 86400.0)  # digest_s from 1 s to a day


def _where(url: str) -> str:
    """``https://hooks.example.com``: the URL without its path, query or credentials."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or "?"
    host = f"[{host}]" if ":" in host else host
    return f"{parts.scheme}://{host}" + (f":{parts.port}" if parts.port else "")


def check_url(url: str) -> None:
    """Refuses what is not an http:// or https:// URL with a host (ConfigError, before anything starts)."""
    parts = urllib.parse.urlsplit(str(url))
    try:
        parts.port  # noqa: B018 - a port that is not a number raises here
    except ValueError:
        parts = parts._replace(netloc="")
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"--webhook: expected an http:// or https:// URL, e.g. https://hooks.example.com/T0/B0/X0, "
                          f"not {str(url)[:60]!r}")


def _without_credentials(url: str) -> tuple[str, str | None]:
    """The URL without its ``user:password@`` and the ``Authorization`` header they make (HTTP
    basic authentication), or None: urllib would take them for part of the host name."""
    parts = urllib.parse.urlsplit(url)
    if parts.username is None and parts.password is None:
        return url, None
    netloc = parts.netloc.rpartition("@")[2]
    user = urllib.parse.unquote(parts.username or "")
    password = urllib.parse.unquote(parts.password or "")
    token = base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc)), f"Basic {token}"


def check_digest(digest_s: float | None) -> None:
    """Refuses a digest span outside 1 s to a day (ConfigError, before anything starts)."""
    if digest_s is not None and (isinstance(digest_s, bool) or not isinstance(digest_s, (int, float))
                                 or not DIGEST_S[0] <= digest_s <= DIGEST_S[1]):
        raise ConfigError(f"--webhook-digest: expected a span from 1 s to a day (e.g. 30s, 1m), not {digest_s!r}")


def _retry_after(value: str | None) -> float:
    """A 429 answer's ``Retry-After`` seconds, within 1-30 s (1 where it gives none or a date)."""
    try:
        return min(30.0, max(1.0, float(value or 1.0)))
    except ValueError:
        return 1.0


class WebhookSink:
    """Posts each alarm and health event to ``target`` (an http:// or https:// URL)."""

    def __init__(self, target: str, *, events: tuple[str, ...] = EVENTS, timeout_s: float = TIMEOUT_S,
                 digest_s: float | None = None) -> None:
        check_url(target)
        check_digest(digest_s)
        self.digest_s = digest_s
        self._last_post = -float("inf")  # monotonic time of the last digest POST
        self.url, self._auth = _without_credentials(str(target))
        self.where = _where(self.url)
        self.events = frozenset(events)
        self.timeout_s = timeout_s
        self.host = socket.gethostname()
        self.sent = 0
        self.failed = 0  # events given up on (not delivered, or dropped from a full queue)
        self.errors = 0
        self._failure: str | None = None  # said by the next write()
        self._queue: queue.Queue[dict[str, Any] | None] = queue.Queue(maxsize=QUEUE)
        self._closing = threading.Event()
        self._thread = threading.Thread(target=self._post_loop, name="drsn-webhook", daemon=True)
        self._thread.start()

    def write(self, obj: dict[str, Any]) -> None:
        if obj.get("type") in self.events:
            try:
                self._queue.put_nowait(obj)
            except queue.Full:
                try:  # the oldest gives way: the latest state of the plant matters most
                    self._queue.get_nowait()
                except queue.Empty:
                    pass
                self.failed += 1
                try:
                    self._queue.put_nowait(obj)
                except queue.Full:  # another thread's event took the place: this one is the dropped one
                    pass
                self._failure = (f"webhook {self.where}: more events than it takes ({QUEUE} waiting); "
                                 "the oldest are not sent")
        failure, self._failure = self._failure, None
        if failure is not None:
            self.errors += 1
            raise WriteError(failure)

    def _post_loop(self) -> None:
        while True:
            obj = self._queue.get()
            if obj is None:
                return
            if self.digest_s is None:
                self._deliver([obj])
                continue
            batch, last = self._gather(obj)
            self._last_post = time.monotonic()
            self._deliver(batch)
            if last:
                return

    def _gather(self, first: dict[str, Any]) -> tuple[list[dict[str, Any]], bool]:
        """The events of one digest: ``first`` and what comes until ``digest_s`` after the last
        POST (at once after a quiet span, or when the run ends). True: the run ended."""
        batch = [first]
        due = self._last_post + (self.digest_s or 0.0)
        while len(batch) < DIGEST_MOST:
            wait = due - time.monotonic()
            try:
                obj = self._queue.get(timeout=wait) if wait > 0 and not self._closing.is_set() else self._queue.get_nowait()
            except queue.Empty:
                break
            if obj is None:
                return batch, True
            batch.append(obj)
        return batch, False

    def _deliver(self, batch: list[dict[str, Any]]) -> None:
        if self.digest_s is None:
            line = format_line(batch[0])
            body = dumps({**batch[0], "host": self.host, "text": f"{self.host}: {line}" if line else ""})
        else:
            body = dumps(self._digest(batch))
        self._post(body.encode("utf-8"), len(batch))

    def _digest(self, batch: list[dict[str, Any]]) -> dict[str, Any]:
        lines = [line for line in map(format_line, batch) if line]
        more = len(lines) - DIGEST_LINES
        head = f"{self.host}: {len(batch)} event" + ("s" if len(batch) != 1 else "")
        if len(batch) > 1:  # what the span came to: "12 to ALERT, 1 sensor to CHECK_SENSOR"
            ends = Counter(f"{'sensor ' if o.get('type') == 'health' else ''}to {o.get('to', '?')}" for o in batch)
            head += ": " + ", ".join(f"{n} {end}" for end, n in ends.most_common())
        text = "\n".join([head, *lines[:DIGEST_LINES]] + ([f"... and {more} more"] if more > 0 else []))
        return {"type": "digest", "host": self.host, "count": len(batch), "time": batch[-1].get("time"),
                "events": batch, "text": text}

    def _post(self, body: bytes, events: int) -> None:
        why, pause = "", 0.0
        for attempt in range(TRIES):
            if attempt:
                self._closing.wait(pause or float(attempt))  # 1 s, then 2 s; at the end of the run, at once
                pause = 0.0
            headers = {"Content-Type": "application/json", "User-Agent": "drsn-stream"}
            if self._auth is not None:
                headers["Authorization"] = self._auth
            request = urllib.request.Request(self.url, data=body, method="POST", headers=headers)
            try:
                with urllib.request.urlopen(request, timeout=self.timeout_s) as answer:
                    answer.read(65536)
                self.sent += events
                return
            except urllib.error.HTTPError as exc:
                why = f"answered {exc.code} {exc.reason}"
                if exc.code == 429:  # too many: chat services take about one message a second
                    pause = _retry_after(exc.headers.get("Retry-After"))
                elif 400 <= exc.code < 500:
                    break  # the request itself is refused: another try would be refused too
            except (urllib.error.URLError, OSError, ValueError) as exc:
                reason = getattr(exc, "reason", exc)
                why = f"cannot reach it ({getattr(reason, 'strerror', None) or reason})"
        self.failed += events
        # the endpoint wrote part of it (its reason phrase): printable characters only, as a stream
        # id is, or an escape sequence in it would reach the operator's terminal
        why = "".join(c if c.isprintable() else "?" for c in why)[:120]
        self._failure = f"webhook {self.where}: {why}; alarms and health changes are not delivered"

    def close(self) -> None:
        """Sends what is queued (for up to CLOSE_WAIT_S), then stops; says what was not delivered."""
        if self._closing.is_set():
            return
        self._closing.set()
        deadline = time.monotonic() + CLOSE_WAIT_S
        try:
            self._queue.put(None, timeout=CLOSE_WAIT_S)
        except queue.Full:
            pass
        self._thread.join(max(0.0, deadline - time.monotonic()))
        if self._thread.is_alive() or self._failure is not None:
            left = self._queue.qsize()
            failure = self._failure or f"webhook {self.where}: {left} events still queued at the end were not sent"
            self._failure = None
            raise WriteError(failure)
