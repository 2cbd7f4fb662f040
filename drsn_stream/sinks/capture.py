"""Event capture: the raw waveform around each alarm, saved for later analysis and replay.

Integration (pipeline thread)::

    capture = EventCapture("captures", CaptureConfig(pre_s=5.0, post_s=5.0))
    for frame in source:
        written = capture.push(frame)          # raw frames; returns the captures it finished
    for event in events:                       # alarm events from DecisionEngine
        capture.on_event(event)
    capture.close()                            # at shutdown: writes what is pending, truncated

For every alarm event, the samples from ``pre_s`` seconds before the event's time to ``post_s``
seconds after it are written as ``<folder>/<time>_<stream>_<from>-<to>.wav`` (float32, the
stream's rate and channels, ``scipy.io.wavfile``) plus a ``.json`` beside it with the event,
the span and its sample rate. The WAV is written once the post-trigger samples have arrived,
so it replays through the same pipeline with ``--source file:PATH``.

Memory: each stream keeps a ring of ``pre_s + post_s + margin_s`` seconds of raw samples
(float32): e.g. 100 streams x 11 s x 12 kHz x 4 B = 53 MB. Rings are allocated on a stream's
first frame, at most ``max_ring_bytes`` each (a 1 MHz, 256-channel stream gets a shorter span,
and its captures say ``truncated``) and ``max_total_bytes`` for all (streams beyond get no ring;
counted in ``errors``). Disk errors never stop the monitor: they are counted in ``errors`` and
described in ``last_error``.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import re
import threading
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from drsn_stream.config import from_table, write_atomic
from drsn_stream.errors import ConfigError
from drsn_stream.types import Event, Frame

MAX_SPAN_S = 86_400.0  # pre_s, post_s, margin_s: a day (the byte bounds cap what is kept)


@dataclass(frozen=True)
class CaptureConfig:
    """Event-capture settings.

    Attributes:
        pre_s / post_s: seconds of signal kept before / after the event time.
        margin_s: extra seconds in each ring, so late events still find their pre-trigger part.
        event_types: which ``Event.type`` values trigger a capture.
        levels: capture only alarm changes *to* these levels (e.g. ("ALERT", "DANGER")); empty: all.
        max_ring_bytes / max_total_bytes: memory bounds of one stream's ring / of all rings.
    """

    pre_s: float = 5.0
    post_s: float = 5.0
    margin_s: float = 1.0
    event_types: tuple[str, ...] = ("alarm",)
    levels: tuple[str, ...] = ()
    max_ring_bytes: int = 64 << 20
    max_total_bytes: int = 1 << 30

    def __post_init__(self) -> None:
        object.__setattr__(self, "event_types", tuple(self.event_types))
        object.__setattr__(self, "levels", tuple(self.levels))
        # NaN and Inf too: the rings are sized from them (a NaN stopped the first source that fed one)
        if not all(0 <= v <= MAX_SPAN_S for v in (self.pre_s, self.post_s, self.margin_s)):
            raise ConfigError(
                f"capture config: pre_s, post_s and margin_s must be from 0 to {MAX_SPAN_S:g} seconds "
                f"(got {self.pre_s}, {self.post_s}, {self.margin_s})"
            )
        for name in ("max_ring_bytes", "max_total_bytes"):
            value = getattr(self, name)
            if not (isinstance(value, int) and not isinstance(value, bool) and value >= 1):
                raise ConfigError(f"capture config: {name} must be a whole number of bytes >= 1, not {value!r}")
        if self.pre_s + self.post_s <= 0:
            raise ConfigError(
                "capture config: pre_s + post_s must be > 0 seconds, or there is nothing to save"
            )

    @classmethod
    def from_dict(cls, table: Mapping[str, Any]) -> CaptureConfig:
        """Build from a TOML ``[capture]`` table; an unknown key is an error listing the valid ones."""
        return from_table(cls, dict(table), "[capture]")


@dataclass(frozen=True)
class CaptureTable(CaptureConfig):
    """The ``[capture]`` table and ``--capture DIR``: where captures go (None: no capture), and how."""

    dir: str | None = None


@dataclass(frozen=True)
class Capture:
    """One finished capture: the files written and what they hold."""

    wav: Path
    meta: Path
    stream_id: str
    start: float  # capture time (s) of the first saved sample
    samples: int
    sample_rate: float
    truncated: bool  # less than pre_s + post_s could be saved


@dataclass
class _Ring:
    """The last ``capacity`` samples of one stream, indexed by absolute sample number."""

    rate: float
    data: np.ndarray  # (capacity, channels) float32
    total: int = 0  # samples written since the ring started
    # (absolute sample index, capture time) of recent frames: maps event times to samples
    anchors: deque[tuple[int, float]] = field(default_factory=lambda: deque(maxlen=64))

    @property
    def capacity(self) -> int:
        return self.data.shape[0]

    def write(self, x: np.ndarray, t_capture: float) -> None:
        n = x.shape[0]
        self.anchors.append((self.total, t_capture))
        if n >= self.capacity:
            x = x[-self.capacity :]
            start = (self.total + n - self.capacity) % self.capacity
        else:
            start = self.total % self.capacity
        m = x.shape[0]
        first = min(m, self.capacity - start)
        self.data[start : start + first] = x[:first]
        self.data[: m - first] = x[first:]
        self.total += n

    def index_of(self, t: float) -> int:
        """Absolute sample index of capture time ``t`` (s), from the nearest earlier frame."""
        anchor_idx, anchor_t = self.anchors[-1]
        for idx, at in reversed(self.anchors):
            anchor_idx, anchor_t = idx, at
            if at <= t:
                break
        return anchor_idx + int(round((t - anchor_t) * self.rate))

    def read(self, start: int, stop: int) -> np.ndarray:
        """Samples [start, stop) by absolute index; both must lie within the ring."""
        idx = np.arange(start, stop) % self.capacity
        return self.data[idx]


@dataclass
class _Pending:
    event: Event
    start: int
    stop: int
    center: int


class EventCapture:
    """Saves raw samples around alarm events as WAV + JSON.

    Args:
        folder: where captures go (created if missing).
        config: spans and triggers; defaults when None.
    """

    def __init__(self, folder: str | Path, config: CaptureConfig | None = None) -> None:
        self.folder = Path(folder)
        self.config = config if config is not None else CaptureConfig()
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(
                f"cannot create the capture folder {self.folder} ({exc.strerror or exc}); choose a writable folder"
            ) from exc
        self._rings: dict[str, _Ring] = {}
        self._pending: dict[str, list[_Pending]] = {}
        self._lock = threading.Lock()
        self._bytes = 0  # of all rings
        self.written: deque[Capture] = deque(maxlen=100)  # the latest ones, for the dashboard
        self.errors = 0
        self.last_error = ""

    def push(self, frame: Frame) -> list[Capture]:
        """Keep a raw frame; return the captures it completed.

        Args:
            frame: samples (n, channels) or (n,) at ``frame.sample_rate`` Hz.
        """
        x = np.asarray(frame.samples, dtype=np.float32)
        if x.ndim == 1:
            x = x[:, None]
        x = x.reshape(x.shape[0], -1)
        rate = float(frame.sample_rate)
        if not rate > 0:
            return []
        with self._lock:
            ring = self._rings.get(frame.stream_id)
            if ring is None or ring.rate != rate or ring.data.shape[1] != x.shape[1]:
                if ring is not None:
                    self._finish(frame.stream_id, ring, force=True)  # the old format ends here
                    self._bytes -= ring.data.nbytes
                    del self._rings[frame.stream_id]
                cfg = self.config
                row = 4 * x.shape[1]
                capacity = max(1, int(math.ceil((cfg.pre_s + cfg.post_s + cfg.margin_s) * rate)))
                capacity = min(capacity, max(1, cfg.max_ring_bytes // row))
                if self._bytes + capacity * row > cfg.max_total_bytes:
                    self._fail(f"no capture ring for {frame.stream_id}: the rings' memory budget "
                               f"({cfg.max_total_bytes >> 20} MiB) is spent")
                    return []
                ring = _Ring(rate=rate, data=np.zeros((capacity, x.shape[1]), dtype=np.float32))
                self._rings[frame.stream_id] = ring
                self._bytes += ring.data.nbytes
            ring.write(x, float(frame.t_capture))
            return self._finish(frame.stream_id, ring, force=False)

    def on_event(self, event: Event) -> bool:
        """Start a capture for this event if it is a trigger; True when one was started."""
        cfg = self.config
        if event.type not in cfg.event_types:
            return False
        if cfg.levels and event.data.get("to") not in cfg.levels:
            return False
        with self._lock:
            ring = self._rings.get(event.stream_id)
            if ring is None or not ring.anchors:
                return False
            center = ring.index_of(float(event.time))
            start = center - int(round(cfg.pre_s * ring.rate))
            stop = center + int(round(cfg.post_s * ring.rate))
            self._pending.setdefault(event.stream_id, []).append(
                _Pending(event, start, max(stop, start + 1), center)
            )
            return True

    def poll(self) -> list[Capture]:
        """Write every capture whose samples are all here (``push`` already does this)."""
        with self._lock:
            return [c for sid, ring in self._rings.items() for c in self._finish(sid, ring, force=False)]

    def close(self) -> list[Capture]:
        """Write all pending captures with what has arrived (marked truncated)."""
        with self._lock:
            return [c for sid, ring in self._rings.items() for c in self._finish(sid, ring, force=True)]

    def forget(self, stream: str) -> list[Capture]:
        """Drop a stream's ring (the monitor retired the stream): captures it still waits on are
        written with what has arrived (marked truncated), and its memory goes back to the budget."""
        with self._lock:
            ring = self._rings.pop(stream, None)
            if ring is None:
                return []
            self._bytes -= ring.data.nbytes
            done = self._finish(stream, ring, force=True)
            self._pending.pop(stream, None)
            return done

    @property
    def pending(self) -> int:
        with self._lock:
            return sum(len(p) for p in self._pending.values())

    def _finish(self, sid: str, ring: _Ring, *, force: bool) -> list[Capture]:
        pending = self._pending.get(sid)
        if not pending:
            return []
        done: list[Capture] = []
        keep: list[_Pending] = []
        for p in pending:
            if p.stop <= ring.total or force:
                capture = self._write(sid, ring, p)
                if capture is not None:
                    done.append(capture)
            else:
                keep.append(p)
        self._pending[sid] = keep
        return done

    def _write(self, sid: str, ring: _Ring, p: _Pending) -> Capture | None:
        oldest = max(0, ring.total - ring.capacity)
        start = max(p.start, oldest)
        stop = min(p.stop, ring.total)
        if stop <= start:
            self._fail(f"capture for {sid} at {p.event.time:.3f}: no samples left in the ring")
            return None
        data = ring.read(start, stop)
        # Time of the first saved sample, from the event's own anchor.
        t_start = float(p.event.time) + (start - p.center) / ring.rate
        stem = self._stem(sid, p.event)
        wav, meta = self.folder / f"{stem}.wav", self.folder / f"{stem}.json"
        truncated = start > p.start or stop < p.stop
        info: dict[str, Any] = {
            "event": p.event.to_json(),
            "stream": sid,
            "wav": wav.name,
            "sample_rate": ring.rate,
            "channels": int(data.shape[1]),
            "samples": int(data.shape[0]),
            "start_time": t_start,
            "duration_s": data.shape[0] / ring.rate,
            "pre_s": (p.center - start) / ring.rate,
            "post_s": (stop - p.center) / ring.rate,
            "requested_pre_s": self.config.pre_s,
            "requested_post_s": self.config.post_s,
            "truncated": truncated,
            "written": time.time(),
        }
        try:
            from scipy.io import wavfile  # here: every monitor imports this module, few capture

            buf = io.BytesIO()
            wavfile.write(buf, int(round(ring.rate)), data[:, 0] if data.shape[1] == 1 else data)
            write_atomic(wav, buf.getvalue())  # whole or not at all: no half a WAV on a full disk
            write_atomic(meta, (json.dumps(info, indent=2) + "\n").encode("utf-8"))
        except (OSError, ValueError) as exc:
            with contextlib.suppress(OSError):  # a WAV without its .json is no capture
                wav.unlink(missing_ok=True)
            why = getattr(exc, "strerror", None) or exc
            self._fail(f"cannot write capture {wav}: {why}; check free space and permissions of {self.folder}")
            return None
        capture = Capture(wav, meta, sid, t_start, int(data.shape[0]), ring.rate, truncated)
        self.written.append(capture)
        return capture

    def _stem(self, sid: str, event: Event) -> str:
        try:
            stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(event.time))
            millis = int((event.time % 1) * 1000)
        except (OverflowError, OSError, ValueError):  # a time no calendar shows: name it by the clock here
            stamp, millis = time.strftime("%Y%m%dT%H%M%S", time.gmtime()), 0
        safe = re.sub(r"[^A-Za-z0-9_.-]+", "-", sid).strip("-") or "stream"
        change = f"{event.data.get('from', '')}-{event.data.get('to', '')}".strip("-") or event.type
        stem = f"{stamp}.{millis:03d}Z_{safe}_{change}"
        candidate, k = stem, 1
        while (self.folder / f"{candidate}.wav").exists():
            k += 1
            candidate = f"{stem}_{k}"
        return candidate

    def _fail(self, message: str) -> None:
        self.errors += 1
        self.last_error = message
