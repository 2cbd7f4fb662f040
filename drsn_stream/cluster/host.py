"""One cluster host: the ordinary in-process pipeline, fed only this host's streams.

``HostWorker`` is plain Python (the Ray actor in ``ray_app`` only wraps it), so it runs and is
tested without Ray. It owns:

- a ``Pipeline`` whose one source is ``zmq+shard://GATEWAY`` (sources -> DSP -> micro-batcher ->
  runner -> decisions/health/capture, exactly as on one machine; windows never leave the host);
- ``HostSink``, the pipeline's sink: gives alarm and health events stable ids, checkpoints the
  stream at once when one happens (so the saved state always includes the latest change), and
  queues results and events for the aggregator;
- a thread that checkpoints every owned stream every ``checkpoint_every_s`` and sends results
  (every ``SEND_EVERY_S``) and a summary (every ``summary_every_s``) through ``send``.

``assign(streams)`` takes streams over (restoring their checkpoints; the first frame after a
restore gives a ``gap`` event: the seconds no host classified the stream); ``release(streams)``
hands them back (checkpointed after the pipeline has drained them) for another host to take.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from drsn_stream.app.pipeline import Pipeline, RunConfig
from drsn_stream.cluster.shard_source import ShardSource, shard_spec
from drsn_stream.cluster.state import RECENT_EVENTS, CheckpointStore, StreamCheckpoint, event_id
from drsn_stream.errors import ConfigError
from drsn_stream.monitor.baseline import read_learnings
from drsn_stream.types import Event, Frame

SEND_EVERY_S = 0.1  # results and events leave in batches: one aggregator call per tenth of a second
OUTBOX_LIMIT = 100_000  # queued results beyond this (an aggregator far behind) are dropped and counted
DRAIN_S = 0.3  # after a release, windows already in the batcher finish before the state is saved

Send = Callable[[str, Any], None]  # (kind: "results" | "summary", payload)


class HostSink:
    """The pipeline's sink on a cluster host: ids, checkpoints on change, an outbox."""

    def __init__(self, worker: HostWorker) -> None:
        self.worker = worker
        self._lock = threading.Lock()
        self.outbox: deque[dict[str, Any]] = deque()
        self.dropped = 0
        self.stragglers = 0  # alarm/health events of streams already handed over, not sent

    def write(self, obj: dict[str, Any]) -> None:
        kind = obj.get("type")
        if kind == "stats" or (kind == "prediction" and not self.worker.send_results):
            return  # the summary carries the host's statistics; results only where a feed wants them
        obj = {**obj, "host": self.worker.name}
        sid = obj.get("stream")
        # record_event gives the event of a stream this host holds its id and checkpoints the stream
        if kind in ("alarm", "health", "note") and isinstance(sid, str) and not self.worker.record_event(sid, obj):
            if kind in ("alarm", "health") and sid != "*":
                # a stream handed over and checkpointed already: its new host owns its alarm
                # chain from that checkpoint on, and an id-less copy from here would break it
                self.stragglers += 1
                return
        self.put(obj)

    def put(self, obj: dict[str, Any]) -> None:
        with self._lock:
            if len(self.outbox) >= OUTBOX_LIMIT:
                self.outbox.popleft()
                self.dropped += 1
            self.outbox.append(obj)

    def requeue(self, batch: list[dict[str, Any]]) -> None:
        """A batch that could not be sent goes back ahead of what came since (the limit holds)."""
        with self._lock:
            self.outbox.extendleft(reversed(batch))
            while len(self.outbox) > OUTBOX_LIMIT:
                self.outbox.popleft()
                self.dropped += 1

    def take(self) -> list[dict[str, Any]]:
        with self._lock:
            out = list(self.outbox)
            self.outbox.clear()
            return out

    def close(self) -> None:
        pass


class HostWorker:
    """The pipeline and bookkeeping of one cluster host.

    Args:
        name: the host's name in the cluster (dashboard column, metrics label, event field).
        config: the run configuration every host shares; its ``sources`` are replaced by the shard source.
        gateway: the ZeroMQ address the sensor gateways publish on (``HOST:PORT``).
        gateway_options: options of the gateway source (``ZmqSubSource.OPTIONS`` but ``topic``:
            CURVE keys, ``hwm``, ``channel`` ...).
        checkpoint_dir: a directory shared by every host.
        send: delivers ("results", [objects]) and ("summary", dict) to the aggregator.
        checkpoint_every_s / summary_every_s: periods of the background thread's work.
        send_results: send every window's result too (for the cluster's JSONL / ZeroMQ feed);
            events and summaries are sent either way.
    """

    def __init__(
        self,
        name: str,
        config: RunConfig,
        *,
        gateway: str,
        checkpoint_dir: str,
        send: Send,
        checkpoint_every_s: float = 2.0,
        summary_every_s: float = 1.0,
        send_results: bool = True,
        gateway_options: Mapping[str, str] | None = None,
    ) -> None:
        self.name = name
        self.send_results = send_results
        self.store = CheckpointStore(checkpoint_dir)
        self.send = send
        self.checkpoint_every_s = checkpoint_every_s
        self.summary_every_s = summary_every_s
        self.sink = HostSink(self)
        spec = shard_spec(gateway, gateway_options or {})
        self.pipe = Pipeline(dataclasses.replace(config, sources=(spec,), duration=None), sinks=[self.sink])
        if self.pipe.baseline is not None:
            # a host's baselines go with its streams in their checkpoints (every host writing the
            # one --baseline file would keep only the last writer's streams); the learnings in
            # progress, too large for a checkpoint every few seconds, in a file of its own there,
            # where a host restarted under this name finds its last run's and keeps them
            self.pipe.baseline.kept_elsewhere(learning_to=self.store.learning_path(name), take_up=True)
        source = self.pipe.sources[0]
        assert isinstance(source, ShardSource)
        self.source = source
        self.source.on_first_frame = self._first_frame
        self._lock = threading.RLock()  # owned set, counters, recent events, checkpoint writes
        self.owned: set[str] = set()
        self._draining: set[str] = set()  # released, not yet checkpointed: their events still count
        self._counters: dict[str, dict[str, int]] = {}
        self._recent: dict[str, deque[dict[str, Any]]] = {}
        self._resumed: dict[str, tuple[float | None, str]] = {}  # stream -> (last classified, previous host)
        self._restored: dict[str, list[str]] = {}  # stream -> its channels as its checkpoint saved them
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._waiter: threading.Thread | None = None
        self.started = 0.0
        self.checkpoints = 0
        self.checkpoint_failures = 0
        self.round_failures = 0  # rounds of the results loop that raised (a send that failed)

    # ------------------------------------------------------------------ life cycle
    def start(self) -> HostWorker:
        self.pipe.start()
        self.started = time.monotonic()
        self._thread = threading.Thread(target=self._loop, name="drsn-host", daemon=True)
        self._thread.start()
        # the pipeline's own supervision (health ticks for streams gone quiet, capture polls,
        # engine notes) runs as on one machine, until stop() sets its quit event
        self._waiter = threading.Thread(target=self.pipe.wait, name="drsn-host-wait", daemon=True)
        self._waiter.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5.0)
        self.checkpoint_all()
        self.pipe.stop()
        self._flush()

    def _loop(self) -> None:
        # periods on the monotonic clock: a step of the wall clock back stopped the checkpoints
        next_ckpt = time.monotonic() + self.checkpoint_every_s
        next_summary = time.monotonic()
        while not self._stop.wait(SEND_EVERY_S):
            now = time.monotonic()
            try:
                if now >= next_ckpt:
                    next_ckpt = now + self.checkpoint_every_s
                    self.checkpoint_all()
                self._flush()
                if now >= next_summary:
                    next_summary = now + self.summary_every_s
                    self.send("summary", self.summary())
            except Exception as exc:  # noqa: BLE001 - one failed round must not end the host's results
                self.round_failures += 1
                self.pipe.error(f"host {self.name}: a round of results failed ({type(exc).__name__}: {str(exc)[:200]}); "
                                "what it did not send goes in the next round")

    def _flush(self) -> None:
        batch = self.sink.take()
        if batch:
            try:
                self.send("results", batch)
            except BaseException:
                self.sink.requeue(batch)
                raise

    # ------------------------------------------------------------------ ownership
    def assign(self, streams: Iterable[str], *, previous: dict[str, str] | None = None) -> list[str]:
        """Take these streams over (added to those owned); return those restored from a checkpoint.

        ``previous``: stream -> the host that had it (named in the gap event)."""
        previous = previous or {}
        restored = []
        with self._lock:
            new = [s for s in streams if s not in self.owned]
            for sid in new:
                if sid in self._draining:
                    # handed back before its release finished: its state is still here and newer
                    # than any checkpoint, and the release leaves a stream it owns again alone
                    self._draining.discard(sid)
                    self.owned.add(sid)
                    continue
                ckpt = self.store.load(sid)
                if ckpt is not None:
                    # a plain stream's own state, or each channel's (older checkpoints have no
                    # baseline and no channels)
                    parts = dict(getattr(ckpt, "channels", None) or {})
                    if not parts:
                        parts[sid] = {"decision": ckpt.decision, "health": ckpt.health,
                                      "baseline": getattr(ckpt, "baseline", None)}
                    try:
                        for ch, part in parts.items():
                            if part.get("decision") is not None:
                                self.pipe.decisions.restore_state(ch, part["decision"])
                            if part.get("health") is not None:
                                self.pipe.health.restore_state(ch, part["health"])
                            if part.get("baseline") is not None:
                                self.pipe.adopt_baseline(ch, part["baseline"])
                        self._learn_on(sid, ckpt.host, [ch for ch, part in parts.items() if part.get("baseline") is None])
                    # a damaged or foreign checkpoint: said, and the stream starts afresh (the others go on)
                    except (ConfigError, TypeError, ValueError, IndexError, AttributeError) as exc:
                        self.pipe.error(str(exc) if isinstance(exc, ConfigError)
                                        else f"cannot restore {sid} from its checkpoint ({type(exc).__name__}: {exc}); "
                                             "the stream starts afresh without it")
                        for ch in parts:
                            self.pipe.decisions.forget(ch)
                            self.pipe.health.forget(ch)
                        ckpt = None
                if ckpt is not None:
                    if set(parts) != {sid}:  # its channels, until its frames say them again
                        self._restored[sid] = list(parts)
                    self._counters[sid] = dict(ckpt.counters)
                    self._recent[sid] = deque(ckpt.events, maxlen=RECENT_EVENTS)
                    self._resumed[sid] = (ckpt.last_time, previous.get(sid, ckpt.host))
                    restored.append(sid)
                    # what the previous host may not have delivered: sent again, dropped by id where it was
                    for obj in ckpt.events:
                        self.sink.put(obj)
                else:
                    self._counters.setdefault(sid, {})
                    self._recent.setdefault(sid, deque(maxlen=RECENT_EVENTS))
                self.owned.add(sid)
            self.source.set_streams(self.owned)
        return restored

    def _learn_on(self, sid: str, host: str, channels: list[str]) -> None:
        """Baselines still being learned when their host was lost: learned on from that host's
        learning file (``CheckpointStore.learning_path``; a stream handed over on purpose carries
        its learning in its last checkpoint instead). One that cannot be read is said; the
        stream learns anew."""
        if not channels or self.pipe.baseline is None or self.pipe.baseline.learn_s is None:
            return
        try:
            _, learnings = read_learnings(self.store.learning_path(host), set(channels))
        except FileNotFoundError:
            return
        except ConfigError as exc:
            self.pipe.error(f"{exc}; {sid} learns its baseline anew")
            return
        for ch, learning in learnings.items():
            self.pipe.adopt_baseline(ch, {"learning": learning})

    def release(self, streams: Iterable[str]) -> list[str]:
        """Hand these streams back: frames stop at once, state is saved once the pipeline drained."""
        with self._lock:
            gone = [s for s in streams if s in self.owned]
            self.owned.difference_update(gone)
            self._draining.update(gone)
            self.source.set_streams(self.owned)
        if not gone:
            return []
        time.sleep(DRAIN_S)
        for sid in gone:
            # one lock from the last save to the last forget: an assign of the stream back to this
            # host (see assign) comes before or after all of it, never in between
            with self._lock:
                if sid in self.owned:
                    continue
                self._checkpoint(sid, final=True)
                self._draining.discard(sid)
                # all of it, its DSP and the source's record too: a stream handed back later
                # starts afresh from its checkpoint, not on samples from before it left, and its
                # place under --max-streams is free for the streams this host gets meanwhile
                self.pipe.forget_stream(sid)
                self._counters.pop(sid, None)
                self._recent.pop(sid, None)
                self._resumed.pop(sid, None)
                self._restored.pop(sid, None)
        return gone

    def _first_frame(self, sid: str, frame: Frame) -> None:
        with self._lock:
            resumed = self._resumed.pop(sid, None)
        if resumed is None:
            return
        last, before = resumed
        if last is None:
            return
        seconds = max(0.0, frame.t_capture - last)
        # the gap's id is the moment it began: a second host resuming from the same checkpoint
        # reports the same gap
        ev = Event("gap", sid, time.time(), {"from_time": last, "to_time": frame.t_capture,
                                             "seconds": round(seconds, 3), "previous_host": before,
                                             "id": f"{sid}|gap|{last:.6f}"})
        self.pipe.events.extend([ev])
        self.sink.put({**ev.to_json(), "host": self.name})

    # ------------------------------------------------------------------ events and checkpoints
    def holds(self, sid: str) -> bool:
        """Whether this host still answers for the stream's events: owned, or released and
        draining (its windows in flight finish here and go into its last checkpoint)."""
        with self._lock:
            return sid in self.owned or sid in self._draining

    def record_event(self, sid: str, obj: dict[str, Any]) -> bool:
        """Give an alarm/health/note event of a stream this host holds its stable id and
        checkpoint the stream at once; False (nothing done) for a stream it does not hold. One
        lock for the test and the update: a release finishing in between would otherwise leave
        counters behind for a stream the host no longer has."""
        with self._lock:
            if not self.holds(sid):
                return False
            counters = self._counters.setdefault(sid, {})
            kind = str(obj.get("type"))
            n = counters.get(kind, 0)
            counters[kind] = n + 1
            obj["id"] = event_id(sid, kind, n, obj)
            self._recent.setdefault(sid, deque(maxlen=RECENT_EVENTS)).append(dict(obj))
            if kind in ("alarm", "health"):
                self._checkpoint(sid)
            return True

    def _checkpoint(self, sid: str, *, final: bool = False) -> None:
        """Save the stream's state; ``final``: its last save before another host takes it (a
        baseline still being learned goes with it then, not in every periodic save)."""
        with self._lock:
            if sid not in self.owned and sid not in self._draining:
                # handed over: ``release`` saved its last state, and this host is forgetting it. A
                # late save (``checkpoint_all``'s list from before the release, a straggler's event)
                # would overwrite that state with an empty one, and the next host would raise the
                # alarm afresh and lose its acknowledgement.
                return
            baseline = self.pipe.baseline
            parts = {ch: {"decision": self.pipe.decisions.export_state(ch), "health": self.pipe.health.export_state(ch),
                          "baseline": baseline.export(ch, learning=final) if baseline is not None else None}
                     for ch in self._channels(sid)}
            times = [t for p in parts.values() if (t := getattr(p["decision"], "last_time", None)) is not None]
            own = parts.get(sid) if len(parts) == 1 else None  # a plain stream: its own fields, as before
            ckpt = StreamCheckpoint(
                stream_id=sid,
                host=self.name,
                saved_at=time.time(),
                last_time=max(times) if times else None,
                decision=own["decision"] if own else None,
                health=own["health"] if own else None,
                counters=dict(self._counters.get(sid, {})),
                events=list(self._recent.get(sid, ())),
                baseline=own["baseline"] if own else None,
                channels={} if own else parts,
            )
            if (all(p["decision"] is None and p["health"] is None for p in parts.values())
                    and not ckpt.counters):
                return  # nothing seen yet: keep whatever an earlier host saved
            try:
                self.store.save(ckpt)
            except OSError as exc:
                # a full or lost checkpoint directory: results and alarms go on (the event that
                # asked for this save is sent all the same, the periodic loop keeps running)
                self.checkpoint_failures += 1
                self.pipe.error(f"cannot save stream checkpoints in {self.store.root} ({exc.strerror or exc}); "
                                "the streams run on, but a host that takes one over starts it afresh: "
                                "free space there or check the directory")
                return
            self.checkpoints += 1

    def checkpoint_all(self) -> None:
        with self._lock:
            owned = sorted(self.owned)
        for sid in owned:
            self._checkpoint(sid)

    # ------------------------------------------------------------------ views
    def unacknowledged(self, streams: Iterable[str]) -> list[str]:
        """Those of ``streams`` that hold an alarm not yet acknowledged here, on any of their
        channels (the coordinator retires none of them: their alarms would vanish unseen)."""
        chans = {sid: self._channels(sid) for sid in streams}
        held = self.pipe.decisions.unacknowledged({ch for cs in chans.values() for ch in cs})
        return sorted(sid for sid, cs in chans.items() if not held.isdisjoint(cs))

    def _channels(self, sid: str) -> list[str]:
        """The channel streams of a stream (its own id for a plain one): as its frames say them,
        or, for a stream restored from a checkpoint whose frames have not come yet, as saved."""
        chans = self.pipe.ingest.channels([sid])
        return self._restored.get(sid, chans) if chans == [sid] else chans

    def acknowledge(self, stream: str | None = None) -> int:
        """Acknowledge alarms of one owned stream (or all owned); return the level changes."""
        with self._lock:
            owned = sorted(self.owned)
        # the alarms live on the channels' streams: a stream of multi-channel frames is acknowledged
        # on all of its channels, a channel on its own
        chans = {sid: self._channels(sid) for sid in owned}
        if stream is None:
            targets, acks = owned, [ch for sid in owned for ch in chans[sid]]
        elif stream in chans:
            targets, acks = [stream], chans[stream]
        else:
            targets = [sid for sid in owned if stream in chans[sid]]
            acks = [stream] if targets else []
        events: list[Event] = []
        for ch in acks:
            events += self.pipe.decisions.acknowledge(ch)
        self.pipe.events.extend(events)
        for e in events:
            self.sink.write(e.to_json())
        with self._lock:
            for sid in targets:  # an acknowledgement without a level change must survive a failover too
                self._checkpoint(sid)
        return len(events)

    def summary(self) -> dict[str, Any]:
        """What the aggregator shows for this host: a snapshot of its own streams, and figures."""
        with self._lock:
            owned = sorted(self.owned)
        snap = self.pipe.snapshot()
        mine = set(owned)  # stragglers of a released stream may still pass the model: not shown here
        snap = dataclasses.replace(snap, rows=tuple(r for r in snap.rows if r.stream_id in mine))
        stats = self.pipe.stats
        return {
            "host": self.name,
            "time": time.time(),
            "owned": owned,
            "subscribed": sorted(self.source.subscribed),
            "snapshot": snap,
            "windows": stats.windows,
            "windows_per_s": stats.windows_per_s(),
            "outbox_dropped": self.sink.dropped,
            "straggler_events": self.sink.stragglers,
            "foreign_frames": self.source.foreign,
            "checkpoints": self.checkpoints,
            "checkpoint_failures": self.checkpoint_failures,
            "round_failures": self.round_failures,
            "errors": list(self.pipe.errors[-5:]),
        }


__all__ = ["HostSink", "HostWorker"]
