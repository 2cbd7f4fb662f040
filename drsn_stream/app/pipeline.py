"""Assembles the live monitor: sources -> DSP -> batcher -> runner -> decisions -> sinks.

Threads (data flows one way; stages are joined by bounded queues with counted overflow):

- one ingest thread per source: Frames -> sensor health, event capture, per-stream DSP ->
  windows into the micro-batcher;
- the engine thread: batcher -> runner -> Predictions into the output queue;
- the output thread: decisions (smoothing, alarms), word detection, sinks (JSON lines, ZeroMQ
  result feed, headless lines), event capture triggers;
- the dashboard thread (rich), which only reads snapshots;
- the caller's thread: waits for the end (duration, `q`, Ctrl-C, or all sources finished),
  then stops everything in order and drains the queues.
"""

from __future__ import annotations

import math
import os
import queue
import threading
import time
from collections import Counter, deque
from collections.abc import Iterable
from dataclasses import asdict, replace
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from drsn_stream.app.defaults import Resolved, resolve_defaults
from drsn_stream.app.ingest import Ingest, SpeedLog, one_line
from drsn_stream.app.runconfig import RunConfig
from drsn_stream.app.shards import HealthMirror, ShardedSource, shard_sources, shardable, shared_memory_needed
from drsn_stream.dsp.envelope import EnvelopeResult, label_family
from drsn_stream.dsp.normalize import BatchNormalizer
from drsn_stream.engine.batcher import MicroBatcher
from drsn_stream.engine.contract import RunnerLike, device_type
from drsn_stream.engine.engine import InferenceLoop
from drsn_stream.engine.procrunner import ProcessRunner
from drsn_stream.engine.stats import EngineStats
from drsn_stream.errors import ConfigError, DrsnStreamError
from drsn_stream.models.meta import ArtifactMeta, load_validation, read_meta, resolve_artifact
from drsn_stream.models.ood import UNKNOWN, UnknownDetector
from drsn_stream.monitor.baseline import BaselineStage, Profile, weights_digest
from drsn_stream.monitor.decision import DecisionEngine
from drsn_stream.monitor.envelope import EnvelopeStage, has_geometry
from drsn_stream.monitor.health import CHECK_SENSOR, OK, HealthMonitor
from drsn_stream.monitor.snapshot import build_snapshot
from drsn_stream.runtime import ResourceMeter, check_shared_memory, freeze_start_up_objects, thaw
from drsn_stream.sinks import Outputs, Sink
from drsn_stream.sinks.capture import EventCapture
from drsn_stream.sources import make_source
from drsn_stream.sources.base import read_to
from drsn_stream.types import Event, Frame, Prediction, Window
from drsn_stream.view import Counters, EventLog, Footer, Header, Snapshot

MAX_ERRORS = 50  # distinct error lines kept; repeats are counted in error_counts
STALL_SHOWN_S = 5.0  # the engine loop still for this long (a batch hangs) is said in the header
SPEECH_MODEL = "digits-fsdd"
WAITING_AFTER_S = 1.0  # a source silent this long after the start says what it waits for
BEARING_MODEL = "bearing-cwru"
FOLD_GONE = 256  # streams no longer monitored whose record is folded into the run's totals at once
# a stream whose windows the model refuses ("unknown") this often, over at least this many, and
# that no baseline watches, is said once: its labels say nothing, and only a baseline would alarm
# (the check scans the run's tally, ~13 ms at 10,240 streams: at most 1/REFUSED_CHECK_SHARE of the
# output thread's time, and only when windows were refused since the last one)
REFUSED_SAID, REFUSED_MIN_WINDOWS, REFUSED_CHECK_S, REFUSED_CHECK_SHARE = 0.5, 64, 5.0, 1000


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _split_cpus() -> tuple[set[int], int] | None:
    """(cores for this process, the core for the engine process), or None with fewer than 2."""
    try:
        allowed = sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return None
    if len(allowed) < 2:
        return None
    return set(allowed[:-1]), allowed[-1]


def default_model(sources: tuple[str, ...]) -> str:
    """Speech sources (mic, sim:speech) get the digits model; everything else the bearing model."""
    for spec in sources:
        head = spec.partition("?")[0].lower()
        if head.startswith("mic") or head.startswith("sim:speech"):
            return SPEECH_MODEL
    return BEARING_MODEL


class Pipeline:
    """One live monitor. ``start()``, then ``wait()``; ``stop()`` from anywhere ends it cleanly."""

    def __init__(
        self,
        config: RunConfig,
        *,
        sinks: Iterable[Sink] = (),
    ) -> None:
        """
        Args:
            config: the run's settings.
            sinks: where result objects go (``drsn_stream.sinks.Sink``: JSON lines, ZeroMQ results,
                readable lines); the same objects to each.
        """
        self._speed_logs: list[SpeedLog] = []  # speed_of's, gathered at its first call
        self.config = config
        self.model_name = config.model or default_model(config.sources)
        # Sources first: a bad spec, a missing file or an absent sound card is one line before
        # the model loads, not a note in the end summary.
        self.sources = [make_source(spec, **({"fast": True} if config.fast else {})) for spec in config.sources]
        for src in self.sources:
            src.max_streams = config.max_streams
        for src in self.sources:
            src.check()
        meta = read_meta(self.model_name)
        device, cores = device_type(config.device), _cores()
        res = resolve_defaults(
            device=device, cores=cores, fast=config.fast,
            engine_process=config.engine_process, pin_cpus=config.pin_cpus, threads=config.threads,
            max_batch=config.max_batch, eager_batch=config.eager_batch, stale_ms=config.stale_ms,
            ingest_procs=config.ingest_procs, window=meta.window,
        )
        self.resolved = res
        self.max_batch = res.capacity  # what the runner takes: a catch-up batch too
        self._cpus: tuple[set[int], int] | None = None  # (this process's cores, the engine's core)
        self._saved_affinity: set[int] | None = None
        self._frozen: tuple[int, ...] | None = None  # gc thresholds before start() froze, for stop()
        self.runner: RunnerLike
        self.unknown, self.baseline = _judges(self.model_name, meta, config)
        features = meta.features if (self.unknown or self.baseline) else 0
        in_process = ""  # why the model runs here although an engine process was the default
        if res.engine_process:
            # the child loads and checks the model; here only its metadata is needed, so the
            # child's start (a second interpreter importing torch) overlaps this one's
            self._cpus = _split_cpus() if res.pin_cpus else None
            try:
                self.runner = ProcessRunner(self.model_name, window=meta.window, classes=len(meta.labels),
                                            max_batch=self.max_batch, threads=config.threads,
                                            cpu=self._cpus[1] if self._cpus else None, cpu_layout=config.cpu_layout,
                                            features=features)
            except OSError as exc:  # no shared memory here (no /dev/shm, or it is full), or no process
                if config.engine_process:
                    raise ConfigError(f"--engine-process on: cannot start the engine process here "
                                      f"({exc.strerror or exc}); run with --engine-process off") from None
                why = exc.strerror or str(exc)
                if "shared memory" not in why:
                    why += "; an engine process needs shared memory in /dev/shm"
                in_process = f"the model runs in this process: an engine process cannot be started here ({why})"
                self._cpus = None
                res = self.resolved = replace(res, engine_process=False, pin_cpus=False)
        if not res.engine_process:
            from drsn_stream.models.artifact import load_artifact  # torch: only where the model runs here

            module, meta = load_artifact(self.model_name)
            self.runner = self._local_runner(module, meta, config, features)
        try:
            self._assemble(config, res, meta, sinks)
            if in_process:
                self._notes.append(("*", in_process))
            if config.fp16 == "on" and device == "cpu":  # asked for by name: said, not dropped unsaid
                self._notes.append(("*", "--fp16 on: half precision runs on CUDA GPUs; on the CPU the model "
                                         "runs in float32"))
            if device == "cpu" and config.threads is not None and config.threads > cores:
                self._notes.append(("*", f"--threads {config.threads} on {cores} core{'s' if cores != 1 else ''}: "
                                         f"the model's threads take turns on them (a batch waits for the last); "
                                         f"{cores} or fewer do not"))
        except BaseException:
            # A failure, or a signal during start-up (KeyboardInterrupt, Terminated), once the
            # engine process runs: it has a session of its own, so no signal of the terminal
            # ends it, and it holds the shared memory this process made. End it here, or it goes
            # on loading the model for a monitor that is gone.
            self._abandon()
            raise

    def _assemble(self, config: RunConfig, res: Resolved, meta: ArtifactMeta, sinks: Iterable[Sink]) -> None:
        """The rest of ``__init__``, once the runner exists: the stages around the model."""
        self.meta: ArtifactMeta = meta
        self.labels = list(meta.labels)
        self.outputs = Outputs(sinks, on_error=self._error)
        self.batcher = MicroBatcher(
            max_batch=res.max_batch,
            catch_up_batch=res.catch_up_batch,
            max_wait_ms=config.max_wait_ms,
            stale_ms=res.stale_ms,
            capacity=config.queue_capacity,
            block_when_full=res.block_when_full,
            eager_batch=res.eager_batch,
        )
        self.stats = EngineStats()
        self.engine = InferenceLoop(
            self.batcher, self.runner, self.labels, self._on_predictions, stats=self.stats,
            latency_from_ready=config.fast, prepare=BatchNormalizer(self.meta.normalization),
        )
        dcfg = config.decision.resolve(self.labels)
        self.decisions = DecisionEngine(self.labels, dcfg)
        if self.baseline is not None:  # a baseline learned on windows labelled a fault is said, and
            # a fault label needs the anomaly that would raise an alarm by itself to be shown
            self.baseline.fault_labels = frozenset(lb for lb in self.labels if self.decisions.level_of(lb) > 0)
            self.baseline.backs_label = dcfg.anomaly_enter
        # words among labels of no-word classes ("_silence"): a sound model, read by a word detector
        sound = any(not lb.startswith("_") for lb in self.labels) and any(lb.startswith("_") for lb in self.labels)
        health = config.health
        if sound:  # digital silence between words is no dead sensor (HealthConfig.sound_flat_span_s)
            health = replace(health, flat_span_s=health.sound_flat_span_s)
        self.health = HealthMonitor(health)
        self.detector = None
        if sound:
            from drsn_stream.speech.detector import WordDetector

            self.detector = WordDetector(self.labels, **asdict(config.detector))
        self.capture = EventCapture(config.capture.dir, config.capture) if config.capture.dir else None
        self._notes: list[tuple[str, str]] = []  # (stream, line) said once, emitted by wait()
        self._shard(res.ingest_procs)
        self.envelope = self._envelope_stage(config)
        self._rest_changes = -1  # the baselines' changes sensor health was told the rest levels of
        self._rest_told: dict[str, float | None] = {}
        if self.baseline is not None:  # before the first frame: a replay's ingest runs ahead of the results
            if self.envelope is not None and self.baseline.learn_s is not None:  # baselines learn here
                self.baseline.envelope_normal = self.envelope.normal
                self.envelope.keeps_evidence = True
            self._tell_baselines()
        self.events = EventLog(maxlen=200)
        self.transcript: list[str] = []
        self.too_short: list[tuple[str, str]] = []  # (stream, line): streams that ended before a window
        self.usage = ResourceMeter()
        if isinstance(self.runner, ProcessRunner):
            runner = self.runner
            self.usage.extra_pids = lambda: [runner.pid, *self._ingest_pids()]  # the footer's CPU and RSS include them
        elif any(isinstance(s, ShardedSource) for s in self.sources):
            self.usage.extra_pids = self._ingest_pids
        if not all(s.realtime for s in self.sources):
            # capture stamps of a faster-than-real-time replay run ahead of the wall clock: latency
            # is then measured from when a window was formed, as with --fast
            self.engine.latency_from_ready = True
            if self.baseline is not None:  # fits at once, not spaced out on the wall clock
                self.baseline.fit_wait = 0.0
            if self.envelope is not None:  # its blocks wait for the stage rather than drop
                self.envelope.wait_s = 10.0
        if config.idle_flush and not config.fast:
            for src in self.sources:
                src.on_idle = self.batcher.flush  # a source waiting for input: its windows are due now
        self._ingest_lock = threading.Lock()
        # the ingest threads' sensor health and DSP (sharded sources run theirs in their processes)
        self.ingest = Ingest(self.meta, config.hop, self.health, config.max_streams, on_events=self._emit_events,
                             on_error=self._error, capture=self.capture, lock=self._ingest_lock,
                             phases=config.phases,
                             source_names={id(src): f"source {i} ({spec})"
                                           for i, (src, spec) in enumerate(zip(self.sources, config.sources), 1)},
                             reclaim_after_s=config.reclaim_after_s, on_retire=self._on_retire,
                             on_layout=self._on_layout, keep=lambda ids: self.decisions.unacknowledged(ids))
        # channel stream ids retired by ingest, forgotten by the output thread; (id, baseline) to
        # adopt there (a cluster host taking a stream over), in the order they were asked for
        self._retired: deque[str | tuple[str, dict[str, Any]]] = deque()
        # (monotonic time, channel ids) a layout change left behind: forgotten by the output thread
        # once no window of theirs can still come (--stale-ms)
        self._left: deque[tuple[float, tuple[str, ...]]] = deque()
        # (stream, line) said once from the output or ingest threads: retirements, layouts, refused streams
        self._stream_notes: deque[tuple[str, str]] = deque()
        for src in self.sources:
            if not isinstance(src, ShardedSource):  # (an ingest process keeps its own table and says what it retires)
                src.make_room = partial(self.ingest.make_room, src)
                src.on_end = self._on_end
        self._out: queue.Queue[list[Prediction] | None] = queue.Queue(maxsize=4096)
        self.dropped_output = 0
        self.judge_cpu_s = 0.0  # output-thread CPU spent on the unknown label and the baseline
        self._tally: Counter[tuple[str, str]] = Counter()  # windows per (stream, label), label_counts
        self._refused_said: set[str] = set()  # streams said to be refused (_say_refused)
        self._next_refused_check, self._refused_checked = 0.0, 0
        # the run's record of streams no longer monitored (retired, left out by a new layout, handed
        # over): folded into totals every FOLD_GONE of them, so that it stays as large as the streams
        # monitored however many ids come and go
        self._unfolded: set[str] = set()
        self.gone_tally: Counter[str] = Counter()  # their windows per label
        self.gone_streams = 0
        self.errors: list[str] = []
        self.error_counts: Counter[str] = Counter()
        self.errors_not_kept = 0  # error lines beyond MAX_ERRORS distinct ones, counted only
        self.failed_sources: list[str] = []  # one line per source that stopped with an error
        self.quit = threading.Event()
        self.stop_asked = False  # by ask_stop(), from a signal handler: wait() then sets quit
        self._threads: list[threading.Thread] = []
        self._ended_sources: set[int] = set()  # id() of the sources whose ingest has stopped
        self._started = 0.0
        self._status = "warming up"
        self._running = False  # start() completed
        self._said_waiting: set[int] = set()  # sources whose "waiting for ..." note was emitted

    def _abandon(self) -> None:
        """Ends what a failed ``__init__`` started: the engine process, ingest processes."""
        if isinstance(self.runner, ProcessRunner):
            self.runner.close(wait_s=0.0)
        for src in self.sources:  # made before the runner: they exist
            try:
                src.close()
            except Exception:  # noqa: BLE001 - the original error is the one to raise
                pass

    def _shard(self, procs: int) -> None:
        """ZeroMQ SUB sources read by ``procs`` ingest processes (app/shards.py); the others, and
        every source of a run that captures raw samples (which needs the frames here), keep their
        ingest thread."""
        if procs < 2:
            return
        if not any(shardable(spec) for spec in self.config.sources):
            if self.config.ingest_procs is not None:  # asked for by name: said, not ignored unsaid
                self._notes.append(("*", f"--ingest-procs {procs} is ignored: it shares out zmq:// (SUB) sources, "
                                         f"and this run reads {', '.join(self.config.sources)}"))
            return
        if self.capture is not None:
            if self.config.ingest_procs is not None:
                self._notes.append(("*", "--ingest-procs is ignored with --capture: raw samples are captured "
                                         "in the monitor's own process"))
            return
        try:
            check_shared_memory(shared_memory_needed(procs, self.meta.window))
        except OSError as exc:
            if self.config.ingest_procs is not None:
                raise ConfigError(f"--ingest-procs {procs}: cannot start ingest processes here ({exc.strerror or exc}); "
                                  "run with --ingest-procs 1") from None
            self._notes.append(("*", f"one ingest thread reads the sources: ingest processes cannot be started here "
                                     f"({exc.strerror or exc})"))
            return
        self.health = HealthMirror(self.health.config)
        # the processes normalize the windows they cut, unless the envelope stage is to read them raw
        self.sources = shard_sources(self.sources, self.config.sources, procs, meta=self.meta,
                                     hop=self.config.hop, health=asdict(self.health.config),
                                     max_streams=self.config.max_streams, mirror=self.health,
                                     phases=self.config.phases,
                                     normalize=not has_geometry(self.config.machine.table()),
                                     reclaim_after_s=self.config.reclaim_after_s)
        for src in self.sources:
            if isinstance(src, ShardedSource):
                src.max_streams = self.config.max_streams
                src.on_windows, src.on_events, src.on_error = self._windows_in, self._emit_events, self._error
                src.on_retire, src.on_layout = self._on_retire, self._on_layout
                src.keep = lambda ids: self.decisions.unacknowledged(ids)

    def _ingest_pids(self) -> list[int]:
        return [pid for s in self.sources if isinstance(s, ShardedSource) for pid in s.pids]

    def _envelope_stage(self, config: RunConfig) -> EnvelopeStage | None:
        """The envelope evidence stage where a bearing geometry is configured; else None, said once
        for a bearing model (its labels are bearing conditions)."""
        machine = config.machine.table()
        if not has_geometry(machine) and not any(getattr(src, "bearing", None) for src in self.sources):
            if any(label_family(lb) not in (None, "none") for lb in self.labels):
                self._notes.append(("*", "no envelope evidence: no bearing geometry configured ([machine] "
                                         "bearing = \"6205\" and rpm = ..., or --bearing / --rpm)"))
            return None
        hop = self.config.hop or self.meta.hop

        def holder(sid: str, what: str) -> Any:
            """The first source that holds the (channel) stream ``sid`` and knows its machine's
            ``what`` (its ``rpm`` or ``bearing`` attribute); None where none does."""
            frame_id = sid.rpartition("/")[0]
            for src in self.sources:
                if getattr(src, what, None) and (sid in src.streams or frame_id in src.streams):
                    return src
            return None

        def rpm_of(sid: str) -> tuple[float | None, bool]:
            src = holder(sid, "rpm")
            return (float(src.rpm), bool(getattr(src, "rpm_given", False))) if src is not None else (None, False)

        def bearing_of(sid: str) -> tuple[str | None, bool]:
            src = holder(sid, "bearing")
            return (str(src.bearing), bool(getattr(src, "bearing_given", False))) if src is not None else (None, False)

        return EnvelopeStage(machine, config.envelope, rate=float(self.meta.sample_rate),
                             hop=hop, window=self.meta.window, rpm_of=rpm_of, bearing_of=bearing_of,
                             speed_of=self.speed_of, speed_runs=self.speed_runs)

    def _gather_speed_logs(self) -> None:
        """The speed logs ``speed_of`` reads: the ingest's and each ingest-process source's. The
        baselines look speeds up per window only once a frame has carried one (``on_first``)."""
        if self._speed_logs:
            return
        self._speed_logs[:] = [self.ingest.speeds, *(s.speeds for s in self.sources if isinstance(s, ShardedSource))]
        for log in self._speed_logs:
            log.on_first = self._speeds_began

    def _speeds_began(self) -> None:
        if self.baseline is not None:
            self.baseline.speed_of = self.speed_of

    def speed_of(self, sid: str, t: float | None = None) -> float | None:
        """The shaft speed (rpm) the frame of channel stream ``sid`` that holds capture time ``t``
        carried (the wire format's rpm; ``t`` None: its latest frame), as this process's ingest or
        an ingest process read it (``SpeedLog.at``); None where it carried none. For the envelope
        stage (twice per block and stream) and the baselines (per window of a stream that carries
        speeds): no work while no frame carries one."""
        logs = self._speed_logs
        if not logs:
            self._gather_speed_logs()
        for log in logs:
            if log:
                v = log.at(sid, t)
                if v is not None:
                    return v
        return None

    def speed_runs(self, sid: str, t0: float, t1: float) -> list[tuple[float, float | None]]:
        """The speeds channel stream ``sid``'s frames carried from capture time ``t0`` to ``t1``,
        as runs ``[(start, rpm or None)]`` (``SpeedLog.runs``): what the envelope stage follows
        through a block over which the speed changed; [] where they carried none (or before ``start``
        gathered the logs)."""
        for log in self._speed_logs:
            if log and (runs := log.runs(sid, t0, t1)):
                return runs
        return []

    def _local_runner(self, module: Any, meta: ArtifactMeta, config: RunConfig, features: int = 0) -> RunnerLike:
        from drsn_stream.engine.runner import Runner

        return Runner(
            module,
            window=meta.window,
            device=config.device,
            max_batch=self.max_batch,
            fp16=config.fp16,
            cuda_graphs=config.cuda_graphs,
            threads=config.threads,
            validation=load_validation(self.model_name) if (config.fp16, config.cpu_layout) != ("off", "off") else None,
            net_config=meta.model_config,
            cpu_layout=config.cpu_layout,
            scores=meta.scores,
            features=features,
        )

    # ------------------------------------------------------------------ life cycle
    def start(self) -> Pipeline:
        self._started = time.monotonic()  # durations on the monotonic clock: the wall clock can step
        self._gather_speed_logs()  # before any frame: the first speed turns the baselines' lookups on
        if self._cpus is not None:
            # The engine process has a core to itself; ingest, output and sinks keep to the rest:
            # the model's compute is not moved between cores or interrupted by ingest, which
            # lowers the p99 latency (docs/perf/ab/pin-cpus-128.json).
            self._saved_affinity = os.sched_getaffinity(0)
            os.sched_setaffinity(0, self._cpus[0])
        self.runner.warmup()
        # what the runner chose against where the user may have counted on it (fp16 or the
        # channels-last form refused by their checks, --fp16 on for a CPU, a module not frozen):
        # notes for the dashboard, the log and the feed, not only `bench`'s JSON
        self._stream_notes.extend(("*", f"model: {n}") for n in self.runner.notes)
        # Opened here, on the caller's thread, so that a source that cannot start (no such
        # file, a refused rate, a port in use) raises before the caller says "ready"; opened
        # after the model's warm-up so that a paced source's clock starts with the monitor.
        for src in self.sources:
            src.open()
        if self.baseline is not None:
            self.baseline.resume()  # learnings a run before this one saved (after kept_elsewhere: none)
        self._frozen = freeze_start_up_objects()  # everything built so far lives as long as the monitor
        self._status = ""
        out = threading.Thread(target=self._output_loop, name="drsn-output", daemon=True)
        out.start()
        self._threads.append(out)
        self.engine.start()
        if self.envelope is not None:
            self.envelope.start()
        for src in self.sources:
            t = threading.Thread(target=self._ingest, args=(src,), name=f"drsn-ingest-{type(src).__name__}", daemon=True)
            t.start()
            self._threads.append(t)
        self._running = True
        return self

    def trouble(self, quiet_s: float) -> str | None:
        """None until ``start`` has returned, "" while the monitor works, else why it does not:
        its engine loop must have turned within ``quiet_s`` seconds (it turns at least every
        0.1 s; it does not while a batch hangs) and its output thread run. What a service
        manager's watchdog (``app.service``) and a container's probes (``/healthz``) ask."""
        if not self._running:
            return None
        if self.engine.error is not None:
            return f"engine stopped: {one_line(self.engine.error)}"
        if not self.engine.is_alive():
            return "the engine loop has ended"
        quiet = time.monotonic() - self.engine.beat
        if quiet > quiet_s:
            return f"the engine loop has not turned for {quiet:.0f} s (a batch hangs)"
        if not (self._threads and self._threads[0].is_alive()):
            return "the output thread has ended"
        return ""

    def alive(self, quiet_s: float) -> bool:
        """Whether the monitor works (``trouble(quiet_s)`` is "")."""
        return self.trouble(quiet_s) == ""

    def ask_stop(self) -> None:
        """Asks ``wait`` to return (within 50 ms), and ``quit`` to be set then: for a signal handler.

        It takes no lock. A signal handler runs in the main thread between any two of its
        bytecodes, also inside ``quit.wait()`` while that holds the event's lock for a moment;
        ``quit.set()`` there would wait for that lock, held by its own thread, forever: the run
        would go on and ignore every later Ctrl-C."""
        self.stop_asked = True

    def wait(self, duration: float | None = None) -> None:
        """Blocks until the duration passes, ``quit`` is set or asked for (``ask_stop``), or
        every source has ended."""
        duration = self.config.duration if duration is None else duration
        # on the monotonic clock: a step of the wall clock (NTP, a wake from suspend) ended the run
        # at once, or sent a stats line every pass for as long as it stepped
        end = None if duration is None else time.monotonic() + duration
        next_stats = time.monotonic() + self.config.stats_every_s
        while not self.quit.is_set() and not self.stop_asked:
            # Notes first, so that a caller who returns on time still sees what happened meanwhile.
            self._drain_notes()
            if end is not None and time.monotonic() >= end:
                break
            if len(self._ended_sources) >= len(self.sources):
                break
            if self.engine.error is not None:
                self._error(f"engine stopped: {one_line(self.engine.error)}")
                break
            self.quit.wait(0.05)
            self._say_waiting()
            events = self.health.tick(self._read_to())
            if events:
                self._emit_events(events)
            if self.capture is not None:
                self.capture.poll()
            if time.monotonic() >= next_stats:
                next_stats += self.config.stats_every_s
                self._emit({"type": "stats", "time": time.time(), **self.stats_json()})
        if self.stop_asked:
            self.quit.set()  # here, outside the signal handler
        self._drain_notes()

    def _read_to(self) -> float:
        """``sources.base.read_to`` over the sources still read."""
        return read_to([s for s in self.sources if id(s) not in self._ended_sources], time.time())

    def _say_waiting(self) -> None:
        """A source with no data after a second says what it waits for (a note, once, and the
        dashboard's status line until data comes)."""
        if time.monotonic() - self._started < WAITING_AFTER_S:
            return
        waiting = []
        for src in self.sources:
            line = src.waiting() if src.stats.frames == 0 else None
            if line:
                waiting.append(line)
                if id(src) not in self._said_waiting:
                    self._said_waiting.add(id(src))
                    self._emit_events([Event("note", "*", time.time(), {"message": line})])
        self._status = "; ".join(waiting)

    def _drain_notes(self) -> None:
        while self.engine.notes:
            self._error(self.engine.notes.pop(0))
        self._say_notes(self.engine.stream_notes)
        for src in self.sources:
            self._say_notes(src.notes)
        self._envelope_notes()
        self._baseline_notes()
        self._say_notes(self._stream_notes)

    def _say_notes(self, notes: list[tuple[str, str]] | deque[tuple[str, str]]) -> None:
        """Takes the (stream, line) pairs a stage said once, oldest first, as ``note`` events (the
        stage appends from its own thread; only this one takes)."""
        while notes:
            sid, message = notes[0]
            del notes[0]
            self._emit_events([Event("note", sid, time.time(), {"message": message})])

    def _baseline_notes(self) -> None:
        if self.baseline is not None:
            self._say_notes(self.baseline.notes)

    def stop(self) -> None:
        """Closes sources, drains the queues and the engine, closes sinks. Idempotent."""
        self.quit.set()
        for src in self.sources:
            src.close()
        for t in self._threads[1:]:
            t.join(timeout=5.0)
        self.batcher.close()
        if self.envelope is not None:
            self.envelope.stop()
        if self.engine.ident is not None:  # started (stop() may follow an interrupted start())
            self.engine.join(timeout=30.0)
        if isinstance(self.runner, ProcessRunner) and not self.engine.is_alive():
            self.runner.begin_close()  # the child exits while the output is drained
        self._out.put(None)
        if self._threads:
            self._threads[0].join(timeout=10.0)  # the output thread drains what the engine left
        if self.baseline is not None:
            self.baseline.save(final=True)  # the baselines learned in the last second
        self._baseline_notes()
        if self._running:  # a start that failed says only its error (the envelope's notes after the
            self._envelope_notes()  # output thread's last windows: a baseline fitted then tells it its normal)
        if self.unknown is not None and self._running:  # (a replay may end before the first check)
            self._say_refused()
            self._say_notes(self._stream_notes)
        if self.capture is not None:
            self.capture.close()
        if self._running:
            self._emit({"type": "stats", "time": time.time(), "final": True, **self.stats_json()})
        if isinstance(self.runner, ProcessRunner):
            # begin_close() let the child leave its read loop while the output drained; one still
            # tearing torch down a second later is not waited for (a stop within 2 s)
            self.runner.close(wait_s=1.0)
        for src in self.sources:  # never iterated (an interrupted start): release them here
            src.release()
        if self._saved_affinity is not None:
            os.sched_setaffinity(0, self._saved_affinity)
            self._saved_affinity = None
        if self._frozen is not None:
            thaw(self._frozen)
            self._frozen = None
        self.outputs.close()

    def run(self) -> None:
        self.start()
        try:
            self.wait()
        finally:
            self.stop()

    # ------------------------------------------------------------------ ingest
    def _ingest(self, source: Any) -> None:
        try:
            with source:
                for frames in source.batches():
                    for part in self.ingest.runs(frames):
                        self._ingest_frames(part, source)
                    if self.quit.is_set():
                        break
            if not self.quit.is_set() and not isinstance(source, ShardedSource):
                # a replay or simulation that came to its end: its streams' silence is no sensor
                # fault (the other sources go on; before, "no data" for the rest of the run)
                self._on_end(source.streams)
        except Exception as exc:  # noqa: BLE001 - one broken source must not take the monitor down
            line = str(exc) if isinstance(exc, DrsnStreamError) else f"source {type(source).__name__} failed: {exc!r}"
            self.failed_sources.append(line)
            self._error(line)
        finally:
            with self._ingest_lock:
                self._ended_sources.add(id(source))

    def _ingest_frames(self, frames: list[Frame], source: Any = None) -> None:
        """Every frame of one poll (``Ingest.frames``); their windows go to the batcher together."""
        windows = self.ingest.frames(frames, source)
        if windows:
            self._windows_in(windows)

    def _windows_in(self, windows: list[Window]) -> None:
        """Where windows enter the engine, from an ingest thread or an ingest process
        (``ShardedSource``'s reading loop). The envelope's blocks are queued first: a replay's
        results wait for the blocks queued by then (``EnvelopeStage.settle``), and a block queued
        after its windows entered the engine was missed by some of them, as the threads ran."""
        if self.envelope is not None:
            self.envelope.push(windows)
        self.batcher.put_many(windows)

    # ------------------------------------------------------------------ results
    def _on_predictions(self, preds: list[Prediction]) -> None:
        try:
            self._out.put_nowait(preds)
        except queue.Full:
            self.dropped_output += len(preds)

    def _output_loop(self) -> None:
        while True:
            try:
                preds = self._out.get(timeout=1.0)
            except queue.Empty:
                # no results for a while (a host that handed its streams over, sources gone
                # quiet): what was asked of this thread is done all the same
                preds = []
            if preds is None:
                return
            try:
                if preds:
                    self._handle(preds)
                elif self._retired or self._left:
                    self._forget_retired()
            except Exception as exc:  # noqa: BLE001 - a sink failure is shown, not fatal
                self._error(f"output: {one_line(exc)}")

    def _say_refused(self) -> None:
        """Says, once per stream, a stream whose windows the model mostly refuses and that no
        baseline watches (learning or monitoring): a machine or sensor unlike the training rig,
        whose labels say nothing and which nothing alarms on. (Every REFUSED_CHECK_S in the output
        thread, and at the end of a run: a scan of the run's tally.)"""
        assert self.unknown is not None
        t0 = time.monotonic()
        self._refused_checked = self.unknown.refused_total
        totals: Counter[str] = Counter()
        refused: dict[str, int] = {}
        for (sid, label), n in list(self._tally.items()):
            if sid not in self._refused_said:
                totals[sid] += n
                if label == UNKNOWN:
                    refused[sid] = n
        for sid, n in refused.items():
            total = totals[sid]
            if total < REFUSED_MIN_WINDOWS or n < REFUSED_SAID * total:
                continue
            if self.baseline is not None and self.baseline.watches(sid):
                continue
            self._refused_said.add(sid)
            self._stream_notes.append((sid, f"the model refused {n / total:.0%} of this stream's {total} windows "
                                            "(unknown): the machine or its sensor is unlike those it was trained on, "
                                            "so its labels say nothing here and no alarm is raised; learn its normal "
                                            "to alarm on deviation (--learn 10m --baseline FILE, docs/own-machine.md)"))
        now = time.monotonic()
        self._next_refused_check = now + max(REFUSED_CHECK_S, REFUSED_CHECK_SHARE * (now - t0))

    def _on_retire(self, sid: str, ids: tuple[str, ...], line: str) -> None:
        """A stream ingest retired to make room for a new one (``Ingest.make_room``)."""
        self._forget_channels(ids)
        self._stream_notes.append((sid, line))

    def _on_end(self, streams: list[str]) -> None:
        """Streams that announced their end (a source's ``on_end``): no "no data" for them; one
        that ended before its first window is said (no decision at all would otherwise be silent)."""
        rate = float(self.meta.sample_rate)
        for sid, seconds, need in self.ingest.before_first_window(streams):
            line = (f"ended after {seconds:.3g} s of samples, before its first window ({need:,} samples at "
                    f"{rate:,.0f} Hz, {need / rate:.3g} s): no decision for it; give it a recording at least that long")
            self.too_short.append((sid, line))
            self._stream_notes.append((sid, line))
        events = self.ingest.end(streams)
        if events:
            self._emit_events(events)

    def _on_layout(self, sid: str, gone: tuple[str, ...], line: str) -> None:
        """Channels a stream's new layout left out (``Ingest.on_layout``): their raw samples
        dropped now, the rest once their last windows are through (a window of theirs formed
        before the change would otherwise bring their decisions back)."""
        self._drop_raw(gone)
        self._left.append((time.monotonic() + self.config.stale_ms / 1000 + 1.0, gone))
        self._stream_notes.append((sid, line))

    def forget_stream(self, stream: str) -> None:
        """Drop everything the monitor holds of a frame stream (a cluster host handing it over):
        its DSP, health, decisions and the rest; frames of it later start it afresh."""
        self._forget_channels(self.ingest.forget(stream))

    def _forget_channels(self, ids: tuple[str, ...]) -> None:
        """The state of these (channel) streams beyond ingest: the raw samples here (the thread
        that pushes them), the decisions now (a stream handed back restores them at once, which a
        later drop would undo), the rest by the output thread, which updates it."""
        self._drop_raw(ids)
        for ch in ids:
            self.decisions.forget(ch)
        self._retired.extend(ids)

    def _drop_raw(self, ids: tuple[str, ...]) -> None:
        """The raw samples kept of these (channel) streams: capture rings, envelope buffers."""
        for ch in ids:
            if self.capture is not None:
                self.capture.forget(ch)
            if self.envelope is not None:
                self.envelope.forget(ch)

    def _forget_retired(self) -> None:
        """Latency rows, baseline and word detector of the retired streams (output thread: they
        are updated there); the run's tally of their windows stays for the summary."""
        while self._left and self._left[0][0] <= time.monotonic():
            for ch in self._left.popleft()[1]:
                self.decisions.forget(ch)
                self._retired.append(ch)
        while self._retired:
            sid = self._retired.popleft()
            if isinstance(sid, tuple):
                self._adopt(*sid)
                continue
            self.stats.forget(sid)
            if self.baseline is not None:
                self.baseline.forget(sid)
            if self.detector is not None:
                self.detector.reset(sid)
            self._unfolded.add(sid)
        if len(self._unfolded) >= FOLD_GONE:
            self._fold_gone()

    def adopt_baseline(self, stream: str, table: dict[str, Any]) -> None:
        """Monitor ``stream`` on a baseline learned by another host (its checkpoint's), or learn on
        from that host's learning so far (``BaselineStage.adopt``); taken by the output thread,
        which runs the baselines, before the stream's next results."""
        self._retired.append((stream, table))

    def _adopt(self, stream: str, table: dict[str, Any]) -> None:
        if self.baseline is None:
            return
        self._unfolded.discard(stream)
        try:
            self.baseline.adopt(stream, table)
        except ConfigError as exc:
            self._error(str(exc))

    def _fold_gone(self) -> None:
        """The tallies, drop counts and alarm counts of the streams retired since the last fold
        into the run's totals (output thread: the tally is updated there). A stream that came back
        meanwhile (it has decisions again) keeps its own."""
        live = set(self.decisions.streams)
        gone = {sid for sid in self._unfolded if sid not in live}
        self._unfolded.clear()
        if not gone:
            return
        for key in [k for k in self._tally if k[0] in gone]:
            self.gone_tally[key[1]] += self._tally.pop(key)
        self._refused_said -= gone  # (said again if it comes back refused)
        self.gone_streams += len(gone)
        self.batcher.forget(gone)
        self.events.forget(gone)

    def _handle(self, preds: list[Prediction]) -> None:
        if self._retired or self._left:
            self._forget_retired()
        if self.envelope is not None and self.engine.latency_from_ready:
            self.envelope.settle(2.0)  # a replay outruns the envelope stage; live, never wait
        if self.unknown is not None or self.baseline is not None:
            t0 = time.thread_time()
            if self.unknown is not None:
                self.unknown.refuse(preds)
            if self.baseline is not None:
                self.baseline.apply(preds)
                if self.baseline.changes != self._rest_changes:
                    self._tell_baselines()
            self.judge_cpu_s += time.thread_time() - t0
        # judged on the window's own samples, and live on the sensor now (a result may come late),
        # but not on a silence now: that began after the window's samples arrived. A replay's
        # ingest runs seconds of signal ahead of its results, so there the sensor "now" is a later
        # part of the recording: only the window's own mark counts. The streams of the batch
        # looked up in one hold of the health lock, which ingest holds while it judges a round
        ids = [p.stream_id for p in preds]
        sick = set() if self.engine.latency_from_ready else self.health.unhealthy(set(ids), no_data=False)
        oks = [p.health == OK for p in preds]
        if sick:
            for i, p in enumerate(preds):
                if oks[i] and p.stream_id in sick:
                    oks[i] = False
                    p.health = CHECK_SENSOR
        envs: list[EnvelopeResult | None] | None = None  # per window, its stream's envelope by then
        if self.envelope is not None:  # the alarm's third opinion: a fault family's lines risen, held
            reading, envs = self.envelope.reading, []
            for p in preds:
                env, p.envelope_db = reading(p.stream_id, p.t_last)
                envs.append(env)
            results = self.decisions.update_many(preds, oks)
            for p, env, (events, _, _) in zip(preds, envs, results):
                if events and env is not None:  # an alarm says what the envelope said
                    for e in events:
                        if e.type == "alarm":
                            e.data["envelope"] = _envelope_json(env, p)
        else:
            results = self.decisions.update_many(preds, oks)
        self._tally.update(zip(ids, [p.label if ok else "check_sensor" for p, ok in zip(preds, oks)]))
        if (self.unknown is not None and self.unknown.refused_total != self._refused_checked
                and time.monotonic() >= self._next_refused_check):
            self._say_refused()
        if not self.outputs and self.detector is None:  # nothing per window but the alarms
            for events, _, _ in results:
                if events:
                    self._emit_events(events)
            return
        speeds = any(self._speed_logs)
        for i, (p, healthy, (events, smoothed, level)) in enumerate(zip(preds, oks, results)):
            env = envs[i] if envs is not None else None
            if self.outputs:
                obj = p.to_json()
                obj["smoothed"], obj["level"] = smoothed, level.name  # as the decisions stood after this window
                if speeds and (rpm := self.speed_of(p.stream_id, p.t_last)) is not None:
                    obj["rpm"] = rpm  # the speed of the frame holding the window's last sample
                if env is not None:
                    obj["envelope"] = _envelope_json(env, p)
                self._emit(obj)
            if self.detector is not None and healthy:
                dets = self.detector.update(p.stream_id, p.t_last, p.probs)
                for d in dets:
                    self.transcript.append(str(d.data.get("label")))
                events = events + dets
            if events:
                self._emit_events(events)

    def _tell_baselines(self) -> None:
        """Sensor health told the levels the streams' machines rest under, as their baselines
        changed (a stop or start is then not an amplitude step of the sensor); the envelope stage
        the evidence they learned."""
        assert self.baseline is not None
        self._rest_changes = self.baseline.changes
        if self.envelope is not None:
            self.envelope.set_normals(self.baseline.envelope_normals(), since=self.baseline.fitted_here())
        levels = self.baseline.rest_levels()
        told = {sid: lv for sid, lv in levels.items() if self._rest_told.get(sid) != lv}
        told.update({sid: None for sid in self._rest_told.keys() - levels.keys()})
        if told:
            self.health.set_rest_levels(told)
        self._rest_told = levels

    def _envelope_notes(self) -> None:
        """The pipeline's and the envelope stage's said-once lines, as ``note`` events (the
        pipeline's were left unsaid where an envelope stage ran: a run with a bearing never said
        that its model ran in-process, or that its ingest processes could not start)."""
        self._say_notes(self._notes)
        if self.envelope is not None:
            self._say_notes(self.envelope.notes)

    def _emit_events(self, events: list[Event]) -> None:
        self.events.extend(events)
        for e in events:
            if self.capture is not None:
                self.capture.on_event(e)
            self._emit(e.to_json())

    def _emit(self, obj: dict[str, Any]) -> None:
        self.outputs.write(obj)

    def error(self, line: str) -> None:
        """An error line from outside the pipeline's own stages (a cluster host's), shown and
        counted as theirs are."""
        self._error(line)

    def _error(self, line: str) -> None:
        """Keep an error line for the dashboard, the stats and the summary: each distinct line once
        (at most MAX_ERRORS of them), repeats counted in ``error_counts``; lines beyond those are
        only counted (``errors_not_kept``): lines that name a stream would otherwise grow the
        counts by every stream id a peer sends."""
        n = self.error_counts.get(line)
        if n is not None:
            self.error_counts[line] = n + 1
        elif len(self.errors) < MAX_ERRORS:
            self.errors.append(line)
            self.error_counts[line] = 1
        else:
            self.errors_not_kept += 1


    # ------------------------------------------------------------------ views
    def acknowledge(self) -> None:
        self._emit_events(self.decisions.acknowledge())

    @property
    def monitor_cpus(self) -> set[int] | None:
        """The cores this process keeps to while the engine process has one of its own (pinning on),
        else None: where a load generator on the same host (a benchmark's publisher) belongs."""
        return set(self._cpus[0]) if self._cpus else None

    @property
    def engine_cpu(self) -> int | None:
        """The core the engine process is pinned to (pinning on), else None."""
        return self._cpus[1] if self._cpus else None

    def malformed_total(self) -> int:
        total = 0
        for src in self.sources:
            snap = src.stats.snapshot()
            total += sum(snap.get("malformed", {}).values())
        return total

    def drops(self) -> dict[str, int]:
        d: Counter[str] = Counter()
        d.update(self.batcher.dropped_stale)
        d.update(self.batcher.dropped_overflow)
        return dict(d)

    def snapshot(self) -> Snapshot:
        header = Header(
            sources=tuple(self.config.sources),
            model=self.meta.name,
            labels=tuple(self.labels),
            sample_rate=float(self.meta.sample_rate),
            window=self.meta.window,
            hop=self.config.hop or self.meta.hop,
            device=self.runner.device_name,
            ready=self.runner.ready.is_set(),
            # an engine that stopped answering first: every label on screen is getting old
            status=(self.trouble(STALL_SHOWN_S) or (self.errors[-1] if self.errors else "")
                    or self._status or self._baseline_status()),
            refuses=self.unknown is not None,
        )
        footer = Footer(
            windows_per_s=self.stats.windows_per_s(),
            avg_batch=self.stats.avg_batch(),
            queue_depth=self.batcher.depth(),
            dropped=self.batcher.dropped_total() + self.dropped_output,
            malformed=self.malformed_total(),
            windows_total=self.stats.windows,
            **self.usage.read(),
        )
        return build_snapshot(
            header=header,
            decisions=self.decisions,
            health=self.health,
            footer=footer,
            events=self.events,
            transcript=tuple(self.transcript[-40:]),
            drops=self.drops(),
            envelope=self.envelope.views() if self.envelope is not None else None,
            counters=self.counters(),
            baseline=self.baseline.views() if self.baseline is not None else None,
            latency=self.stats,
            speeds=self._speeds_now(),
        )

    def _speeds_now(self) -> dict[str, float] | None:
        """{stream: the speed its latest frame carried} for the streams whose frames carry one."""
        if not any(self._speed_logs):
            return None
        return {sid: v for sid in self.decisions.streams if (v := self.speed_of(sid)) is not None}

    def _baseline_status(self) -> str:
        """``learning the baseline (3 streams)`` / ``baseline: monitoring`` for the header."""
        if self.baseline is None:
            return ""
        learning = sum(1 for v in self.baseline.state.values() if v.startswith("learning") or v == "fitting")
        if learning:
            return f"learning the baseline ({learning} stream{'s' if learning != 1 else ''}), then monitoring"
        return "baseline: monitoring deviations" if self.baseline.profile.streams else ""

    def counters(self) -> Counters:
        """Totals since the start for the metrics endpoint (call after ``usage.read()``)."""
        batches, sizes, infer_s = self.stats.totals()
        stale, overflow = dict(self.batcher.dropped_stale), dict(self.batcher.dropped_overflow)
        malformed: Counter[str] = Counter()
        for src in self.sources:
            malformed.update(src.stats.snapshot().get("malformed", {}))
        return Counters(
            batches=batches,
            batch_sizes=sizes,
            infer_s=infer_s,
            dropped={"stale": sum(stale.values()) + self.batcher.dropped_gone["stale"],
                     "queue_overflow": sum(overflow.values()) + self.batcher.dropped_gone["overflow"],
                     "output_overflow": self.dropped_output, "engine_restart": self.engine.lost},
            stream_dropped={**{(s, "stale"): n for s, n in stale.items()},
                            **{(s, "queue_overflow"): n for s, n in overflow.items()}},
            malformed=dict(malformed),
            alarm_changes=self.events.alarm_changes_by_stream(),
            health=self.health.states(),
            cpu_s=self.usage.cpu_s,
            engine_quiet_s=time.monotonic() - self.engine.beat if self._running and self.engine.is_alive() else None,
            outputs=self._output_counts(),
        )

    def _output_counts(self) -> dict[tuple[str, str], int]:
        """{(output, result): objects} for the metrics: a webhook's posts sent and given up on, and
        the objects each output raised for (a full disk, a webhook that failed)."""
        from drsn_stream.sinks.webhook import WebhookSink

        out: dict[tuple[str, str], int] = {}
        for sink in self.outputs.sinks:
            if isinstance(sink, WebhookSink):
                out[("webhook", "sent")] = out.get(("webhook", "sent"), 0) + sink.sent
                out[("webhook", "failed")] = out.get(("webhook", "failed"), 0) + sink.failed
        for name, n in self.outputs.failures.items():
            out[(name, "raised")] = n
        return out

    def stats_json(self) -> dict[str, Any]:
        sources = {}
        for i, (src, spec) in enumerate(zip(self.sources, self.config.sources), 1):
            # the same spec twice (two simulators): each its own entry, not one over the other
            sources[spec if spec not in sources else f"{spec} (source {i})"] = src.stats.snapshot()
        nonfinite = self.ingest.nonfinite()
        for src in self.sources:
            if isinstance(src, ShardedSource):
                nonfinite.update(src.nonfinite)
        return {
            "engine": self.stats.to_json(),
            "device": self.runner.device_name,
            "dropped": {"stale": dict(self.batcher.dropped_stale), "overflow": dict(self.batcher.dropped_overflow),
                        "of_streams_gone": dict(self.batcher.dropped_gone),
                        "output": self.dropped_output, "engine_restart": self.engine.lost},
            "malformed": self.malformed_total(),
            "sources": _jsonable(sources),
            "nonfinite_samples": nonfinite,
            **({"envelope": self.envelope.stats()} if self.envelope is not None else {}),
            **({"baselines_saved": {"to": str(self.baseline.save_to), "saves": self.baseline.saves,
                                    "failures": self.baseline.save_failures,
                                    "learning_to": str(self.baseline.learning_to),
                                    "learning_saves": self.baseline.learning_saves,
                                    "learning_failures": self.baseline.learning_save_failures}}
               if self.baseline is not None and self.baseline.save_to is not None else {}),
            "sink_failures": dict(self.outputs.failures),
            "errors": list(self.errors),
            "errors_not_kept": self.errors_not_kept,
            "failed_sources": list(self.failed_sources),
        }

    @property
    def label_counts(self) -> dict[str, Counter[str]]:
        """Windows per label of each stream so far (``check_sensor`` where the sensor was not
        healthy), labels in the order they first came."""
        out: dict[str, Counter[str]] = {}
        for (sid, label), n in list(self._tally.items()):
            out.setdefault(sid, Counter())[label] = n
        return out

    def summary(self) -> str:
        """A short, readable end-of-run summary."""
        e = self.stats.to_json()
        lat = e["latency_ms"]
        latency = (f"avg batch {e['avg_batch']}; latency p50/p95/p99 {lat['p50']}/{lat['p95']}/{lat['p99']} ms"
                   if lat["p50"] is not None else "no window reached the model")
        lines = [
            f"drsn-stream: {e['windows']} windows in {time.monotonic() - self._started:.1f} s on {self.runner.device_name}; "
            f"{latency}",
            f"dropped {self.batcher.dropped_total() + self.dropped_output}, malformed {self.malformed_total()}",
        ]
        label_counts = self.label_counts
        for sid in sorted(label_counts):
            c = label_counts[sid]
            n = sum(c.values())
            top = ", ".join(f"{lb} {k / n:.0%}" for lb, k in c.most_common(3))
            lines.append(f"  {sid}: {n} windows; {top}")
        if self.gone_streams:
            n = sum(self.gone_tally.values())
            top = ", ".join(f"{lb} {k / n:.0%}" for lb, k in self.gone_tally.most_common(3)) if n else "-"
            lines.append(f"  {self.gone_streams} streams no longer monitored (retired, left out, handed over): "
                         f"{n} windows; {top}")
        if self.transcript:
            lines.append("  transcript: " + " ".join(self.transcript))
        for err in self.errors:
            n = self.error_counts[err]
            lines.append(f"  error: {err}" + (f" (x{n})" if n > 1 else ""))
        if self.errors_not_kept:
            lines.append(f"  and {self.errors_not_kept} more error lines of other kinds, not kept "
                         f"(the first {MAX_ERRORS} kinds are above)")
        if self.outputs.failures:
            lines.append(f"  sink failures {dict(self.outputs.failures)}; last: {self.outputs.last_error}")
        return "\n".join(lines)



def _envelope_json(env: EnvelopeResult, p: Prediction) -> dict[str, Any]:
    """A window's envelope as its JSON and its alarms' say it: the latest block's fault type and
    evidence, and how far its family rose over what it needs, held over the last blocks."""
    out = env.to_json()
    if p.envelope_db is not None and math.isfinite(p.envelope_db):
        out["rise_db"] = round(p.envelope_db, 2)
    return out


def _clock(t: float) -> str:
    """HH:MM:SS of a wall-clock time; any time a platform cannot show is shown as ``??:??:??``."""
    try:
        return time.strftime("%H:%M:%S", time.localtime(t))
    except (OverflowError, OSError, ValueError):
        return "??:??:??"


def _judges(model: str, meta: ArtifactMeta, config: RunConfig) -> tuple[UnknownDetector | None, BaselineStage | None]:
    """The artifact's "unknown" statistics (None where it carries none) and the baseline stage
    (None without --baseline or --learn); a profile that does not fit the model is refused here."""
    unknown = None
    if config.unknown and meta.unknown and meta.features:
        unknown = UnknownDetector.from_dict(meta.unknown, where=meta.source, classes=len(meta.labels),
                                            features=meta.features)
    if config.baseline is None and config.learn_s is None:
        return unknown, None
    if not meta.features:
        raise ConfigError(f"model {meta.name} returns no pooled features, so it cannot use a baseline; "
                          "re-export it with tools/fit_unknown.py")
    digest = weights_digest(resolve_artifact(model))
    profile, save_to = None, None
    if config.baseline is not None:
        path = Path(config.baseline)
        # with --learn, the profile is where the baselines learned live are kept: made if missing
        if config.learn_s is None or path.exists():
            profile = Profile.load(path)
            try:
                profile.check(model=meta.name, digest=digest, sample_rate=meta.sample_rate, window=meta.window,
                              where=f"baseline {config.baseline}", features=meta.features)
            except ConfigError as exc:
                if config.learn_s is None:
                    raise
                raise ConfigError(f"{exc}; or move {path} away: --learn then learns every stream anew and "
                                  "saves them there") from None
        elif not path.parent.is_dir():
            raise ConfigError(f"baseline {config.baseline}: the folder {path.parent} does not exist; the baselines "
                              "learned with --learn are saved there: give a path in an existing folder")
        if config.learn_s is not None:
            save_to = path
    stage = BaselineStage(profile, learn_s=config.learn_s, model=meta.name, digest=digest,
                          sample_rate=meta.sample_rate, window=meta.window, hop=config.hop or meta.hop,
                          features=meta.features, save_to=save_to, startup_s=config.startup_s)
    return unknown, stage


def _jsonable(o: Any) -> Any:
    if isinstance(o, dict):
        return {str(k): _jsonable(v) for k, v in o.items()}
    if isinstance(o, (set, tuple, list)):
        return [_jsonable(v) for v in o]
    if isinstance(o, np.generic):
        return o.item()
    return o


__all__ = ["Pipeline", "RunConfig", "default_model"]
