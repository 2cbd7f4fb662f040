"""Ingest across cores: a ZeroMQ SUB source read, checked and windowed by several processes.

One ingest thread (decode, sensor health, DSP: tens of microseconds of Python per frame) is the
limit of a big host long before the model is. ``ShardedSource`` stands in for a ``zmq://`` source:
it starts N child interpreters (``python -m drsn_stream.app.shards``), each with a SUB socket of
its own to the same publisher, keeping the streams whose id hashes to it and running sensor health
and per-stream DSP for them exactly as the in-process path does. Windows come back through one
shared-memory ring per child, ``(slots, rows, window)`` float32, beside it their numbers
(``(slots, rows, META)`` float64: stream code, index, capture time, time formed, level, flags);
the child's stdout pipe carries only which slot is full and how many rows it holds (with the ids
of streams new to it), then health events, error lines and counters as small JSON lines, in the
order they happened. Where the monitor has no envelope stage (which reads raw samples) the child
also normalizes each slot's windows, as the engine loop would, bit for bit; the parent's reading
loop hands the windows to the micro-batcher as the in-process path does, and the engine loop
then only stacks them. Per window the parent does no JSON and no normalization: on a host whose
model is fast, its one interpreter lock is the limit (docs/performance.md).

Sharding uses ZeroMQ subscriptions on the topic, which is the stream id (docs/wire-format.md),
with a hash to decide the owner: ids are free text (``m000`` .. ``m999`` share every prefix but
the last characters), so fixed prefixes cannot split unknown ids evenly. Stream ``s`` belongs to
process ``crc32(s) % N``. Every process starts subscribed to the source's topic (everything by
default) and drops the others' messages by their topic frame alone (before decoding, ~1 us).
LEARN_S seconds after the first message of a stream of its own, each process but the first
subscribes to the exact topics of its own streams and drops the shared subscription: from then on the publisher sends each of its
streams to it alone. The first process keeps the shared subscription to find streams that start
later; it tells the parent, which has the owner subscribe to the new topic (the owner misses the
stream's first frames meanwhile, a few tens of milliseconds). The publisher thus sends every
message about twice instead of N times. A process drops the topic of a stream it retires (and,
past twice --max-streams topics, those of ids it was given but refused), and the first process
announces such a topic again if it comes again; it remembers the latest ``MAX_DISCOVERED`` topics
it announced. So a process's topics stay about as many as its streams however many ids come and
go. A malformed message on a topic no process has asked for is
not counted until its owner subscribes to that topic.

A child that dies is said in one line, counted and started again (its streams lose their windows
in flight and their DSP state); one that dies more than ``MAX_RESTARTS`` times within
``RESTART_WINDOW_S`` is not started again and its streams are reported lost. A child that stops
answering is never waited for: the parent's pipe reads and writes do not block.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import select
import signal
import subprocess
import sys
import time
import zlib
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from functools import partial
from multiprocessing import shared_memory
from types import SimpleNamespace
from typing import Any

import numpy as np

from drsn_stream.app.ingest import Ingest, SpeedLog
from drsn_stream.dsp.normalize import BatchNormalizer
from drsn_stream.errors import SourceError
from drsn_stream.monitor.health import CHECK_SENSOR, HealthConfig, HealthMonitor, StreamHealth, silent_only
from drsn_stream.runtime import (
    attach_shared_memory,
    child_process,
    freeze_start_up_objects,
    start_resource_tracker,
)
from drsn_stream.sources import make_source, parse_spec
from drsn_stream.sources.base import PER_STREAM_COUNTERS, Source, read_to
from drsn_stream.sources.zmq_source import unresolved_hosts
from drsn_stream.types import Event, Frame, Window

SHARDABLE_KINDS = ("zmq",)  # SUB sockets that connect: every child can subscribe to the same publisher
SLOTS = 8  # ring slots per child
ROWS = 128  # windows per slot
META = 6  # numbers per window beside the ring: stream code, index, t_last, t_ready, level, flags
HEALTHY, NORMALIZED = 1, 2  # the flags
FLUSH_S = 0.005  # a child hands over windows at least this often while frames keep coming
STATS_S = 0.5  # a child reports counters and health this often
NEWS_S = 0.02  # and new streams and ends of streams at least this often (and before going idle)
READY_TIMEOUT_S = 60.0
MAX_RESTARTS = 5
RESTART_WINDOW_S = 600.0
LEARN_S = 3.0  # s after its first own stream's message: a process but the first then takes its own topics alone
MAX_DISCOVERED = 1 << 18  # topics the first process remembers having announced (the oldest forgotten first)
SUBSCRIBED_PER_STREAM = 2  # exact topics a process keeps, per stream it may hold, before it drops those it does not hold
HELD_S = 0.5  # the processes are told this often which streams hold alarms nobody acknowledged yet
SILENT_S = 15.0  # a started child says something at least every ~0.1 s; silent this long, it is ended
LOST = "ingest process lost"  # the health reason of the streams of a process not started again


def shard_of(topic: bytes, shards: int) -> int:
    """The ingest process (0 .. shards-1) that owns the stream whose topic frame is ``topic``;
    crc32, so every process agrees whatever its hash seed."""
    return zlib.crc32(topic) % shards


def shardable(spec: str) -> bool:
    """Whether a source spec can be split across ingest processes (ZeroMQ SUB, connecting)."""
    return parse_spec(spec).kind in SHARDABLE_KINDS


class HealthMirror(HealthMonitor):
    """A ``HealthMonitor`` that also shows the streams whose health the ingest processes judge:
    their states arrive as copies (``update``) and as health events (``note``). Streams of
    in-process sources are judged here as usual."""

    def __init__(self, config: HealthConfig | None = None) -> None:
        super().__init__(config)
        self._remote: dict[str, StreamHealth] = {}
        # the rest levels told (None: forgotten), for the ingest processes; changes counted
        self._rest_told: dict[str, float | None] = {}
        self.rest_changes = 0

    def set_rest_levels(self, levels: Mapping[str, float | None]) -> None:
        super().set_rest_levels(levels)
        with self._lock:
            self._rest_told.update(levels)
            self.rest_changes += 1

    def rest_told(self) -> tuple[int, dict[str, float | None]]:
        """The rest levels told so far, and how many changes they are."""
        with self._lock:
            return self.rest_changes, dict(self._rest_told)

    def update(self, states: dict[str, StreamHealth]) -> None:
        with self._lock:
            self._remote.update(states)

    def note(self, event: Event) -> None:
        """A health event from a child: the stream's state changes here at once."""
        with self._lock:
            old = self._remote.get(event.stream_id, StreamHealth(event.stream_id))
            self._remote[event.stream_id] = dataclasses.replace(
                old, state=str(event.data.get("to", old.state)), reasons=tuple(event.data.get("reasons", ())),
                since=event.time)

    def healthy(self, stream: str) -> bool:
        with self._lock:
            remote = self._remote.get(stream)
        return remote.ok if remote is not None else super().healthy(stream)

    def unhealthy(self, streams: Iterable[str], *, no_data: bool = True) -> set[str]:
        streams = list(streams)
        with self._lock:
            remote = {sid: self._remote[sid] for sid in streams if sid in self._remote}
        local = super().unhealthy((sid for sid in streams if sid not in remote), no_data=no_data)
        return local | {sid for sid, h in remote.items() if not h.ok and (no_data or not silent_only(h.reasons))}

    def state(self, stream: str) -> StreamHealth:
        with self._lock:
            remote = self._remote.get(stream)
        return remote if remote is not None else super().state(stream)

    def forget(self, stream: str) -> None:
        with self._lock:
            self._remote.pop(stream, None)
        super().forget(stream)

    def states(self, streams: Any = None) -> dict[str, StreamHealth]:
        with self._lock:
            remote = dict(self._remote)
        ids = list(streams) if streams is not None else None
        local = super().states(None if ids is None else [s for s in ids if s not in remote])
        if ids is None:
            return {**local, **remote}
        return {s: remote[s] if s in remote else local[s] for s in ids}

    @property
    def streams(self) -> list[str]:
        local = super().streams
        with self._lock:
            remote = list(self._remote)
        known = set(local)
        return local + [s for s in remote if s not in known]


# ---------------------------------------------------------------------- the child


class _Stage:
    """The in-process ingest stage (``app/ingest.py``) for one child's streams, a poll at a time;
    windows and events gathered for the parent."""

    def __init__(self, meta: Any, hop: int | None, health: HealthMonitor, max_streams: int, out: _Out,
                 phases: int = 1, reclaim_after_s: float = 0.0,
                 keep: Callable[[list[str]], set[str]] | None = None) -> None:
        self.errors: Counter[str] = Counter()
        self.streams: dict[str, None] = {}  # frame stream ids seen, in order (Source.streams copies its list)
        self.gone: set[str] = set()  # of those, the ones retired (Ingest.make_room) and not back since
        self.retired: list[list[Any]] = []  # [frame stream id, channel ids, line] not yet told the parent
        self.relayouts: list[list[Any]] = []  # [frame stream id, channel ids gone, line] not yet told
        self.out = out
        self.ingest = Ingest(meta, hop, health, max_streams, on_events=out.events, on_error=self._error,
                             phases=phases, reclaim_after_s=reclaim_after_s, on_retire=self._retire,
                             on_layout=lambda sid, gone, line: self.relayouts.append([sid, list(gone), line]),
                             keep=keep)
        self.ingest.speeds.changes = []  # handed to the monitor's log with each poll's windows

    def _error(self, line: str) -> None:
        self.errors[line] += 1

    def _retire(self, sid: str, ids: tuple[str, ...], line: str) -> None:
        self.gone.add(sid)
        self.retired.append([sid, list(ids), line])

    def known(self) -> list[str]:
        """The frame stream ids this process has, in order (retired ones left out)."""
        gone = self.gone
        return [sid for sid in self.streams if sid not in gone] if gone else list(self.streams)

    def poll(self, frames: list[Frame], source: Source) -> None:
        """One run of a poll's frames (``slices``): their windows to the parent, judged as in-process."""
        self.streams.update(dict.fromkeys([f.stream_id for f in frames]))
        if self.gone:  # a retired stream that sends again is a stream of this process again
            self.gone.difference_update([f.stream_id for f in frames])
        windows = self.ingest.frames(frames, source)
        changes = self.ingest.speeds.changes
        if changes:  # the changes of speed these frames carried (the wire format's rpm), before their windows
            self.out.send({"rpm": changes})
            self.ingest.speeds.changes = []
        if windows:
            self.out.windows(windows, [w.healthy for w in windows])

    def nonfinite(self) -> dict[str, int]:
        return self.ingest.nonfinite()


def _ended(out: _Out, stage: _Stage, streams: list[str]) -> None:
    """Streams that announced their end (the source's ``on_end``): no "no data" for them."""
    events = stage.ingest.end(streams)
    if events:
        out.events(events)


class _Out:
    """The child's side of the ring and the pipe: windows into free slots, lines to the parent;
    from stdin, slot releases (``SLOT\\n``), topics to subscribe to (``s HEX\\n``), topics to announce
    again when they come (``f HEX\\n``, the first process: their owner dropped them), changes to the
    streams holding alarms nobody has acknowledged yet (``k [ADDED, REMOVED]\\n``, JSON) and to the
    levels their machines rest under (``r {STREAM: LEVEL or null}\\n``, ``set_rest_levels``); the end
    of stdin means stop.

    Args:
        ring / meta: the shared ring ``(SLOTS, ROWS, window)`` and its numbers ``(SLOTS, ROWS, META)``.
        write: sends bytes to the parent.
        normalizer: normalizes each slot's raw windows before it leaves (None: they leave raw).
    """

    def __init__(self, ring: np.ndarray, meta: np.ndarray, write: Callable[[bytes], None],
                 normalizer: BatchNormalizer | None = None) -> None:
        self.ring, self.meta_ring, self._write, self.normalizer = ring, meta, write, normalizer
        self.free: deque[int] = deque(range(ring.shape[0]))
        self.slot: int | None = None
        self.meta: list[tuple[int, int, float, float, float, int]] = []
        self.codes: dict[str, int] = {}  # stream id -> its code in the numbers (the parent keeps the same list)
        self.new_ids: list[tuple[int, str]] = []  # (code, id) coded since the last slot left
        # codes of streams retired, given to new ones: the table stays as large as the streams held
        self._free_codes: list[int] = []
        self._next_code = 0
        self.t_first = 0.0
        self.stopped = False
        self.subs: list[bytes] = []  # topics the parent asked this process to subscribe to
        # channel streams holding an alarm not yet acknowledged (the monitor's decisions, said by
        # the parent): never retired to make room for a new stream, or the alarm would vanish unseen
        self.held: set[str] = set()
        self.reannounce: list[bytes] = []  # topics to announce again when they come (another process dropped them)
        self.rest: dict[str, float | None] = {}  # rest levels told, not yet given to sensor health
        self._inbuf = b""
        self._next_read = 0.0

    def send(self, obj: dict[str, Any]) -> None:
        self._write(json.dumps(obj, separators=(",", ":"), default=_plain).encode("utf-8") + b"\n")

    def windows(self, windows: list[Window], healthy: list[bool]) -> None:
        for w, ok in zip(windows, healthy):
            if self.slot is None:
                self.slot = self._take_slot()
                if self.slot is None:
                    return  # stopping
                self.t_first = time.monotonic()
            self.ring[self.slot, len(self.meta)] = w.data
            code = self.codes.get(w.stream_id)
            if code is None:
                if self._free_codes:
                    code = self._free_codes.pop()
                else:
                    code, self._next_code = self._next_code, self._next_code + 1
                self.codes[w.stream_id] = code
                self.new_ids.append((code, w.stream_id))
            self.meta.append((code, w.index, w.t_last, w.t_ready, w.level,
                              HEALTHY * bool(ok) + NORMALIZED * bool(w.normalized)))
            if len(self.meta) == self.ring.shape[1]:
                self.flush()

    def events(self, events: list[Event]) -> None:
        self.flush()  # the windows formed before them go first, as in-process
        self.send({"e": [[e.type, e.stream_id, e.time, e.data] for e in events]})

    def flush(self, idle: bool = False) -> None:
        if self.slot is not None and self.meta:
            n = len(self.meta)
            meta = self.meta_ring[self.slot, :n]
            meta[:] = self.meta
            if self.normalizer is not None and not (meta[:, 5] >= NORMALIZED).any():  # every window raw
                meta[:, 4] = self.normalizer.in_place(self.ring[self.slot, :n])[1]
                meta[:, 5] += NORMALIZED
            msg: dict[str, Any] = {"w": self.slot, "k": n, "i": idle}
            if self.new_ids:
                msg["ids"], self.new_ids = self.new_ids, []
            self.send(msg)
            self.slot, self.meta = None, []
        elif idle:
            self.send({"i": True})

    def forget_codes(self, ids: Iterable[str]) -> None:
        """Streams gone (retired, left out by a new layout): their codes go to new streams. Called
        after ``flush``: a window in a slot not yet handed over still carries its code."""
        for sid in ids:
            code = self.codes.pop(sid, None)
            if code is not None:
                self._free_codes.append(code)

    def due(self) -> bool:
        return bool(self.meta) and time.monotonic() - self.t_first >= FLUSH_S

    def read_control(self, timeout: float = 0.0) -> None:
        """Takes the parent's slot releases; an ended stdin means stop. Looks at most every 10 ms
        unless asked to wait (a system call per frame would cost more than the frame)."""
        now = time.monotonic()
        if timeout == 0.0 and now < self._next_read:
            return
        self._next_read = now + 0.01
        while not self.stopped and select.select([0], [], [], timeout)[0]:
            chunk = os.read(0, 65536)
            if not chunk:
                self.stopped = True
                return
            self._inbuf += chunk
            *lines, self._inbuf = self._inbuf.split(b"\n")
            for line in lines:
                if line.startswith(b"s "):
                    self.subs.append(bytes.fromhex(line[2:].decode("ascii")))
                elif line.startswith(b"f "):
                    self.reannounce.append(bytes.fromhex(line[2:].decode("ascii")))
                elif line.startswith(b"k "):
                    added, removed = json.loads(line[2:])
                    self.held.difference_update(removed)
                    self.held.update(added)
                elif line.startswith(b"r "):
                    self.rest.update(json.loads(line[2:]))
                elif line.strip():
                    self.free.append(int(line))
            timeout = 0.0

    def _take_slot(self) -> int | None:
        while not self.free and not self.stopped:
            self.read_control(0.1)  # the parent copies a slot out at once; wait for it
        return self.free.popleft() if self.free else None


def _worker(cfg: dict[str, Any]) -> int:
    """One ingest process: its share of the source's streams until stdin ends."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    pipe = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # whatever a library prints goes to stderr, not into the protocol
    sys.stdout = sys.stderr

    def write(data: bytes) -> None:
        pipe.write(data)
        pipe.flush()

    shard, shards = int(cfg["shard"]), int(cfg["shards"])
    shm = attach_shared_memory(cfg["shm"])
    ring, meta = _rings(shm.buf, int(cfg["meta"]["window"]))
    out = _Out(ring, meta, write, BatchNormalizer(cfg["meta"]["normalization"]) if cfg.get("normalize") else None)
    # messages of other processes' streams dropped here; the topics announced (insertion order: the
    # oldest are forgotten first beyond MAX_DISCOVERED, and announced again if they come again)
    foreign: dict[str, Any] = {"count": 0, "seen": {}, "new": []}
    # processes but the first take their own topics alone LEARN_S after the first message of a
    # stream of their own: the streams a publisher starts with have all been seen by then. (From
    # the first message of any stream, a publisher that paused after its first message left a
    # process with no stream of its own when it dropped the shared subscription: its streams then
    # came only through the first process's discovery, their first seconds lost.)
    learn: dict[str, Any] = {"s": float(cfg["learn_s"]) if shard and cfg["learn_s"] else None, "at": None}

    def accept(topic: bytes) -> bool:
        if shard_of(topic, shards) == shard:
            if learn["s"] is not None and learn["at"] is None:
                learn["at"] = time.monotonic() + learn["s"]
            return True
        foreign["count"] += 1
        # process 0 keeps the source's own subscription: it finds the streams that start later
        if shard == 0 and topic not in foreign["seen"]:
            seen = foreign["seen"]
            seen[topic] = None
            if len(seen) > MAX_DISCOVERED:  # before, no topic was announced past the bound: new streams went unread
                del seen[next(iter(seen))]
            foreign["new"].append(topic)
        return False

    try:
        source = make_source(cfg["spec"], until_eos=False)  # when the run ends is the parent's to say
        source.max_streams = int(cfg["max_streams"])
        source.accept_topic = accept  # type: ignore[attr-defined]
        base = str(source.options["topic"]).encode("utf-8")
        health = HealthMonitor(HealthConfig(**cfg["health"]))
        stage = _Stage(SimpleNamespace(**cfg["meta"]), cfg["hop"], health, int(cfg["max_streams"]), out,
                       int(cfg.get("phases", 1)), float(cfg.get("reclaim_after_s", 0.0)),
                       keep=lambda ids: out.held.intersection(ids))
        source.make_room = partial(stage.ingest.make_room, source)
        source.on_end = partial(_ended, out, stage)
        source.open()
    except Exception as exc:  # noqa: BLE001 - said by the parent in one line
        out.send({"fatal": str(exc).splitlines()[0] if str(exc) else type(exc).__name__})
        return 1
    out.send({"ready": os.getpid()})
    freeze_start_up_objects()  # as the monitor does: its frames and windows make most of what is collected
    state: dict[str, Any] = {"next_stats": time.monotonic() + STATS_S, "next_news": 0.0, "ended": 0, "streams": 0}
    subscribed: set[bytes] = set()

    def subscriptions() -> None:
        """Exact topics for the streams this process owns, once it has learned them (LEARN_S):
        then the publisher sends it only its own streams. Beyond SUBSCRIBED_PER_STREAM times
        --max-streams of them (ids announced, then refused: a flood of new ids), the topics of
        streams it does not hold are dropped, and the first process announces them again if they
        come again."""
        for topic in out.subs:
            if topic not in subscribed:
                source.subscribe(topic)  # type: ignore[attr-defined]
                subscribed.add(topic)
        out.subs.clear()
        if len(subscribed) > SUBSCRIBED_PER_STREAM * source.max_streams:
            unsubscribe(subscribed - {sid.encode("utf-8") for sid in stage.known()})
        for topic in out.reannounce:
            foreign["seen"].pop(topic, None)
        out.reannounce.clear()
        if learn["at"] is not None and time.monotonic() >= learn["at"]:
            learn["s"] = learn["at"] = None
            out.subs.extend(sid.encode("utf-8") for sid in stage.known())
            subscriptions()
            source.subscribe(base, on=False)  # type: ignore[attr-defined]

    def report() -> None:
        out.flush()
        errors, stage.errors = stage.errors, Counter()
        retired()
        out.send({"s": source.stats.snapshot(), "streams": stage.known(), "nf": stage.nonfinite(),
                  "h": {sid: _fields(h) for sid, h in health.states().items()},
                  "err": dict(errors), "fg": foreign["count"], "subs": len(subscribed)})
        state["next_stats"] = time.monotonic() + STATS_S
        state["ended"], state["streams"] = len(source.stats.ended), len(stage.streams)

    def unsubscribe(topics: set[bytes]) -> None:
        """Exact topics this process no longer needs, dropped (the publisher stops sending them
        here); the parent has the first process announce them again if they come again."""
        topics &= subscribed
        for topic in topics:
            source.subscribe(topic, on=False)  # type: ignore[attr-defined]
        subscribed.difference_update(topics)
        if topics:
            out.send({"u": [t.hex() for t in topics]})

    def retired() -> None:
        """Streams retired to make room for new ones, channels a new layout left out: the parent
        drops its state of them, says the notes."""
        out.flush()  # the windows before first (their codes are given to other streams after)
        if stage.retired:
            unsubscribe({sid.encode("utf-8") for sid, _, _ in stage.retired})
            out.send({"r": stage.retired})
            out.forget_codes(ch for _, ids, _ in stage.retired for ch in ids)
            stage.retired = []
        if stage.relayouts:
            out.send({"lg": stage.relayouts})
            out.forget_codes(ch for _, gone, _ in stage.relayouts for ch in gone)
            stage.relayouts = []

    def news(ended: int, streams: int) -> None:
        """New streams and ends of streams, in a short line (the full report is O(streams))."""
        out.flush()
        out.send({"n": list(stage.streams)[state["streams"]:], "x": sorted(source.stats.ended),
                  "d": [t.hex() for t in foreign["new"]]})
        foreign["new"] = []
        state["ended"], state["streams"] = ended, streams
        state["next_news"] = time.monotonic() + NEWS_S

    def housekeeping(idle: bool) -> None:
        out.read_control()
        if out.rest:
            health.set_rest_levels(out.rest)
            out.rest = {}
        if out.stopped:
            source.close()
            return
        # New streams and ends of streams are said within NEWS_S, and always before an idle mark,
        # after the windows before them (the parent ends a run at the end of every stream once each
        # child has been idle since: then nothing is left in flight).
        now = time.monotonic()
        ended, streams = len(source.stats.ended), len(stage.streams)
        if now >= state["next_stats"]:
            events = health.tick(read_to((source,), time.time()))
            if events:
                out.events(events)
            report()
        elif ((ended, streams) != (state["ended"], state["streams"]) or foreign["new"]) and (
                idle or now >= state["next_news"]):
            news(ended, streams)
        if stage.retired or stage.relayouts:
            retired()
        if source.notes:  # a refused message's reason, a failed handshake: said by the parent, once
            out.send({"notes": [list(source.notes.popleft()) for _ in range(len(source.notes))]})
        if out.subs or out.reannounce or learn["at"] is not None:
            subscriptions()
        if idle or out.due():
            out.flush(idle)

    source.on_idle = lambda: housekeeping(True)
    try:
        with source:
            for batch in source.batches():
                for part in stage.ingest.runs(batch):
                    stage.poll(part, source)
                    housekeeping(False)
        report()
    except (BrokenPipeError, OSError):
        return 0  # the parent has gone
    except Exception as exc:  # noqa: BLE001
        out.send({"fatal": f"{type(exc).__name__}: {str(exc)[:200]}"})
        return 1
    finally:
        # no view of the segment left: it can close
        out.ring = ring = np.empty((0, 0, 0), np.float32)
        out.meta_ring = meta = np.empty((0, 0, 0), np.float64)
        try:
            shm.close()
        except BufferError:  # a view still held somewhere: the process ends right after anyway
            pass
    return 0


_REFUSED_DETAIL = re.compile(r"( refused: \w+): .*", re.DOTALL)  # a refusal's note without its message's details
MAX_NOTED = 1000


def _plain(o: Any) -> Any:
    """numpy scalars (a window index, an event's figure) as the Python numbers JSON knows."""
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, (set, tuple)):
        return list(o)
    return str(o)


def _fields(h: StreamHealth) -> dict[str, Any]:
    d = dataclasses.asdict(h)
    del d["stream_id"]
    return d


# ---------------------------------------------------------------------- the parent


def _rings(buf: Any, window: int) -> tuple[np.ndarray, np.ndarray]:
    """The window ring and its numbers in one shared-memory segment (``_ring_bytes`` long)."""
    ring = np.ndarray((SLOTS, ROWS, window), np.float32, buf)
    return ring, np.ndarray((SLOTS, ROWS, META), np.float64, buf, offset=ring.nbytes)


def _ring_bytes(window: int) -> int:
    return SLOTS * ROWS * (window * 4 + META * 8)


def shared_memory_needed(procs: int, window: int) -> int:
    """Bytes of shared memory ``procs`` ingest processes take (their rings of windows)."""
    return procs * _ring_bytes(window)


class _Child:
    """The parent's handle on one ingest process."""

    def __init__(self, index: int, window: int) -> None:
        self.index = index
        start_resource_tracker()
        self.shm = shared_memory.SharedMemory(create=True, size=_ring_bytes(window))
        self.ring, self.meta = _rings(self.shm.buf, window)
        self.ids: list[str] = []  # the stream ids the current process has coded, by code
        self.proc: subprocess.Popen[bytes] | None = None
        self.buf = b""
        self.early: list[dict[str, Any]] = []  # read while waiting for "ready", handled by the loop
        self.stats: dict[str, Any] = {}  # its latest counters
        self.nonfinite: dict[str, int] = {}
        self.streams: dict[str, None] = {}  # the stream ids it has seen, over its restarts too
        self.health_ids: list[str] = []  # the streams (channels) whose health it judges
        self.lost = False
        self.deaths: deque[float] = deque()
        self.idles = 0  # idle marks received: its socket had nothing more
        self.ready = False
        self.heard = 0.0  # time.monotonic() of its latest line
        self.foreign = 0  # messages of other processes' streams it received and dropped
        self._control = bytearray()  # lines for its stdin not written yet (the pipe was full)
        self.ended: set[str] = set()  # streams that have sent end-of-stream
        self.held: set[str] = set()  # the streams holding unacknowledged alarms the current process was told of
        self.rest_changes = -1  # the mirror's rest_changes the current process was told up to
        self.subscriptions = 0  # exact topics the process is subscribed to (its latest report)

    def start(self, cfg: dict[str, Any]) -> None:
        self.buf, self.stats, self.early, self.ended, self.ids, self.held = b"", {}, [], set(), [], set()
        self.rest_changes = -1
        self.ready, self.heard, self._control = False, time.monotonic(), bytearray()
        argv, env = child_process("drsn_stream.app.shards", [json.dumps({**cfg, "shard": self.index, "shm": self.shm.name})])
        self.proc = subprocess.Popen(
            argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, bufsize=0,
            start_new_session=True,  # a terminal's Ctrl-C goes to the monitor alone, which ends them
            env=env,
        )
        assert self.proc.stdin is not None
        os.set_blocking(self.proc.stdin.fileno(), False)  # a stuck child never blocks the parent

    @property
    def fd(self) -> int:
        assert self.proc is not None and self.proc.stdout is not None
        return self.proc.stdout.fileno()

    def control(self, line: bytes) -> None:
        """A line for its stdin (a slot release, a topic to subscribe to), in order; what the
        pipe does not take now is written by ``flush`` later, never waited for."""
        self._control += line
        self.flush()

    def flush(self) -> None:
        if not self._control or self.proc is None or self.proc.stdin is None:
            return
        try:
            n = os.write(self.proc.stdin.fileno(), self._control)
        except BlockingIOError:
            return
        except (BrokenPipeError, OSError, ValueError):
            self._control.clear()  # a child that reads nothing any more; its end shows on its stdout
            return
        del self._control[:n]

    def read(self) -> list[dict[str, Any]] | None:
        """The whole lines it has written; None once its stdout has ended."""
        chunk = os.read(self.fd, 1 << 20)
        if not chunk:
            return None
        self.buf += chunk
        *lines, self.buf = self.buf.split(b"\n")
        self.heard = time.monotonic()
        msgs = []
        for line in lines:
            try:
                msgs.append(json.loads(line))
            except ValueError:  # not a line a child writes: skipped, the source reads on
                continue
        return msgs

    def begin_stop(self) -> None:
        """Its stdin ends: it stops reading, sends its last counters and exits."""
        if self.proc is not None and self.proc.stdin is not None:
            try:
                self.proc.stdin.close()
            except OSError:
                pass

    def stop(self, wait_s: float) -> int | None:
        proc = self.proc
        if proc is None:
            return None
        for f in (proc.stdin, proc.stdout):
            try:
                f.close()  # type: ignore[union-attr]
            except OSError:
                pass
        try:
            proc.wait(timeout=max(0.0, wait_s))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5.0)
        self.proc = None
        return proc.returncode

    def free(self) -> None:
        if self.ring.size:
            self.ring = np.empty((0, 0, 0), np.float32)
            self.meta = np.empty((0, 0, 0), np.float64)
            self.shm.close()
            self.shm.unlink()


def _readable(fds: list[int], timeout: float) -> list[int]:
    """The fds with data (or an end) to read, waiting up to ``timeout`` s; poll(), not select(),
    so that a monitor with many open files (fds above 1023) still works."""
    poller = select.poll()
    for fd in fds:
        poller.register(fd, select.POLLIN)
    return [fd for fd, _ in poller.poll(timeout * 1000.0)]


def _code(code: int | None) -> str:
    if code is not None and code < 0:
        try:
            return f"signal {signal.Signals(-code).name}"
        except ValueError:
            return f"signal {-code}"
    return f"exit code {code}"


class ShardedSource(Source):
    """A ``zmq://`` source whose streams are read by ``procs`` ingest processes (see the module).

    Windows (normalized by the processes with ``normalize``: for a monitor without an envelope
    stage), health events and error lines reach the monitor through callbacks it sets
    (``on_windows``, ``on_events``, ``on_error``); iteration yields no frames: it runs the reading
    loop until ``close()`` (or, with ``until_eos=1``, until every stream seen has ended).
    ``stats`` sums the children's counters; ``health`` (a ``HealthMirror``) shows their health.
    """

    kind = "zmq (sharded)"
    restartable = False

    def __init__(self, spec: str, procs: int, *, meta: Any, hop: int | None, health: dict[str, Any],
                 max_streams: int, mirror: HealthMirror, phases: int = 1, normalize: bool = False,
                 reclaim_after_s: float = 0.0) -> None:
        super().__init__(spec)
        self.inner = make_source(spec)  # checks the spec and its options here, in the parent
        self.procs = int(procs)
        self.until_eos = bool(self.inner.options.get("until_eos"))
        self.mirror = mirror
        self._cfg = {"spec": spec, "shards": self.procs, "hop": hop, "phases": phases, "health": health,
                     "max_streams": max_streams, "normalize": bool(normalize),
                     "learn_s": LEARN_S, "reclaim_after_s": float(reclaim_after_s),
                     "meta": {"sample_rate": float(meta.sample_rate), "window": int(meta.window),
                              "hop": int(meta.hop), "normalization": dict(meta.normalization)}}
        self._window = int(meta.window)
        self._children: list[_Child] = []
        self._retired: list[dict[str, Any]] = []  # the last counters of children that died
        self.restarts = 0
        self._noted: set[str] = set()  # the processes' notes said, by what they say (not their details)
        self.on_windows: Callable[[list[Window]], None] = lambda ws: None
        self.on_events: Callable[[list[Event]], None] = lambda es: None
        self.on_error: Callable[[str], None] = lambda line: None
        # a stream an ingest process retired to make room for a new one (Ingest.on_retire's arguments)
        self.on_retire: Callable[[str, tuple[str, ...], str], None] = lambda sid, ids, line: None
        # channels of a stream a new layout left out (Ingest.on_layout's arguments)
        self.on_layout: Callable[[str, tuple[str, ...], str], None] = lambda sid, gone, line: None
        # given channel stream ids, those holding an alarm not yet acknowledged (Ingest's keep):
        # told to the processes, which never retire them
        self.keep: Callable[[list[str]], set[str]] | None = None
        self._next_held = 0.0
        self.speeds = SpeedLog()  # the speeds each frame stream's frames carried, as the processes' Ingest.speeds

    @property
    def realtime(self) -> bool:
        return True

    def check(self) -> None:
        self.inner.check()

    def waiting(self) -> str | None:
        waiting_with = getattr(self.inner, "waiting_with", None)  # the processes' refused messages, summed
        return self.inner.waiting() if waiting_with is None else waiting_with(self.stats.snapshot()["malformed"], "")

    @property
    def pids(self) -> list[int]:
        """The ingest processes running now."""
        return [c.proc.pid for c in self._children if c.proc is not None]

    @property
    def foreign(self) -> list[int]:
        """Per process: messages of the other processes' streams it received and dropped (the
        cost of the shared subscription; after LEARN_S it grows in process 1 only)."""
        return [c.foreign for c in self._children]

    @property
    def nonfinite(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for c in self._children:
            out.update(c.nonfinite)
        return out

    # -- life cycle ---------------------------------------------------------------------

    def _open(self) -> None:
        try:
            self._children = [_Child(k, self._window) for k in range(self.procs)]
            for c in self._children:
                c.start(self._cfg)
            deadline = time.monotonic() + READY_TIMEOUT_S
            for c in self._children:
                self._await_ready(c, deadline)
            if not getattr(self.inner, "bind", True):  # a connecting socket: for waiting(), as the children see it
                self.inner.unresolved = unresolved_hosts(self.inner.addresses)  # type: ignore[attr-defined]
        except BaseException:
            self._close()
            raise

    def _await_ready(self, c: _Child, deadline: float) -> None:
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not _readable([c.fd], left):
                raise SourceError(f"ingest process {c.index + 1} of {self.procs} did not start within "
                                  f"{READY_TIMEOUT_S:.0f} s")
            lines = c.read()
            if lines is None:
                raise SourceError(f"ingest process {c.index + 1} of {self.procs} ended while starting "
                                  f"({_code(c.proc.wait(timeout=5.0) if c.proc else None)})")
            for i, msg in enumerate(lines):
                if "fatal" in msg:
                    raise SourceError(f"{self.inner.kind}:{self.inner.target}: {msg['fatal']}")
                if "ready" in msg:
                    c.early, c.ready = lines[i + 1:], True
                    return

    def _close(self) -> None:
        deadline = time.monotonic() + 2.0
        for c in self._children:
            c.begin_stop()
        self._drain(deadline)
        for c in self._children:
            c.stop(deadline - time.monotonic())
        for c in self._children:
            c.free()  # the handles stay: their last counters are still read (the final stats)

    # -- the reading loop ---------------------------------------------------------------

    def _frames(self) -> Iterator[Frame]:
        ended_at: dict[int, int] | None = None  # idle marks when every stream seen had ended
        while not self.closed:
            live = {c.fd: c for c in self._children if c.proc is not None}
            for c in live.values():
                early, c.early = c.early, []
                for msg in early:
                    self._handle(c, msg)
            if not live:
                raise SourceError(f"{self.inner.kind}:{self.inner.target}: every ingest process is lost")
            for fd in _readable(list(live), 0.1):
                c = live[fd]
                msgs = c.read()
                if msgs is None:
                    self._died(c)
                    continue
                for msg in msgs:
                    self._handle(c, msg)
            self._tell_held()
            self._tell_rest()
            for c in self._children:
                c.flush()
            self._check_silent()
            if self.until_eos and self._all_ended():
                # done once every child has been idle since: a stream only one of them has
                # seen so far would otherwise be cut short
                if ended_at is None:
                    ended_at = {c.index: c.idles for c in self._children}
                elif all(c.idles > ended_at[c.index] for c in self._children if c.proc is not None):
                    return
            else:
                ended_at = None
        return
        yield  # a generator that hands over windows through on_windows, never a frame

    def _drain(self, deadline: float) -> None:
        """Their last counters, events and errors (windows formed after the stop are dropped, as
        frames still queued are in-process) until each has closed its stdout, or the deadline."""
        live = {c.fd: c for c in self._children if c.proc is not None and c.proc.stdout is not None}
        while live and time.monotonic() < deadline:
            for fd in _readable(list(live), max(0.0, deadline - time.monotonic())):
                c = live[fd]
                try:
                    msgs = c.read()
                except (OSError, ValueError):
                    msgs = None
                if msgs is None:
                    del live[fd]
                    continue
                for msg in [*c.early, *msgs]:
                    msg.pop("w", None)
                    self._handle(c, msg)
                c.early = []

    def _tell_held(self) -> None:
        """Each process told, every HELD_S, which of its streams now hold an alarm not yet
        acknowledged (only the changes: a line of JSON on its stdin). A stream is retired only after
        ``reclaim_after_s`` of silence, long after its alarm (raised while it sent) was told."""
        now = time.monotonic()
        if self.keep is None or now < self._next_held:
            return
        self._next_held = now + HELD_S
        for c in self._children:
            if c.proc is None:
                continue
            held = self.keep(c.health_ids) if c.health_ids else set()
            if held != c.held:
                c.control(b"k " + json.dumps([sorted(held - c.held), sorted(c.held - held)]).encode("ascii") + b"\n")
                c.held = held

    def _tell_rest(self) -> None:
        """Each process told the levels the streams' machines rest under (``HealthMirror.
        set_rest_levels``), all of them: a process's streams move with its restarts."""
        if not any(c.proc is not None and c.rest_changes != self.mirror.rest_changes for c in self._children):
            return
        changes, told = self.mirror.rest_told()
        line = b"r " + json.dumps(told).encode("ascii") + b"\n"
        for c in self._children:
            if c.proc is not None and c.rest_changes != changes:
                c.control(line)
                c.rest_changes = changes

    def _check_silent(self) -> None:
        """A child that stopped answering (stuck, stopped) is ended; its end is then handled
        like any other death. One still starting gets READY_TIMEOUT_S."""
        now = time.monotonic()
        for c in self._children:
            if c.proc is not None and now - c.heard > (SILENT_S if c.ready else READY_TIMEOUT_S):
                self.on_error(f"ingest process {c.index + 1} of {self.procs} (pid {c.proc.pid}) did not answer for "
                              f"{now - c.heard:.0f} s; ending it")
                c.proc.kill()
                c.heard = now  # its end (EOF on its stdout) follows

    def _handle(self, c: _Child, msg: dict[str, Any]) -> None:
        if "ready" in msg:
            c.ready = True
        if "rpm" in msg:  # [stream, from when, its rpm or None]: the process's changes of speed
            for sid, t_start, rpm in msg["rpm"]:
                self.speeds.add(sid, float(t_start), rpm)
        if "ids" in msg:  # (code, id): a new code, or one a retired stream had
            for code, sid in msg["ids"]:
                if code < len(c.ids):
                    c.ids[code] = sid
                else:
                    c.ids.append(sid)
        if "w" in msg:
            slot, n = int(msg["w"]), int(msg["k"])
            data, meta = c.ring[slot, :n].copy(), c.meta[slot, :n].copy()
            c.control(b"%d\n" % slot)
            ids, coded = c.ids, meta[:, [0, 1, 5]].astype(np.int64).T.tolist()  # codes, indexes, flags
            self.on_windows([Window(ids[code], index, t_last, x, t_ready, level, flags >= NORMALIZED,
                                    bool(flags & HEALTHY))
                             for code, index, t_last, x, t_ready, level, flags in zip(
                                 coded[0], coded[1], meta[:, 2].tolist(), list(data), meta[:, 3].tolist(),
                                 meta[:, 4].tolist(), coded[2])])
        if "e" in msg:
            events = [Event(t, sid, float(when), data) for t, sid, when, data in msg["e"]]
            for e in events:
                if e.type == "health":
                    self.mirror.note(e)
            self.on_events(events)
        if msg.get("d"):  # topics process 0 saw first: each goes to the process that owns it
            for topic in msg["d"]:
                owner = self._children[shard_of(bytes.fromhex(topic), self.procs)]
                if owner.proc is not None:
                    owner.control(b"s " + topic.encode("ascii") + b"\n")
        if msg.get("u") and c.index != 0 and self._children[0].proc is not None:
            # topics a process dropped: the first process announces them again if they come again
            first = self._children[0]
            for topic in msg["u"]:
                first.control(b"f " + topic.encode("ascii") + b"\n")
        if "r" in msg:
            for sid, ids, line in msg["r"]:
                c.streams.pop(sid, None)
                self.speeds.forget(sid)
                self.forget_stream(sid)
                for ch in ids:
                    self.mirror.forget(ch)
                self.on_retire(sid, tuple(ids), line)
        if "lg" in msg:
            for sid, gone, line in msg["lg"]:
                for ch in gone:
                    self.mirror.forget(ch)
                self.on_layout(sid, tuple(gone), line)
        if "n" in msg:
            c.streams.update(dict.fromkeys(msg["n"]))
            self._add_streams(msg["n"])
            c.ended = set(msg["x"])
        if "s" in msg:
            c.stats, c.nonfinite, c.foreign = msg["s"], msg["nf"], int(msg["fg"])
            c.subscriptions = int(msg.get("subs", 0))
            c.streams.update(dict.fromkeys(msg["streams"]))
            c.ended = set(msg["s"]["ended"])
            self._add_streams(msg["streams"])
            self.mirror.update({sid: StreamHealth(sid, **{**d, "reasons": tuple(d["reasons"])})
                                for sid, d in msg["h"].items()})
            c.health_ids = list(msg["h"])
            for line, n in msg["err"].items():
                for _ in range(min(int(n), 1000)):
                    self.on_error(line)
            self._sum_stats()
        if "notes" in msg:
            for sid, line in msg["notes"]:
                # every process says what it meets (each connects, each refuses its streams' bad
                # messages): the monitor says it once per reason, whatever the message's details
                key = _REFUSED_DETAIL.sub(r"\1", line)
                if key not in self._noted and len(self._noted) < MAX_NOTED:
                    self._noted.add(key)
                    self.notes.append((sid, line))
        if "fatal" in msg:
            self.on_error(f"ingest process {c.index + 1} of {self.procs}: {msg['fatal']}")
        if msg.get("i"):
            c.idles += 1
            self._idle()

    def _add_streams(self, ids: list[str]) -> None:
        for sid in ids:
            if sid not in self._stream_set:
                self._stream_set.add(sid)
                self._streams.append(sid)

    def _all_ended(self) -> bool:
        seen = set(self._streams)
        return bool(seen) and seen <= set().union(*(c.ended for c in self._children))

    def _died(self, c: _Child) -> None:
        """Counted, said in one line, and started again; lost after MAX_RESTARTS in the window."""
        pid = c.proc.pid if c.proc is not None else None
        code = c.stop(2.0)
        if self.closed:
            return
        if c.stats:  # one that died before its first report (STATS_S) has no counters to keep
            self._retired.append(c.stats)
        now = time.monotonic()
        c.deaths.append(now)
        while c.deaths and now - c.deaths[0] > RESTART_WINDOW_S:
            c.deaths.popleft()
        who = f"ingest process {c.index + 1} of {self.procs} (pid {pid}) ended ({_code(code)})"
        if len(c.deaths) > MAX_RESTARTS:
            c.lost = True
            names = sorted(c.streams)
            lost = ", ".join(names[:8]) + (f" and {len(names) - 8} more" if len(names) > 8 else "")
            n = len(c.deaths)
            self.on_error(f"{who} {n} time{'s' if n != 1 else ''} within {RESTART_WINDOW_S:.0f} s; not started again: "
                          f"its streams are no longer monitored ({lost or 'none seen yet'})")
            self._lose(c)
            return
        self.restarts += 1
        self.on_error(f"{who}; started a new one (restart {self.restarts}), its streams' windows in flight are lost")
        c.stats, c.nonfinite = {}, {}
        try:
            c.start(self._cfg)  # its "ready" line is read by the loop like any other
        except OSError as exc:
            c.lost = True
            self.on_error(f"ingest process {c.index + 1} of {self.procs} could not be started again: {exc}")

    def _lose(self, c: _Child) -> None:
        """Its streams show CHECK_SENSOR ("ingest process lost") from now on."""
        now = time.time()
        events = [Event("health", sid, now, {"from": self.mirror.state(sid).state, "to": CHECK_SENSOR,
                                             "reasons": [LOST]}) for sid in c.health_ids]
        for e in events:
            self.mirror.note(e)
        if events:
            self.on_events(events)

    def _sum_stats(self) -> None:
        parts = self._retired + [c.stats for c in self._children if c.stats]
        st = self.stats
        with st._lock:
            st.frames = sum(p["frames"] for p in parts)
            st.samples = sum(p["samples"] for p in parts)
            st.crashes = sum(p["crashes"] for p in parts)
            st.retired = sum(p.get("retired", 0) for p in parts)
            st.last_crash = next((p["last_crash"] for p in reversed(parts) if p["last_crash"]), "")
            for name in ("malformed", *PER_STREAM_COUNTERS, "gone"):
                total: Counter[str] = Counter()
                for p in parts:
                    total.update(p.get(name, {}))
                setattr(st, name, dict(total))
            st.ended = {sid for p in parts for sid in p["ended"]}


def shard_sources(sources: list[Source], specs: tuple[str, ...], procs: int, **kwargs: Any) -> list[Source]:
    """``sources`` with each shardable one (``shardable``) replaced by a ``ShardedSource`` of
    ``procs`` ingest processes; the others (sim, file, mic, PULL, binding SUB) stay as they are."""
    if procs < 2:
        return sources
    return [ShardedSource(spec, procs, **kwargs) if shardable(spec) else src for src, spec in zip(sources, specs)]


__all__ = ["HealthMirror", "ShardedSource", "shard_of", "shard_sources", "shardable"]


if __name__ == "__main__":
    code = _worker(json.loads(sys.argv[1]))
    sys.stderr.flush()
    os._exit(code)  # the shared memory is the parent's to unlink
