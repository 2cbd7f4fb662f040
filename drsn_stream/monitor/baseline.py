"""Baselines: learn a machine's normal, then score every window's deviation from it.

The commissioning step of a condition-monitoring system. While learning, the pooled features of
each stream's windows (``Prediction.features``) and their levels (``with_level``: the model sees
every window normalized, so its features do not follow the vibration's level) are collected (at
most ``LEARN_KEEP`` per stream, spread evenly over a longer learning: ``_Learning``);
``fit_stream`` finds the machine's operating states among them (up to ``MAX_STATES``; one for a
machine that runs one way), fits a Gaussian to the first part of each state's windows and sets its
alarm threshold to the ``PERCENTILE``-th percentile of the Mahalanobis distances of the held-back
rest, times ``MARGIN``.
While monitoring, each prediction gains ``anomaly`` = distance / threshold to the nearest state
(1.0 = the threshold).

A ``Profile`` is one JSON file (human-readable, versioned, never pickle) naming the model and a
digest of its weights, the sample rate and window, and per stream the statistics, the threshold,
and when and on how many windows it was learned. A profile of another model, rate or window is
refused with one line (``check``). ``BaselineStage`` is the live part: it scores the streams that
have a profile, learns the others for ``learn_s`` seconds when asked (then switches to monitoring
and says so), and says once per stream that it has no profile (the stream is then monitored on
its labels only).
"""

from __future__ import annotations

import hashlib
import json
import math
import threading
import time
import zipfile
import zlib
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from drsn_stream.config import parse_duration, write_atomic
from drsn_stream.errors import ConfigError
from drsn_stream.models.ood import UNKNOWN, Gaussian, check_gaussian, rounded
from drsn_stream.types import MAX_RPM, STANDSTILL_RPM, Prediction, batch_columns

FORMAT = "drsn-stream-baseline"
# 2: a stream's baseline may hold further operating states (``states``); a profile without them is
# written as version 1, which older versions read alike (a version 2 one they refuse, rather than
# monitor a machine on one of its states)
FORMAT_VERSION = 2
HELD_BACK = 0.2  # the last share of each stream's learning windows, kept out of the fit to set the threshold
PERCENTILE = 99.9
MARGIN = 2.0  # the held-back windows come from the same minutes as the fit; a machine's later normal varies more
SHRINK = 0.0  # weight of the diagonal in the covariance (Gaussian.fit); on CWRU any shrinkage widened the healthy spread
# operating states: a machine learned at several speeds or loads gets one Gaussian per state (found
# from the features alone), so that each state's normal is as tight as a one-state machine's
MAX_STATES = 4
STATE_SAMPLE = 512  # learning windows the states are searched on (all are then assigned to them)
MIN_WINDOWS = 32  # fewer learning windows than this give no stable Gaussian over the features
# and per feature: with fewer, the covariance is loose and the threshold rests on a handful of
# held-back windows, which later healthy windows cross (tools/eval_baseline.py --sweep,
# docs/own-machine.md)
WINDOWS_PER_FEATURE = 5
# learning windows kept per stream: past these, every other one is dropped and then only every
# second (fourth, ...) window is kept, so a long learning keeps a sample spread evenly over its
# whole span in bounded memory (~600 KB per stream for 16 features; before, every window's
# features were kept: ~280 bytes each, 6 GB for an hour of 256 streams). 5.8 min of windows at a
# hop of 512 samples: a Gaussian over 16 features and the level needs 85 (MIN_WINDOWS, WINDOWS_PER_FEATURE).
LEARN_KEEP = 8192
# each stream keeps up to LEARN_KEEP less an even number under KEEP_SPREAD (by its id): streams that
# began learning together fill up, and halve what they keep, over KEEP_SPREAD / 2 windows rather
# than in one batch (tools/learn_memory.py --halving: a halving copies ~0.08 ms per stream, in the
# output thread)
KEEP_SPREAD = 1024


def keep_of(stream: str) -> int:
    """The learning windows ``stream`` keeps at most: LEARN_KEEP less an even number under
    KEEP_SPREAD, the same for the stream on every host (its id's CRC-32)."""
    if KEEP_SPREAD < 2:
        return LEARN_KEEP
    return LEARN_KEEP - 2 * (zlib.crc32(stream.encode("utf-8")) % (KEEP_SPREAD // 2))


SAVE_RETRY_S = 30.0  # after a failed save of the learned baselines (a full disk), the next try
# a learning whose windows the model labelled a fault this often is said when it is fitted: a
# machine learned while faulty takes that fault for its normal
FAULT_SHARE_SAID = 0.1
# the learnings in progress are saved beside the profile this often (and at the end), so a restart
# learns on instead of over; a save's cost grows with the streams learning (~600 KB each when
# full), so a save's thread writes at most 1/LEARNING_SAVE_SHARE of the time
LEARNING_SAVE_S = 60.0
LEARNING_SAVE_SHARE = 100
# a cluster host restarted under its name writes back the learnings its last run left for its
# streams that went elsewhere (the hosts that took them over read them from its file) for one
# learning span, and at least this long (s): a host's loss may be found after its restart
RESUMED_LEAST_S = 600.0
LEARNING_FORMAT = "drsn-stream-baseline-learning"
# a machine that stops leaves its sensor's noise, unlike its learned normal in every window: a
# window under STOPPED_SHARE of the level (RMS) the quietest STOPPED_PERCENTILE % of the learning
# windows had is a machine at rest, judged neither normal nor deviating (no alarm until it runs)
STOPPED_SHARE, STOPPED_PERCENTILE = 0.1, 1.0
# a machine stopping passes through the speeds under its learned ones on the way (a coast-down,
# its level falling with the speed), unlike its normal a few percent of speed down, while its
# level has fallen only a few percent, and the windows over an abrupt stop mix running and rest:
# a window quieter than that quietest level that deviates, or any under QUIET_SHARE of it, is
# held as "stopping" for up to startup_s of its signal; a stream that has not come to rest by
# then is judged again (a machine that runs on quieter than it was learned deviates)
QUIET_SHARE = 0.9
# where a stream's frames carry the shaft speed (the wire format's rpm), its baseline knows the
# speeds it was learned at: a window at a speed more than SPEED_MARGIN outside them is of an
# operating point the baseline never saw (another set point, a run-up, a coast-down), held and
# shown unknown rather than alarmed on as a deviation; windows of a shaft turning slower than
# STANDSTILL_RPM (drsn_stream.types) are a machine at rest, never learned from
SPEED_MARGIN = 0.03
# and a machine that runs again is judged only this many seconds (of its signal) later: a run-up
# passes through speeds and levels unlike its learned normal (RunConfig.startup_s, --startup-hold)
STARTUP_S = 10.0
# fitting a stream's baseline takes milliseconds (8 ms for 8,192 kept windows with the search for
# operating states), in the output thread: streams whose learning spans end together (all of a
# host's, started together) would hold it for seconds (2 s at 256 streams, over a minute at
# 10,240, beyond the results queue). After fits and the restacking of the baselines they cause
# (25 ms at 10,240 baselines: each turn fits for at least as long) take t seconds, the next turn
# waits FIT_WAIT * t, so fitting takes at most 1 / (1 + FIT_WAIT) of the thread (a quarter: the
# rest keeps up with the results); the windows of the streams waiting are neither learned nor judged
FIT_WAIT = 3.0


def min_windows(features: int) -> int:
    """Learning windows a baseline over ``features`` features needs."""
    return max(MIN_WINDOWS, WINDOWS_PER_FEATURE * int(features))


LEVEL_FLOOR = 1e-30  # a level (RMS) under this is taken as this: the log of 0 is no number
# the least spread a baseline gives the log level: with 0.03, a level 1.5 times the learned one is
# about the threshold by itself, twice it 1.6 (CWRU's healthy drive end as 0.05 g of vibration).
# A steady machine's level varies by 1-2 % from window to window, so without it a 20 % rise
# alarmed (1.26). (A DC offset's drift is no part of the level: it is taken about the mean.)
LEVEL_STD = 0.03


def with_level(features: np.ndarray, levels: np.ndarray) -> np.ndarray:
    """What a baseline is learned and judged on: the model's pooled features (b, f) and the log of
    each window's level (its RMS about its mean before normalization, (b,)) as one more column,
    (b, f + 1). The model sees every window normalized, so its features stay where they are when
    the machine's vibration grows louder at the same shape (a looser mount, a growing imbalance),
    which the level, what ISO 20816 judges a machine by, does not. A NaN level (none known) gives
    a NaN input, which ``fit_stream`` leaves out (the stage learns a learning with any such window
    on the features alone)."""
    lv = np.log(np.maximum(np.asarray(levels, dtype=np.float64).reshape(-1), LEVEL_FLOOR))
    return np.concatenate([np.asarray(features, dtype=np.float64).reshape(lv.size, -1), lv[:, None]], axis=1)


def _padded(g: Gaussian, dims: int) -> Gaussian:
    """``g`` over ``dims`` inputs, the ones it lacks weighing nothing in its distance (a baseline
    learned before the level was an input, stacked with those that have it)."""
    f = g.mean.size
    if f == dims:
        return g
    whitener = np.zeros((dims, dims))
    whitener[:f, :f] = g.whitener
    return Gaussian(np.concatenate([g.mean, np.zeros(dims - f)]), whitener)


def learning_path(profile: str | Path) -> Path:
    """Where the learnings in progress of the baselines saved to ``profile`` are kept between runs:
    ``plant.json`` -> ``plant.learning.npz`` beside it."""
    profile = Path(profile)
    return profile.with_name(profile.stem + ".learning.npz")


def read_learnings(path: str | Path, streams: set[str] | None = None) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """The learnings in progress ``BaselineStage.save_learning`` wrote to ``path``: ``(header,
    {stream: learning})``, each learning as ``BaselineStage.adopt`` takes it under ``"learning"``
    (checked there); only those of ``streams`` when given (only their arrays are read). Raises
    FileNotFoundError when there is none, ConfigError when it cannot be read."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            head = json.loads(bytes(z["meta"]).decode("utf-8"))
            if not isinstance(head, dict) or head.get("format") != LEARNING_FORMAT:
                raise ValueError("not a baseline learning file")
            rows = head.get("streams")
            if not isinstance(rows, list) or len(rows) > len(z.files):
                raise ValueError("no list of streams")
            out: dict[str, dict[str, Any]] = {}
            ac = head.get("level") == "ac"
            for k, row in enumerate(rows):
                if not isinstance(row, dict):
                    raise ValueError(f"stream {k} is not a record")
                _text(row.get("id"), "stream")  # printed by baseline show and in notes: no escape sequences
                if streams is None or row["id"] in streams:
                    out[row["id"]] = {"features": z[f"features{k}"], "times": z[f"times{k}"],
                                      # (levels of an older version, with the DC offset in: none)
                                      "levels": z[f"levels{k}"] if f"levels{k}" in z.files and ac else None,
                                      "seen": row.get("seen"), "stride": row.get("stride"),
                                      "left_out": row.get("left_out", 0), "labelled": row.get("labelled"),
                                      "rpm": row.get("rpm"),
                                      "hop": head.get("hop"), "sample_rate": head.get("sample_rate")}
    except FileNotFoundError:
        raise
    except (OSError, KeyError, ValueError, TypeError, EOFError, zipfile.BadZipFile) as exc:
        raise ConfigError(f"the baseline learnings in {path} cannot be read ({type(exc).__name__}: "
                          f"{str(exc)[:200]})") from None
    return head, out


def weights_digest(artifact: str | Path) -> str:
    """SHA-256 over the artifact's tensor data (the weights), not its metadata: re-exporting the
    same weights with other metadata keeps the digest, new weights change it."""
    parts = []
    with zipfile.ZipFile(artifact) as zf:
        for name in zf.namelist():
            if "/data/" in name and "/extra/" not in name:
                parts.append(hashlib.sha256(zf.read(name)).hexdigest())
    return hashlib.sha256("".join(sorted(parts)).encode()).hexdigest()


@dataclass
class StreamBaseline:
    """One stream's normal.

    Attributes:
        gaussian: mean and whitening matrix of the pooled features.
        threshold: Mahalanobis distance at which ``anomaly`` is 1.0.
        windows: learning windows (fit + held back); held_back: of them, kept out of the fit.
        learned_from / learned_to: capture times (s, wall clock or the recording's clock) of
            the first and last learning window.
        level_low: the level (RMS about the mean, signal units) under which STOPPED_PERCENTILE %
            of the learning windows lay; a window under STOPPED_SHARE of it is a machine at rest.
            NaN where the learning windows carried no level (a profile of an older version):
            never at rest.
        states: the machine's further operating states, each its own Gaussian and threshold
            (``gaussian`` / ``threshold`` are the state most learning windows were in); empty:
            one state. A window's anomaly is its distance to the nearest state over that state's
            threshold.
        rpm_low / rpm_high: the shaft speeds (rpm) the learning windows' frames carried, least and
            most; NaN where they carried none.
        envelope: the machine's envelope evidence while it learned (``EnvelopeStage.normal``:
            ``{"blocks": n, "median_db": {family: dB}}``), against which a fault type must rise;
            None where the stream had no envelope evidence then.
        with_level: the Gaussians are over the pooled features and the log level (``with_level``);
            False: over the pooled features alone (a profile of an older version, judged so).
        dc_levels: its levels (``level_low``, the level input) were learned as RMS with the
            sensor's DC offset in (a profile of an older version, without ``"level": "ac"``):
            judged as they are, the same on an AC-coupled sensor, wrong on a DC-coupled one
            (``BaselineStage`` says so once).
    """

    gaussian: Gaussian
    threshold: float
    windows: int
    held_back: int
    learned_from: float = 0.0
    learned_to: float = 0.0
    level_low: float = math.nan
    states: tuple[State, ...] = ()
    rpm_low: float = math.nan
    rpm_high: float = math.nan
    envelope: dict[str, Any] | None = None
    with_level: bool = False
    dc_levels: bool = False

    def anomaly(self, features: np.ndarray) -> np.ndarray:
        """(b, inputs) -> (b,) distance over the threshold, to the nearest operating state (the
        inputs as it was learned on: ``with_level`` where it was)."""
        a = np.sqrt(self.gaussian.distance2(features)) / self.threshold
        for st in self.states:
            a = np.minimum(a, np.sqrt(st.gaussian.distance2(features)) / st.threshold)
        return a

    def to_dict(self) -> dict[str, Any]:
        return {
            **_limit_dict(self.gaussian, self.threshold),
            "windows": self.windows,
            "held_back": self.held_back,
            "learned_from": self.learned_from,
            "learned_to": self.learned_to,
            **({"level_low": self.level_low} if math.isfinite(self.level_low) else {}),
            **({"states": [st.to_dict() for st in self.states]} if self.states else {}),
            **({"rpm": [self.rpm_low, self.rpm_high]} if math.isfinite(self.rpm_low) else {}),
            **({"envelope": self.envelope} if self.envelope else {}),
            **({"with_level": True} if self.with_level else {}),
            **({"level": "ac"} if self.has_levels and not self.dc_levels else {}),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> StreamBaseline:
        gauss, threshold = _limit_of(d)
        windows, held_back = _count(d["windows"], "windows"), _count(d["held_back"], "held_back")
        if not 0 <= held_back < windows:
            raise ValueError(f"held_back {held_back} of {windows} windows")
        times = float(d.get("learned_from", 0.0)), float(d.get("learned_to", 0.0))
        if not all(math.isfinite(t) for t in times):
            raise ValueError(f"learned_from / learned_to {times}")
        low = d.get("level_low")
        if low is not None and (isinstance(low, bool) or not isinstance(low, (int, float))
                                or not (math.isfinite(low) and low > 0)):
            raise ValueError(f"level_low {str(low)[:40]!r} is not a level > 0")
        states = d.get("states", [])
        if not isinstance(states, list) or len(states) >= MAX_STATES:
            raise ValueError(f"states: a list of at most {MAX_STATES - 1} further operating states")
        more = tuple(State.from_dict(st, gauss.mean.size) for st in states)
        if sum(st.windows for st in more) >= windows:
            raise ValueError(f"states of more windows than the {windows} learned")
        rpm = _rpm_range(d.get("rpm"))
        level = d.get("with_level", False)
        if not isinstance(level, bool) or (level and gauss.mean.size < 2):
            raise ValueError(f"with_level {str(level)[:40]!r} is not true or false (over 2 inputs or more)")
        if d.get("level", "ac") != "ac":
            raise ValueError(f"level {str(d['level'])[:40]!r} is not \"ac\"")
        out = cls(gauss, threshold, windows, held_back, *times, float(low) if low is not None else math.nan, more,
                  *rpm, _envelope_normal(d.get("envelope")), level)
        out.dc_levels = out.has_levels and "level" not in d
        return out

    @property
    def has_levels(self) -> bool:
        """Whether it learned the windows' levels (a rest level, the level input)."""
        return self.with_level or math.isfinite(self.level_low)

    @property
    def features(self) -> int:
        """The model's pooled features it was learned over (its inputs less the level)."""
        return self.gaussian.mean.size - int(self.with_level)


def _envelope_normal(value: Any) -> dict[str, Any] | None:
    """A baseline's ``envelope`` read back and checked: ``{"blocks": n, "median_db": {family: dB}}``
    over the envelope's families (bpfo, bpfi, bsf), each a finite number; None for None."""
    if value is None:
        return None
    if not isinstance(value, dict) or set(value) != {"blocks", "median_db"}:
        raise ValueError(f"envelope {str(value)[:60]!r} is not {{'blocks': n, 'median_db': {{family: dB}}}}")
    blocks, med = _count(value["blocks"], "envelope blocks"), value["median_db"]
    if (not isinstance(med, dict) or not med or not set(med) <= {"bpfo", "bpfi", "bsf"}
            or not all(not isinstance(v, bool) and isinstance(v, (int, float)) and math.isfinite(v) and abs(v) < 1e3
                       for v in med.values())):
        raise ValueError(f"envelope median_db {str(med)[:80]!r} is not {{bpfo/bpfi/bsf: dB}}")
    return {"blocks": blocks, "median_db": {k: float(v) for k, v in med.items()}}


def _rpm_range(value: Any) -> tuple[float, float]:
    """A ``[low, high]`` of shaft speeds (rpm) read back and checked; (NaN, NaN) for None."""
    if value is None:
        return math.nan, math.nan
    if (not isinstance(value, list) or len(value) != 2
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
            or not 0 <= value[0] <= value[1] <= MAX_RPM):
        raise ValueError(f"rpm {str(value)[:40]!r} is not [low, high] shaft speeds of 0 .. {MAX_RPM:.0f}")
    return float(value[0]), float(value[1])


def _limit_dict(gauss: Gaussian, threshold: float) -> dict[str, Any]:
    """A Gaussian and its threshold as a profile writes them (a stream's first state, or another)."""
    return {"mean": rounded(gauss.mean), "whitener": rounded(gauss.whitener), "threshold": threshold}


def _limit_of(d: Any) -> tuple[Gaussian, float]:
    """``_limit_dict``'s table read back and checked: a whitener that fits its mean, no NaN or
    infinite statistic, a threshold that is a finite number > 0."""
    if not isinstance(d, dict):
        raise ValueError("a baseline state is a table of mean, whitener, threshold, windows")
    mean = np.asarray(d["mean"], dtype=np.float64)
    whitener = np.asarray(d["whitener"], dtype=np.float64)
    check_gaussian(mean, whitener)
    threshold = d["threshold"]
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not (
            math.isfinite(threshold) and threshold > 0):
        raise ValueError(f"threshold {str(threshold)[:40]!r}")
    return Gaussian(mean, whitener), float(threshold)


@dataclass(frozen=True)
class State:
    """One further operating state of a stream's baseline: its Gaussian, its threshold, and the
    learning windows that were in it."""

    gaussian: Gaussian
    threshold: float
    windows: int

    def to_dict(self) -> dict[str, Any]:
        return {**_limit_dict(self.gaussian, self.threshold), "windows": self.windows}

    @classmethod
    def from_dict(cls, d: Any, features: int) -> State:
        gauss, threshold = _limit_of(d)
        if gauss.mean.size != features:
            raise ValueError(f"an operating state over {gauss.mean.size} features, the baseline's over {features}")
        return cls(gauss, threshold, _count(d["windows"], "windows"))


def _count(v: Any, name: str, most: int = 2**53) -> int:
    """A count in a profile: an integer 0..``most`` (JSON's 1e300 or true are not counts)."""
    if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= most:
        raise ValueError(f"{name} {str(v)[:40]!r} is not a count")
    return v


def _text(v: Any, name: str) -> str:
    """A name in a profile that is printed (``baseline show``, the dashboard): 1-256 printable
    characters, so that a planted profile cannot send escape sequences to a terminal."""
    if not isinstance(v, str) or not 0 < len(v) <= 256 or not v.isprintable():
        raise ValueError(f"{name} {str(v)[:60]!r} is not 1-256 printable characters")
    return v


def fit_stream(features: np.ndarray, times: np.ndarray | None = None, *, held_back: float = HELD_BACK,
               percentile: float = PERCENTILE, margin: float = MARGIN, shrink: float = SHRINK,
               least: int | None = None, states: int = MAX_STATES, span: int = 0,
               level: bool = False) -> StreamBaseline:
    """Fits one stream's baseline on its learning windows' features (n, features), in time order:
    up to ``states`` operating states (``_operating_states``; 1: one Gaussian over all), each
    fitted on its windows but its last ``held_back`` share, which set its threshold. ``span``: the
    learning windows that overlap one window (window / hop, over the stride of a long learning):
    as many on each side of a change of state are left out (``_between_states``).
    Windows with NaN or infinite features (a sensor's dropout) are left out: one would make every
    statistic NaN, a baseline that never alarms. ``least``: the fewest windows accepted (default
    ``min_windows``; lower only to measure what fewer give, tools/eval_baseline.py --sweep).
    ``level``: the last input is the log level (``with_level``), given a spread of at least
    ``LEVEL_STD``; the baseline says so (``with_level``)."""
    if not (math.isfinite(margin) and margin > 0):
        raise ConfigError(f"a baseline margin must be a finite number > 0, not {margin}")
    x = np.asarray(features, dtype=np.float64)
    t = np.asarray(times if times is not None else np.zeros(len(x)), dtype=np.float64)
    ok = np.isfinite(x).all(axis=1)
    x, t = x[ok], t[ok]
    n, need = len(x), min_windows(x.shape[1]) if least is None else int(least)
    if n < need:
        raise ConfigError(f"a baseline over {x.shape[1]} features needs at least {need} windows, got {n}; "
                          "learn for longer")
    def apart(groups: list[np.ndarray]) -> list[np.ndarray]:  # the windows at a change of state left out
        if len(groups) > 1 and span > 0:
            kept = _between_states(groups, n, span)
            if min(g.size for g in kept) >= need:  # (states that alternate every few windows: kept whole)
                return kept
        return groups

    least_std = None
    if level:
        least_std = np.zeros(x.shape[1])
        least_std[-1] = LEVEL_STD

    def fit(groups: list[np.ndarray]) -> list[_Fit]:  # each in time order: its last windows held back
        return [(rows.size, *_fit_state(x[rows], held_back, percentile, margin, shrink, least_std))
                for rows in apart(groups)]

    fits = sorted(_operating_states(x, need, states, fit), key=lambda f: -f[0])
    _, gauss, threshold, _ = fits[0]
    more = tuple(State(g, th, m) for m, g, th, _ in fits[1:])
    return StreamBaseline(gauss, threshold, n, sum(f[3] for f in fits), float(t[0]), float(t[-1]), states=more,
                          with_level=level)


def _between_states(groups: list[np.ndarray], n: int, span: int) -> list[np.ndarray]:
    """``groups`` less the windows within ``span`` windows of a change from one operating state to
    another: such a window spans the change (its samples are of both states, or of the ramp
    between them) and belongs to neither. A state's last windows are its held-back ones, so every
    change of state would otherwise set a threshold. (States that alternate every few windows
    leave too few: the caller keeps them whole then.)"""
    state = np.empty(n, dtype=np.int64)
    for j, g in enumerate(groups):
        state[g] = j
    out = np.zeros(n, dtype=bool)
    for b in (np.flatnonzero(np.diff(state)) + 1).tolist():  # the first window after each change
        out[max(0, b - span) : b + span] = True
    return [g[~out[g]] for g in groups]


def _fit_state(x: np.ndarray, held_back: float, percentile: float, margin: float,
               shrink: float, least_std: np.ndarray | None = None) -> tuple[Gaussian, float, int]:
    """One state's Gaussian on its windows but the last ``held_back`` share, and its threshold
    from those held back: (Gaussian, threshold, windows held back)."""
    n = len(x)
    k = max(1, int(round(n * held_back)))
    if n - k <= x.shape[1]:
        raise ConfigError(f"a baseline over {x.shape[1]} features needs more than {x.shape[1]} windows to fit "
                          f"(got {n - k} after holding back {k}); learn for longer")
    gauss = Gaussian.fit(x[: n - k], shrink=shrink, least_std=least_std)
    threshold = float(np.percentile(np.sqrt(gauss.distance2(x[n - k :])), percentile) * margin)
    if not (threshold > 0 and math.isfinite(threshold)):
        raise ConfigError(f"the learned threshold is {threshold} (the features do not vary); learn on a running machine")
    return gauss, threshold, k


_Fit = tuple[int, Gaussian, float, int]  # a state fitted: (its windows, Gaussian, threshold, windows held back)


def _operating_states(x: np.ndarray, least: int, most: int,
                      fit: Callable[[list[np.ndarray]], list[_Fit]]) -> list[_Fit]:
    """The learning windows' operating states, as ``fit`` fits the row indices (ascending) of
    each; one state when the windows do not support more. States are found from the features
    alone (k-means on the centred features, 2..``most`` states, every state at least ``least``
    windows); more states are kept while they lower the BIC of a Gaussian per state and are
    distinct (each state's mean an anomaly to every other state: one state of a skewed spread is
    not split in parts). A machine run at several speeds or loads forms separate clusters, each far tighter
    than one Gaussian over them all (whose spread hid faults at its own speed:
    docs/own-machine.md). Deterministic (fixed seeds)."""
    n, f = x.shape
    every = np.arange(n)
    if most < 2 or n < 2 * least:
        return fit([every])
    z = x - x.mean(axis=0)  # the features' own scale: the directions they vary most in lead
    sample = z[np.linspace(0, n - 1, min(n, STATE_SAMPLE)).astype(np.int64)]
    best, best_bic = None, _bic(x, [every])  # (None: one state, fitted at the end)
    for k in range(2, min(most, n // least) + 1):
        centres = _kmeans(sample, k)
        nearest = _distance2(z, centres).argmin(axis=1)
        groups = [np.flatnonzero(nearest == j) for j in range(k)]
        if min(g.size for g in groups) < least:
            break  # more states than the windows can support
        bic = _bic(x, groups)
        if bic >= best_bic:
            break  # no better than fewer states
        fits = fit(groups)
        if not all(np.sqrt(gi.distance2(gj.mean[None]))[0] >= ti
                   for i, (_, gi, ti, _) in enumerate(fits) for j, (_, gj, _, _) in enumerate(fits) if i != j):
            break  # parts of one state
        best, best_bic = fits, bic
    return best if best is not None else fit([every])


def _bic(x: np.ndarray, groups: list[np.ndarray]) -> float:
    """The Bayesian information criterion of one Gaussian per group (hard assignment)."""
    n, f = x.shape
    loglik = 0.0
    for g in groups:
        xg = x[g]
        c = xg - xg.mean(axis=0)
        cov = c.T @ c / len(xg) + 1e-9 * np.eye(f)
        sign, logdet = np.linalg.slogdet(cov)
        if sign <= 0:
            return math.inf
        loglik += -0.5 * len(xg) * (logdet + f * (1.0 + math.log(2 * math.pi))) + len(xg) * math.log(len(xg) / n)
    params = len(groups) * (f + f * (f + 1) / 2) + len(groups) - 1
    return -2.0 * loglik + params * math.log(n)


def _kmeans(z: np.ndarray, k: int, *, tries: int = 2, rounds: int = 30) -> np.ndarray:
    """k centres of ``z`` (rows): of Lloyd's rounds from a split along principal axes (the
    cluster of largest spread halved along its first axis, until k) and from ``tries`` k-means++
    starts (fixed seeds), the centres of least inertia."""
    starts = [_bisected(z, k)]
    for seed in range(tries):
        rng = np.random.default_rng(seed)
        c = z[[rng.integers(len(z))]]
        for _ in range(1, k):
            d = _distance2(z, c).min(axis=1)
            pick = rng.choice(len(z), p=d / d.sum()) if d.sum() > 0 else rng.integers(len(z))
            c = np.vstack([c, z[pick]])
        starts.append(c)
    best, best_inertia = starts[0], math.inf
    for c in starts:
        for _ in range(rounds):
            nearest = _distance2(z, c).argmin(axis=1)
            onehot = np.eye(k)[nearest]
            counts = onehot.sum(axis=0)
            moved = np.where(counts[:, None] > 0, onehot.T @ z / np.maximum(counts, 1)[:, None], c)
            if np.allclose(moved, c):
                break
            c = moved
        inertia = float(_distance2(z, c).min(axis=1).sum())
        if inertia < best_inertia:
            best, best_inertia = c, inertia
    return best


def _bisected(z: np.ndarray, k: int) -> np.ndarray:
    """k starting centres: the rows halved along their first principal axis, then the half of
    largest spread along its own, until there are k parts; their means."""
    parts = [z]
    while len(parts) < k:
        j = max(range(len(parts)), key=lambda i: float(((parts[i] - parts[i].mean(axis=0)) ** 2).sum()))
        part = parts.pop(j)
        c = part - part.mean(axis=0)
        axis = np.linalg.svd(c, full_matrices=False)[2][0] if len(part) > 1 else np.zeros(z.shape[1])
        side = c @ axis > 0
        if side.all() or not side.any():
            parts += [part, part]  # nothing to split: the same centre twice (Lloyd's rounds part them or not)
        else:
            parts += [part[side], part[~side]]
    return np.array([p.mean(axis=0) for p in parts])


def _distance2(z: np.ndarray, c: np.ndarray) -> np.ndarray:
    """(n, k) squared distances of rows ``z`` to centres ``c``."""
    return np.maximum((z * z).sum(axis=1)[:, None] - 2.0 * z @ c.T + (c * c).sum(axis=1)[None], 0.0)


@dataclass
class Profile:
    """A machine's learned normal, per stream (see the module docstring)."""

    model: str
    model_digest: str
    sample_rate: int
    window: int
    hop: int
    streams: dict[str, StreamBaseline] = field(default_factory=dict)
    created: str = ""
    settings: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION if any(sb.states for sb in self.streams.values()) else 1,
            "model": self.model,
            "model_digest": self.model_digest,
            "sample_rate": self.sample_rate,
            "window": self.window,
            "hop": self.hop,
            "created": self.created or time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "settings": self.settings,
            "streams": {sid: sb.to_dict() for sid, sb in sorted(self.streams.items())},
        }

    def save(self, path: str | Path, *, make_folder: bool = True) -> Path:
        return write_atomic(path, (json.dumps(self.to_dict(), indent=1) + "\n").encode("utf-8"),
                            make_folder=make_folder)

    @classmethod
    def load(cls, path: str | Path) -> Profile:
        path = Path(path)
        try:
            d = json.loads(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigError(f"cannot read baseline profile {path}: {exc.strerror or exc}; check the path") from None
        except ValueError as exc:  # not UTF-8, not JSON, an integer of over 4,300 digits
            raise ConfigError(f"{path} is not a baseline profile (not JSON: {str(exc)[:200]}); learn one with "
                              "`drsn-stream baseline learn`") from None
        if not isinstance(d, dict) or d.get("format") != FORMAT:
            raise ConfigError(f"{path} is not a baseline profile; learn one with `drsn-stream baseline learn`")
        if not isinstance(d.get("format_version"), int) or d["format_version"] > FORMAT_VERSION:
            raise ConfigError(f"{path}: baseline format version {d.get('format_version')!r} is newer than this "
                              f"drsn-stream understands ({FORMAT_VERSION}); upgrade drsn-stream")
        try:
            streams = {_text(sid, "stream"): StreamBaseline.from_dict(s) for sid, s in dict(d["streams"]).items()}
            created = d.get("created", "")
            return cls(_text(d["model"], "model"), _text(d["model_digest"], "model_digest"),
                       _count(d["sample_rate"], "sample_rate"), _count(d["window"], "window"),
                       _count(d["hop"], "hop"), streams, created and _text(created, "created"),
                       dict(d.get("settings", {})))
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"{path}: baseline profile is malformed ({exc}); learn it again") from None

    def check(self, *, model: str, digest: str, sample_rate: int, window: int, where: str = "profile",
              features: int | None = None) -> None:
        """Refuses (ConfigError, one line) a profile learned with another model, rate or window,
        or over another number of features than the model's (``features``, where given)."""
        if self.model != model or self.model_digest != digest:
            same = "other weights of " if self.model == model else ""
            raise ConfigError(f"{where} was learned with {same}model {self.model!r}, not the {model!r} running now; "
                              "learn a baseline with this model (drsn-stream baseline learn --model ...)")
        if self.sample_rate != sample_rate or self.window != window:
            raise ConfigError(f"{where} was learned at {self.sample_rate} Hz with {self.window}-sample windows, the "
                              f"model runs at {sample_rate} Hz with {window}; learn the baseline again")
        for sid, sb in self.streams.items():
            if features is not None and sb.features != features:
                raise ConfigError(f"{where}: stream {sid!r} was learned over {sb.features} features, the model "
                                  f"gives {features}; learn the baseline again")


class _Learning:
    """One stream's learning windows so far: features, capture times and levels (RMS; NaN where a
    window carried none), at most ``keep`` of them (``keep_of``), spread evenly over every window
    learned from (``seen``): window ``i`` is kept while ``i % stride == 0``, and when they fill up
    every other one goes and ``stride`` doubles; the least and most shaft speed (rpm) of the
    windows learned from, where their frames carried one (NaN: none did)."""

    __slots__ = ("feats", "times", "levels", "n", "seen", "stride", "rpm_lo", "rpm_hi", "keep")

    def __init__(self, features: int, *, size: int = 64, keep: int = LEARN_KEEP) -> None:
        self.keep = keep
        size = min(size, keep)
        self.feats = np.empty((size, features), dtype=np.float32)
        self.times = np.empty(size, dtype=np.float64)
        self.levels = np.empty(size, dtype=np.float64)  # (each written as its window is kept)
        self.n = 0  # windows kept
        self.seen = 0  # windows learned from
        self.stride = 1
        self.rpm_lo = self.rpm_hi = math.nan

    @classmethod
    def carried(cls, feats: np.ndarray, times: np.ndarray, seen: int, stride: int,
                levels: np.ndarray | None = None, keep: int = LEARN_KEEP) -> _Learning:
        """A learning taken over from another host (``export``'s arrays and counts, checked; up to
        LEARN_KEEP windows, more than ``keep`` from an older version: halved at the next window)."""
        out = cls(feats.shape[1], size=max(keep, len(feats)), keep=keep)
        out.feats[: len(feats)], out.times[: len(times)] = feats, times
        out.levels[: len(feats)] = levels if levels is not None else np.nan
        out.n, out.seen, out.stride = len(feats), seen, stride
        return out

    def speed(self, rpm: float) -> None:
        """Widens the range of speeds learned from to ``rpm`` (NaN: nothing)."""
        if rpm == rpm:
            self.rpm_lo = rpm if not rpm >= self.rpm_lo else self.rpm_lo  # (NaN so far: the first)
            self.rpm_hi = rpm if not rpm <= self.rpm_hi else self.rpm_hi

    def add(self, features: np.ndarray, t: float, level: float = math.nan, rpm: float | None = None) -> None:
        if rpm is not None:
            self.speed(rpm)
        i = self.seen
        self.seen += 1
        if i % self.stride:
            return
        if self.n >= self.keep:  # full: the windows at even places stay, then one in 2 * stride
            half = (self.n + 1) // 2
            self.feats[:half] = self.feats[0 : self.n : 2]
            self.times[:half] = self.times[0 : self.n : 2]
            self.levels[:half] = self.levels[0 : self.n : 2]
            self.n, self.stride = half, 2 * self.stride
        if self.n == len(self.times):
            size = min(self.keep, 2 * len(self.times))
            self.feats = np.concatenate([self.feats, np.empty((size - self.n, self.feats.shape[1]), np.float32)])
            self.times = np.concatenate([self.times, np.empty(size - self.n)])
            self.levels = np.concatenate([self.levels, np.full(size - self.n, np.nan)])
        self.feats[self.n] = features
        self.times[self.n] = t
        self.levels[self.n] = level
        self.n += 1

    def level_low(self) -> float:
        """The level under which STOPPED_PERCENTILE % of the kept windows lay; NaN where fewer
        than half of them carried a level > 0 (a learning carried from an older version)."""
        lv = self.levels[: self.n]
        lv = lv[np.isfinite(lv) & (lv > 0)]
        return float(np.percentile(lv, STOPPED_PERCENTILE)) if 2 * len(lv) >= max(1, self.n) and len(lv) else math.nan


class BaselineStage:
    """Scores predictions against their stream's baseline; learns streams live.

    Args:
        profile: the baselines loaded from a file (None: none yet).
        learn_s: learn every stream without a baseline for this many seconds of its own signal
            (its learning windows times the hop: windows of a sensor in CHECK_SENSOR, a silence
            or a step of a clock add none), then fit and monitor it (None: do not learn;
            ``math.inf``: learn until ``fit``).
        model / digest / sample_rate / window / hop: what a learned profile records.

    Runs in the pipeline's output thread only (``apply``); ``views`` may be read from any thread
    (it copies small dicts).
    """

    def __init__(self, profile: Profile | None, *, learn_s: float | None, model: str, digest: str,
                 sample_rate: int, window: int, hop: int, features: int | None = None,
                 save_to: str | Path | None = None, startup_s: float = STARTUP_S) -> None:
        self.profile = profile or Profile(model, digest, sample_rate, window, hop)
        self.learn_s = learn_s
        self.hop = int(hop)  # of the windows learned from now (a loaded profile may say another)
        self.features = features  # the model's pooled features: what a baseline taken from elsewhere must be over
        # the profile file the baselines learned live are saved to (None: kept for this run only)
        self.save_to = Path(save_to) if save_to is not None else None
        self.saves = 0
        self.save_failures = 0
        self._dirty = False  # learned (or forgotten) since the last save
        self._dropped: set[str] = set()  # streams whose learned baselines were forgotten: left out of the file
        self._next_save = 0.0  # monotonic: saves at most once a second, retried every SAVE_RETRY_S
        # the learnings in progress, saved beside save_to (``learning_path``) and taken up again
        # by the next run: learnings read from there wait in _resumed for their stream's first window
        self.learning_to = learning_path(self.save_to) if self.save_to is not None else None
        self.learning_saves = 0
        self.learning_save_failures = 0
        self._resumed: dict[str, dict[str, Any]] = {}
        self._take_up = False  # resume() takes up learning_to's learnings with no save_to (kept_elsewhere)
        self._resumed_at = 0.0  # time.monotonic() of resume(), where it took learnings up
        self._next_learning_save = time.monotonic() + LEARNING_SAVE_S
        self._learning_on_disk = False  # the file holds learnings (removed once none is left)
        self._writer: threading.Thread | None = None  # the periodic save's, while it writes
        self._learning_due = False  # a learning taken over: saved at the next chance, not on the minute
        self._forgot_learning: set[str] = set()  # streams forgotten since the last save of the learnings
        self.say_unsaved = True  # said once as learning starts without save_to (not where they are kept_elsewhere)
        self._learning: dict[str, _Learning] = {}
        # the labels that raise an alarm (the pipeline sets them from its decision config), and per
        # stream learning, the windows learned from here and those of them labelled one of them
        self.fault_labels: frozenset[str] = frozenset()
        # the anomaly a fault label needs to be shown and alarmed on where a baseline watches (the
        # pipeline sets it to its decisions' anomaly_enter): under it the machine is as learned
        self.backs_label = 1.0
        self._said_unbacked: set[str] = set()  # streams whose unbacked fault label was said (once)
        # ``speed_of(stream, t)``: the shaft speed (rpm) the stream's frame holding capture time t
        # carried, None where it carried none (the pipeline sets it); learned into each baseline's
        # range of speeds, and a window outside it is held
        self.speed_of: Callable[[str, float], float | None] | None = None
        self._rpm_k: np.ndarray | None = None  # per stacked baseline (low, high) rpm; None: no baseline has one
        # ``envelope_normal(stream, t0, t1)``: the envelope evidence of the stream's machine over a
        # learning span (``EnvelopeStage.normal``; the pipeline sets it where a bearing is
        # configured), learned into each baseline fitted here
        self.envelope_normal: Callable[[str, float, float], dict[str, Any] | None] | None = None
        self._off_speed: set[str] = set()  # streams whose latest window was at a speed their baseline never saw
        self._said_speed: set[str] = set()  # streams said to run at a speed not learned (once)
        self._said_sensor: set[str] = set()  # streams said to read a standstill's level while turning (once)
        self._said_still: set[str] = set()  # streams said to stand still while learning (once)
        self._labelled: dict[str, tuple[int, dict[str, int]]] = {}
        self._warned: set[str] = set()
        self.left_out: dict[str, int] = {}  # stream: windows of a sensor in CHECK_SENSOR not learned from
        self._extended: set[str] = set()  # streams whose span gave too few windows (said once)
        self.notes: list[tuple[str, str]] = []  # (stream, message), each said once; the pipeline drains it
        self.state: dict[str, str] = {}  # stream: "learning 40%" / "monitoring" / "no baseline"
        self.latest: dict[str, float] = {}  # stream: latest anomaly
        self.history: dict[str, deque[float]] = {}  # stream: recent anomalies, for the sparkline
        self._at_rest: set[str] = set()  # streams whose latest window was of a machine at rest
        self.startup_s = startup_s
        self._starting: dict[str, float] = {}  # streams running again since (capture time), held off startup_s
        self._stopping: dict[str, float] = {}  # streams quieter than learned since (capture time), held off startup_s
        self._said_quiet: set[str] = set()  # streams said to run on quieter than learned (once)
        self._held_k = np.zeros(0, dtype=bool)  # per stacked baseline: at rest, starting or stopping (_rest)
        self._said_rest: set[str] = set()  # streams whose rest was said (once)
        self._to_fit: dict[str, None] = {}  # streams whose learning is done, waiting for their fit (in order)
        self._fitted_here: set[str] = set()  # streams whose baseline was fitted in this run (fitted_here)
        self._fit_resume = 0.0  # time.monotonic() from which the next fit may run (fit_wait)
        # a turn of fits puts the next off this many times its own length (FIT_WAIT), so that
        # live streams keep up; 0 in a replay faster than real time (the pipeline says so): it
        # has no real time to keep up with, and the windows of a stream waiting for its fit,
        # neither learned nor judged, would be as many as the wall clock's wait covers there
        self.fit_wait = FIT_WAIT
        self._stack_s = 0.0  # how long the latest _stack took
        self._stacked: tuple[dict[str, int], np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None = None
        self.changes = 0  # the profile's baselines changed this often (one learned, adopted, dropped)
        self._given = set(self.profile.streams)  # the profile's own baselines, kept when a stream is forgotten
        for sid in self.profile.streams:
            self.state[sid] = "monitoring"
        old = sorted(sid for sid, b in self.profile.streams.items() if b.dc_levels)
        if old:
            self.notes.append(("*", (
                f"{len(old)} baseline(s) ({', '.join(old[:3])}{', ...' if len(old) > 3 else ''}) learned the levels "
                "with the sensor's DC offset in (an older drsn-stream): judged so, which is the same on an AC-coupled "
                "sensor (IEPE accelerometer, sound card); on a DC-coupled one (a MEMS accelerometer) learn them again")))

    def forget(self, stream: str) -> None:
        """Drop what was learned or seen live of a stream (the monitor retired it); a baseline
        the profile brought is kept: the stream is monitored on it again if it comes back."""
        learning = self._learning.pop(stream, None) is not None
        if (self._resumed.pop(stream, None) is not None or learning) and self.learning_to is not None:
            self._forgot_learning.add(stream)  # out of the learning file at its next save
        self._labelled.pop(stream, None)
        for table in (self.left_out, self.latest, self.history):
            table.pop(stream, None)
        self._warned.discard(stream)
        self._extended.discard(stream)
        self._at_rest.discard(stream)
        self._starting.pop(stream, None)
        self._stopping.pop(stream, None)
        self._to_fit.pop(stream, None)
        self._said_rest.discard(stream)
        self._said_quiet.discard(stream)
        self._said_unbacked.discard(stream)
        self._off_speed.discard(stream)
        for said in (self._said_speed, self._said_still, self._said_sensor):
            said.discard(stream)
        if stream in self._given:
            self.state[stream] = "monitoring"
            return
        self.state.pop(stream, None)
        self._fitted_here.discard(stream)
        if self.profile.streams.pop(stream, None) is not None:
            self._stacked = None
            self.changes += 1
            self._dirty = self.save_to is not None
            self._dropped.add(stream)

    def kept_elsewhere(self, learning_to: str | Path | None = None, *, take_up: bool = False) -> None:
        """The caller keeps what is learned (a cluster host's checkpoints, ``baseline learn --out``):
        nothing is saved to ``save_to``, and nothing is said of it. ``learning_to``: where the
        learnings in progress are saved all the same (a cluster host's own file in the checkpoint
        folder, read by the host its streams go to when it is lost). ``take_up``: the learnings an
        earlier run left there are taken up by ``resume`` and written back with this run's until
        their streams come (a cluster host restarted under its name: its first save wrote over
        them, and the hosts its streams had gone to learned them anew), for one learning span
        (``RESUMED_LEAST_S`` at least; streams that went elsewhere learn there); else none are."""
        self.save_to = None
        self.learning_to = Path(learning_to) if learning_to is not None else None
        self._take_up = bool(take_up and learning_to is not None)
        self.say_unsaved = False

    def export(self, stream: str, *, learning: bool = False) -> dict[str, Any] | None:
        """The baseline this stage learned live for ``stream``, as ``StreamBaseline.to_dict`` (for a
        cluster checkpoint: the host that takes the stream over monitors it at once instead of
        learning it again); None while it has none, or where the profile gave it (every host loads
        the same profile).

        ``learning``: while the stream's baseline is still being learned, its learning so far
        instead, ``{"learning": {...}}`` with the windows' features as an array (a few hundred KB
        for 10 min of a 16-feature model): the next host learns on from there rather than over.
        For a stream handed over on purpose (its last checkpoint), not for the periodic ones."""
        base = self.profile.streams.get(stream)
        if base is not None:
            return None if stream in self._given else base.to_dict()
        so_far = self._learning.get(stream) if learning else None
        if so_far is None or not so_far.n:
            return None
        return {"learning": {**self._learning_dict(stream, so_far),
                             "hop": self.hop, "sample_rate": int(self.profile.sample_rate)}}

    def _learning_dict(self, stream: str, so_far: _Learning) -> dict[str, Any]:
        """A stream's learning so far as ``adopt`` takes it (less the hop and rate), for the next
        host or the learning file: copies of its arrays (the output thread may still add a window),
        and what the model labelled its windows."""
        n = so_far.n
        counted, faults = self._labelled.get(stream) or (0, {})
        return {"features": so_far.feats[:n].copy(), "times": so_far.times[:n].copy(),
                "levels": so_far.levels[:n].copy(), "seen": so_far.seen,
                "stride": so_far.stride, "left_out": int(self.left_out.get(stream, 0)),
                "labelled": {"windows": counted, "faults": dict(faults)},
                **({"rpm": [so_far.rpm_lo, so_far.rpm_hi]} if math.isfinite(so_far.rpm_lo) else {})}

    def adopt(self, stream: str, table: dict[str, Any]) -> None:
        """Monitor ``stream`` on a baseline learned elsewhere (``export``'s dict, from another
        host's checkpoint): its learning here, if any, stops. A learning in progress
        (``export(learning=True)``'s) is learned on from where it was. Raises ``ConfigError`` for a
        damaged one or one over another number of features than this stage's baselines."""
        self._resumed.pop(stream, None)  # what comes with the stream is as new as what an earlier run left, or newer
        if isinstance(table, dict) and "learning" in table:
            self._adopt_learning(stream, table["learning"])
            return
        try:
            base = StreamBaseline.from_dict(table)
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"the baseline of {stream} in its checkpoint is damaged ({type(exc).__name__}: {exc}); "
                              "the stream learns it again") from None
        self._check_features(stream, base.features, "baseline")
        self._learning.pop(stream, None)
        self._extended.discard(stream)
        self.profile.streams[stream] = base
        self._fitted_here.discard(stream)  # learned elsewhere, up to before this run judges it
        self._stacked = None
        self.changes += 1
        self.state[stream] = "monitoring"

    def _check_features(self, stream: str, size: int, what: str, where: str = "in its checkpoint") -> None:
        """Refuses a baseline (or learning) from elsewhere over another number of features than
        the model's (or, where not known, than this stage's other baselines)."""
        sizes = {self.features} if self.features else {
            b.features for sid, b in self.profile.streams.items() if sid != stream}
        if sizes and sizes != {size}:
            raise ConfigError(f"the {what} of {stream} {where} is over {size} features, this monitor's "
                              f"over {sorted(sizes)[0]} (another model?); the stream learns it again")

    def _adopt_learning(self, stream: str, d: Any, *, where: str = "in its checkpoint",
                        whence: str = "on another host") -> None:
        """Learn on from another host's learning windows (``export(learning=True)``), or from
        those of an earlier run (``resume``)."""
        if self.learn_s is None or stream in self.profile.streams:
            return  # not learning here, or monitored already: nothing to learn on
        try:
            feats, times = d["features"], d["times"]
            if not (isinstance(feats, np.ndarray) and isinstance(times, np.ndarray) and feats.ndim == 2
                    and times.shape == (feats.shape[0],) and 0 < feats.shape[0] <= LEARN_KEEP
                    and feats.shape[1] > 0 and feats.dtype.kind == "f" and times.dtype.kind == "f"
                    and bool(np.isfinite(times).all())):
                raise ValueError(f"features (windows, features) and finite times (windows,) of floats, "
                                 f"at most {LEARN_KEEP} windows")
            left_out = _count(d.get("left_out", 0), "left_out")
            hop, rate = _count(d["hop"], "hop"), _count(d["sample_rate"], "sample_rate")
            stride = _count(d.get("stride", 1), "stride", 1 << 40)
            seen = _count(d.get("seen", feats.shape[0]), "seen")
            if stride < 1 or not (feats.shape[0] - 1) * stride < seen <= feats.shape[0] * stride:
                raise ValueError(f"{feats.shape[0]} windows kept, one in {stride}, of {seen}")
            levels = d.get("levels")  # (none from an older version: the stream is then never at rest)
            if levels is not None and not (isinstance(levels, np.ndarray) and levels.shape == times.shape
                                           and levels.dtype.kind == "f" and not np.isinf(levels).any()
                                           and not (levels < 0).any()):
                raise ValueError("levels (windows,) of floats >= 0 or NaN")
            rpm = _rpm_range(d.get("rpm"))
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ConfigError(f"the baseline learning of {stream} {where} is damaged "
                              f"({type(exc).__name__}: {exc}); the stream learns it again") from None
        self._check_features(stream, feats.shape[1], "baseline learning", where)
        if (hop, rate) != (self.hop, self.profile.sample_rate):
            raise ConfigError(f"the baseline learning of {stream} {where} is of windows every {hop} samples "
                              f"at {rate} Hz, this monitor's every {self.hop} at {self.profile.sample_rate} Hz; "
                              "the stream learns it again")
        carried = _Learning.carried(feats, times, seen, stride, levels, keep_of(stream))
        carried.rpm_lo, carried.rpm_hi = rpm
        here = self._learning.pop(stream, None)  # windows learned here already come after those
        if here is not None:
            for k in range(here.n):
                carried.add(here.feats[k], float(here.times[k]), float(here.levels[k]))
            carried.speed(here.rpm_lo)
            carried.speed(here.rpm_hi)
        self._learning[stream] = carried
        self.left_out[stream] = self.left_out.get(stream, 0) + left_out
        self._carry_labelled(stream, d.get("labelled"), seen)
        self._learning_due = True  # in this monitor's learning file at once, not a minute later
        self.notes.append((stream, f"learning the baseline on from {seen} windows learned {whence}"))
        self.state[stream] = "learning"

    def _carry_labelled(self, stream: str, d: Any, seen: int) -> None:
        """Adds what the model labelled a learning's windows elsewhere (``_learning_dict``) to this
        stage's count; one that does not add up is left out (it only feeds a note)."""
        try:
            windows, faults = _count(d["windows"], "windows", seen), dict(d["faults"])
            if len(faults) > 1024 or sum(_count(v, _text(k, "label")) for k, v in faults.items()) > windows:
                raise ValueError("more windows labelled than counted")
        except (KeyError, TypeError, ValueError):
            return
        counted, here = self._labelled.get(stream) or (0, {})
        merged = dict(faults)
        for label, n in here.items():
            merged[label] = merged.get(label, 0) + n
        self._labelled[stream] = (counted + windows, merged)

    def apply(self, preds: list[Prediction]) -> None:
        """Sets ``anomaly`` on every prediction of a stream that has a baseline (one vectorized
        call per batch, over all its streams); collects the features of streams that are learning."""
        if self._stacked is None:
            self._stack()
        index, means, whiteners, thresholds, lows = self._stacked
        rows, ks, rest = [], [], []
        for p in preds:
            if p.features is None:
                continue
            k = index.get(p.stream_id)
            if k is None:
                rest.append(p)
            else:
                rows.append(p)
                ks.append(k)
        if rows:
            cols = batch_columns(preds)
            levels = cols.level if cols is not None and len(rows) == len(cols) else np.array([p.level for p in rows])
            x = with_level(np.array([p.features for p in rows]), levels)
            if means.ndim == 2:  # one state per baseline
                z = np.einsum("bf,bfg->bg", x - means[ks], whiteners[ks])
                scores = np.sqrt(np.einsum("bf,bf->b", z, z)) / thresholds[ks]
            else:  # (baselines, states, ...): the nearest state's distance over its threshold
                z = np.einsum("bkf,bkfg->bkg", x[:, None, :] - means[ks], whiteners[ks])
                scores = (np.sqrt(np.einsum("bkg,bkg->bk", z, z)) / thresholds[ks]).min(axis=1)
            below = levels < lows[ks]  # (a level_low of NaN: never)
            ends = None  # the speeds at each window's first and last sample, where any baseline learned speeds
            if self._rpm_k is not None and self.speed_of is not None:
                ends = self._window_speeds(rows)
                if np.count_nonzero(below):
                    below = self._not_turning(rows, np.asarray(ks), ends, below, levels < STOPPED_SHARE * lows[ks])
            quiet = below  # stopping: quieter than learned and deviating, or far quieter
            if np.count_nonzero(below):
                quiet = below & ((scores >= self.backs_label) | (levels < QUIET_SHARE * lows[ks]))
            resting = quiet & (levels < STOPPED_SHARE * lows[ks])
            if self._at_rest or self._starting or self._stopping or np.count_nonzero(quiet):
                resting = self._rest(rows, np.asarray(ks), resting, quiet, below)
            if ends is not None:
                resting = self._speed_held(rows, np.asarray(ks), resting, ends)
            for p, a, still in zip(rows, scores.tolist(), resting.tolist()):
                if still:
                    continue
                p.anomaly = a
                if a < self.backs_label and p.label in self.fault_labels:
                    self._unbacked(p, a)
                hist = self.history.get(p.stream_id)
                if hist is None:
                    hist = self.history[p.stream_id] = deque(maxlen=32)
                hist.append(a)
                self.latest[p.stream_id] = a
        if rest:
            by_stream: dict[str, list[Prediction]] = {}
            for p in rest:
                by_stream.setdefault(p.stream_id, []).append(p)
            for sid, group in by_stream.items():
                self._learn(sid, group)
        if self._to_fit and time.monotonic() >= self._fit_resume:
            self._fit_turn(list(self._to_fit), self._stack_s)
        if self._dirty:
            self.save()
        if self.learning_to is not None and (self._learning or self._learning_on_disk):
            self.save_learning()

    def _unbacked(self, p: Prediction, a: float) -> None:
        """A fault label on a window its stream's baseline finds as learned: not shown or alarmed
        on (``unknown``, the model's in ``model_label``), its anomaly judged as any window's. The
        baseline was learned on this machine and the model on another: where they disagree, the
        machine's own normal wins (a healthy machine of another rig, or at another speed, can look
        like a fault to the model in every window), and a deviation from it still alarms, named
        with the model's label. Said once per stream."""
        if p.model_label is None:
            p.model_label, p.label = p.label, UNKNOWN
        sid = p.stream_id
        if sid not in self._said_unbacked:
            self._said_unbacked.add(sid)
            self.notes.append((sid, f"the model names {p.model_label} on windows its baseline finds as learned "
                                    f"(anomaly {a:.2f}, under {self.backs_label:g}): shown unknown and not alarmed on, "
                                    "as the machine's normal is what it was learned as; a deviation from it still "
                                    "alarms (a model trained on another machine can take this one's normal for a fault)"))

    def _stack(self) -> None:
        """The baselines as arrays (stream index, means, whiteners, thresholds, levels) for
        ``apply``; where any baseline has several operating states, with a states axis after the
        first (the states of a baseline with fewer repeat its first: the nearest is the same)."""
        t0 = time.monotonic()
        ids = list(self.profile.streams)
        bases = [self.profile.streams[sid] for sid in ids]
        f = 1 + (bases[0].features if bases else 0)  # every baseline judged on the features and the level
        k = 1 + max((len(b.states) for b in bases), default=0)
        every = [[(_padded(b.gaussian, f), b.threshold)] + [(_padded(st.gaussian, f), st.threshold) for st in b.states]
                 for b in bases]
        every = [e + e[:1] * (k - len(e)) for e in every]
        means = np.array([[g.mean for g, _ in e] for e in every]).reshape(len(ids), k, f)
        whiteners = np.array([[g.whitener for g, _ in e] for e in every]).reshape(len(ids), k, f, f)
        thresholds = np.array([[th for _, th in e] for e in every]).reshape(len(ids), k)
        if k == 1:  # no states axis: ``apply``'s plainer products
            means, whiteners, thresholds = (np.ascontiguousarray(a[:, 0]) for a in (means, whiteners, thresholds))
        self._stacked = (
            {sid: j for j, sid in enumerate(ids)}, means, whiteners, thresholds,
            np.array([b.level_low for b in bases], dtype=np.float64),
        )
        self._held_k = np.array([self._held(sid) for sid in ids], dtype=bool)
        ranges = np.array([[b.rpm_low, b.rpm_high] for b in bases], dtype=np.float64).reshape(len(ids), 2)
        self._rpm_k = ranges if np.isfinite(ranges).any() else None
        self._stack_s = time.monotonic() - t0
        if self._to_fit:  # the restacking a turn of fits caused is part of its time
            self._fit_resume = max(self._fit_resume, time.monotonic() + self.fit_wait * self._stack_s)

    def rest_levels(self) -> dict[str, float | None]:
        """Per stream with a baseline, the level (RMS) under which its machine is at rest, or None
        where its profile has none: sensor health takes an amplitude step from or to it for the
        machine stopping or starting."""
        return {sid: STOPPED_SHARE * b.level_low if math.isfinite(b.level_low) else None
                for sid, b in self.profile.streams.items()}

    def envelope_normals(self) -> dict[str, dict[str, float]]:
        """Per stream whose baseline learned its envelope evidence, the median per family (dB)."""
        return {sid: dict(b.envelope["median_db"]) for sid, b in self.profile.streams.items() if b.envelope}

    def fitted_here(self) -> dict[str, float]:
        """Per stream whose baseline was learned in this run, the capture time its learning ended
        (what came before it was learned from, not judged)."""
        return {sid: b.learned_to for sid, b in self.profile.streams.items() if sid in self._fitted_here}

    def watches(self, stream: str) -> bool:
        """Whether a baseline watches ``stream``: it has one (monitored on it, or at rest), or one
        is being learned for it."""
        return stream in self.profile.streams or stream in self._learning

    def _held(self, sid: str) -> bool:
        return sid in self._at_rest or sid in self._starting or sid in self._stopping

    def _rest(self, rows: list[Prediction], ks: np.ndarray, resting: np.ndarray, quiet: np.ndarray,
              below: np.ndarray) -> np.ndarray:
        """Windows of machines at rest (``STOPPED_SHARE`` of their learned level), of machines
        starting again (the ``startup_s`` after a rest) and of machines quieter than learned
        (``quiet``: under ``level_low`` (``below``) and deviating, or under ``QUIET_SHARE`` of it;
        stopping, for up to ``startup_s``): held, neither judged nor labelled (a
        label on a machine's rest, run-up or coast-down is no evidence of its condition: shown
        ``unknown``, the model's in ``model_label``), so that neither raises nor clears an alarm;
        the stream's state says "at rest" / "starting" / "stopping". The first rest of each stream
        is said once, and a stream that ran on quieter than learned past the hold once. Returns
        which rows are held. Only the rows of streams held before or quiet now are looked at one by
        one (``ks``: each row's baseline, ``_stacked``'s index)."""
        marked = self._held_k  # per baseline: held (kept as the loop below goes)
        marked[ks[quiet]] = True  # every row of a stream that is quiet now is looked at, in order
        held = resting.copy()
        for j in np.flatnonzero(marked[ks]).tolist():
            p, still = rows[j], bool(resting[j])
            sid = p.stream_id
            if still:
                self._starting.pop(sid, None)
                self._stopping.pop(sid, None)
                if sid not in self._at_rest:
                    self._at_rest.add(sid)
                    self.state[sid] = "at rest"
                    self.latest[sid] = math.nan
                    self._say_once(self._said_rest, p, (
                        f"at rest (the machine stopped?): its level {{level:.3g}} is under {STOPPED_SHARE:.0%} of "
                        "the quietest it was learned at ({low:.3g}); judged neither normal nor deviating, no alarm "
                        f"raised or cleared, until it runs again and {self.startup_s:g} s after (its start-up)"))
            else:
                if sid in self._at_rest:
                    self._at_rest.discard(sid)
                    self._starting[sid] = p.t_last
                began = self._starting.get(sid)
                if began is not None and p.t_last - began < self.startup_s:
                    held[j] = True
                    self.state[sid] = "starting"
                else:
                    if began is not None:
                        del self._starting[sid]
                        self.state[sid] = "monitoring"
                    held[j] = self._quiet(p, bool(quiet[j]), bool(below[j]))
            if held[j] and p.model_label is None:
                p.model_label, p.label = p.label, UNKNOWN
            marked[ks[j]] = self._held(sid)
        return held

    def _window_speeds(self, rows: list[Prediction]) -> np.ndarray:
        """(rows, 2): the shaft speed (rpm) each window's frames carried at its first and at its last
        sample (``speed_of``), NaN where none."""
        speed_of = self.speed_of
        assert speed_of is not None
        span = (self.profile.window - 1) / self.profile.sample_rate
        return np.array([[math.nan if (s := speed_of(p.stream_id, p.t_last - span)) is None else s,
                          math.nan if (s := speed_of(p.stream_id, p.t_last)) is None else s] for p in rows],
                        dtype=np.float64).reshape(len(rows), 2)

    def _not_turning(self, rows: list[Prediction], ks: np.ndarray, ends: np.ndarray, below: np.ndarray,
                     still: np.ndarray) -> np.ndarray:
        """``below`` (quieter than learned) less the windows whose frames say the shaft turned at the
        speeds its baseline was learned at (or faster) from their first to their last sample: the
        level of such a window is no rest, start-up or coast-down of the machine but its sensor's
        (come loose, failed, unplugged), so it is judged as any running window, and far from its
        normal it alarms. A stream with such a window at a standstill's level (``still``) says so
        once."""
        assert self._rpm_k is not None
        turning = (ends >= self._rpm_k[ks, :1] / (1 + SPEED_MARGIN)).all(axis=1)  # (NaN: unknown, not turning)
        if not np.count_nonzero(turning & below):
            return below
        for j in np.flatnonzero(turning & still).tolist():
            p = rows[j]
            self._say_once(self._said_sensor, p, (
                f"its level {{level:.3g}} is a standstill's (under {STOPPED_SHARE:.0%} of the quietest it was learned at, "
                f"{{low:.3g}}) while its frames say the shaft turns at {ends[j, 1]:.0f} rpm: the sensor come loose, "
                "failed or unplugged? judged as a running machine's windows (not held as a rest); check the sensor"))
        return below & ~turning

    def _speed_held(self, rows: list[Prediction], ks: np.ndarray, held: np.ndarray, ends: np.ndarray) -> np.ndarray:
        """``held`` and the windows at a shaft speed more than SPEED_MARGIN outside the speeds their
        baseline was learned at (``speed_of`` at their first and at their last sample: a window
        over a change of speed is of both): an operating point it never saw (another set point, a
        run-up or a coast-down), shown ``unknown`` (the model's in ``model_label``), neither judged
        nor alarmed on; the stream's state says "other speed", and the first time is said once.
        Back within them, the stream is judged at once."""
        assert self._rpm_k is not None
        lo, hi = self._rpm_k[ks, :1], self._rpm_k[ks, 1:]  # (NaN where a baseline learned no speed: never off)
        off = ((ends < lo / (1 + SPEED_MARGIN)) | (ends > hi * (1 + SPEED_MARGIN))).any(axis=1) & ~held
        speeds = np.where(np.isfinite(ends[:, 1]), ends[:, 1], ends[:, 0])
        lo, hi = lo[:, 0], hi[:, 0]
        if not off.any() and not self._off_speed:
            return held
        for j, p in enumerate(rows):
            sid = p.stream_id
            if off[j]:
                if p.model_label is None:
                    p.model_label, p.label = p.label, UNKNOWN
                self._off_speed.add(sid)
                self.state[sid] = "other speed"
                self.latest[sid] = math.nan  # the dashboard shows the state, not the last anomaly judged
                self._say_once(self._said_speed, p, (
                    f"runs at {speeds[j]:.0f} rpm (its frames say), outside the speeds its baseline was learned "
                    f"at ({lo[j]:.0f}-{hi[j]:.0f} rpm): an operating point it never saw, shown unknown and not "
                    "judged or alarmed on while it lasts; learn the baseline over this speed too to judge it"))
            elif sid in self._off_speed:
                self._off_speed.discard(sid)
                if self.state.get(sid) == "other speed":
                    self.state[sid] = "monitoring"
        return held | off

    def _quiet(self, p: Prediction, quiet: bool, below: bool) -> bool:
        """Whether a running window of a stream neither at rest nor starting is held as stopping:
        ``quiet`` for under ``startup_s`` since the stream's level fell under its learned range (a
        quiet spell that ends in a rest is the machine's coast-down). Past that it is judged, said
        once; a window under the range but like its normal is judged without ending the spell;
        back in its learned range, the stream is judged again at once."""
        sid = p.stream_id
        if not below:
            if self._stopping.pop(sid, None) is not None:
                self.state[sid] = "monitoring"
            return False
        if not quiet:
            return False
        since = self._stopping.setdefault(sid, p.t_last)
        if p.t_last - since < self.startup_s:
            self.state[sid] = "stopping"
            return True
        if self.state.get(sid) == "stopping":
            self.state[sid] = "monitoring"
            self._say_once(self._said_quiet, p, (
                f"running quieter than it was learned for {self.startup_s:g} s without coming to rest (level "
                "{level:.3g}, under the quietest it was learned at, {low:.3g}): judged again; if this is one of "
                "its normal operating states, learn the baseline with it"))
        return False

    def _say_once(self, said: set[str], p: Prediction, line: str) -> None:
        """A note on ``p``'s stream, ``line`` with its window's ``{level}`` and learned ``{low}``
        filled in, unless ``said`` holds the stream already."""
        if p.stream_id not in said:
            said.add(p.stream_id)
            self.notes.append((p.stream_id, line.format(level=p.level, low=self.profile.streams[p.stream_id].level_low)))

    def _learn(self, sid: str, group: list[Prediction]) -> None:
        if self.learn_s is None:
            if sid not in self._warned:
                self._warned.add(sid)
                self.state[sid] = "no baseline"
                self.notes.append((sid, "no baseline for this stream in the profile: monitored on its labels only "
                                        "(learn one, or map the stream with ?stream=ID on the source)"))
            return
        if sid in self._to_fit:
            return  # waiting for its fit
        so_far = self._learning.get(sid)
        # (popped with a default: the learnings' writer thread drops one the file no longer holds)
        taken = self._resumed.pop(sid, None) if so_far is None else None
        if taken is not None:
            try:
                self._adopt_learning(sid, taken, where=f"in {self.learning_to}", whence="before the restart")
            except ConfigError as exc:
                self.notes.append((sid, str(exc)))
            so_far = self._learning.get(sid)
        if so_far is None:
            if self.say_unsaved and self.save_to is None:
                self.say_unsaved = False
                self.notes.append(("*", "the baselines learned in this run are not saved: give --baseline FILE with "
                                        "--learn to keep them over a restart"))
            self.notes.append((sid, f"learning the baseline for {_span(self.learn_s)}"))
            so_far = self._learning[sid] = _Learning(len(group[0].features), size=self._first_size(),
                                                     keep=keep_of(sid))
        speed_of = self.speed_of
        for i, p in enumerate(group):
            rpm = speed_of(sid, p.t_last) if speed_of is not None else None
            if rpm is not None and rpm < STANDSTILL_RPM:  # a machine at rest is not its normal
                if sid not in self._said_still:
                    self._said_still.add(sid)
                    self.notes.append((sid, f"windows of a shaft at a standstill ({rpm:.0f} rpm, its frames say) are "
                                            "not learned from: the learning lasts that much longer"))
                continue
            if p.health != "OK":  # a flat line, a clipping or a dropout is not the machine's normal
                if sid not in self.left_out:
                    self.notes.append((sid, "windows from a sensor in CHECK_SENSOR are not learned from"))
                self.left_out[sid] = self.left_out.get(sid, 0) + 1
                continue  # the learning lasts that much longer: learn_s of windows it can learn from
            so_far.add(p.features, p.t_last, p.level, rpm)
            counted, faults = self._labelled.get(sid) or (0, {})
            if p.label in self.fault_labels:
                faults[p.label] = faults.get(p.label, 0) + 1
            self._labelled[sid] = (counted + 1, faults)
            if self._learned_s(so_far) >= self.learn_s:
                need = min_windows(so_far.feats.shape[1] + 1)
                if so_far.n < need:  # a span too short for a stable baseline: learning goes on
                    if sid not in self._extended:
                        self._extended.add(sid)
                        self.notes.append((sid, f"{_span(self.learn_s)} gave {so_far.n} windows; a baseline over "
                                                f"{so_far.feats.shape[1]} features and the level needs {need}: "
                                                "learning on until then"))
                    continue
                if self._to_fit or time.monotonic() < self._fit_resume:
                    # its span learned: its windows until its fit are neither judged nor learned
                    # (the arrays of all the streams waiting would grow in the same batches)
                    self._to_fit[sid] = None
                    self.state[sid] = "fitting"
                    return
                self._fit_turn([sid])
                if sid in self.profile.streams and i + 1 < len(group):
                    self.apply(group[i + 1 :])  # the rest of a large batch is scored, not learned
                return
        if math.isinf(self.learn_s) or not so_far.n:
            self.state[sid] = f"learning {so_far.seen} windows"
        else:
            span = self._learned_s(so_far)
            share = min(span / self.learn_s, so_far.n / min_windows(so_far.feats.shape[1] + 1))
            self.state[sid] = f"learning {max(0, min(99, int(100 * share)))}%"

    def _first_size(self) -> int:
        """The room a stream's learning starts with: all it keeps (``keep_of``; where its span is
        known, no more than that span's windows), so that no array grows while it learns (the
        arrays of streams started together grew in the same batches, ~0.1 s of the output thread
        at 2,048 streams; a learning of the whole run's, 54 ms at 256 streams as they reached 4,096
        windows). Pages are touched as windows come, not at once."""
        if math.isinf(self.learn_s):
            return LEARN_KEEP
        return max(64, min(LEARN_KEEP, math.ceil(self.learn_s * self.profile.sample_rate / self.hop) + 2))

    def _learned_s(self, so_far: _Learning) -> float:
        """The signal a stream's learning windows span, in seconds: counted in windows, not read
        off their capture times, which a step of a clock moves (a step forward ended the learning
        at once, a step back made it an hour longer) and which run on through a silence."""
        return (so_far.seen - 1) * self.hop / self.profile.sample_rate

    def _fit_turn(self, sids: list[str], least_s: float = 0.0) -> None:
        """Streams whose learning is done fitted in order, until the turn has lasted ``least_s``
        (the waiting streams' turn: as long as the last restacking of the baselines took, so that
        restacking after each fit does not cost more than the fits at many streams), at least
        one; the next turn put off ``fit_wait`` times this one."""
        t0 = time.monotonic()
        for sid in sids:
            self._to_fit.pop(sid, None)
            self._fit(sid)
            if time.monotonic() - t0 >= least_s:
                break
        t1 = time.monotonic()
        self._fit_resume = t1 + self.fit_wait * (t1 - t0)

    def _fit(self, sid: str) -> None:
        so_far = self._learning.pop(sid, None)
        self._extended.discard(sid)
        try:
            if so_far is None or not so_far.n:  # every window came from a sensor in CHECK_SENSOR
                raise ConfigError("every window came from a sensor in CHECK_SENSOR; check the sensor, then learn again")
            span = -(-self.profile.window // (self.hop * so_far.stride))  # kept windows that overlap one
            feats, levels = so_far.feats[: so_far.n], so_far.levels[: so_far.n]
            # (none for the windows of a learning an older version carried over: its features alone)
            level = bool(np.isfinite(levels).all())
            base = fit_stream(with_level(feats, levels) if level else feats, so_far.times[: so_far.n], span=span,
                              level=level)
            base.level_low = so_far.level_low()
            base.rpm_low, base.rpm_high = so_far.rpm_lo, so_far.rpm_hi
            if self.envelope_normal is not None:
                base.envelope = self.envelope_normal(sid, base.learned_from, base.learned_to)
        except ConfigError as exc:
            self.state[sid] = "no baseline"
            self.notes.append((sid, f"baseline not learned: {exc}"))
            return
        self.profile.streams[sid] = base
        self._fitted_here.add(sid)
        self._stacked = None
        self.changes += 1
        self.state[sid] = "monitoring"
        self._dirty = self.save_to is not None
        self._dropped.discard(sid)
        skipped = self.left_out.get(sid, 0)
        self.notes.append((sid, f"baseline learned on {base.windows} windows"
                                + (f" (one in {so_far.stride} of {so_far.seen})" if so_far.stride > 1 else "")
                                + (f" ({skipped} from a sensor in CHECK_SENSOR left out)" if skipped else "")
                                + (f", in {1 + len(base.states)} operating states" if base.states else "")
                                + "; monitoring for deviations"))
        counted, faults = self._labelled.pop(sid, None) or (0, {})
        share = sum(faults.values()) / counted if counted else 0.0
        if share >= FAULT_SHARE_SAID:
            most = max(faults, key=faults.__getitem__)
            self.notes.append((sid, f"the model labelled {100 * share:.0f} % of the windows learned from a fault "
                                    f"({most} most): if the machine was not healthy while learning, its baseline takes "
                                    "that for normal, and a fault label on windows it finds as learned is not alarmed "
                                    "on; learn it again once it is (on a machine unlike the model's training data "
                                    "such labels can also be the model's unfamiliarity with it)"))

    def save(self, *, final: bool = False) -> None:
        """Save the profile to ``save_to`` if a baseline was learned (or forgotten) since the last
        save: at most once a second, or now with ``final``. A failure (a full disk, a folder
        gone) is said once and counted; the baselines stay in use, and the save is tried again
        after ``SAVE_RETRY_S`` and at the end."""
        if final and self._to_fit:  # their learning is done: fitted, not left as learnings
            self._fit_turn(list(self._to_fit), math.inf)
        if final and self.learning_to is not None and (self._learning or self._resumed or self._learning_on_disk):
            self.save_learning(final=True)
        if not self._dirty or self.save_to is None:
            return
        now = time.monotonic()
        if not final and now < self._next_save:
            return
        try:
            self._merged().save(self.save_to, make_folder=False)  # a folder gone (a share unmounted) is not made anew
        except OSError as exc:
            self.save_failures += 1
            self._next_save = now + SAVE_RETRY_S
            if self.save_failures == 1:
                self.notes.append(("*", f"cannot save the learned baselines to {self.save_to} "
                                        f"({exc.strerror or exc}); they are in use for this run, and the save is "
                                        "tried again: free space there or check the folder"))
            return
        self._dirty = False
        self._next_save = now + 1.0
        self.saves += 1
        if self.saves == 1:
            self.notes.append(("*", f"learned baselines saved to {self.save_to}: a restart with --baseline "
                                    f"{self.save_to} monitors those streams at once"))

    def resume(self) -> None:
        """Takes up the learnings in progress an earlier run saved beside the profile
        (``learning_path``): each stream learns on from its windows when it comes, instead of
        over. A file that is damaged or of another model, rate, window or hop is said in one
        line and left to be written over; the streams learn anew. (Where the learnings are
        ``kept_elsewhere``, only as it says: a cluster host's own file of its last run, also read by
        the hosts its streams went to.)"""
        if self.learning_to is None or self.learn_s is None or (self.save_to is None and not self._take_up):
            return
        path = self.learning_to
        if path.is_dir():  # nothing to take up, nor to write over: said, and the saves fail until it moves
            self.notes.append(("*", f"{path} is a folder, where the baselines being learned are kept over a restart; "
                                    "move it away to keep them (the streams learn meanwhile)"))
            return
        try:
            head, learnings = read_learnings(path)
        except FileNotFoundError:
            return
        except ConfigError as exc:
            self.notes.append(("*", f"{exc}; the streams learn anew and the file is written over"))
            return
        diff = self._setup_diff(head)
        if diff:
            self.notes.append(("*", f"the baseline learnings in {path} are of another set-up ({diff[:300]}); "
                                    "the streams learn anew and the file is written over"))
            return
        # the streams learned and saved before the restart are monitored, not learned on
        self._resumed = {sid: d for sid, d in learnings.items() if sid not in self.profile.streams}
        self._resumed_at = time.monotonic()
        self._learning_on_disk = True
        if self._resumed:
            self.notes.append(("*", f"{len(self._resumed)} baseline learning(s) in progress taken up from {path}"))

    def save_learning(self, *, final: bool = False) -> None:
        """Saves the learnings in progress (and those taken up from the last run whose stream
        has not come yet) to ``learning_to``; removes the file once none is left. Periodically
        (``LEARNING_SAVE_S``, longer where a save takes long), or now with ``final``. The caller's
        thread (the output thread) only copies the arrays; a thread of its own writes them (tens
        of MB for dozens of streams: the output thread held up that long would hold the results
        back). A failure is said once and counted; the learning goes on."""
        if self.learning_to is None:
            return
        now = time.monotonic()
        writer = self._writer
        if not final and ((now < self._next_learning_save and not self._learning_due)
                          or (writer is not None and writer.is_alive())):
            return
        self._next_learning_save = now + LEARNING_SAVE_S  # moved on by the write, by its duration
        self._learning_due = False
        if self._take_up and self._resumed and now - self._resumed_at >= max(self.learn_s, RESUMED_LEAST_S):
            # a cluster host's streams that went elsewhere while it was down: the host that took
            # one over read this file then, and by now has learned its span there
            self.notes.append(("*", f"{len(self._resumed)} baseline learning(s) taken up from the run before were not "
                                    f"claimed by their streams within {_span(max(self.learn_s, RESUMED_LEAST_S))}: "
                                    "they are learned elsewhere, and no longer kept here"))
            self._resumed = {}
        snapshot = self.learning_snapshot()
        if not final:
            self._writer = threading.Thread(target=self._write_learning, args=(self.learning_to, *snapshot),
                                            name="drsn-baseline-learnings", daemon=True)
            self._writer.start()
            return
        if writer is not None:
            writer.join()
        self._write_learning(self.learning_to, *snapshot)

    def learning_snapshot(self) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]], set[str]]:
        """The learnings in progress as ``save_learning`` writes them, ``read_learnings``' dicts:
        those learning here (copies: they learn on meanwhile), those taken up from the last run
        whose stream has not come yet, and the streams to leave out of the file (learned here,
        or forgotten)."""
        active = {sid: self._learning_dict(sid, so_far) for sid, so_far in list(self._learning.items()) if so_far.n}
        waiting = dict(self._resumed)  # as read from the file, never written to
        return active, waiting, set(self.profile.streams) | self._forgot_learning

    def _setup(self) -> dict[str, Any]:
        """What a learning file's windows must be of to be learned on here (its header's)."""
        p = self.profile
        return {"model": p.model, "model_digest": p.model_digest, "sample_rate": int(p.sample_rate),
                "window": int(p.window), "hop": self.hop}

    def _setup_diff(self, head: dict[str, Any]) -> str:
        """How a learning file's header differs from ``_setup`` ("" where it does not)."""
        return ", ".join(f"{k} {head.get(k)!r} (here {v!r})" for k, v in self._setup().items() if head.get(k) != v)

    def _write_learning(self, path: Path, active: dict[str, dict[str, Any]], waiting: dict[str, dict[str, Any]],
                        leave_out: set[str]) -> None:
        """Writes the learnings to ``path``. Where it is beside a profile (``save_to``), two monitors
        may share it as they share the profile: the other's learnings in the file now are kept,
        and for a stream waiting here, the file's (as new or newer; none, where the file has none
        any more)."""
        t0 = time.monotonic()
        try:
            entries = dict(waiting)
            if self.save_to is not None:
                try:
                    head, disk = read_learnings(path)
                    ours = not self._setup_diff(head)
                except FileNotFoundError:
                    disk, ours = {}, True
                except ConfigError:  # damaged: written over, with what this monitor has
                    disk, ours = {}, False
                if ours:  # (else damaged, or of another set-up: written over with this monitor's)
                    # a waiting stream the file no longer holds was learned (or retired) by the
                    # monitor it belongs to, or the file removed: not written back, not taken up
                    for sid in set(waiting) - set(disk):
                        entries.pop(sid, None)
                        self._resumed.pop(sid, None)
                    entries.update(disk)
            entries.update(active)
            for sid in leave_out:
                entries.pop(sid, None)
            if not entries:
                if not path.is_dir():  # (a folder in its place: nothing of ours to remove)
                    path.unlink(missing_ok=True)
            else:
                rows, arrays = [], {}
                for k, (sid, d) in enumerate(entries.items()):
                    rows.append({"id": sid, "seen": d["seen"], "stride": d["stride"], "left_out": d["left_out"],
                                 **({"labelled": d["labelled"]} if d.get("labelled") is not None else {}),
                                 **({"rpm": d["rpm"]} if d.get("rpm") is not None else {})})
                    arrays[f"features{k}"], arrays[f"times{k}"] = d["features"], d["times"]
                    if d.get("levels") is not None:
                        arrays[f"levels{k}"] = d["levels"]
                head = {"format": LEARNING_FORMAT, "version": 1, "level": "ac", **self._setup(), "streams": rows}
                meta = np.frombuffer(json.dumps(head).encode("utf-8"), dtype=np.uint8)
                # written into the file as it is made: no copy of tens of MB in memory first
                write_atomic(path, lambda f: np.savez(f, meta=meta, **arrays), make_folder=False)
        except Exception as exc:  # noqa: BLE001 - on the save's own thread: counted and said, never a traceback
            self.learning_save_failures += 1
            self._next_learning_save = t0 + max(SAVE_RETRY_S, LEARNING_SAVE_S)
            if self.learning_save_failures == 1:
                why = exc.strerror if isinstance(exc, OSError) and exc.strerror else f"{type(exc).__name__}: {exc}"
                fix = "move the folder at that path away" if path.is_dir() else "free space there or check the folder"
                self.notes.append(("*", f"cannot save the baselines being learned to {path} "
                                        f"({why}); learning goes on, and the save is tried again: {fix}"))
            return
        self._forgot_learning.difference_update(leave_out)  # out of the file now
        self._learning_on_disk = bool(entries)
        self.learning_saves += 1
        self._next_learning_save = t0 + max(LEARNING_SAVE_S, LEARNING_SAVE_SHARE * (time.monotonic() - t0))

    def _merged(self) -> Profile:
        """The profile to write: this stage's baselines, and those the file holds now for other
        streams (another monitor saving its own streams in the same file: each write keeps the
        other's, where the file is of the same model, rate and window), less the streams this
        stage forgot."""
        assert self.save_to is not None
        try:
            disk = Profile.load(self.save_to)
        except ConfigError:  # none yet, or not one this stage could have written: written over
            return self.profile
        p = self.profile
        if (disk.model, disk.model_digest, disk.sample_rate, disk.window) != (p.model, p.model_digest,
                                                                              p.sample_rate, p.window):
            return p
        others = {sid: b for sid, b in disk.streams.items() if sid not in p.streams and sid not in self._dropped}
        if not others:
            return p
        return Profile(p.model, p.model_digest, p.sample_rate, p.window, p.hop, {**others, **p.streams},
                       p.created, p.settings)

    def fit(self) -> Profile:
        """Fits every stream still learning (the end of ``drsn-stream baseline learn``)."""
        self._to_fit.clear()
        for sid in list(self._learning):
            self._fit(sid)
        return self.profile

    def views(self) -> dict[str, tuple[str, float, tuple[float, ...]]]:
        """{stream: (state, latest anomaly or NaN, recent anomalies)} for the dashboard."""
        ids = set(self.state) | set(self.latest)
        return {sid: (self.state.get(sid, "monitoring"), self.latest.get(sid, math.nan),
                      tuple(self.history.get(sid, ()))) for sid in ids}


def _span(seconds: float) -> str:
    if math.isinf(seconds):
        return "the whole run"
    return f"{seconds / 60:.0f} min" if seconds >= 120 else f"{seconds:.0f} s"


__all__ = ["LEARN_KEEP", "BaselineStage", "learning_path", "read_learnings", "Profile", "StreamBaseline", "fit_stream", "keep_of", "min_windows", "parse_duration", "weights_digest", "with_level"]
