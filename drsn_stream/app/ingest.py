"""The ingest stage: a poll's frames -> sensor health, per-stream DSP -> windows.

One implementation for the monitor's ingest threads (``Pipeline``) and the ingest processes of
a sharded source (``app/shards.py``): a poll's frames go through in runs (``slices``), each run
in rounds of distinct streams, and each round's sensor health and windowing run in numpy over
all of its streams (``HealthMonitor.push_channels``, ``WindowBank.push_flat``), not in Python per
frame.
"""

from __future__ import annotations

import bisect
import math
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np

from drsn_stream.dsp import FrameDSP, StreamDSP, bank_jit
from drsn_stream.dsp.bank import BankDSP, WindowBank, bank_items, samples_of
from drsn_stream.dsp.resample import UnsupportedRate, rational_ratio
from drsn_stream.dsp.stream import channel_layout, raw_dsp_for
from drsn_stream.dsp.window import window_start
from drsn_stream.errors import ConfigError
from drsn_stream.monitor.health import HealthMonitor
from drsn_stream.types import Event, Frame, Window, rounds_by_stream, split_channels

# channels of a poll's frames ingested and handed on together: a first run of INGEST_SLICE, so
# that a burst's first windows reach the engine soon, then runs of INGEST_SLICE_MAX, which the
# engine takes in bigger batches and the health tests judge with the same number of numpy calls
# as a run of 64: a live poll of a gateway's 16-channel frames (~1,000 channels) is then two runs,
# not five (docs/performance.md)
INGEST_SLICE = 64
INGEST_SLICE_MAX = 1024
_F32 = np.dtype(np.float32)


class SpeedLog:
    """Per frame stream, the shaft speed (rpm) its frames carried (the wire format's rpm) from when
    (the capture time of the first sample of the first frame at that speed): what a window, a
    block or a result of any time was captured at, for the envelope evidence and the baselines,
    which run behind the ingest (a backlog, a replay). A speed within ``STEADY`` of the one before
    is the same (a tachometer's jitter adds no entry: a steady machine holds one); a frame of a
    stream that sent speeds before but carries none now starts a run of none (NaN). The latest
    ``KEEP``..2 * ``KEEP`` changes per stream. Written by one thread (the ingest's), read by any:
    each stream's log is one list of (start, rpm), appended to and cut at its front whole."""

    KEEP = 2048
    STEADY = 0.002  # relative: a lookup is within 0.2 % of the frame's own reading

    def __init__(self) -> None:
        self.logs: dict[str, list[tuple[float, float]]] = {}  # frame stream id: [(start, rpm or NaN)]
        # called (from the writing thread) as the first stream's first speed is logged: readers
        # that would look a speed up per window need do nothing before
        self.on_first: Callable[[], None] | None = None
        # where given, each change logged is also added here as [stream, start, rpm or None] (an
        # ingest process hands them to the monitor's log)
        self.changes: list[list[Any]] | None = None

    def __bool__(self) -> bool:
        return bool(self.logs)

    def add(self, sid: str, t_start: float, rpm: float | None) -> None:
        log = self.logs.get(sid)
        if log is None:
            if rpm is None:
                return
            if not self.logs and self.on_first is not None:
                self.on_first()
            log = self.logs[sid] = []
        else:
            last = log[-1][1]
            if rpm is None:
                if last != last:  # none already
                    return
            elif abs(rpm - last) <= self.STEADY * last:  # (False for NaN)
                return
        log.append((t_start, math.nan if rpm is None else rpm))
        if self.changes is not None:
            self.changes.append([sid, t_start, rpm])
        if len(log) > 2 * self.KEEP:
            del log[: self.KEEP]

    def frame(self, f: Frame) -> None:
        """Logs a frame's speed (the caller's test: it carries one, or its stream did before)."""
        self.add(f.stream_id, f.t_capture, f.rpm)

    def at(self, sid: str, t: float | None = None) -> float | None:
        """The speed (rpm) channel stream ``sid`` (or its frame stream, ``press-3`` for
        ``press-3/DE``) carried at capture time ``t`` (None: its latest); the first one before its
        first frame; None where its frames carried none then, or never did."""
        log = self._log(sid)
        if log is None:
            return None
        try:
            entry = log[-1] if t is None else log[max(bisect.bisect_right(log, t, key=_start) - 1, 0)]
        except IndexError:  # cut meanwhile (another thread's add)
            entry = log[-1]
        return None if entry[1] != entry[1] else entry[1]

    def runs(self, sid: str, t0: float, t1: float) -> list[tuple[float, float | None]]:
        """The speeds channel stream ``sid`` (or its frame stream) carried from capture time ``t0``
        to ``t1``, as runs: [(start, rpm or None)], the first the run in effect at ``t0`` (it may
        have started before; or after, where the stream's first speed came later); [] where its
        frames never carried one."""
        log = self._log(sid)
        if log is None:
            return []
        for _ in range(3):  # another thread's add may cut the log's front between the search and the copy
            i = max(bisect.bisect_right(log, t0, key=_start) - 1, 0)
            out = log[i : max(bisect.bisect_right(log, t1, key=_start), i + 1)]
            if out and (i == 0 or out[0][0] <= t0):
                break
        return [(start, None if rpm != rpm else rpm) for start, rpm in out]

    def _log(self, sid: str) -> list[tuple[float, float]] | None:
        """The log of channel stream ``sid``'s frames: its own, or its frame stream's (``press-3``
        for ``press-3/DE``)."""
        log = self.logs.get(sid)
        return self.logs.get(sid.rpartition("/")[0]) if log is None else log

    def forget(self, sid: str) -> None:
        self.logs.pop(sid, None)


def _start(entry: tuple[float, float]) -> float:
    return entry[0]


def slices(frames: list[Frame]) -> list[list[Frame]]:
    """A poll's frames in runs of channels: the first of about INGEST_SLICE, whose windows reach
    the engine while the rest are judged (the engine starts a batch at 64 windows when idle), the
    others of about INGEST_SLICE_MAX. Each run costs its per-run steps (the health tests' numpy
    calls, a flush, a hand-over) once, however wide: the engine works on the first run's windows
    while the next is ingested, and a wider run costs less per channel."""
    if len(frames) <= 1:
        return [frames]
    out, start, channels, size = [], 0, 0, INGEST_SLICE
    for i, frame in enumerate(frames):
        channels += frame.samples.shape[1] if frame.samples.ndim == 2 else 1
        if channels >= size:
            out.append(frames[start : i + 1])
            start, channels, size = i + 1, 0, INGEST_SLICE_MAX
    if start < len(frames):
        out.append(frames[start:])
    return out


class Ingest:
    """Sensor health and per-stream DSP for the frames of one or more sources.

    Args:
        meta: the artifact's metadata (``sample_rate``, ``window``, ``hop``, ``normalization``).
        hop: the window hop in samples (None: the artifact's).
        health: the sensor health of these streams.
        max_streams: frame stream ids kept; frames of further streams are counted as
            ``too_many_streams`` and dropped.
        on_events: takes the health events of each round, as they happen.
        on_error: takes one line for a frame that is not kept or a stage failed on (also counted
            in its source's stats).
        capture: an ``EventCapture`` (or None) that sees every channel's raw frame first.
        lock: held while the stream table changes (other threads read it: ``nonfinite``); None:
            a lock of its own.
        phases: spread the streams' windows over this many phases of the hop (``window_start``
            of each frame stream id; 1: every stream's window k starts at ``k * hop``).
        source_names: {id(source): its name in a line}, e.g. "source 2 (sim)"; else its kind and
            target.
        reclaim_after_s: a stream that has sent nothing for this long gives its place to a new
            stream id once ``max_streams`` are taken (``make_room``); 0: never, new ids are refused.
        on_retire: takes ``(frame stream id, its channels' stream ids, one line)`` for each stream
            retired so, after its DSP, sensor health and its source's record of it are dropped
            (the rest of the monitor's state of it is the caller's to drop).
        keep: given channel stream ids, those never to retire (the monitor's: streams holding an
            alarm not yet acknowledged, which a retirement would make vanish unseen); None: none.
        on_layout: takes ``(frame stream id, channel stream ids gone, one line)`` when a stream's
            frames change their channels (names, count, one channel to several): the channels
            gone are no longer monitored; their sensor health is dropped here after the poll, the
            rest is the caller's to drop.
    """

    def __init__(self, meta: Any, hop: int | None, health: HealthMonitor, max_streams: int, *,
                 on_events: Callable[[list[Event]], None], on_error: Callable[[str], None],
                 capture: Any = None, lock: Any = None, phases: int = 1,
                 source_names: dict[int, str] | None = None, reclaim_after_s: float = 0.0,
                 on_retire: Callable[[str, tuple[str, ...], str], None] | None = None,
                 on_layout: Callable[[str, tuple[str, ...], str], None] | None = None,
                 keep: Callable[[list[str]], set[str]] | None = None) -> None:
        self.meta, self.hop, self.health, self.max_streams = meta, hop, health, max_streams
        self.reclaim_after_s, self.on_retire, self.on_layout = float(reclaim_after_s), on_retire, on_layout
        self.keep = keep
        # (frame stream id, its channels before, after) of layout changes in this poll: dropped after it
        self._relayout: list[tuple[str, tuple[str, ...], tuple[str, ...]]] = []
        self._no_room_until = 0.0  # monotonic: a scan found no stream silent long enough; not again before
        self.retired = 0
        self.source_names = dict(source_names or {})  # id(source): how a line names it
        self.phases = int(phases)
        hop_samples = int(hop if hop is not None else meta.hop)
        if not 1 <= self.phases <= hop_samples:
            raise ConfigError(f"phases must be between 1 and the hop ({hop_samples} samples), not {phases}")
        self.on_events, self.on_error, self.capture = on_events, on_error, capture
        self.lock = lock if lock is not None else threading.Lock()
        self.dsp: dict[str, StreamDSP | BankDSP] = {}  # by frame stream id; a FrameDSP for multi-channel frames
        self._banks: dict[int, WindowBank] = {}  # by id(source): each source's single-channel streams
        # the source each frame stream id came from first: the same id from another source (two
        # simulators, two gateways with the same names) would interleave two signals in one
        # stream's windows without a word; its frames there are refused, counted and said once
        self._owner: dict[str, Any] = {}
        # the shaft speed (rpm) each frame stream's frames carried (the wire format's rpm), and when
        self.speeds = SpeedLog()
        self._conflicts: set[tuple[int, int]] = set()  # (id(owner), id(source)) pairs said
        self._compiled = bank_jit.warm()  # now, not on the ingest thread's first frame

    def runs(self, frames: list[Frame]) -> list[list[Frame]]:
        """A poll's frames in the runs they go through (``slices``). With phases, the streams
        whose frames complete a window in this poll go first, so that their windows reach the
        engine while the rest of the poll (sensor health and the rings only) is ingested; a
        stream's frames keep their order."""
        runs = slices(frames)
        if self.phases == 1 or len(runs) == 1:
            return runs
        dsps = self.dsp
        first = set()
        for frame in frames:
            dsp = dsps.get(frame.stream_id)
            if dsp is not None and dsp.completes(frame):
                first.add(frame.stream_id)
        head = [f for f in frames if f.stream_id in first]
        if not head or len(head) == len(frames):
            return runs
        return slices(head + [f for f in frames if f.stream_id not in first])

    def frames(self, frames: list[Frame], source: Any = None) -> list[Window]:
        """Every frame of one poll (or run of one), each stream's in order and each exactly as
        alone; the sensor health of different streams is judged together. Returns the windows
        completed, marked unhealthy where their stream's sensor is not OK. The stream table is
        locked once for all of them."""
        windows: list[Window] = []
        kept: list[tuple[Frame, StreamDSP | BankDSP]] = []
        sids: list[str] = []  # kept's streams
        dsps, owners, speeds, logs = self.dsp, self._owner, self.speeds, self.speeds.logs
        # the bank every kept frame goes into whole, while every one is a plain float32 frame of
        # one length and no overflow of a stream in it (the common case: _round_block); else None
        bank: WindowBank | None = None
        block, n0, f32 = True, -1, _F32
        with self.lock:
            for frame in frames:
                sid = frame.stream_id
                owner = owners.get(sid)
                if owner is not source and owner is not None:
                    self._conflict(frame, owner, source)
                    continue
                dsp = dsps.get(sid)
                x = frame.samples
                # the common case without _stream_dsp: a plain frame (channel_layout None) of a
                # stream whose DSP takes plain frames (the first check _stream_dsp makes)
                if (dsp is None or getattr(dsp, "ids", None) is not None or frame.names is not None
                        or (x.ndim >= 2 and x.shape[1] != 1)):
                    dsp = self._stream_dsp(frame, source, frames)
                    if dsp is None:
                        continue
                    owners[sid] = source
                kept.append((frame, dsp))
                sids.append(sid)
                if frame.rpm is not None or (logs and sid in logs):
                    speeds.frame(frame)
                if block:
                    if type(dsp) is not BankDSP or dsp.own is not None or frame.overflow or x.dtype is not f32:
                        block = False
                    elif bank is None:
                        bank, n0 = dsp.bank, x.shape[0]
                        block = bank.fits(frame)
                    elif dsp.bank is not bank or x.shape[0] != n0 or frame.sample_rate != bank.rate:
                        block = False
        # a poll's frames are mostly of distinct streams: one round, no Python per frame to find it
        rounds = [kept] if kept and len(set(sids)) == len(sids) else rounds_by_stream(kept, _stream_of)
        for this in rounds:
            if block and bank is not None:
                self._round_block(this, bank, source, windows)
            else:
                self._round(this, source, windows)
        if self._relayout:
            self._drop_old_channels()
        return windows

    def _drop_old_channels(self) -> None:
        """The channels a layout change left behind (after the poll: its frames of the old layout
        have been judged): their health dropped, the caller told, said in one line. Before, they
        stayed for good, shown as "no data" and never clearing."""
        with self.lock:
            changes, self._relayout = self._relayout, []
            now = {sid: _channels(self.dsp.get(sid), sid) for sid, _, _ in changes}
        for sid, old, new in changes:
            gone = tuple(ch for ch in old if ch not in now[sid])
            if not gone:
                continue
            for ch in gone:
                self.health.forget(ch)
            if self.on_layout is not None:
                shown = ", ".join(gone[:4]) + (f" and {len(gone) - 4} more" if len(gone) > 4 else "")
                self.on_layout(sid, gone, f"stream {sid} changed its channels ({_layout(sid, old)} -> "
                                          f"{_layout(sid, new)}): {shown} no longer monitored")

    def nonfinite(self) -> dict[str, int]:
        """Non-finite samples replaced so far, by (channel) stream."""
        with self.lock:
            dsps = list(self.dsp.items())
        out = {sid: d.nonfinite for sid, d in dsps if d.nonfinite and not isinstance(d, FrameDSP)}
        out.update(kv for _, d in dsps if isinstance(d, FrameDSP) for kv in d.nonfinite_by_stream().items())
        return out

    def _round(self, items: list[tuple[Frame, StreamDSP | BankDSP]], source: Any, windows: list[Window]) -> None:
        """Frames of distinct streams: health and capture per channel, then each frame's DSP (one
        FrameDSP for every channel of a multi-channel frame); the windows completed are added to
        ``windows``, marked unhealthy where their stream's sensor is not OK."""
        finite = [False] * len(items)  # frames whose samples the health checks found all finite
        try:  # every channel of a multi-channel frame as its own stream (channel_layout's ids)
            events = self.health.push_channels([frame for frame, _ in items], finite=finite)
        except Exception as exc:  # noqa: BLE001 - a bug in a health test drops these frames, not the monitor
            for frame, _ in items:
                self._dropped(source, frame, exc)
            return
        if self.capture is not None:  # first: an event of these frames may start a capture around them
            for frame, dsp in items:
                for part in split_channels(frame) if getattr(dsp, "ids", None) is not None else (frame,):
                    self.capture.push(part)
        if events:
            self.on_events(events)
        done: list[Window] = []
        judged: list[str] = []  # streams whose windows need every gathered sample judged first
        groups, rest = bank_items(items)
        for idx in groups.values():  # single-channel streams at the model's rate: one step for all
            frames = [items[i][0] for i in idx]
            try:
                out, of = items[idx[0]][1].bank.push_flat([items[i][1] for i in idx], frames)
            except Exception as exc:  # noqa: BLE001 - a bug drops these frames, not the monitor
                for frame in frames:
                    self._dropped(source, frame, exc)
                continue
            if out:
                judged += dict.fromkeys([frames[i].stream_id for i in of])
                done += out
        for i in rest if groups else range(len(items)):
            frame, dsp = items[i]
            try:
                out = dsp.push(frame, True) if finite[i] and type(dsp) is FrameDSP else dsp.push(frame)
            except UnsupportedRate as exc:  # a rate change the model cannot take
                self._error(source, "unsupported_rate", f"stream {frame.stream_id}: {exc}")
                continue
            except Exception as exc:  # noqa: BLE001 - one bad frame must not end the stream
                self._dropped(source, frame, exc)
                continue
            if out:
                judged += getattr(dsp, "ids", None) or (frame.stream_id,)
                done += out
        if done:
            self._judged(judged, done, windows)

    def _round_block(self, items: list[tuple[Frame, BankDSP]], bank: WindowBank, source: Any,
                     windows: list[Window]) -> None:
        """``_round`` of plain float32 frames of one length, with no overflow, of streams in
        ``bank``: their samples made one array once, for the bank and the sensor health alike,
        and no Python per frame past a lookup of its stream. The bank goes first, so that the
        health's push and the flush of the streams that hand windows on are one step
        (``push_judged``); the events come out as ``_round``'s do."""
        frames = [frame for frame, _ in items]
        try:
            seqs = np.fromiter([frame.seq for frame in frames], dtype=np.int64, count=len(frames))
        except OverflowError:  # a sequence number past int64 (not from the wire): the general path
            self._round(items, source, windows)
            return
        failed: Exception | None = None
        try:
            x = samples_of(frames, float32=True)  # Ingest.frames checked: float32, one length
            try:
                done, of = bank.push_flat([dsp for _, dsp in items], frames, x)
            except Exception as exc:  # noqa: BLE001 - a bug drops these frames (after their health)
                failed, done, of = exc, [], []
            got = self.health.push_judged([frame.stream_id for frame in frames], x, seqs, bank.rate, of)
            if got is None:  # a stream the array path cannot take yet: every frame as _round would
                events, flushed = self.health.push_channels(frames), None
            else:
                events, flushed = got
        except Exception as exc:  # noqa: BLE001 - a bug in a health test drops these frames, not the monitor
            for frame in frames:
                self._dropped(source, frame, exc)
            return
        if self.capture is not None:  # first: an event of these frames may start a capture around them
            for frame in frames:
                self.capture.push(frame)
        if events:
            self.on_events(events)
        if failed is not None:
            for frame in frames:
                self._dropped(source, frame, failed)
            return
        if done:
            self._judged(list(dict.fromkeys([frames[i].stream_id for i in of])), done, windows, flushed)

    def _judged(self, judged: list[str], done: list[Window], windows: list[Window],
                flushed: list[Event] | None = None) -> None:
        """Windows ``done`` of streams ``judged`` into ``windows``, once every gathered sample of
        those streams is judged, marked unhealthy where their stream's sensor is not OK.
        ``flushed``: the events of that flush where it is done already (``push_judged``)."""
        events = self.health.flush_many(judged) if flushed is None else flushed
        if events:
            self.on_events(events)
        sick = self.health.unhealthy(dict.fromkeys(judged))
        windows += [unhealthy(w) if w.stream_id in sick else w for w in done] if sick else done

    def _conflict(self, frame: Frame, owner: Any, source: Any) -> None:
        """A frame of a stream id another source sent first: refused, counted as
        ``stream_conflict``, said once per pair of sources."""
        if source is not None:
            source.stats.bad("stream_conflict")
        pair = (id(owner), id(source))
        if pair not in self._conflicts:
            self._conflicts.add(pair)
            self.on_error(f"stream {frame.stream_id}: also sent by {self._name(source)} after {self._name(owner)}: "
                          "frames of a stream id another source sent first are refused (counted as stream_conflict); "
                          "give the sources' streams distinct ids (sim?first=N, file:...?stream=NAME, other names at "
                          "the gateway)")

    def _name(self, source: Any) -> str:
        """A source in a line: as ``source_names`` says, else its kind and target."""
        name = self.source_names.get(id(source))
        if name is None:
            kind = getattr(source, "kind", "") or type(source).__name__
            target = getattr(source, "target", "")
            name = f"source {kind}{':' + target if target else ''}"
        return name

    def _dropped(self, source: Any, frame: Frame, exc: Exception) -> None:
        """A frame a processing stage failed on: counted as ``ingest_error``, said once, the rest goes on."""
        self._error(source, "ingest_error", f"stream {frame.stream_id}: frame dropped: {one_line(exc)}")

    def _error(self, source: Any, reason: str, line: str) -> None:
        if source is not None:
            source.stats.bad(reason)
        self.on_error(line)

    def make_room(self, source: Any, new_id: str) -> bool:
        """Retire the stream of ``source`` that has been silent the longest, if it has been silent
        ``reclaim_after_s`` or more, so that ``new_id`` can be taken (a source's ``make_room``:
        a gateway restarted under new stream names, a sensor replaced); False when none has.
        A dead sensor's "no data" stays shown until its place is needed."""
        if self.reclaim_after_s <= 0:
            return False
        with self.lock:
            return self._make_room(source, new_id, ())

    def _make_room(self, source: Any, new_id: str, poll: Sequence[Frame]) -> bool:
        """``make_room`` with the stream table locked: among ``source``'s streams (every stream
        when None), none with a frame in ``poll``."""
        if self.reclaim_after_s <= 0 or time.monotonic() < self._no_room_until:
            return False
        dsps = self.dsp
        ids = list(dsps) if source is None else [sid for sid in getattr(source, "streams", ()) if sid != new_id]
        # a stream with a frame in this poll is not silent, whatever health last saw: those the
        # ingest has (``poll``) and those its source took in the poll under way (``polling``)
        polling = getattr(source, "polling", None)
        busy = {f.stream_id for f in poll} | (polling() if polling is not None else set())
        chans = [_channels(dsps.get(sid), sid) for sid in ids]
        flat = [c for cs in chans for c in cs]
        seen = iter(self.health.last_seen_many(flat))
        held = self.keep(flat) if self.keep is not None else set()
        now = time.time()
        best, quietest, alarmed = None, -math.inf, False
        for sid, cs in zip(ids, chans):
            last = [t for t in (next(seen) for _ in cs) if t is not None]
            if not last or sid in busy:
                continue
            quiet = now - max(last)
            if held and not held.isdisjoint(cs):
                alarmed |= quiet >= self.reclaim_after_s
                continue
            if quiet > quietest:
                best, quietest = sid, quiet
        if best is None or quietest < self.reclaim_after_s:
            if alarmed:  # one line, its repeats counted: what the operator can do about it
                self.on_error("new stream ids are refused while the streams silent long enough to give their places "
                              "hold alarms not yet acknowledged: acknowledge them to free their places")
            # not again before the quietest stream could be retired, and at most 20 times a
            # second: a flood of new ids (or a table of live streams) does not scan per message
            self._no_room_until = time.monotonic() + min(1.0, max(0.05, self.reclaim_after_s - quietest))
            return False
        self._retire(best, source, quietest, new_id)
        return True

    def channels(self, streams: Iterable[str]) -> list[str]:
        """The channel stream ids of these frame stream ids (a plain stream's is its own)."""
        with self.lock:
            return [ch for sid in streams for ch in _channels(self.dsp.get(sid), sid)]

    def end(self, streams: Iterable[str]) -> list[Event]:
        """These frame streams announced their end (a source's ``on_end``): their channels' silence
        is no sensor fault from now on (``HealthMonitor.end``). Returns the health events."""
        return self.health.end(self.channels(streams))

    def before_first_window(self, streams: Iterable[str]) -> list[tuple[str, float, int]]:
        """Those of these streams (frame or channel stream ids: a file source knows its
        channels') that took frames but never formed a window: ``(frame stream id, seconds of
        input, samples at the model's rate its first window needs)``, once per frame stream (a
        recording shorter than one window, which would otherwise end without a word)."""
        with self.lock:
            frame_of = {ch: sid for sid, dsp in self.dsp.items() for ch in _channels(dsp, sid)}
            ended = dict.fromkeys(frame_of[s] for s in streams if s in frame_of)
            return [(sid, dsp.seconds_seen, dsp.first_window_end) for sid in ended
                    if (dsp := self.dsp[sid]).windows == 0]

    def forget(self, sid: str) -> tuple[str, ...]:
        """Drop a frame stream's DSP, sensor health and its source's record of it (a cluster host
        handing the stream over): frames of it later start it afresh. Returns its channels'
        stream ids (``(sid,)`` for a plain stream)."""
        with self.lock:
            return self._drop(sid, None, retired=False)

    def _drop(self, sid: str, source: Any, *, retired: bool) -> tuple[str, ...]:
        dsp = self.dsp.pop(sid, None)
        if type(dsp) is BankDSP and dsp.own is None:
            dsp.bank.release(dsp.row)
        owner = self._owner.pop(sid, None)
        self.speeds.forget(sid)
        ids = _channels(dsp, sid)
        for ch in ids:
            self.health.forget(ch)
        for src in {id(s): s for s in (owner, source) if s is not None}.values():
            forget = getattr(src, "forget_stream", None)
            if forget is not None:
                forget(sid, retired=retired)
        return ids

    def _retire(self, sid: str, source: Any, quiet: float, new_id: str) -> None:
        ids = self._drop(sid, source, retired=True)
        self.retired += 1
        if self.on_retire is not None:
            gone = f"{sid} ({len(ids)} channels)" if len(ids) > 1 else sid
            self.on_retire(sid, ids, f"stream {gone} retired after {_duration(quiet)} without data: its place goes "
                                     f"to new stream {new_id} ({self.max_streams} stream ids taken, --max-streams; "
                                     f"a stream silent --reclaim-after {self.reclaim_after_s:g} s or more gives "
                                     "its place to a new one)")

    def _stream_dsp(self, frame: Frame, source: Any, poll: Sequence[Frame] = ()) -> StreamDSP | BankDSP | None:
        """The DSP of the frame's stream (made for a new stream or a new channel layout); None for
        a frame that is not kept (too many streams, a rate the model cannot take), counted."""
        ids = channel_layout(frame)
        dsp = self.dsp.get(frame.stream_id)
        if dsp is not None and getattr(dsp, "ids", None) == ids:
            return dsp
        if dsp is None and len(self.dsp) >= self.max_streams and not self._make_room(None, frame.stream_id, poll):
            if source is not None:
                source.stats.bad("too_many_streams")
            return None
        try:
            rational_ratio(frame.sample_rate, self.meta.sample_rate)
        except UnsupportedRate as exc:  # the stream is not kept
            self._error(source, "unsupported_rate", f"stream {frame.stream_id}: {exc}")
            return None
        if dsp is not None:  # a new layout: the channels it leaves out go after this poll (_drop_old_channels)
            self._relayout.append((frame.stream_id, _channels(dsp, frame.stream_id), ids or (frame.stream_id,)))
        if isinstance(dsp, BankDSP) and dsp.own is None:
            dsp.leave()  # its row back to the bank; frames of this poll before the new layout still go through it
        start = window_start(frame.stream_id, self.hop or self.meta.hop, self.phases)
        if ids is None and frame.sample_rate == self.meta.sample_rate:
            bank = self._banks.get(id(source))
            if bank is None:
                bank = self._banks[id(source)] = WindowBank(self.meta, self.hop, compiled=self._compiled)
            dsp = self.dsp[frame.stream_id] = BankDSP(bank, frame.stream_id, start)
        else:
            dsp = self.dsp[frame.stream_id] = raw_dsp_for(self.meta, ids, self.hop, start)
        return dsp


def _stream_of(item: tuple[Frame, Any]) -> str:
    """The stream of a kept ``(frame, dsp)``: what its rounds go by (``rounds_by_stream``)."""
    return item[0].stream_id


def unhealthy(w: Window) -> Window:
    """``w`` from a sensor that failed its health check: a new Window, so that the DSP's windows
    are never written after it made them (and only windows of a failing sensor cost an object)."""
    return Window(w.stream_id, w.index, w.t_last, w.data, w.t_ready, w.level, w.normalized, False)


def _channels(dsp: Any, sid: str) -> tuple[str, ...]:
    """The channel stream ids a frame stream's DSP (or None) stands for: a ``FrameDSP``'s ``ids``,
    else the stream's own id."""
    return getattr(dsp, "ids", None) or (sid,)


def _layout(sid: str, ids: tuple[str, ...]) -> str:
    """A channel layout in a line: its channels' names ("x, y, z"; "one channel" for the stream's
    own id), or their count where there are more than 4."""
    if ids == (sid,):
        return "one channel"
    if len(ids) > 4:
        return f"{len(ids)} channels"
    return ", ".join(ch[len(sid) + 1 :] if ch.startswith(sid + "/") else ch for ch in ids)


def _duration(seconds: float) -> str:
    """A silence in a line: "12 min", "3.5 h", "2 days"."""
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 2 * 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.0f} days"


def one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:200]}" if text else type(exc).__name__

