"""The live envelope stage: bearing fault type from physics, off the model's critical path.

The ingest thread hands it the raw windows it already cut (``push``: it only copies each window's
new hop of samples into the stream's buffer); every ``block_s`` seconds of a stream become one
block on a bounded queue, which the stage's own thread analyses (``drsn_stream.dsp.envelope``) and
keeps as the stream's latest result. The output thread reads ``latest(stream)`` when it writes a
prediction. A full queue drops blocks (counted), never windows.

Per-stream settings come from the ``[machine]`` table (``machine_for``); the shaft speed can also
come from the source (``file:...?rpm=1797``, or the RPM a CWRU .mat file records), which a user's
``[machine]`` speed overrides and ``?rpm=`` overrides in turn. A stream whose frames carry the
speed they were captured at (the wire format's ``rpm``, a tachometer's reading) is analysed at
that speed, block by block, over any configured one (a nameplate speed is not the machine's
speed now); only ``?rpm=`` beats it. A block over which that speed changed by more than the
lines' tolerance (a run-up, a coast-down, a drive changing its set point) is followed through
the change: its squared envelope is resampled to equal steps of shaft angle (computed order
tracking), up to a factor of ``MAX_SPEED_RATIO`` within the block. A block over which it changed
more, or during which the shaft turned slower than ``STANDSTILL_RPM``, gives no evidence.
Streams without a geometry or a speed get no evidence; the reason is said once per stream
(``notes``).

A stream whose baseline learns its machine's normal learns its envelope evidence too: where
baselines learn (``keeps_evidence``), the stage keeps each block's evidence until the stream has a
normal (``_Seen``), the baseline asks for the
median per family over its learning span when it fits (``normal``), and the pipeline hands the
learned normals back (``set_normals``, from the profile too). A family then names a fault only
where it rises ``margin_db`` over its normal as well as over the threshold: lines the machine had
while healthy (another component's, a sensor far from the bearing) are not taken for a fault.
"""

from __future__ import annotations

import bisect
import math
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields, replace
from typing import Any

import numpy as np

from drsn_stream.dsp.envelope import (
    DIMENSIONS,
    FAMILIES,
    MAX_SPEED_RATIO,
    ORDERS,
    BearingGeometry,
    EnvelopeResult,
    EnvelopeSettings,
    MachineConfig,
    analyse_block,
    bearing_geometry,
    decide,
    family_of,
    learned_fault,
    machine_for,
    mean_speed,
    median_evidence,
    need_db,
    plan_speed,
    speed_curve,
)
from drsn_stream.errors import ConfigError, DataError, DrsnStreamError
from drsn_stream.types import STANDSTILL_RPM, Window


@dataclass(frozen=True)
class StreamMachine(MachineConfig):
    """One ``[[machine.streams]]`` entry: the keys it sets replace the table's for the stream ids
    that match ``match`` (an fnmatch pattern); None: not set."""

    match: str = ""

    def __post_init__(self) -> None:
        if not self.match:
            raise ConfigError("[[machine.streams]] entries need match = \"PATTERN\" (stream ids, fnmatch)")


@dataclass(frozen=True)
class MachineTable(MachineConfig):
    """The ``[machine]`` table: every stream's bearing and speed (None: not set), then per-stream
    overrides. Checked when built: a wrong geometry or speed fails here, not per stream in the run."""

    streams: tuple[StreamMachine, ...] = ()

    def __post_init__(self) -> None:
        table = self.table()
        for pattern in ["", *(e.match for e in self.streams)]:
            m = machine_for(pattern, table)
            m.geometry()
            m.speed_hz()

    def table(self) -> dict[str, Any]:
        """The TOML form ``machine_for`` and ``EnvelopeStage`` read: the keys that are set."""
        out: dict[str, Any] = _set_keys(self, MachineConfig)
        if self.streams:
            out["streams"] = [{"match": e.match, **_set_keys(e, MachineConfig)} for e in self.streams]
        return out


def _set_keys(obj: Any, cls: type) -> dict[str, Any]:
    return {f.name: getattr(obj, f.name) for f in fields(cls) if getattr(obj, f.name) is not None}


def has_geometry(machine: Mapping[str, Any]) -> bool:
    """Whether a ``[machine]`` table names a bearing anywhere (its own keys or a per-stream entry)."""
    keys = ("bearing", *ORDERS, *DIMENSIONS)
    if any(k in machine for k in keys):
        return True
    return any(isinstance(e, Mapping) and any(k in e for k in keys) for e in machine.get("streams", ()) or ())


# a steady block at the speed its frames carry is analysed at the nearest speed of a grid of 0.1 %
# steps (at most 0.05 % off, a fraction of a bin at the highest line): a tachometer's jitter would
# otherwise make a new plan (~20 ms) for every block's mean speed
STEADY_STEP = 0.001
# results kept per stream, for predictions that arrive after newer blocks were analysed: at least
# _KEEP, and those no prediction has been read past yet (a replay's ingest runs many blocks ahead
# of its results; with 16 kept, a replay's first windows met no evidence, how many varying with the
# threads' pace), up to _KEEP_MAX (a stream whose results stop coming)
_KEEP = 16
_KEEP_MAX = 4096
NORMAL_KEEP = 2048  # blocks of evidence kept per stream until it has a normal (then every other one)
NORMAL_LEAST = 5  # blocks of evidence within a learning span that make a normal
# blocks in a row a family must rise over its need in for the alarm (``reading``): one block's
# chance lines are not a fault; three 1-s blocks are about 3 s of evidence
SUSTAIN = 3


class _Seen:
    """One stream's block evidence, kept until its normal is learned: at most NORMAL_KEEP blocks;
    when full, every other one is let go and from then only every ``stride``-th block is kept, so
    that a learning longer than NORMAL_KEEP blocks is still covered from its start."""

    def __init__(self) -> None:
        self.t = np.zeros(64)
        self.ev = np.zeros((64, len(FAMILIES)), dtype=np.float32)
        self.n = 0
        self.stride = 1
        self.count = 0

    def add(self, t: float, evidence: Mapping[str, float]) -> None:
        self.count += 1
        if (self.count - 1) % self.stride:
            return
        if self.n == self.t.size:
            if self.n >= NORMAL_KEEP:
                self.t[: self.n // 2], self.ev[: self.n // 2] = self.t[: self.n : 2], self.ev[: self.n : 2]
                self.n //= 2
                self.stride *= 2
            else:
                self.t = np.concatenate([self.t, np.zeros_like(self.t)])
                self.ev = np.concatenate([self.ev, np.zeros_like(self.ev)])
        self.t[self.n] = t
        self.ev[self.n] = [evidence.get(k, 0.0) for k in FAMILIES]
        self.n += 1


class EnvelopeStage:
    """Envelope evidence per stream, one result per ``block_s`` seconds.

    Args:
        machine: the ``[machine]`` table (bearing, orders, rpm / shaft_hz, ``streams`` overrides).
        settings: ``EnvelopeSettings`` for the analysis.
        rate: sample rate of the windows pushed (the model's rate), Hz.
        hop / window: the DSP's hop and window length, samples.
        rpm_of: the source's shaft speed for a stream (rpm; None if it has none) and whether the
            user gave it on the source spec (``?rpm=``: that beats the config).
        bearing_of: the bearing the source knows a stream's machine has (a name of
            ``GEOMETRIES``, or ``key=value`` orders or dimensions; None: it knows none) and whether
            the user gave it on the source spec (``file:...?bearing=``: that beats ``machine``);
            one it knows of itself (the simulator's, of the rig it replays) is used where
            ``machine`` gives the stream none.
        speed_of: ``speed_of(stream, t)``, the speed (rpm) the stream's frame that holds capture
            time ``t`` carried (None: none), for the first and the last sample of each block.
        speed_runs: ``speed_runs(stream, t0, t1)``, the speeds its frames carried from capture
            time ``t0`` to ``t1`` as runs ``[(start, rpm or None)]`` (``SpeedLog.runs``): a block
            whose speed changed is followed through the change with them; without it, such a block
            gives no evidence.
        block_s: seconds per analysed block.
        capacity: blocks that may wait for the stage's thread.
    """

    def __init__(
        self,
        machine: Mapping[str, Any],
        settings: EnvelopeSettings,
        *,
        rate: float,
        hop: int,
        window: int,
        rpm_of: Callable[[str], tuple[float | None, bool]] | None = None,
        bearing_of: Callable[[str], tuple[str | None, bool]] | None = None,
        speed_of: Callable[[str, float], float | None] | None = None,
        speed_runs: Callable[[str, float, float], list[tuple[float, float | None]]] | None = None,
        block_s: float = 1.0,
        capacity: int = 256,
    ) -> None:
        self.machine = dict(machine)
        self.settings = settings
        self.rate = float(rate)
        self.hop = int(hop)
        self.window = int(window)
        self.block = int(round(block_s * self.rate))
        self.block_s = float(block_s)
        self.rpm_of = rpm_of or (lambda _sid: (None, False))
        self.bearing_of = bearing_of or (lambda _sid: (None, False))
        self.speed_of = speed_of or (lambda _sid, _t: None)
        self.speed_runs = speed_runs
        # id: (chunks, samples, next index, the frames' speed as the block began)
        self._bufs: dict[str, tuple[list[np.ndarray], int, int, float | None]] = {}
        # (stream, capture time of the block's last sample, samples, speeds carried at its start and end)
        self._queue: queue.Queue[tuple[str, float, np.ndarray, tuple[float | None, float | None]] | None] = \
            queue.Queue(maxsize=capacity)
        # how long a push waits for room in the queue before it drops the block (counted): 0 live,
        # where the ingest must not wait; a replay faster than real time waits (the pipeline sets
        # it), as its windows wait for the engine, so that its evidence does not hang on the pace
        self.wait_s = 0.0
        # per stream: its geometry, the configured or source speed (Hz; None: none) and whether the
        # user gave it on the source (beats the frames' own); None: no geometry
        self._streams: dict[str, tuple[BearingGeometry, float | None, bool] | None] = {}
        # per stream: (capture time of each block's last sample, its result; None: no evidence,
        # the shaft stopped or changing speed), oldest first
        self._results: dict[str, deque[tuple[float, EnvelopeResult | None]]] = {}
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._pending = 0  # blocks queued and not yet analysed
        self.notes: list[tuple[str, str]] = []  # (stream, message), each said once; the pipeline drains it
        self.dropped = 0
        self.blocks = 0
        self.skipped = 0  # blocks with NaN or infinite samples: no evidence either way
        self.tracked = 0  # blocks followed through a change of speed (order tracking)
        self._skipping: set[str] = set()  # streams told so
        self.cpu_s = 0.0  # thread CPU time spent analysing
        self._said: dict[str, set[str]] = {}  # per stream, the notes said once (by message, or by key)
        self._thread: threading.Thread | None = None
        # per stream: the machine's learned evidence per family, dB (set_normals); and the
        # evidence of the blocks of the streams without one, for their baselines' fits
        self._normals: dict[str, dict[str, float]] = {}
        self._since: dict[str, float] = {}  # per stream whose normal was learned in this run: from when it holds
        self._read: dict[str, float] = {}  # per stream, the latest capture time a prediction read (_keep)
        self._seen: dict[str, _Seen] = {}
        self.keeps_evidence = False  # the pipeline turns it on where baselines learn (else nothing asks)

    # ---------------------------------------------------------------- ingest side (cheap)
    def push(self, windows: list[Window]) -> None:
        """Take the new samples of raw windows (any streams); queue each full block."""
        speed_of = self.speed_of
        for w in windows:
            chunks, count, nxt, s0 = self._bufs.get(w.stream_id, ([], 0, -1, None))
            if w.index != nxt or self.hop > self.window:
                chunks, count = [], 0  # a new stream, or a restart after a gap: start a clean block
                new = w.data
            else:
                new = w.data[-self.hop :]
            if not count:  # the block starts with these samples: the speed at the first of them
                s0 = speed_of(w.stream_id, w.t_last - (new.shape[0] - 1) / self.rate)
            chunks.append(np.array(new, dtype=np.float32))
            count += new.shape[0]
            if count >= self.block:
                x = np.concatenate(chunks)
                rest = x[self.block :]
                chunks, count = ([rest] if rest.size else []), rest.size
                t_end = w.t_last - rest.size / self.rate
                s1 = speed_of(w.stream_id, t_end)
                with self._lock:
                    self._pending += 1
                try:
                    self._queue.put((w.stream_id, t_end, x[: self.block], (s0, s1)), block=self.wait_s > 0,
                                    timeout=self.wait_s or None)
                except queue.Full:
                    self.dropped += 1
                    self._done()
                s0 = s1
            self._bufs[w.stream_id] = (chunks, count, w.index + 1, s0)

    def forget(self, stream: str) -> None:
        """Drop a stream's samples and results (the monitor retired it or handed it over). From
        any thread: each step is one dict operation; a push of the same stream meanwhile (there
        is none once it has been silent or drained) would only start its buffer again."""
        self._bufs.pop(stream, None)
        self._said.pop(stream, None)
        with self._lock:
            self._streams.pop(stream, None)
            self._results.pop(stream, None)
            self._read.pop(stream, None)
            self._seen.pop(stream, None)

    # ---------------------------------------------------------------- the stage's thread
    def start(self) -> EnvelopeStage:
        self._thread = threading.Thread(target=self._loop, name="drsn-envelope", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        if self._thread is None:
            return
        try:
            self._queue.put(None, timeout=timeout)
        except queue.Full:
            pass
        self._thread.join(timeout=timeout)
        self._thread = None

    def _loop(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            sid, t_end, x, speeds = item
            t0 = time.thread_time()
            try:
                self._analyse(sid, t_end, x, speeds)
            except DrsnStreamError as exc:
                self._say(sid, f"no envelope evidence: {exc}")
                self._streams[sid] = None
            except Exception as exc:  # noqa: BLE001 - one bad block must not stop the stage
                self._say(sid, f"envelope analysis failed: {exc!r}")
            finally:
                self.cpu_s += time.thread_time() - t0
                self._done()

    def _done(self) -> None:
        with self._idle:
            self._pending -= 1
            self._idle.notify_all()

    def settle(self, timeout: float) -> None:
        """Wait (at most ``timeout`` s) until every block queued so far is analysed: a replay
        faster than real time does this so that its predictions meet the evidence of their time."""
        end = time.monotonic() + timeout
        with self._idle:
            while self._pending > 0 and (left := end - time.monotonic()) > 0:
                self._idle.wait(left)

    def _analyse(self, sid: str, t_end: float, x: np.ndarray,
                 speeds: tuple[float | None, float | None] = (None, None)) -> None:
        setup = self._setup(sid)
        if setup is None:
            return
        geometry, shaft_hz, explicit = setup
        track, said_hz = None, None
        if explicit or speeds[1] is None:
            if shaft_hz is None:
                self._say_once(sid, "no envelope evidence: no shaft speed for this stream ([machine] rpm = ... or "
                                    "shaft_hz = ..., ?rpm= on the source, or rpm in its frames' headers)")
                return
            self._say_once(sid, f"envelope evidence on: {geometry.name}, shaft {shaft_hz * 60:.0f} rpm "
                                f"({_lines(geometry, shaft_hz)})")
        else:
            live = self._live(sid, geometry, speeds, t_end - (x.shape[0] - 1) / self.rate, t_end)
            if live is None:  # stopped, or its speed changed too much: no evidence for this block
                with self._lock:
                    self._keep(sid, t_end, None)
                return
            shaft_hz, track, said_hz = live
        try:
            result = analyse_block(x, self.rate, shaft_hz, geometry, self.settings, speed=track)
            if said_hz is not None:  # the block's mean speed, not its plan's
                result = replace(result, shaft_hz=said_hz)
        except DataError:  # NaN or infinite samples, a sensor dropout: skipped (and counted), not "no fault, 0 dB"
            if sid not in self._skipping:
                self._skipping.add(sid)
                self._say(sid, "envelope: skipping blocks with NaN or infinite samples (counted in the stats)")
            self.skipped += 1
            return
        with self._lock:
            if self.keeps_evidence and sid not in self._normals:  # its baseline may learn it
                self._seen.setdefault(sid, _Seen()).add(t_end, result.evidence)
            self._keep(sid, t_end, result)
            self.blocks += 1
            self.tracked += track is not None

    def _keep(self, sid: str, t_end: float, result: EnvelopeResult | None) -> None:
        """Under the lock."""
        kept = self._results.get(sid)
        if kept is None:
            kept = self._results[sid] = deque(maxlen=_KEEP_MAX)
        kept.append((t_end, result))
        read = self._read.get(sid, -math.inf)
        # the oldest goes once a reading has passed the block SUSTAIN after it (a reading needs
        # the block it falls in and the SUSTAIN - 1 before it)
        while len(kept) > _KEEP and kept[SUSTAIN][0] <= read:
            kept.popleft()

    def _live(self, sid: str, geometry: BearingGeometry, speeds: tuple[float | None, float | None],
              t0: float, t1: float) -> tuple[float, tuple[np.ndarray, np.ndarray] | None, float] | None:
        """How a block from capture time ``t0`` to ``t1`` is analysed at the speeds its frames
        carried: (the speed it is analysed at, Hz: its mean speed on a grid of 0.1 % steps, so that
        blocks of one steady speed, or of a jittering tachometer's, share a few plans; None, or the
        runs of its speed to follow: order tracking; its mean speed, Hz, to 4 digits, which the
        result says). None where it gives no evidence: the shaft turned slower than
        STANDSTILL_RPM, or its speed changed by more than a factor of MAX_SPEED_RATIO (or by more
        than the lines' tolerance, without ``speed_runs``).

        The speed followed is the readings' smooth curve (``speed_curve``), and a change of it
        within the lines' tolerance is analysed at the mean speed, not followed: a tachometer's
        jitter, followed reading by reading, would add its own phase noise."""
        s0, s1 = speeds
        if s1 is None:
            return None
        s0 = s1 if s0 is None else s0  # the stream's first speed came within the block
        runs = self.speed_runs(sid, t0, t1) if self.speed_runs is not None else []
        smooth = bool(runs) and runs[-1][1] is not None
        if not smooth:  # the two ends only (the mean of their speeds)
            runs = [(t0, s0), (t0 + 0.5 * (t1 - t0), s1)] if s0 != s1 else [(t0, s1)]
        rpms = [r for _, r in runs]
        if None in rpms:  # the frames carried no speed for a while within the block
            self._say_once(sid, "no envelope evidence over blocks during which the stream's frames stopped "
                                "carrying the speed", key="gap")
            return None
        if min(rpms) < STANDSTILL_RPM:
            self._say_once(sid, "no envelope evidence while the shaft turns slower than "
                                f"{STANDSTILL_RPM:.0f} rpm (the speed its frames carry)", key="stopped")
            return None
        seconds = t1 - t0 + 1.0 / self.rate
        starts, hz = np.array([t - t0 for t, _ in runs]), np.array(rpms) / 60.0
        if smooth and len(runs) > 1:  # the readings' smooth curve: their jitter followed would smear the lines
            starts, hz = speed_curve(starts, hz, seconds)
        mean = mean_speed(starts, hz, seconds)
        said = float(f"{mean:.4g}")  # the speed the result says
        slow, fast = 60.0 * float(hz.min()), 60.0 * float(hz.max())
        limit = max(self.settings.tolerance, self.settings.speed_tolerance)
        if fast - slow <= limit * 60.0 * mean:
            hz_now = plan_speed(mean, STEADY_STEP, nearest=True)
            self._say_once(sid, f"envelope evidence on: {geometry.name}, shaft speed from the stream's frames "
                                f"(now {60 * mean:.0f} rpm: {_lines(geometry, hz_now)})", key="on")
            return hz_now, None, said
        if self.speed_runs is None:
            self._say_once(sid, f"no envelope evidence over {self.block_s:g}-s blocks whose speed changes by more "
                                f"than {100 * limit:g} % (their fault lines are smeared)", key="changing")
            return None
        if slow < STANDSTILL_RPM or fast > MAX_SPEED_RATIO * slow:
            self._say_once(sid, f"no envelope evidence over {self.block_s:g}-s blocks whose speed changes by more "
                                f"than a factor of {MAX_SPEED_RATIO:g}", key="changing")
            return None
        self._say_once(sid, "envelope evidence follows the shaft through changes of speed (each block resampled "
                            "to shaft angle from the speeds its frames carry)", key="tracking")
        return said, (starts, hz), said

    def _say_normal(self, sid: str, normal: Mapping[str, float]) -> None:
        """Said once per stream, as its first result is read decided against its learned normal."""
        s = self.settings
        lines = ", ".join(f"{k.upper()} {normal[k]:.1f}" for k in FAMILIES if k in normal)
        self._say_once(sid, f"envelope evidence against the machine's own learned lines ({lines} dB, their median "
                            f"while its baseline learned): a fault type needs {s.margin_db:g} dB over them",
                       key="normal")
        fault = learned_fault(normal, s)
        if fault is not None:
            kind, k, db = fault
            self._say_once(sid, f"the envelope found {kind.replace('_', '-')} lines ({k.upper()} {db:.1f} dB) while the "
                                "baseline learned: if the bearing was not healthy then, they are taken for its normal; "
                                "learn the baseline again once it is", key="normal-high")

    def normal(self, sid: str, t0: float, t1: float) -> dict[str, Any] | None:
        """The stream's learned envelope evidence over capture times ``t0`` to ``t1`` (a baseline's
        learning span): ``{"blocks": n, "median_db": {family: dB}}`` over its blocks that ended in
        the span; None with fewer than NORMAL_LEAST of them (no geometry, no speed, a learning
        taken up from before a restart). From any thread."""
        with self._lock:
            seen = self._seen.get(sid)
            if seen is None:
                return None
            inside = (seen.t[: seen.n] >= t0) & (seen.t[: seen.n] <= t1)
            ev = seen.ev[: seen.n][inside]
        if ev.shape[0] < NORMAL_LEAST:
            return None
        return {"blocks": int(ev.shape[0]), "median_db": {k: round(v, 2) for k, v in median_evidence(ev).items()}}

    def set_normals(self, normals: Mapping[str, Mapping[str, float]], since: Mapping[str, float] | None = None) -> None:
        """The streams' learned evidence per family (dB), all of them at once (a stream left out has
        none: its blocks are decided on the threshold alone and kept for a normal again).
        ``since``: for a normal learned in this run, the capture time its learning ended; windows
        up to then are read without it (which of them were read after the fit depended on how the
        results were batched: a replay's verdicts varied from run to run)."""
        table = {sid: dict(n) for sid, n in normals.items()}
        with self._lock:
            self._normals = table
            self._since = {sid: float(t) for sid, t in (since or {}).items() if sid in table}
            for sid in [sid for sid in self._seen if sid in table]:
                del self._seen[sid]

    def _normal(self, sid: str, t: float) -> dict[str, float] | None:
        """The stream's learned normal as it holds for what was read at capture time ``t``. Under
        the lock."""
        normal = self._normals.get(sid)
        return normal if normal is not None and t > self._since.get(sid, -math.inf) else None

    def _judged(self, sid: str, result: EnvelopeResult | None, normal: Mapping[str, float] | None) -> EnvelopeResult | None:
        """``result`` with its type decided against the stream's learned ``normal`` (``_normal``),
        where it has one (when read, not when analysed: a replay's blocks are analysed before the
        baseline that learned from the first of them is fitted). Under the lock."""
        if result is None or normal is None:
            return result
        if "normal" not in self._said.get(sid, ()):
            self._say_normal(sid, normal)
        kind = decide(result.evidence, self.settings.threshold_db, normal, self.settings.margin_db)
        own = kind == "none" and decide(result.evidence, self.settings.threshold_db) != "none"
        return replace(result, normal=normal, fault_type=kind, own=own)

    def _setup(self, sid: str) -> tuple[BearingGeometry, float | None, bool] | None:
        if sid in self._streams:
            return self._streams[sid]
        cfg = machine_for(sid, self.machine)
        named, given = self.bearing_of(sid)
        geometry = bearing_geometry(named) if named and given else cfg.geometry()
        if geometry is None and named:
            geometry = bearing_geometry(named)
        src_rpm, explicit = self.rpm_of(sid)
        speed = cfg.speed_hz()
        if explicit or speed is None:
            speed = src_rpm / 60.0 if src_rpm else speed
        setup: tuple[BearingGeometry, float | None, bool] | None = None
        if geometry is None:
            self._say(sid, "no envelope evidence: no bearing geometry for this stream "
                           "([machine] bearing = \"6205\" or bpfo/bpfi/bsf/ftf)")
        else:
            setup = (geometry, speed, bool(explicit and src_rpm))
        self._streams[sid] = setup
        return setup

    def _say(self, sid: str, message: str) -> None:
        self.notes.append((sid, message))

    def _say_once(self, sid: str, message: str, *, key: str | None = None) -> None:
        """``message`` the first time, per stream, that it (or ``key``: a live-speed state, on /
        stopped / changing, whose message holds the speed now) is said: a jittery tachometer or a
        machine that stops and starts all day would otherwise say it block after block."""
        said = self._said.setdefault(sid, set())
        if (key or message) not in said:
            said.add(key or message)
            self._say(sid, message)

    # ---------------------------------------------------------------- readers (any thread)
    def latest(self, stream: str, t: float | None = None) -> EnvelopeResult | None:
        """The stream's most recent result, or with ``t`` (a capture time, s) the most recent one
        of a block that ended by then; None before the first such block or without a setup."""
        with self._lock:
            kept = self._results.get(stream)
            if not kept:
                return None
            i = len(kept) if t is None else _ended_by(kept, t)
            if not i:
                return None
            return self._judged(stream, kept[i - 1][1], self._normal(stream, kept[i - 1][0] if t is None else t))

    def reading(self, stream: str, t: float) -> tuple[EnvelopeResult | None, float | None]:
        """What the stream's envelope said by capture time ``t``, in one look: ``latest(stream,
        t)``, and how far one family's evidence rose over what it needs to name its fault type
        (dB: ``need_db``), the least of it over the stream's last SUSTAIN blocks ended by then, for
        the family that rose most so; negative where none rose. The rise is None with fewer such
        blocks in a row (a gap, a stop, a block of no evidence among them): the alarm's envelope
        opinion (``Prediction.envelope_db``)."""
        with self._lock:
            kept = self._results.get(stream)
            if not kept:
                return None, None
            if t > self._read.get(stream, -math.inf):
                self._read[stream] = t
            i = _ended_by(kept, t)
            last = self._in_a_row(kept, i)
            normal = self._normal(stream, t)
            result = self._held(stream, kept[i - 1][1], last, normal) if i else None
        if last is None:
            return result, None
        return result, max(self._rise(last, k, normal) for k in FAMILIES)

    def views(self) -> dict[str, tuple[str, float, bool, bool]]:
        """{stream: (fault type, its evidence dB, held, own)} of the latest blocks, for the
        dashboard (``EnvelopeResult.held``: a healthy machine's own lines near a fault order cross
        the threshold now and then, one block at a time). ``own``: the type is ``none`` only as
        the stream's learned normal holds lines that reach the threshold (its evidence is then
        that of the machine's own lines, not of a fault that was ruled out)."""
        out: dict[str, tuple[str, float, bool, bool]] = {}
        with self._lock:
            for sid, kept in self._results.items():
                if not kept:
                    continue
                r = self._held(sid, kept[-1][1], self._in_a_row(kept, len(kept)), self._normal(sid, kept[-1][0]))
                if r is not None:
                    out[sid] = (r.fault_type, r.strength_db, bool(r.held), r.own)
        return out

    def _held(self, sid: str, result: EnvelopeResult | None, last: list[EnvelopeResult] | None,
              normal: Mapping[str, float] | None) -> EnvelopeResult | None:
        """``result`` (the newest of ``last`` where the blocks before it followed in a row) judged
        against the stream's normal, and for a fault type whether it held over ``last`` (its
        family reached what it needs in each, as the alarm asks). Under the lock."""
        result = self._judged(sid, result, normal)
        family = family_of(result.fault_type) if result is not None else None
        if family is None:
            return result
        return replace(result, held=last is not None and self._rise(last, family, normal) >= 0)

    def _in_a_row(self, kept: deque[tuple[float, EnvelopeResult | None]], i: int) -> list[EnvelopeResult] | None:
        """The results of the SUSTAIN blocks that end at ``kept[i - 1]`` where they follow one
        another (no gap, no stop) and each gave evidence; else None."""
        if i < SUSTAIN or kept[i - 1][0] - kept[i - SUSTAIN][0] > (SUSTAIN - 0.5) * self.block_s:
            return None
        last = [kept[j][1] for j in range(i - SUSTAIN, i)]
        return None if any(r is None for r in last) else last

    def _rise(self, last: list[EnvelopeResult], family: str, normal: Mapping[str, float] | None) -> float:
        """How far ``family``'s evidence rose over what it needs, the least of it over ``last``, dB."""
        s = self.settings
        return (min(r.evidence.get(family, -math.inf) for r in last)
                - need_db(family, s.threshold_db, normal, s.margin_db))

    def stats(self) -> dict[str, Any]:
        return {"blocks": self.blocks, "tracked": self.tracked, "dropped": self.dropped,
                "skipped_nonfinite": self.skipped, "cpu_s": round(self.cpu_s, 3)}


def _ended_by(kept: deque[tuple[float, EnvelopeResult | None]], t: float) -> int:
    """How many of a stream's kept blocks (oldest first) ended by capture time ``t``."""
    return bisect.bisect_right(kept, t + 1e-6, key=_end)


def _end(entry: tuple[float, EnvelopeResult | None]) -> float:
    return entry[0]


def _lines(geometry: BearingGeometry, shaft_hz: float) -> str:
    return (f"BPFO {geometry.bpfo * shaft_hz:.1f} Hz, BPFI {geometry.bpfi * shaft_hz:.1f} Hz, "
            f"BSF {geometry.bsf * shaft_hz:.1f} Hz")


__all__ = ["EnvelopeStage", "MachineTable", "StreamMachine", "has_geometry"]
