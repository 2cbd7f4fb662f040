"""The built-in simulator: real CWRU bearing vibration replayed on N virtual machines.

Each machine runs healthy most of the time; now and then one of the nine 0 HP drive-end faults
(ball / inner race / outer race, 0.007-0.021 inch) appears for some seconds and clears again. The
signals are real recordings shipped with the package (``drsn_stream/data/cwru_excerpts.npz``, the
held-out final quarter of each CWRU recording; see ``tools/make_excerpts.py``), optionally with
noise at a chosen SNR. The schedule is seeded, so ``truth(stream, t)`` tells tests and demos what
each machine was doing at any capture time.
"""

from __future__ import annotations

import bisect
import functools
import io
import json
import math
from collections.abc import Iterator
from importlib import resources
from typing import Any

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from drsn_stream.dsp.noise import NOISE_KINDS, make_noise
from drsn_stream.errors import ConfigError
from drsn_stream.sources.base import Source, opt_bool, opt_choice, opt_finite, opt_index, opt_positive
from drsn_stream.types import Frame, channel_ids

EXCERPT_RATE = 12000
HEALTHY = "normal"
NOISE_TRACK_S = 10.0  # noise is generated once per machine and looped
# Seconds a machine stays healthy / faulty before the schedule changes (uniform ranges).
HEALTHY_S = (8.0, 20.0)
FIRST_HEALTHY_S = (3.0, 10.0)
FAULT_S = (4.0, 10.0)
_FAR = 1 << 62  # "never" as a sample index (where a fixed label's span ends)
MAX_SETTLE_S = 1e9  # settle: 30 years is never for a demo; a sample index of 1e300 s overflowed


@functools.lru_cache(maxsize=4)
def load_excerpts(rate: int = EXCERPT_RATE) -> dict[str, np.ndarray]:
    """The shipped CWRU excerpts as ``{label: float32 (n,) in g}`` at ``rate`` Hz (normal first)."""
    blob = (resources.files("drsn_stream") / "data" / "cwru_excerpts.npz").read_bytes()
    with np.load(io.BytesIO(blob), allow_pickle=False) as npz:
        meta = json.loads(str(npz["meta"]))
        out = {}
        for label in meta["labels"]:
            x = npz[label].astype(np.float64) * float(npz[f"{label}__scale"])
            if rate != meta["rate"]:
                from scipy.signal import resample_poly  # here: ~1 s of import, for other rates only

                g = math.gcd(int(rate), int(meta["rate"]))
                x = resample_poly(x, int(rate) // g, int(meta["rate"]) // g)
            out[label] = x.astype(np.float32)
    return out


def bearing_labels() -> list[str]:
    """Class names of the bearing simulator, in the order the excerpts file lists them."""
    return list(load_excerpts())


def make_sim(target: str = "", **options: Any) -> Source:
    """``sim`` / ``sim:SCENARIO``: look the scenario up in ``SIM_SCENARIOS`` and build it."""
    from drsn_stream.sources import SIM_SCENARIOS, load_entry

    scenario = (target or "bearing").lower()
    if scenario not in SIM_SCENARIOS:
        raise ConfigError(f"unknown simulator scenario {target!r}; valid: {', '.join(SIM_SCENARIOS)}")
    return load_entry(SIM_SCENARIOS[scenario], f"simulator scenario {scenario!r}")(scenario, **options)


class _Schedule:
    """One machine's piecewise-constant label timeline in samples, extended lazily and seeded."""

    def __init__(self, rng: np.random.Generator, rate: float, faults: list[str], fixed: str | None,
                 settle_s: float = 0.0):
        self._rng = rng
        self._rate = rate
        self._faults = faults
        self._fixed = fixed
        self.starts: list[int] = [0]
        self.labels: list[str] = [fixed or HEALTHY]
        self._end = math.inf if fixed else int(round(settle_s * rate)) + self._draw(FIRST_HEALTHY_S)

    def _draw(self, span: tuple[float, float]) -> int:
        return int(round(self._rng.uniform(*span) * self._rate))

    def _extend_to(self, pos: int) -> None:
        while self._end <= pos:
            start = int(self._end)
            if self.labels[-1] == HEALTHY:
                label, span = str(self._rng.choice(self._faults)), FAULT_S
            else:
                label, span = HEALTHY, HEALTHY_S
            self.starts.append(start)
            self.labels.append(label)
            self._end = start + self._draw(span)

    def label_at(self, pos: int) -> str:
        self._extend_to(max(pos, 0))
        return self.labels[bisect.bisect_right(self.starts, max(pos, 0)) - 1]

    def constant(self, a: int, b: int) -> str | None:
        """The label of samples ``[a, b)`` when one label covers them all, else None."""
        self._extend_to(b)
        i = bisect.bisect_right(self.starts, a) - 1
        if i + 1 < len(self.starts) and self.starts[i + 1] < b:
            return None
        return self.labels[i]

    def span(self, a: int, b: int) -> tuple[str | None, int, int]:
        """``constant(a, b)`` and the samples ``[first, stop)`` its label covers (any span that
        holds ``[a, b)`` when it is None)."""
        self._extend_to(b)
        i = bisect.bisect_right(self.starts, a) - 1
        stop = self.starts[i + 1] if i + 1 < len(self.starts) else self._end
        if stop < b:
            return None, a, b
        return self.labels[i], self.starts[i], int(min(stop, _FAR))

    def segments(self, a: int, b: int) -> list[tuple[int, int, str]]:
        """``[(start, stop, label), ...]`` covering samples ``[a, b)``."""
        self._extend_to(b)
        i = bisect.bisect_right(self.starts, a) - 1
        out = []
        while a < b:
            stop = self.starts[i + 1] if i + 1 < len(self.starts) else b
            stop = min(stop, b)
            if stop > a:
                out.append((a, stop, self.labels[i]))
            a = stop
            i += 1
        return out


def looped(x: np.ndarray, start: int, n: int) -> np.ndarray:
    """``x[..., (start + arange(n)) % length]`` along the last axis (every row of a 2-D ``x`` at
    once): a plain slice unless the span wraps around."""
    size = x.shape[-1]
    a = start % size
    if a + n <= size:
        return x[..., a : a + n]
    return x[..., (a + np.arange(n, dtype=np.int64)) % size]


def _tri_integral(u: np.ndarray) -> np.ndarray:
    """The integral from 0 to ``u`` of a triangle wave of period 1 that rises from 0 at 0 to 1 at
    0.5 and falls back to 0 at 1 (0.5 per whole period)."""
    k = np.floor(u)
    f = u - k
    return 0.5 * k + np.where(f <= 0.5, f * f, 2.0 * f - f * f - 0.5)


def sweep_positions(i: np.ndarray, phase: np.ndarray, period: float, swing: float) -> np.ndarray:
    """Where in a recording (samples, float) output sample ``i`` of a machine whose shaft speed
    follows the sweep reads, for each machine's ``phase`` (a share of the period, shape (units,)):
    ``(units, len(i))``. The speed is ``1 - swing * triangle(i / period + phase)`` of the
    recorded one, so the recording is read that much slower; position 0 at sample 0."""
    u = i[None, :] / period + phase[:, None]
    return i[None, :] - swing * period * (_tri_integral(u) - _tri_integral(phase)[:, None])


def read_between(track: np.ndarray, pos: np.ndarray, base: Any = 0, size: Any = None) -> np.ndarray:
    """A looped recording at fractional positions ``pos``, linearly interpolated: the one of
    ``size`` samples (each row's, broadcast) that starts at ``base`` in ``track`` (the whole
    ``track`` by default)."""
    size = track.shape[-1] if size is None else size
    i0 = np.floor(pos)
    frac = (pos - i0).astype(np.float32)
    i0 = i0.astype(np.int64) % size
    return track[base + i0] * (1 - frac) + track[base + (i0 + 1) % size] * frac


def _sweep_seconds(value: Any) -> float:
    v = float(value)
    if not (v == 0 or 1 <= v <= 1e6):
        raise ValueError(f"must be 0 (no sweep) or 1 .. 1000000 seconds per cycle, got {value!r}")
    return v


SIM_RPM = 1797.0
SIM_BEARING = "cwru-de"  # the CWRU rig's drive-end bearing (6205-2RS JEM SKF), whose recordings it replays


class BearingSim(Source):
    """``sim:bearing``: N machines replaying real CWRU vibration with a seeded fault schedule.

    Streams are ``sim/m0`` ... ``sim/m{N-1}`` (``sim/m{first}`` on with ``first``); every frame is
    ``chunk`` samples of one machine, float32 ``(chunk, 1)`` in g. With ``channels=C`` every
    machine is a C-channel module (a DAQ gateway's frame): frames are ``(chunk, C)``, and each
    channel is an independent replay with its own schedule, offsets and noise, monitored as
    ``sim/mI/chK`` (``types.channel_ids``). Frames are paced in real time (``speed`` times faster)
    unless ``fast`` is set; capture times always follow the sample clock, so ``truth`` works
    either way.
    """

    kind = "sim"
    OPTIONS = {
        "machines": (opt_positive(int, 100_000), 4, "number of machines/streams, e.g. 8"),
        "first": (opt_index("machines"), 0, "number of the first machine (sim/mFIRST ...): simulators with machines=N and "
                             "first=0, N, 2N ... send distinct machines, each as one simulator of them all would"),
        "channels": (opt_positive(int, 256), 1, "channels per machine's frame, each an independent replay"),
        "noise": (opt_choice("none", *NOISE_KINDS), "none", "added noise: none|gaussian|laplacian|pink"),
        "snr": (opt_finite(), 10.0, "SNR of the added noise in dB"),
        "seed": (int, 0, "seed of the fault schedule, offsets and noise"),
        "rate": (opt_positive(int, 1_000_000), EXCERPT_RATE, "output sample rate in Hz"),
        "chunk": (opt_positive(int), 512, "samples per frame"),
        "speed": (opt_positive(float), 1.0, "pace as a multiple of real time"),
        "fast": (opt_bool, False, "1 = as fast as possible, no pacing"),
        "duration": (opt_positive(float), math.inf, "stop after this many seconds of signal"),
        "fault": (str, "random", "random (schedule) | none (always healthy) | a class name (always)"),
        "settle": (opt_finite(0.0, MAX_SETTLE_S), 0.0, "seconds every machine runs healthy before its fault schedule starts (a "
                                         "baseline learned over them, --learn, then alarms on the faults)"),
        "sweep": (_sweep_seconds, 0.0, "seconds per cycle of the shaft speed running down by swing and back up (a "
                                       "triangle; the signal is time-warped, frames carry their rpm); 0 = the "
                                       "recorded speed throughout"),
        "swing": (opt_positive(float, 0.5), 0.1, "share of the recorded speed the sweep runs down by (0 < swing <= 0.5)"),
        "dc": (opt_finite(-1e6, 1e6), 0.0, "offset added to every sample, g, as a DC-coupled sensor reads (a MEMS "
                                           "accelerometer: 1); 0 = AC-coupled (an IEPE accelerometer)"),
        "envelope": (opt_bool, True, "1 = its streams carry the replayed rig's bearing, so the envelope evidence runs "
                                     "with no [machine] configured (about 0.5 ms of CPU per stream and second); 0 = not"),
    }

    def __init__(self, target: str = "bearing", **options: Any) -> None:
        super().__init__(target, **options)
        o = self.options
        self.rate = int(o["rate"])
        labels = bearing_labels()
        fault = o["fault"].lower()
        if fault not in ("random", "none", *labels):
            raise ConfigError(f"sim option fault={o['fault']!r}: use random, none or one of {', '.join(labels)}")
        self._fixed = {"random": None, "none": HEALTHY}.get(fault, fault)
        self._channels = int(o["channels"])
        first = int(o["first"])
        self._frame_ids = [f"sim/m{i}" for i in range(first, first + o["machines"])]
        # one replay ("unit") per channel, machine-major: unit m * channels + k
        self._streams = [sid for fid in self._frame_ids for sid in channel_ids(fid, self._channels)]
        self._time_scale = 1.0 if o["fast"] else o["speed"]
        self.t0: float | None = None
        # unit i of machine m is seeded by its place among every machine's units, so that a machine
        # replays the same whatever ``first``
        rngs = [np.random.default_rng([o["seed"], first * self._channels + i]) for i in range(len(self._streams))]
        faults = [lb for lb in labels if lb != HEALTHY]
        self._schedules = [_Schedule(r, self.rate, faults, self._fixed, o["settle"]) for r in rngs]
        self._offsets = [{lb: int(r.integers(0, 1 << 30)) for lb in labels} for r in rngs]
        self._gains = [float(r.uniform(0.8, 1.25)) for r in rngs]
        self._noise_rngs = rngs
        # the shaft speed of the recordings it replays (CWRU at 0 HP: the files record 1796-1797 rpm),
        # for the envelope evidence with a bearing and no speed configured, and for what publish sends
        self.rpm: float | None = SIM_RPM
        self.rpm_given = False
        # a sweep of the shaft speed: each machine at its own point of the cycle; its frames carry
        # the speed (their mean), as a tachometer's would, so the source states none of its own
        self._sweep = float(o["sweep"]) * self.rate
        self._swing = float(o["swing"])
        self._phase = np.zeros(0)
        if self._sweep:
            self.rpm = None
            machines = [np.random.default_rng([o["seed"], first + j, 1]).uniform() for j in range(len(self._frame_ids))]
            self._phase = np.repeat(np.array(machines), self._channels)  # every channel of a machine alike
        # and the bearing they were recorded on (the rig's drive end): the demo shows the envelope
        # evidence, and raises its alarm, with no [machine] configured (a [machine] bearing wins)
        self.bearing: str | None = SIM_BEARING if o["envelope"] else None

    @property
    def labels(self) -> list[str]:
        return bearing_labels()

    def truth(self, stream_id: str, t: float) -> str:
        """The class machine (or channel) ``stream_id`` was running at capture time ``t`` (wall-clock
        seconds)."""
        if self.t0 is None:
            raise ConfigError("truth() needs an opened simulator (its clock starts at open)")
        try:
            m = self._streams.index(stream_id)
        except ValueError:
            raise ConfigError(f"unknown stream {stream_id!r}; this simulator has {', '.join(self._streams)}") from None
        pos = int(math.floor((t - self.t0) * self.rate * self._time_scale))
        return self._schedules[m].label_at(pos)

    def _open(self) -> None:
        o = self.options
        self._excerpts = load_excerpts(self.rate)
        self._noise: list[np.ndarray | None] = [None] * len(self._streams)
        if o["noise"] != "none":
            n = int(NOISE_TRACK_S * self.rate)
            self._noise = [make_noise(n, o["noise"], r).astype(np.float32) for r in self._noise_rngs]
            self._noise_gain = {
                lb: float(np.sqrt(np.mean(np.square(x, dtype=np.float64)) / 10.0 ** (o["snr"] / 10.0)))
                for lb, x in self._excerpts.items()
            }
        # every excerpt in one track, so that one gather reads all machines' samples of a chunk
        labels = list(self._excerpts)
        self._track = np.concatenate([self._excerpts[lb] for lb in labels])
        sizes = [self._excerpts[lb].size for lb in labels]
        self._base = dict(zip(labels, np.cumsum([0, *sizes[:-1]]).tolist()))
        self._noise_track = None if self._noise[0] is None else np.stack(self._noise)
        if self._noise_track is not None:
            self._noise = list(self._noise_track)  # rows of the stack, not a second copy
        self._gains32 = np.array(self._gains, dtype=np.float32)
        # per unit and label: where its replay of that label starts (an offset into the excerpt),
        # so that a chunk's rows are found with array operations, not one Python step per unit
        self._label_no = {lb: i for i, lb in enumerate(labels)}
        self._sizes = np.array(sizes, dtype=np.int64)
        self._bases = np.array([self._base[lb] for lb in labels], dtype=np.int64)
        self._offs = np.array([[self._offsets[m][lb] for lb in labels] for m in range(len(self._streams))],
                              dtype=np.int64) % self._sizes
        self._noise_gains = (None if self._noise_track is None else
                             np.array([[self._noise_gain[lb] * g for lb in labels] for g in self._gains], dtype=np.float32))
        # per unit: the label number of its last span (-1: changing), and the span [first, stop)
        units = len(self._streams)
        self._scaled: np.ndarray | None = None
        self._spans = (np.full(units, -1, dtype=np.int64), np.zeros(units, dtype=np.int64), np.zeros(units, dtype=np.int64))
        self._start_clock()

    def _block(self, a: int, b: int) -> np.ndarray:
        """Samples ``[a, b)`` of every unit, float32 ``(units, b - a)``: the same values as
        ``_signal`` row by row, in a few array operations instead of one per machine."""
        n = b - a
        # each unit's label: known without asking its schedule while [a, b) lies within the span
        # its label covered last time (a fault lasts seconds, a chunk tens of milliseconds)
        lab, first, stop = self._spans
        ask = np.flatnonzero((a < first) | (b > stop)).tolist()
        number = self._label_no
        for m in ask:
            label, first[m], stop[m] = self._schedules[m].span(a, b)
            lab[m] = -1 if label is None else number[label]
        lab = lab.copy()
        units = np.arange(len(lab))
        changing = lab < 0  # the schedule changes within this chunk: done one by one below
        lab[changing] = 0
        size = self._sizes[lab]
        if self._sweep:  # every row read at its machine's warped positions, between samples
            pos = self._offs[units, lab][:, None] + sweep_positions(
                np.arange(a, b, dtype=np.float64), self._phase, self._sweep, self._swing)
            out = read_between(self._track, pos, self._bases[lab][:, None], size[:, None])
            return self._finish(out, units, lab, changing, a, b)
        rel = (a + self._offs[units, lab]) % size
        start = self._bases[lab] + rel
        wraps = rel + n > size  # the excerpt ends within the chunk: loops back to its start
        if n <= self._track.size:
            # rows that do not wrap are plain slices of the track: one copy of each, no index per sample
            out = sliding_window_view(self._track, n)[np.where(wraps, 0, start)]
        else:
            out = np.empty((len(lab), n), dtype=np.float32)
            wraps[:] = True
        for m in np.flatnonzero(wraps & ~changing).tolist():
            out[m] = self._track[self._bases[lab[m]] + (rel[m] + np.arange(n, dtype=np.int64)) % size[m]]
        return self._finish(out, units, lab, changing, a, b)

    def _finish(self, out: np.ndarray, units: np.ndarray, lab: np.ndarray, changing: np.ndarray, a: int,
                b: int) -> np.ndarray:
        """``_block``'s rows read from the track: each machine's gain and noise, and the rows whose
        label changes within the chunk done one by one."""
        n = b - a
        out *= self._gains32[:, None]
        if self._noise_track is not None:
            noise = looped(self._noise_track, a, n)
            if self._scaled is None or self._scaled.shape != out.shape:
                self._scaled = np.empty_like(out)  # kept: a fresh buffer per chunk is page faults
            out += np.multiply(noise, self._noise_gains[units, lab][:, None], out=self._scaled)
        for m in np.flatnonzero(changing).tolist():
            out[m] = self._signal(m, a, b)
        return out

    def _signal(self, m: int, a: int, b: int) -> np.ndarray:
        out = np.empty(b - a, dtype=np.float32)
        noise = self._noise[m]
        for s, e, label in self._schedules[m].segments(a, b):
            x = self._excerpts[label]
            seg = out[s - a : e - a]
            if self._sweep:
                pos = self._offs[m, self._label_no[label]] + sweep_positions(
                    np.arange(s, e, dtype=np.float64), self._phase[m : m + 1], self._sweep, self._swing)[0]
                np.multiply(read_between(x, pos), np.float32(self._gains[m]), out=seg)
            else:
                np.multiply(looped(x, s + self._offsets[m][label], e - s), np.float32(self._gains[m]), out=seg)
            if noise is not None:
                seg += looped(noise, s, e - s) * np.float32(self._noise_gain[label] * self._gains[m])
        return out

    def _frames(self) -> Iterator[Frame]:
        chunk = self.options["chunk"]
        total = self.options["duration"] * self.rate
        assert self.t0 is not None
        pos, seq = 0, 0
        while pos < total and not self.closed:
            n = int(min(chunk, total - pos))
            # computed before the wait: the chunk leaves as soon as its last sample is due
            block = self._block(pos, pos + n)
            if self.options["dc"]:
                block += np.float32(self.options["dc"])
            if not self.options["fast"] and not self._sleep_until(self.t0 + (pos + n) / (self.rate * self._time_scale)):
                return
            t_first = self.t0 + pos / (self.rate * self._time_scale)  # after the wait: t0 follows a step of the wall clock
            c = self._channels
            rpms = [None] * len(self._frame_ids)
            if self._sweep:  # each machine's mean speed over the frame, as a tachometer reads it
                ends = sweep_positions(np.array([pos, pos + n], dtype=np.float64), self._phase[::c], self._sweep,
                                       self._swing)
                rpms = (SIM_RPM * (ends[:, 1] - ends[:, 0]) / n).tolist()
            for m, stream in enumerate(self._frame_ids):
                yield Frame(stream, seq, t_first, float(self.rate), block[m * c : (m + 1) * c].T, rpm=rpms[m])
            pos += n
            seq += 1
