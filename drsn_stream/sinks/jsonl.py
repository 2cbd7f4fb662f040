"""JSON-lines log and the ZeroMQ result feed: one object per result, the same objects in both.

Objects carry ``type``: "prediction" (each window), "alarm", "health", "detection", "stats".
"""

from __future__ import annotations

import json
import math
import os
import sys
import threading
import time
from pathlib import Path
from typing import IO, Any

from drsn_stream.errors import ConfigError, WriteError

RESULT_VERSION = 1
ROTATION_CHECK_S = 1.0  # how often a log file's path is looked at for a rotation (JsonlSink)


class JsonlSink:
    """Writes one JSON object per line to a file or stdout ("-"); flushes every ``flush_every``.

    A file moved or removed under it (logrotate's default: the log renamed, a new one expected
    at its path) is followed: within ``ROTATION_CHECK_S`` the sink opens the path again, as
    ``logging.handlers.WatchedFileHandler`` does. Before, a monitor running for weeks went on
    writing into ``results.jsonl.1`` and the new ``results.jsonl`` stayed empty. (logrotate's
    ``copytruncate`` works as it is: the file is written in append mode.)"""

    def __init__(self, target: str | Path, *, flush_every: int = 1) -> None:
        self.target = str(target)
        self._own = self.target != "-"
        if self._own:
            try:
                Path(self.target).parent.mkdir(parents=True, exist_ok=True)
                self._f: IO[str] = open(self.target, "a", encoding="utf-8")  # noqa: SIM115 - closed in close()
                self._id = _file_id(os.fstat(self._f.fileno()))
            except OSError as exc:
                raise ConfigError(f"--jsonl {self.target}: cannot open for writing ({exc.strerror})") from None
        else:
            self._f = sys.stdout
        self.flush_every = max(1, flush_every)
        self._n = 0
        self._lock = threading.Lock()
        self.errors = 0
        self.reopened = 0  # times the file was opened again after a rotation
        self._check_at = time.monotonic() + ROTATION_CHECK_S

    def write(self, obj: dict[str, Any]) -> None:
        line = dumps(obj)
        with self._lock:
            now = time.monotonic()
            if self._own and now >= self._check_at:
                self._check_at = now + ROTATION_CHECK_S
                self._follow_rotation()
            try:
                self._f.write(line + "\n")
                self._n += 1
                if self._n % self.flush_every == 0:
                    self._f.flush()
            except (OSError, ValueError) as exc:  # a closed pipe (| head) must not stop the monitor
                self.errors += 1
                if self._own and isinstance(exc, OSError):  # a full disk: said (and counted) by the monitor
                    raise self._cannot(exc) from None

    def _follow_rotation(self) -> None:
        """Opens the path again when the file there is not the one being written (renamed or
        removed); the old one is flushed and closed, nothing written twice or lost."""
        try:
            moved = _file_id(os.stat(self.target)) != self._id
        except FileNotFoundError:
            moved = True
        except OSError:
            return
        if not moved:
            return
        try:
            f = open(self.target, "a", encoding="utf-8")  # noqa: SIM115 - closed in close()
        except OSError:
            return  # the folder itself is gone or read-only: the old file is kept
        old, self._f = self._f, f
        self._id = _file_id(os.fstat(f.fileno()))
        self.reopened += 1
        try:
            old.close()
        except OSError:
            self.errors += 1

    def close(self) -> None:
        with self._lock:
            try:
                self._f.flush()
            except (OSError, ValueError):
                pass
            if self._own:
                try:
                    self._f.close()
                except OSError as exc:  # what was left in its buffer did not fit: said as the writes said it
                    self.errors += 1
                    raise self._cannot(exc) from None

    def _cannot(self, exc: OSError) -> WriteError:
        return WriteError(f"--jsonl {self.target}: cannot write ({exc.strerror or exc}); "
                          "results are not logged until there is space", exc)


def _file_id(st: os.stat_result) -> tuple[int, int]:
    return st.st_dev, st.st_ino


def _default(o: Any) -> Any:
    if hasattr(o, "tolist"):
        return _finite(o.tolist())
    return str(o)


def _finite(o: Any) -> Any:
    """NaN/Inf floats (a latency not measured yet, say) become null, anywhere in the object."""
    if isinstance(o, float):
        return o if math.isfinite(o) else None
    if isinstance(o, dict):
        return {k: _finite(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_finite(v) for v in o]
    return o


def dumps(obj: dict[str, Any]) -> str:
    """One result as strict, compact JSON: the same text for the log and the ZeroMQ feed."""
    return json.dumps(_finite(obj), separators=(",", ":"), allow_nan=False, default=_default)


class ZmqResultSink:
    """Publishes results on a PUB socket: multipart [topic, JSON header, JSON payload].

    The topic is ``<type>/<stream>`` (subscribe to "alarm/" for alarms only, "" for everything);
    the header is ``{"v": 1, "type": ..., "stream": ..., "encoding": "json"}``; the payload is the
    same object the JSON-lines log gets. Binds (default host 127.0.0.1); PUB never blocks.
    """

    def __init__(self, address: str, *, curve_key: str | None = None, curve_allow: str | None = None) -> None:
        """``curve_key``: the feed is CURVE-encrypted with this key pair (``NAME.key_secret``), its
        readers connecting with its public ``NAME.key``; ``curve_allow``: a folder of the readers'
        public keys, the only ones let in."""
        import zmq

        from drsn_stream.sources.curve import Curve
        from drsn_stream.sources.curve import close as close_curve
        from drsn_stream.sources.zmq_source import bind_socket, socket_hint, tcp_address

        self.address = tcp_address(address, bind=True)  # an empty host 127.0.0.1, the port checked
        curve = None
        if curve_key is not None or curve_allow is not None:
            curve = Curve(key=curve_key, allow=curve_allow, what="--publish-curve-key")
        self._ctx = curve.context() if curve is not None else zmq.Context.instance()
        self._sock = self._ctx.socket(zmq.PUB)
        self._sock.setsockopt(zmq.LINGER, 200)
        self._sock.setsockopt(zmq.SNDHWM, 10000)
        self._guard = curve.apply(self._sock) if curve is not None else None
        try:
            bind_socket(self._sock, self.address)
        except zmq.ZMQError as exc:
            self._sock.setsockopt(zmq.LINGER, 0)
            close_curve(self._sock, self._guard)
            raise ConfigError(f"--publish {address}: cannot bind ({exc.strerror}); {socket_hint(exc, bind=True)}") from None
        self._lock = threading.Lock()
        self.sent = 0
        self.errors = 0

    def write(self, obj: dict[str, Any]) -> None:
        import zmq

        topic = f"{obj.get('type', 'result')}/{obj.get('stream', '')}".encode()
        header = json.dumps({"v": RESULT_VERSION, "type": obj.get("type"), "stream": obj.get("stream"),
                             "encoding": "json"}).encode()
        payload = dumps(obj).encode()
        with self._lock:
            try:
                self._sock.send_multipart([topic, header, payload], flags=zmq.NOBLOCK)
                self.sent += 1
            except zmq.ZMQError:
                self.errors += 1

    def close(self) -> None:
        from drsn_stream.sources.curve import close as close_curve

        with self._lock:
            if not self._sock.closed:
                close_curve(self._sock, self._guard)

