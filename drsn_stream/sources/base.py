"""What every source shares: spec parsing, typed options, counters, pacing and close()."""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar
from urllib.parse import parse_qsl

from drsn_stream.clock import WallSteps
from drsn_stream.config import bound_text
from drsn_stream.errors import ConfigError, DrsnStreamError, SourceError, did_you_mean
from drsn_stream.types import Frame

DEFAULT_MAX_STREAMS = 4096  # stream ids one source takes; new ids beyond are refused and counted
# once they are all taken, a stream silent this long gives its place to a new id (a gateway
# restarted under new names, a sensor replaced); a dead sensor stays shown as "no data" till then
DEFAULT_RECLAIM_AFTER_S = 600.0
# A restartable source whose frame generator fails this often within CRASH_WINDOW_S gives up (a
# bug that fires on every message would otherwise spin); below that it is counted and restarted.
MAX_CRASHES = 100
CRASH_WINDOW_S = 10.0
# a reader that has not handed over a batch or waited for input for this long is stuck, not busy:
# the streams it reads are judged by the wall clock again (read_to)
MAX_STALL_S = 30.0


@dataclass(frozen=True)
class SourceSpec:
    """A parsed ``KIND[:TARGET][?key=value&...]`` string."""

    kind: str
    target: str
    options: dict[str, str] = field(default_factory=dict)


def parse_spec(spec: str) -> SourceSpec:
    """Split ``KIND[:TARGET][?key=value&...]`` into kind, target and raw string options.

    ``zmq://host:port`` style targets lose their leading ``//``; a key without ``=`` (``?fast``)
    means ``"1"``. Kinds are not checked here (``make_source`` does that).
    """
    if not isinstance(spec, str) or not spec.strip():
        raise ConfigError("empty source spec; examples: sim, sim:bearing?machines=8, file:rec.wav, "
                          "zmq://127.0.0.1:5555, mic")
    head, _, query = spec.strip().partition("?")
    kind, _, target = head.partition(":")
    if target.startswith("//"):
        target = target[2:]
    options: dict[str, str] = {}
    for part in filter(None, query.split("&")):
        key, eq, value = part.partition("=")
        pairs = parse_qsl(part, keep_blank_values=True) if eq else [(key, "1")]
        for k, v in pairs:
            options[k.strip()] = v.strip()
    return SourceSpec(kind.strip().lower(), target.strip(), options)


def opt_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on", ""):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"expected 1/0, true/false or yes/no, got {value!r}")


def opt_positive(kind: Callable[[Any], Any], most: float | None = None) -> Callable[[Any], Any]:
    """A number > 0 (not NaN), and at most ``most`` where given: counts and rates are turned into
    arrays, threads and sockets, and 2^63 of them hung a source or raised from inside a library."""
    def parse(value: Any) -> Any:
        v = _number(kind, value)
        if not v > 0:
            raise ValueError(f"must be > 0, got {value!r}")
        if most is not None and not v <= most:
            raise ValueError(f"must be at most {bound_text(most)}, got {value!r}")
        return v

    return parse


def opt_finite(least: float | None = None, most: float | None = None) -> Callable[[Any], float]:
    """A finite number (not NaN or Inf), at least ``least`` and at most ``most`` where given."""
    def parse(value: Any) -> float:
        v = _number(float, value)
        if not math.isfinite(v):
            raise ValueError(f"must be a finite number, got {value!r}")
        if least is not None and v < least:
            raise ValueError(f"must be >= {least:g}, got {value!r}")
        if most is not None and v > most:
            raise ValueError(f"must be at most {bound_text(most)}, got {value!r}")
        return v

    return parse


def opt_index(what: str) -> Callable[[Any], int]:
    """A number of something counted from 0 (a channel, a machine): an int >= 0."""
    def parse(value: Any) -> int:
        k = _number(int, str(value))
        if k < 0:
            raise ValueError(f"{what} count from 0, got {value!r}")
        return k

    return parse


def _number(kind: Callable[[Any], Any], value: Any) -> Any:
    """``kind(value)``, refused in the option's terms (int()'s own words were "invalid literal for
    int() with base 10")."""
    try:
        return kind(value)
    except (TypeError, ValueError):
        raise ValueError(f"not a {'whole ' if kind is int else ''}number") from None


def opt_choice(*choices: str) -> Callable[[Any], str]:
    def parse(value: Any) -> str:
        v = str(value).strip().lower()
        if v not in choices:
            raise ValueError(f"must be one of {', '.join(choices)}, got {value!r}")
        return v

    return parse


PER_STREAM_COUNTERS = ("gaps", "missing", "restarts", "duplicates", "late", "overflows")  # SourceStats' {stream: count}


class SourceStats:
    """Counters a source keeps while it runs; safe to read from another thread via ``snapshot()``.

    Attributes (update through the methods, read through ``snapshot()``):
        frames / samples: delivered so far.
        malformed: {reason: count} of rejected input (bad_json, bad_size, ...).
        gaps: {stream: count} of sequence jumps; missing: {stream: frames skipped by them}.
        restarts: {stream: count} of publishers that started again from a lower seq.
        duplicates: {stream: count} of frames whose seq was already delivered (dropped).
        late: {stream: count} of frames that arrived after a later one (out of order; dropped,
            no longer counted in ``missing``).
        overflows: {stream: count} of input overflows (samples lost before we saw them).
        ended: streams that announced end of stream.
        retired: streams whose places went to new ids once ``max_streams`` were taken (``make_room``).
        gone: {counter: count} of the per-stream counters above (gaps ... overflows) of streams no
            longer held (retired, or handed over to another cluster host): a stream's entries move
            here when it goes, so the record stays as large as the streams held, however many ids
            came and went, and the totals stay whole.
        crashes: unexpected errors inside the source that it survived (restarted);
            last_crash: the latest one's text.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.frames = 0
        self.samples = 0
        self.malformed: dict[str, int] = {}
        self.gaps: dict[str, int] = {}
        self.missing: dict[str, int] = {}
        self.restarts: dict[str, int] = {}
        self.duplicates: dict[str, int] = {}
        self.late: dict[str, int] = {}
        self.overflows: dict[str, int] = {}
        self.ended: set[str] = set()
        self.retired = 0
        self.gone: dict[str, int] = {}
        self.crashes = 0
        self.last_crash = ""

    def frame(self, frame: Frame) -> None:
        self.frames_of((frame,))

    def frames_of(self, frames: list[Frame] | tuple[Frame, ...]) -> None:
        """``frame()`` for each of ``frames``, in one lock hold."""
        samples = 0
        with self._lock:
            for frame in frames:
                samples += frame.samples.shape[0]  # frame.n, without a property call per frame
                if frame.overflow:
                    self.overflows[frame.stream_id] = self.overflows.get(frame.stream_id, 0) + frame.overflow
            self.frames += len(frames)
            self.samples += samples

    def bad(self, reason: str) -> None:
        with self._lock:
            self.malformed[reason] = self.malformed.get(reason, 0) + 1

    def gap(self, stream: str, missing: int) -> None:
        with self._lock:
            self.gaps[stream] = self.gaps.get(stream, 0) + 1
            self.missing[stream] = self.missing.get(stream, 0) + missing

    def restart(self, stream: str) -> None:
        with self._lock:
            self.restarts[stream] = self.restarts.get(stream, 0) + 1
            self.ended.discard(stream)

    def duplicate(self, stream: str) -> None:
        with self._lock:
            self.duplicates[stream] = self.duplicates.get(stream, 0) + 1

    def arrived_late(self, stream: str) -> None:
        """A frame counted missing by a gap arrived after all: it is late, not missing."""
        with self._lock:
            self.late[stream] = self.late.get(stream, 0) + 1
            if self.missing.get(stream, 0) > 0:
                self.missing[stream] -= 1

    def crash(self, text: str) -> None:
        with self._lock:
            self.crashes += 1
            self.last_crash = text

    def overflow(self, stream: str, count: int = 1) -> None:
        with self._lock:
            self.overflows[stream] = self.overflows.get(stream, 0) + count

    def end(self, stream: str) -> None:
        with self._lock:
            self.ended.add(stream)

    def retire(self, stream: str) -> None:
        with self._lock:
            self.retired += 1
        self.forget(stream)

    def forget(self, stream: str) -> None:
        """A stream no longer held: its per-stream counts move into ``gone``."""
        with self._lock:
            self.ended.discard(stream)
            for name in PER_STREAM_COUNTERS:
                n = getattr(self, name).pop(stream, 0)
                if n:
                    self.gone[name] = self.gone.get(name, 0) + n

    @property
    def malformed_total(self) -> int:
        with self._lock:
            return sum(self.malformed.values())

    def snapshot(self) -> dict[str, Any]:
        """A consistent copy: ``{"frames", "samples", "malformed", "gaps", "missing", "restarts",
        "duplicates", "late", "overflows", "ended", "retired", "gone", "crashes", "last_crash"}``."""
        with self._lock:
            return {
                "frames": self.frames,
                "samples": self.samples,
                "malformed": dict(self.malformed),
                "gaps": dict(self.gaps),
                "missing": dict(self.missing),
                "restarts": dict(self.restarts),
                "duplicates": dict(self.duplicates),
                "late": dict(self.late),
                "overflows": dict(self.overflows),
                "ended": sorted(self.ended),
                "retired": self.retired,
                "gone": dict(self.gone),
                "crashes": self.crashes,
                "last_crash": self.last_crash,
            }


class Source:
    """Base class: a context manager and an iterable of Frames.

    Subclasses declare ``OPTIONS`` ({name: (parser, default, help)}), implement ``_open()``,
    ``_frames()`` (a generator that checks ``self.closed``) and optionally ``_close()`` and
    ``_batches()`` (lists of the frames ready at once, for ``batches()``).
    Iteration ends at end of stream or soon after ``close()`` is called from any thread.

    ``on_idle`` (optional, set by the consumer): called on the iterating thread whenever the
    source has handed over every frame it has and is about to wait for more (pacing sleeps,
    an empty socket or sound-card ring); the monitor passes ``MicroBatcher.flush`` so a burst's
    windows need not wait ``max_wait_ms`` for more that are not coming yet.

    ``max_streams``: the most stream ids a source that learns them from its input takes.
    ``make_room`` (optional, set by the consumer): called with a new stream id when
    ``max_streams`` are taken; True when it retired a stream of this source (``forget_stream``)
    to make room, so the new id is taken rather than refused; ``polling()`` says which streams
    have a frame in the poll the new id came in, taken but not handed over yet (not silent).
    ``on_end`` (optional, set by the consumer): called on the iterating thread with the stream ids
    that announced their end (the wire format's end of stream), after the batch with their last
    frames has been handed over (the monitor's sensor health then raises no "no data" for them).

    An unexpected exception inside ``_frames`` never ends iteration silently: a ``restartable``
    source (a socket that simply reads on) counts it in ``stats.crashes`` and starts ``_frames``
    again; any other source, or one that keeps failing (``MAX_CRASHES`` in ``CRASH_WINDOW_S``),
    raises ``SourceError`` with one line that names the source and the error.
    """

    kind: ClassVar[str] = ""
    restartable: ClassVar[bool] = False
    OPTIONS: ClassVar[dict[str, tuple[Callable[[Any], Any], Any, str]]] = {}

    def __init__(self, target: str = "", **options: Any) -> None:
        self.target = target
        self.options = self.parse_options(options)
        self.stats = SourceStats()
        self._streams: list[str] = []
        self._stream_set: set[str] = set()
        self.max_streams = DEFAULT_MAX_STREAMS
        self.make_room: Callable[[str], bool] | None = None
        self.on_end: Callable[[list[str]], None] | None = None
        self._closed = threading.Event()
        self._opened = False
        self._iter_thread: threading.Thread | None = None
        self.on_idle: Callable[[], None] | None = None
        # (stream, line) a source says once as it runs (a sound card lost and back): the monitor
        # takes them as ``note`` events, for the dashboard and the results feed
        self.notes: deque[tuple[str, str]] = deque()
        # wall time of the latest batch handed over or wait for input: the monitor read this
        # source up to here, so a stream silent until then was silent at the source, not behind
        # a stalled reader (HealthMonitor.tick)
        self.read_at: float | None = None

    @classmethod
    def parse_options(cls, raw: dict[str, Any]) -> dict[str, Any]:
        unknown = sorted(set(raw) - set(cls.OPTIONS))
        if unknown:
            valid = ", ".join(f"{k} ({h})" for k, (_, _, h) in cls.OPTIONS.items()) or "none"
            raise ConfigError(f"unknown option(s) {', '.join(unknown)} for source {cls.kind!r}"
                              f"{did_you_mean(unknown, cls.OPTIONS)}; valid: {valid}")
        out = {}
        for name, (parse, default, help_) in cls.OPTIONS.items():
            if name in raw and raw[name] is not None:
                try:
                    out[name] = parse(raw[name])
                except (TypeError, ValueError) as exc:
                    raise ConfigError(f"source {cls.kind!r} option {name}={raw[name]!r}: {exc} ({help_})") from exc
            else:
                out[name] = default
        return out

    @property
    def realtime(self) -> bool:
        """False for a replay faster than real time (``fast`` or ``speed`` other than 1): its
        capture stamps follow the sample clock and run ahead of the wall clock."""
        return not self.options.get("fast") and float(self.options.get("speed", 1.0)) == 1.0

    @property
    def streams(self) -> list[str]:
        """Stream ids this source knows so far (all of them for sim and file sources)."""
        return list(self._streams)

    @property
    def closed(self) -> bool:
        return self._closed.is_set()

    def _known(self, stream: str) -> bool:
        """Note a stream id; False (and counted as ``too_many_streams``) for a new one beyond
        ``max_streams``."""
        if stream in self._stream_set:
            return True
        if len(self._stream_set) >= self.max_streams and (self.make_room is None or not self.make_room(stream)):
            self.stats.bad("too_many_streams")
            return False
        self._stream_set.add(stream)
        self._streams.append(stream)
        return True

    def polling(self) -> set[str]:
        """The stream ids of frames taken in the poll this source is in the middle of, not handed
        over yet (a ZeroMQ source's receive loop; none for others). Read while ``make_room`` runs:
        such a stream sent just now, whatever its last frame handed over says."""
        return set()

    def forget_stream(self, stream: str, *, retired: bool = True) -> None:
        """Drop a stream id: its place is free, and a frame of it later is a new stream's.
        ``retired``: the monitor gave its place to a new id after a long silence (counted in
        ``stats.retired``); else it was handed over (a cluster host releasing it)."""
        if stream in self._stream_set:
            self._stream_set.discard(stream)
            self._streams.remove(stream)
            if retired:
                self.stats.retire(stream)
            else:
                self.stats.forget(stream)

    def open(self) -> Source:
        if not self._opened:
            self._open()
            self._opened = True
        return self

    def close(self) -> None:
        """Stop iteration soon (safe from any thread) and release resources."""
        self._closed.set()

    def check(self) -> None:
        """Cheap checks that can fail before anything is opened (a missing file, no sound card);
        raises SourceError. ``open()`` still checks everything."""

    def waiting(self) -> str | None:
        """What a source that has delivered nothing yet is waiting for, said to the user (None:
        nothing worth saying; a paced file or simulator is never silent for long)."""
        return None

    def release(self) -> None:
        """Releases what ``open()`` took if no thread is iterating (idempotent)."""
        if self._iter_thread is None:
            self._release()

    def __enter__(self) -> Source:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()
        # Sockets and streams belong to the iterating thread; it releases them when it stops.
        if self._iter_thread is None or self._iter_thread is threading.current_thread():
            self._release()

    def __iter__(self) -> Iterator[Frame]:
        for frame in self._guarded(self._frames):
            self.stats.frame(frame)
            self.read_at = time.time()
            yield frame

    def batches(self) -> Iterator[list[Frame]]:
        """The same frames as iteration, in the same order, in lists: every frame a source has
        ready at once (one socket poll's worth for ZeroMQ; one frame for sources that make their
        frames one by one), so a consumer can take a poll's frames in one step."""
        for batch in self._guarded(self._batches):
            if batch:
                self.stats.frames_of(batch)
                self.read_at = time.time()
                yield batch

    def _guarded(self, make: Callable[[], Iterator[Any]]) -> Iterator[Any]:
        """What ``make()`` yields, until closed: an unexpected error restarts a ``restartable``
        source (counted) and otherwise ends it with one ``SourceError`` line."""
        self.open()
        self._iter_thread = threading.current_thread()
        crashes: deque[float] = deque(maxlen=MAX_CRASHES)
        try:
            while not self.closed:
                try:
                    for item in make():
                        if self.closed:
                            return
                        yield item
                    return
                except DrsnStreamError:
                    raise  # already one clear line
                except Exception as exc:  # noqa: BLE001 - counted, then restarted or raised as one line
                    text = f"{type(exc).__name__}: {str(exc)[:200]}"
                    self.stats.crash(text)
                    crashes.append(time.monotonic())
                    spinning = len(crashes) == MAX_CRASHES and crashes[-1] - crashes[0] < CRASH_WINDOW_S
                    if not self.restartable or spinning:
                        raise SourceError(f"source {self.kind}:{self.target} stopped: {text}") from exc
        finally:
            self._iter_thread = None
            self._release()

    def _release(self) -> None:
        if self._opened:
            self._opened = False
            self._close()

    def _open(self) -> None:
        raise NotImplementedError

    def _frames(self) -> Iterator[Frame]:
        raise NotImplementedError

    def _batches(self) -> Iterator[list[Frame]]:
        """Lists of the frames ready at once; by default one frame each. A subclass that reads
        whole polls overrides this and derives ``_frames`` from it (so that a further subclass
        filtering ``_batches`` filters iteration too)."""
        for frame in self._frames():
            yield [frame]

    def _close(self) -> None:
        pass

    def _idle(self) -> None:
        """Tell the consumer that every frame so far is handed over and a wait follows."""
        self.read_at = time.time()
        if self.on_idle is not None:
            self.on_idle()

    def _start_clock(self) -> None:
        """Start a paced source's clock: capture time ``t0`` is now, on the wall clock."""
        self.t0 = time.time()
        self._mono0 = time.monotonic()
        self._steps = WallSteps()

    def _sleep_until(self, t_wall: float) -> bool:
        """Wait until capture time ``t_wall`` (``t0`` + seconds of signal) is due, or until
        closed; False when closed.

        The wait runs on the monotonic clock, and a step of the wall clock (an NTP step, a
        laptop waking from suspend, ``date -s``) moves ``t0`` with it: a step forward used to
        replay the skipped span as fast as it could (an hour of signal in a burst, the monitor
        flooded) and a step back to stop the source for as long. Capture times follow the
        wall clock's steps, as a gateway's would."""
        due = self._mono0 + (t_wall - self.t0)
        if due > time.monotonic():
            self._idle()
            if self._closed.wait(max(0.0, due - time.monotonic())):
                return False
        self._follow_wall_clock()  # after the wait, which is when a step is likeliest to have come
        return not self.closed

    def _follow_wall_clock(self) -> None:
        """Move ``t0`` by a step of the wall clock since the last look."""
        step = self._steps.check()
        if step is not None:
            self.t0 += step[0]


def read_to(sources: Iterable[Source], now: float) -> float:
    """The time up to which every one of ``sources`` has been read (``Source.read_at``; a source
    not read yet has no streams and does not count), ``now`` at most. The sensor health judges
    "no data" up to there (``HealthMonitor.tick``): frames that wait in a socket while the monitor's
    own reader stalls (a busy host, a long first batch) do not make their streams look silent. A
    reader stalled for more than ``MAX_STALL_S`` is taken as stuck, and its streams are judged up
    to that long ago."""
    out = now
    for src in sources:
        if src.read_at is not None:
            out = min(out, max(src.read_at, now - MAX_STALL_S))
    return out

