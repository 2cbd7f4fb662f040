"""Decisions: smoothed labels per stream and an alarm state machine (NORMAL / ALERT / DANGER).

Integration (the pipeline thread owns the engine; the dashboard thread may read and acknowledge)::

    cfg = DecisionConfig.for_labels(meta.labels)            # or DecisionConfig.from_toml(path)
    decisions = DecisionEngine(meta.labels, cfg)
    for pred in predictions:                                # drsn_stream.types.Prediction
        events += decisions.update(pred, healthy=health.healthy(pred.stream_id))
    decisions.state("sim/m0")                               # -> StreamDecision (frozen)
    events += decisions.acknowledge()                       # all streams, or acknowledge("sim/m0")

How one window moves the state machine:

1. Smoothing. ``majority``: the label most often on top over the last ``window_count`` windows
   (ties go to the higher mean probability), its confidence is that label's mean probability
   over those windows. ``ema``: an exponential average of the probability vectors
   (``ema_alpha`` weight for the newest), label = its argmax.
2. The level the window supports: the label's level from ``alert_labels`` / ``danger_labels``
   (fnmatch patterns), raised to DANGER when the confidence is at least ``danger_confidence``
   or when the alarm episode has lasted ``danger_after_s`` seconds. A rise needs the
   confidence to reach ``enter_confidence``; staying up needs only ``leave_confidence``
   (hysteresis).
3. Debounce. A higher level takes ``set_windows`` consecutive supporting windows; a lower one
   ``clear_windows`` consecutive windows.
4. Latching (optional). The shown level stays at the highest unacknowledged level until
   ``acknowledge`` is called; an alarm acknowledged while active clears by itself later.

A window from an unhealthy sensor (``healthy=False``) or with non-finite scores is not evidence:
it neither raises nor clears an alarm, the smoothing history is emptied (so that stale confident
labels do not come back), and the stream shows label ``"?"`` with confidence 0. A window whose
label the model cannot back (``Prediction.label == "unknown"``, models/ood.py) is no evidence for
a label either: the history is emptied the same way and the stream shows ``unknown``; only its
anomaly score (below) can move the level.

Anomaly (with a baseline, ``Prediction.anomaly``; 1.0 = the learned threshold): the window
supports ALERT when the score reaches ``anomaly_enter`` (staying up needs only
``anomaly_leave``: hysteresis) and DANGER when it reaches ``anomaly_danger`` or when the episode
has lasted ``danger_after_s``; the same debounce and latching apply.

Envelope (with a bearing configured, ``Prediction.envelope_db``: dB over what its fault type needs
to be named, held over the stream's last three 1-s blocks, monitor/envelope.py): the window
supports ALERT when it reaches ``envelope_enter_db`` (staying up: ``envelope_leave_db``) and
DANGER at ``envelope_danger_db`` or by duration. A window whose label is refused (or held by its
baseline: a rest, a speed it never learned) steps the machine where the envelope supports an
alarm; its falling envelope clears nothing by itself (the machine may have stopped).

The level a window supports is the highest of what its label, its anomaly and its envelope support.

Every change of the shown level returns an ``Event(type="alarm", stream_id, time,
data={"from", "to", "label", "confidence"})``; ``time`` is the window's capture time (seconds).
"""

from __future__ import annotations

import fnmatch
import math
import threading
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from enum import IntEnum
from pathlib import Path
from typing import Any

import numpy as np

from drsn_stream import jit
from drsn_stream.clock import STEP_GRACE_S, STEP_S, WallSteps
from drsn_stream.config import from_table, toml_file
from drsn_stream.errors import ConfigError, did_you_mean
from drsn_stream.models.ood import UNKNOWN as REFUSED_LABEL
from drsn_stream.monitor import decision_jit
from drsn_stream.types import Event, Prediction, batch_columns

UNKNOWN_LABEL = "?"
# every stream keeps window_count windows' scores (a float64 per label): 256 windows of 10 labels
# are 20 kB per stream, 210 MB at 10,240 streams
MAX_WINDOW_COUNT = 256
MAX_DELAY_WINDOWS = 1_000_000  # set/clear delays: the compiled decisions count them in int64
_LEVELS_KEEP = 32  # input levels per stream kept for the sparkline


class Level(IntEnum):
    """Alarm level; ordered, so ``max`` gives the worse one."""

    NORMAL = 0
    ALERT = 1
    DANGER = 2


@dataclass(frozen=True)
class DecisionConfig:
    """Smoothing and alarm settings (one table of a TOML file, keys as the field names).

    Attributes:
        smoothing: "majority" (vote over the last ``window_count`` windows) or "ema".
        window_count: windows in the majority vote (>= 1).
        ema_alpha: weight of the newest window in the exponential average (0 < a <= 1).
        alert_labels / danger_labels: fnmatch patterns of labels that raise ALERT / DANGER.
        danger_after_s: an alarm episode that lasts this long (seconds) becomes DANGER; None: never.
        danger_confidence: a fault label at or above this smoothed confidence is DANGER; None: never.
        set_windows: consecutive windows needed to raise the level.
        clear_windows: consecutive windows needed to lower it.
        enter_confidence: smoothed confidence needed to raise the level.
        leave_confidence: smoothed confidence below which a raised level starts to clear.
        latching: keep the highest level until acknowledged.
        noise_alpha: weight of the newest window in the noise-index average.
        anomaly_enter / anomaly_leave: anomaly score that raises ALERT / below which it clears.
        anomaly_danger: anomaly score that raises DANGER at once; None: only by duration.
        envelope_enter_db / envelope_leave_db: the envelope evidence's rise (``Prediction.envelope_db``:
            how far one fault family rose over what it needs to be named, dB, on each of the
            stream's last three blocks) that raises ALERT / below which it clears; None (or inf,
            in TOML): the envelope raises no alarm.
        envelope_danger_db: the rise that raises DANGER at once; None: only by duration.
    """

    smoothing: str = "majority"
    window_count: int = 5
    ema_alpha: float = 0.3
    alert_labels: tuple[str, ...] = ()
    danger_labels: tuple[str, ...] = ()
    danger_after_s: float | None = None
    danger_confidence: float | None = None
    set_windows: int = 3
    clear_windows: int = 5
    enter_confidence: float = 0.6
    leave_confidence: float = 0.4
    latching: bool = False
    noise_alpha: float = 0.2
    anomaly_enter: float = 1.0
    anomaly_leave: float = 0.8
    # CWRU fault windows are 7 to 65 times the threshold of a baseline learned on normal_0
    # (docs/own-machine.md); 4 marks a deviation far beyond the healthy spread.
    anomaly_danger: float | None = 4.0
    # 3 dB over what the type needs, on three blocks in a row (about 3 s): twice the power that
    # names it, held; a healthy recording's own lines stay under it (docs/own-machine.md)
    envelope_enter_db: float | None = 3.0
    envelope_leave_db: float = 0.0
    envelope_danger_db: float | None = None

    def __post_init__(self) -> None:
        # Strings from TOML arrays arrive as lists; store tuples so the config stays hashable.
        object.__setattr__(self, "alert_labels", _patterns(self.alert_labels, "alert_labels"))
        object.__setattr__(self, "danger_labels", _patterns(self.danger_labels, "danger_labels"))
        problems = []
        if self.smoothing not in ("majority", "ema"):
            problems.append(f"smoothing must be 'majority' or 'ema', not {self.smoothing!r}")
        if not (isinstance(self.window_count, int) and 1 <= self.window_count <= MAX_WINDOW_COUNT):
            problems.append(f"window_count must be an integer from 1 to {MAX_WINDOW_COUNT}, not {self.window_count!r} "
                            "(every stream keeps that many windows' scores; for a longer memory use smoothing = \"ema\")")
        if not 0.0 < float(self.ema_alpha) <= 1.0:
            problems.append(f"ema_alpha must be in (0, 1], not {self.ema_alpha!r}")
        if not 0.0 < float(self.noise_alpha) <= 1.0:
            problems.append(f"noise_alpha must be in (0, 1], not {self.noise_alpha!r}")
        for name in ("set_windows", "clear_windows"):
            value = getattr(self, name)
            if not (isinstance(value, int) and 1 <= value <= MAX_DELAY_WINDOWS):
                problems.append(f"{name} must be an integer from 1 to {MAX_DELAY_WINDOWS:,}, not {value!r}")
        if not 0.0 <= self.leave_confidence <= self.enter_confidence <= 1.0:
            problems.append(
                "need 0 <= leave_confidence <= enter_confidence <= 1 "
                f"(got leave {self.leave_confidence}, enter {self.enter_confidence})"
            )
        if self.danger_after_s is not None and not self.danger_after_s >= 0:  # NaN too (inf: never)
            problems.append(f"danger_after_s must be >= 0 seconds, not {self.danger_after_s!r}")
        if not 0.0 < self.anomaly_leave <= self.anomaly_enter:
            problems.append(f"need 0 < anomaly_leave <= anomaly_enter (got {self.anomaly_leave}, {self.anomaly_enter})")
        if self.anomaly_danger is not None and not self.anomaly_danger >= self.anomaly_enter:
            problems.append(f"anomaly_danger must be >= anomaly_enter, not {self.anomaly_danger!r}")
        if self.envelope_enter_db is not None and not self.envelope_leave_db <= self.envelope_enter_db:  # NaN too
            problems.append(f"need envelope_leave_db <= envelope_enter_db, both dB (got {self.envelope_leave_db}, "
                            f"{self.envelope_enter_db})")
        if not math.isfinite(self.envelope_leave_db):
            problems.append(f"envelope_leave_db must be a number of dB, not {self.envelope_leave_db!r}")
        if self.envelope_danger_db is not None and not (
                self.envelope_enter_db is not None and self.envelope_danger_db >= self.envelope_enter_db):
            problems.append(f"envelope_danger_db must be >= envelope_enter_db, not {self.envelope_danger_db!r}")
        if self.danger_confidence is not None and not 0.0 <= self.danger_confidence <= 1.0:
            problems.append(f"danger_confidence must be in [0, 1], not {self.danger_confidence!r}")
        if problems:
            raise ConfigError("decision config: " + "; ".join(problems))

    @property
    def has_alarms(self) -> bool:
        return bool(self.alert_labels or self.danger_labels)

    @classmethod
    def from_dict(cls, table: Mapping[str, Any]) -> DecisionConfig:
        """Build from a TOML table; an unknown key is an error that lists the valid ones."""
        return from_table(cls, dict(table), "[decision]")

    @classmethod
    def from_toml(cls, path: str | Path, *, table: str = "decision") -> DecisionConfig:
        """Load the ``[table]`` of a TOML file (the whole file when ``table`` is empty)."""
        path = Path(path)
        try:
            data = toml_file(path)
        except OSError as exc:
            raise ConfigError(f"cannot read decision config {path} ({exc.strerror or exc}); check the path") from exc
        if table:
            if table not in data:
                raise ConfigError(f"{path} has no [{table}] table; add one (see configs/alarms-bearing.toml)")
            data = data[table]
        return cls.from_dict(data)

    @classmethod
    def for_labels(cls, labels: Sequence[str], **overrides: Any) -> DecisionConfig:
        """Defaults that fit a model's labels.

        - Condition models (a ``normal`` label among others, e.g. ``bearing-cwru``): every other
          label is ALERT; DANGER once a fault has been held for 30 s. A DANGER-by-confidence rule
          (``danger_confidence``) is available but off by default: the noise-trained CWRU model is
          above 0.99 on most fault windows, so such a rule would turn every ALERT into DANGER at once.
        - Speech models (digit labels and background labels starting with ``_``) and anything
          else: no alarms unless configured.
        """
        labels = list(labels)
        base: dict[str, Any] = {}
        if "normal" in labels and len(labels) > 1:
            base = {
                "alert_labels": tuple(lab for lab in labels if lab != "normal"),
                "danger_after_s": 30.0,
            }
        base.update(overrides)
        return cls.from_dict(base)


_FROM_LABELS = ("alert_labels", "danger_after_s")  # the keys for_labels fills from a model's labels


@dataclass(frozen=True)
class DecisionTable:
    """The ``[decision]`` table before the model is known (a run config holds this one).

    ``settings`` is the table read and checked as a ``DecisionConfig``; ``given`` names the keys
    the user set. ``resolve(labels)`` gives the model's config: the keys left out that depend on
    the labels (``alert_labels``, ``danger_after_s``) take ``for_labels``' defaults.
    """

    settings: DecisionConfig = field(default_factory=DecisionConfig)
    given: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        names = {f.name for f in fields(DecisionConfig)}
        object.__setattr__(self, "given", frozenset(self.given))
        if not self.given <= names:
            unknown = sorted(self.given - names)
            raise ConfigError(f"[decision]: unknown key(s) {', '.join(unknown)}{did_you_mean(unknown, names)}; "
                              f"valid keys: {', '.join(sorted(names))}")

    @classmethod
    def from_table(cls, table: Mapping[str, Any], where: str = "[decision]") -> DecisionTable:
        return cls(from_table(DecisionConfig, table, where), frozenset(table))

    def table(self) -> dict[str, Any]:
        """The keys given, as the TOML table that gives them."""
        return {name: getattr(self.settings, name) for name in sorted(self.given)}

    def resolve(self, labels: Sequence[str]) -> DecisionConfig:
        return DecisionConfig.for_labels(labels, **self.table())

    @property
    def from_labels(self) -> tuple[str, ...]:
        """The keys the model's labels decide (those not given)."""
        return tuple(k for k in _FROM_LABELS if k not in self.given)


def _patterns(value: Any, name: str) -> tuple[str, ...]:
    if isinstance(value, str):
        return (value,)
    try:
        items = tuple(value)
    except TypeError:
        raise ConfigError(
            f"decision config: {name} must be a list of label patterns, not {value!r}"
        ) from None
    if not all(isinstance(item, str) for item in items):
        raise ConfigError(f"decision config: {name} must hold strings (label patterns), got {items!r}")
    return items


@dataclass(frozen=True)
class StreamDecision:
    """What the decision engine shows for one stream (a copy; safe to hand to other threads).

    Attributes:
        label: smoothed label, or "?" while the sensor is unhealthy or nothing is known yet.
        confidence: smoothed probability of ``label`` (0..1; 0 while unhealthy).
        level: shown alarm level (latching included).
        since: capture time (s) the shown level began; None before the first window.
        held_s: seconds the shown level has been held, up to the latest window.
        top3: ((label, probability), ...) of the smoothed scores, best first; () while unhealthy.
        noise_index: averaged DRSN noise index (0..1).
        latched: the shown level is held only by latching (the condition itself has cleared).
        unacknowledged: an alarm level was reached that has not been acknowledged.
        healthy: the latest window came from a healthy sensor.
        windows: windows seen for this stream.
        last_time: capture time (s) of the latest window.
        levels: recent input levels (RMS about the mean, before normalization), oldest first.
        anomaly: the latest window's anomaly score (None without a baseline).
    """

    stream_id: str
    label: str = UNKNOWN_LABEL
    confidence: float = 0.0
    level: Level = Level.NORMAL
    since: float | None = None
    held_s: float = 0.0
    top3: tuple[tuple[str, float], ...] = ()
    noise_index: float = 0.0
    latched: bool = False
    unacknowledged: bool = False
    healthy: bool = True
    windows: int = 0
    last_time: float | None = None
    levels: tuple[float, ...] = ()
    anomaly: float | None = None


@dataclass
class _Stream:
    """A stream's whole decision state as ``DecisionEngine.export_state`` gives it and
    ``restore_state`` takes it (cluster checkpoints keep it); the engine itself keeps it as a row
    of its ``_Table``."""

    history: deque[tuple[np.ndarray, int]]  # (probs, argmax) of the last k healthy windows
    psum: np.ndarray | None = None
    votes: list[int] = field(default_factory=list)
    best: int = 0
    ema: np.ndarray | None = None
    label: str = UNKNOWN_LABEL
    confidence: float = 0.0
    probs: np.ndarray | None = None
    cond: Level = Level.NORMAL  # debounced condition, before latching
    peak: Level = Level.NORMAL  # highest level reached and not yet acknowledged
    shown: Level = Level.NORMAL
    since: float | None = None
    episode_since: float | None = None  # start of the current alarm episode (cond > NORMAL)
    pending: Level = Level.NORMAL
    pending_count: int = 0
    healthy: bool = True
    noise: float = 0.0
    windows: int = 0
    last_time: float | None = None
    levels: deque[float] = field(default_factory=lambda: deque(maxlen=_LEVELS_KEEP))
    anomaly: float | None = None
    refused: bool = False  # the latest window's label was refused (unknown)


# The columns of ``_Table``, in the order ``decision_jit``'s kernel takes them: name, the shape of
# one stream's entry ("k": the vote's window count, "c": the labels), dtype, and the value a new
# stream starts with (NaN: None).
_COLUMNS = (
    ("hist", ("k", "c"), np.float64, 0.0),  # the last k windows' scores, a ring
    ("hist_vote", ("k",), np.int64, 0),  # and their argmax
    ("hist_len", (), np.int64, 0),  # windows in the ring (0: the vote starts anew)
    ("hist_pos", (), np.int64, 0),  # where the next goes (once full, the oldest is there)
    ("psum", ("c",), np.float64, 0.0),  # the ring's running sum of scores
    ("votes", ("c",), np.int64, 0),  # the ring's votes per label
    ("best", (), np.int64, 0),
    ("ema", ("c",), np.float64, 0.0),
    ("has_ema", (), np.bool_, False),
    ("label", (), np.int64, 0),  # code: 0 "?", 1 "unknown", 2 + i the model's label i
    ("confidence", (), np.float64, 0.0),
    ("probs", ("c",), np.float64, 0.0),  # the smoothed scores
    ("has_probs", (), np.bool_, False),
    ("cond", (), np.int64, 0),  # the debounced condition, before latching (a Level)
    ("peak", (), np.int64, 0),  # the highest level reached and not yet acknowledged
    ("shown", (), np.int64, 0),
    ("since", (), np.float64, np.nan),
    ("episode", (), np.float64, np.nan),  # start of the current alarm episode (cond > NORMAL)
    ("pending", (), np.int64, 0),
    ("pending_count", (), np.int64, 0),
    ("healthy", (), np.bool_, True),
    ("noise", (), np.float64, 0.0),
    ("windows", (), np.int64, 0),
    ("last_time", (), np.float64, np.nan),
    ("levels", (_LEVELS_KEEP,), np.float64, 0.0),  # the latest input levels, a ring
    ("levels_n", (), np.int64, 0),
    ("levels_pos", (), np.int64, 0),
    ("anomaly", (), np.float64, np.nan),
    ("refused", (), np.bool_, False),  # the latest window's label was refused (unknown)
)


class _Table:
    """Every stream's decision state as rows of arrays (``_COLUMNS``), one row (slot) per
    stream, so that a batch of windows is smoothed and stepped in a few numpy steps over its rows
    rather than in Python per window. Grows by doubling; a forgotten stream's row is reused."""

    def __init__(self, classes: int, window_count: int, rows: int = 64) -> None:
        self.k, self.classes, self.rows = window_count, classes, 0
        self.free: list[int] = []
        self._grow(rows)

    def _grow(self, rows: int) -> None:
        old, sizes = self.rows, {"k": self.k, "c": self.classes}
        for name, shape, dtype, fill in _COLUMNS:
            arr = np.full((rows, *(sizes.get(d, d) for d in shape)), fill, dtype=dtype)
            if old:
                arr[:old] = getattr(self, name)
            setattr(self, name, arr)
        self.free.extend(range(rows - 1, old - 1, -1))  # popped lowest first
        self.rows = rows

    def take(self) -> int:
        """A row for a new stream, as a new stream starts."""
        if not self.free:
            self._grow(2 * self.rows)
        slot = self.free.pop()
        self.reset(slot)
        return slot

    def reset(self, slot: int) -> None:
        for name, _, _, fill in _COLUMNS:
            getattr(self, name)[slot] = fill

    def columns(self) -> list[np.ndarray]:
        """Every column, in ``_COLUMNS``' order (the compiled kernel's arguments)."""
        return [getattr(self, name) for name, _, _, _ in _COLUMNS]


def _build_kernel() -> Any:
    kernel = jit.compile_kernel(decision_jit._decide_py)
    # one call on throwaway arrays of the dtypes the engine passes: compiled (or loaded) now
    table = _Table(2, 3, rows=1)
    fpar, ipar = decision_jit.params(DecisionConfig())
    i64, f64, b1 = np.zeros(1, dtype=np.int64), np.zeros(1), np.zeros(1, dtype=np.bool_)
    kernel(i64, np.zeros((1, 2)), f64, f64, f64, f64, f64, b1, b1, fpar, ipar, np.zeros(2, dtype=np.int64),
           *table.columns(), np.zeros(1, dtype=np.int64), np.zeros(1, dtype=np.int64), np.zeros(1),
           np.zeros(1, dtype=np.int64))
    return kernel


_kernels = jit.Kernels(_build_kernel)


def warm() -> bool:
    """Compile (or load from numba's cache) the decisions' kernel now; False where numpy decides
    (no numba, ``DRSN_STREAM_JIT=0``, or numba refused it: ``why_not``)."""
    return _kernels.get() is not None


def why_not() -> str:
    """Why the compiled decisions are not available ("" when they are)."""
    return _kernels.why_not()


_NAMES_FIXED = (UNKNOWN_LABEL, REFUSED_LABEL)  # label codes 0 and 1; the model's labels from 2 on
_LEVELS = (Level.NORMAL, Level.ALERT, Level.DANGER)


def _opt(x: float) -> float | None:
    return None if math.isnan(x) else x


class DecisionEngine:
    """Smoothed labels and alarm levels for every stream of one model.

    Args:
        labels: the artifact's labels, in the order of ``Prediction.probs``.
        config: smoothing and alarm settings; ``DecisionConfig.for_labels(labels)`` when None.
        compiled: decide batches with the compiled kernel (``decision_jit``, where numba is there;
            compiled or loaded from numba's cache now, not on the first batch); False: numpy, the
            same results; True: the kernel or an error.

    The state of every stream is a row of arrays (``_Table``). The compiled kernel decides a
    batch in one loop over its windows (one window alone costs ~20 microseconds, mostly the call;
    a window of a batch of hundreds about one); the numpy path in numpy steps over its rows, the
    same steps for one window or a thousand (one window alone ~80 microseconds). Thread safety:
    ``update`` runs in the pipeline thread; ``state``, ``states``, ``acknowledge`` and
    ``level_counts`` may be called from any thread (one lock, held for one batch's steps).
    """

    def __init__(self, labels: Sequence[str], config: DecisionConfig | None = None, *,
                 compiled: bool | None = None) -> None:
        self.labels: tuple[str, ...] = tuple(labels)
        if not self.labels:
            raise ConfigError("DecisionEngine needs the model's labels (ArtifactMeta.labels); got none")
        self.config = config if config is not None else DecisionConfig.for_labels(self.labels)
        self._kernel = _kernels.get() if compiled is None or compiled else None
        if compiled and self._kernel is None:
            raise RuntimeError(f"compiled decisions asked for, but they are not available: {why_not()}")
        self._fpar, self._ipar = decision_jit.params(self.config)
        self._level_arr = np.array([int(self._level_of(lab)) for lab in self.labels], dtype=np.int64)  # by label
        self._names = (*_NAMES_FIXED, *self.labels)
        self._slots: dict[str, int] = {}
        self._t = _Table(len(self.labels), self.config.window_count)
        self._lock = threading.Lock()
        self.windows_total = 0
        self._steps = WallSteps()  # this host's steps of the wall clock

    def _level_of(self, label: str) -> Level:
        cfg = self.config
        if any(fnmatch.fnmatchcase(label, pat) for pat in cfg.danger_labels):
            return Level.DANGER
        if any(fnmatch.fnmatchcase(label, pat) for pat in cfg.alert_labels):
            return Level.ALERT
        return Level.NORMAL

    def level_of(self, label: str) -> Level:
        """The level a label raises by itself (without the duration/confidence escalation)."""
        return self._level_of(label)

    # -- updating -------------------------------------------------------------------------

    def update(self, prediction: Prediction, *, healthy: bool = True) -> list[Event]:
        """Feed one prediction; return the alarm events it caused (usually none).

        Args:
            prediction: a window's scores; ``probs`` has shape (len(labels),).
            healthy: the sensor-health state of the stream (``HealthMonitor.healthy``).
        """
        return self.update_many((prediction,), (healthy,))[0][0]

    def update_many(self, predictions: Sequence[Prediction], healthy: Sequence[bool]
                    ) -> list[tuple[list[Event], str, Level]]:
        """``update`` of each prediction in turn, ``healthy[i]`` the sensor-health state of the
        stream of ``predictions[i]``; for each, the events it caused and its stream's label and
        shown level right after it (what ``state`` would have said then). A stream's windows
        are decided in their order; those of different streams do not depend on each other, so
        the batch is decided in rounds of distinct streams (the first window of each, then the
        second of those with two, ...), each round in numpy steps over its rows."""
        if not predictions:
            return []
        b = len(predictions)
        cols = batch_columns(predictions)  # a batch as the engine made it: its columns, not each row's fields
        try:  # a copy: the histories keep its rows
            probs = np.array(cols.probs if cols is not None else [p.probs for p in predictions],
                             dtype=np.float64).reshape(b, -1)
        except ValueError:  # scores of different lengths
            probs = None
        if probs is None or probs.shape[1] != len(self.labels):
            bad = next((p for p in predictions if np.size(p.probs) != len(self.labels)), predictions[0])
            raise ConfigError(
                f"prediction for {bad.stream_id} has {np.size(bad.probs)} scores but the decision "
                f"engine was built for {len(self.labels)} labels; build DecisionEngine with the "
                "loaded artifact's labels"
            )
        finite = np.isfinite(probs.sum(axis=1))  # NaN/Inf propagate through a sum
        nan = math.nan
        # each column contiguous (the compiled kernel is compiled for contiguous arrays)
        if cols is not None:  # the anomaly is set after the batch was made (monitor/baseline.py)
            t, level, noise = cols.t_last, cols.level, cols.noise_index
            anomaly = np.array([nan if p.anomaly is None else p.anomaly for p in predictions], dtype=np.float64)
        else:
            t, level, noise, anomaly = np.array(
                [(p.t_last, p.level, p.noise_index, nan if p.anomaly is None else p.anomaly) for p in predictions],
                dtype=np.float64).reshape(b, 4).T.copy()
        refused = np.array([p.model_label is not None and p.label == REFUSED_LABEL for p in predictions], dtype=np.bool_)
        env = np.array([nan if p.envelope_db is None else p.envelope_db for p in predictions], dtype=np.float64)
        evidence = np.array(healthy, dtype=np.bool_).reshape(b) & finite
        out_events: list[list[Event]] = [[] for _ in range(b)]
        labels_out = np.empty(b, dtype=np.int64)
        shown_out = np.empty(b, dtype=np.int64)
        kernel = self._kernel
        with self._lock:
            slots, rounds = self._slots_of([p.stream_id for p in predictions], kernel is None)
            self._follow_steps(slots, t)
            if kernel is not None:  # the whole batch in one loop, each window in turn
                conf_out, ev_from = np.empty(b, dtype=np.float64), np.empty(b, dtype=np.int64)
                kernel(slots, probs, t, level, noise, anomaly, env, refused, evidence, self._fpar, self._ipar,
                       self._level_arr, *self._t.columns(), labels_out, shown_out, conf_out, ev_from)
                self.windows_total += b
                for i in np.flatnonzero(ev_from >= 0).tolist():
                    out_events[i] = [self._event(predictions[i].stream_id, float(t[i]), int(ev_from[i]),
                                                 int(shown_out[i]), int(labels_out[i]), float(conf_out[i]),
                                                 float(anomaly[i]) if math.isfinite(anomaly[i]) else None)]
            for rows in rounds:
                self._round(rows, slots[rows], predictions, probs, t, level, noise, anomaly, env, refused, evidence,
                            out_events, labels_out, shown_out)
        names = self._names
        return [(ev, names[c], _LEVELS[sh]) for ev, c, sh in zip(out_events, labels_out.tolist(), shown_out.tolist())]

    def _follow_steps(self, slots: np.ndarray, t: np.ndarray) -> None:
        """Streams whose capture times stepped since their last window (a sender's clock set back;
        this host's wall clock stepped, which moves the capture times of its own sources): their
        alarm episode and shown level's start move with the step, so that ``danger_after_s`` and
        "held for" count the time that passed. Else a step forward made an ALERT under way a
        DANGER at once, and a step back held its DANGER off for as long as the step. A forward
        jump of a remote sender alone is taken for a gap in its data (time that passed)."""
        T = self._t
        jump = t - T.last_time[slots]  # NaN for a stream's first window: no step
        moved = jump < -STEP_S
        host = self._steps.recent(STEP_GRACE_S)
        if host is not None:
            moved |= np.abs(jump - host[0]) < STEP_S
        if not moved.any():
            return
        first = np.flatnonzero(moved)
        s, at = np.unique(slots[first], return_index=True)  # a stream once, by its first window here
        d = jump[first[at]]
        T.since[s] += d
        T.episode[s] += d
        T.last_time[s] += d

    def _slots_of(self, ids: list[str], rounds: bool = True) -> tuple[np.ndarray, list[Any]]:
        """Each prediction's slot (new streams get one), and the rounds: the positions of the
        first window of each stream, then of the second of those with two, ... (none when not
        asked for: the compiled kernel takes the windows in turn)."""
        get, table = self._slots.get, self._t
        slots = []
        for sid in ids:
            s = get(sid)
            if s is None:
                s = self._slots[sid] = table.take()
            slots.append(s)
        arr = np.array(slots, dtype=np.int64)
        if not rounds:
            return arr, []
        if len(set(slots)) == len(slots):
            return arr, [slice(None)]
        seen: dict[int, int] = {}
        nth = []
        for s in slots:
            n = seen.get(s, 0)
            seen[s] = n + 1
            nth.append(n)
        nth_arr = np.array(nth)
        return arr, [np.flatnonzero(nth_arr == r) for r in range(int(nth_arr.max()) + 1)]

    def _round(self, rows: Any, s: np.ndarray, predictions: Sequence[Prediction], probs: np.ndarray, t_all: np.ndarray,
               level: np.ndarray, noise: np.ndarray, anomaly: np.ndarray, env_all: np.ndarray, refused_all: np.ndarray,
               evidence_all: np.ndarray, out_events: list[list[Event]], labels_out: np.ndarray,
               shown_out: np.ndarray) -> None:
        """One window of each of distinct streams (slots ``s``, the batch's rows ``rows``)."""
        cfg, T = self.config, self._t
        t = t_all[rows]
        m = len(s)
        self.windows_total += m
        windows = T.windows[s] + 1
        T.windows[s] = windows
        T.last_time[s] = t
        pos = T.levels_pos[s]
        T.levels[s, pos] = level[rows]
        T.levels_pos[s] = (pos + 1) % _LEVELS_KEEP
        T.levels_n[s] = np.minimum(T.levels_n[s] + 1, _LEVELS_KEEP)
        ni = noise[rows]
        a = cfg.noise_alpha
        fin = np.isfinite(ni)
        if fin.any():
            old_noise = T.noise[s]
            T.noise[s] = np.where(fin, np.where(windows == 1, ni, (1 - a) * old_noise + a * ni), old_noise)
        since = T.since[s]
        T.since[s] = np.where(np.isnan(since), t, since)
        an = anomaly[rows]
        an = np.where(np.isfinite(an), an, np.nan)
        T.anomaly[s] = an
        evidence = evidence_all[rows]
        refused = refused_all[rows] & evidence
        # no evidence either way (a sick sensor, non-finite scores, a refused label): keep the
        # level, forget the history, restart the debounce; a refused label shows "unknown". A
        # refused label's anomaly score is evidence still: its debounce goes on (restarted, a
        # machine unlike any the model knows, every window refused, never alarmed on deviation)
        blank = ~evidence | refused
        env = env_all[rows]
        env_up = self._env_up(env, T.cond[s])
        speaks = refused & (~np.isnan(an) | env_up)  # a refused label's envelope speaks only to raise
        T.healthy[s] = evidence  # a refused label comes from a healthy sensor
        if blank.any():
            sb = s[blank]
            T.hist_len[sb] = 0
            T.hist_pos[sb] = 0
            T.has_ema[sb] = False
            T.has_probs[sb] = False
            T.label[sb] = np.where(refused[blank], 1, 0)
            T.confidence[sb] = 0.0
            T.pending_count[s[blank & ~speaks]] = 0
        T.refused[s[evidence]] = refused[evidence]
        vote = ~blank
        if vote.any():
            self._smooth(s[vote], probs[rows][vote], windows[vote])
        # stepped: every evidence window, a refused label only where an anomaly score speaks or
        # its envelope supports an alarm
        step = vote | speaks
        if step.any():
            self._step(s[step], t[step], np.flatnonzero(step) if isinstance(rows, slice) else rows[step],
                       predictions, out_events, env[step], env_up[step])
        labels_out[rows] = T.label[s]
        shown_out[rows] = T.shown[s]

    def _smooth(self, s: np.ndarray, probs: np.ndarray, windows: np.ndarray) -> None:
        cfg, T = self.config, self._t
        if cfg.smoothing == "ema":
            ema = T.ema[s]
            smoothed = np.where(T.has_ema[s][:, None], (1 - cfg.ema_alpha) * ema + cfg.ema_alpha * probs, probs)
            T.ema[s] = smoothed
            T.has_ema[s] = True
            best = smoothed.argmax(axis=1)
        else:
            # the last k windows' scores in a ring per stream, their running sum and vote counts:
            # minus the oldest window's (once the ring is full), plus the newest's, over the count
            k, m = T.k, len(s)
            count = T.hist_len[s]
            fresh = count == 0
            if fresh.any():
                T.votes[s[fresh]] = 0
            full = count == k
            pos = T.hist_pos[s]
            votes = probs.argmax(axis=1)
            tally = T.votes[s]
            r = np.arange(m)
            if full.any():
                tally[r[full], T.hist_vote[s[full], pos[full]]] -= 1
            tally[r, votes] += 1
            T.votes[s] = tally
            sums = np.where(fresh[:, None], 0.0, T.psum[s])
            if full.any():
                sums[full] -= T.hist[s[full], pos[full]]
            T.hist[s, pos] = probs
            T.hist_vote[s, pos] = votes
            T.hist_pos[s] = (pos + 1) % k
            count = np.minimum(count + 1, k)
            T.hist_len[s] = count
            sums += probs
            for i in np.flatnonzero(windows % decision_jit.RESUM_EVERY == 0).tolist():  # shed rounding drift
                slot, n = int(s[i]), int(count[i])
                ring = T.hist[slot]
                start = (int(T.hist_pos[slot]) - n) % k
                sums[i] = np.sum([ring[(start + j) % k] for j in range(n)], axis=0)
            T.psum[s] = sums
            smoothed = sums / count[:, None]
            # the label most often on top; among labels tied for it the highest smoothed score,
            # the first of equals (argmax)
            best = np.where(tally == tally.max(axis=1, keepdims=True), smoothed, -np.inf).argmax(axis=1)
        T.probs[s] = smoothed
        T.has_probs[s] = True
        T.best[s] = best
        T.label[s] = best + 2
        T.confidence[s] = smoothed[np.arange(len(s)), best]

    def _env_up(self, env: np.ndarray, cond: np.ndarray) -> np.ndarray:
        """Whether each window's envelope rise supports an alarm (more to rise than to stay)."""
        cfg = self.config
        if cfg.envelope_enter_db is None:
            return np.zeros(env.shape, dtype=np.bool_)
        return env >= np.where(cond == 0, cfg.envelope_enter_db, cfg.envelope_leave_db)  # NaN (none): False

    def _step(self, s: np.ndarray, t: np.ndarray, rows: np.ndarray, predictions: Sequence[Prediction],
              out_events: list[list[Event]], env: np.ndarray, env_up: np.ndarray) -> None:
        """The alarm state machine of one window of each of distinct streams ``s`` (at capture
        times ``t``; ``rows``: their places in the batch): the level each window supports, the
        debounce, the latch, and an event where the shown level changes."""
        cfg, T = self.config, self._t
        cond = T.cond[s]
        episode = T.episode[s]
        if cfg.danger_after_s is not None:
            long_episode = ~np.isnan(episode) & (t - episode >= cfg.danger_after_s)
        else:
            long_episode = np.zeros(len(s), dtype=np.bool_)
        # the level the window's label supports: its own level, once its smoothed confidence is
        # enough (more to rise than to stay: hysteresis); DANGER by confidence or by duration
        conf = T.confidence[s]
        lab = np.where(T.refused[s], 0, self._level_arr[T.best[s]])
        lab_up = (conf >= np.where(lab > cond, cfg.enter_confidence, cfg.leave_confidence)) & (lab > 0)
        danger = long_episode.copy()
        if cfg.danger_confidence is not None:
            danger |= conf >= cfg.danger_confidence
        by_label = np.where(lab_up, np.where(danger, 2, lab), 0)
        # the level the anomaly score supports, with its own hysteresis
        an = T.anomaly[s]
        an_up = an >= np.where(cond == 0, cfg.anomaly_enter, cfg.anomaly_leave)  # NaN (none): False
        an_danger = long_episode.copy()
        if cfg.anomaly_danger is not None:
            an_danger |= an >= cfg.anomaly_danger
        target = np.maximum(by_label, np.where(an_up, np.where(an_danger, 2, 1), 0))
        # the level the envelope's rise supports, with its own hysteresis (``env_up``, as _round found it)
        if env_up.any():
            env_danger = long_episode.copy()
            if cfg.envelope_danger_db is not None:
                env_danger |= env >= cfg.envelope_danger_db
            target = np.maximum(target, np.where(env_up, np.where(env_danger, 2, 1), 0))
        # debounce: a rise takes set_windows windows in a row that support it (settling on the
        # lowest level of the streak), a fall clear_windows
        moving = target != cond
        shown_now = T.shown[s]
        if not moving.any():  # the common case: every stream where it was
            T.pending_count[s] = 0
            shown = np.maximum(cond, T.peak[s]) if cfg.latching else cond
            if not (shown != shown_now).any():
                return
        pending, pcount = T.pending[s], T.pending_count[s]
        rising = target > cond
        same = moving & (pcount > 0) & (rising == (pending > cond))
        pending = np.where(moving, np.where(same, np.where(rising, np.minimum(pending, target),
                                                                   np.maximum(pending, target)), target), pending)
        pcount = np.where(moving, np.where(same, pcount + 1, 1), 0)
        fire = moving & (pcount >= np.where(rising, cfg.set_windows, cfg.clear_windows))
        peak = T.peak[s]
        if fire.any():
            cond = np.where(fire, pending, cond)
            pcount = np.where(fire, 0, pcount)
            episode = np.where(fire & (cond > 0) & np.isnan(episode), t, episode)
            cleared = fire & (cond == 0)
            episode = np.where(cleared, np.nan, episode)
            if not cfg.latching:
                peak = np.where(cleared, 0, peak)  # without latching, a cleared alarm needs no acknowledgement
            peak = np.where(fire, np.maximum(peak, cond), peak)
            T.cond[s] = cond
            T.episode[s] = episode
            T.peak[s] = peak
        T.pending[s] = pending
        T.pending_count[s] = pcount
        shown = np.maximum(cond, peak) if cfg.latching else cond
        changed = shown != shown_now
        if changed.any():
            for i in np.flatnonzero(changed).tolist():
                out_events[int(rows[i])] = self._show(predictions[int(rows[i])].stream_id, int(s[i]),
                                                      float(t[i]), int(shown[i]))

    def _show(self, stream_id: str, slot: int, t: float, shown: int, **extra: Any) -> list[Event]:
        """The event of a change of the shown level (to ``shown``), and the change itself."""
        T = self._t
        if shown == T.shown[slot]:
            return []
        event = self._event(stream_id, t, int(T.shown[slot]), shown, int(T.label[slot]), float(T.confidence[slot]),
                            _opt(float(T.anomaly[slot])), **extra)
        T.shown[slot] = shown
        T.since[slot] = t
        return [event]

    def _event(self, stream_id: str, t: float, was: int, shown: int, label: int, confidence: float,
               anomaly: float | None, **extra: Any) -> Event:
        """The alarm event of a change of the shown level from ``was`` to ``shown``."""
        return Event(
            type="alarm",
            stream_id=stream_id,
            time=t,
            data={
                "from": _LEVELS[was].name,
                "to": _LEVELS[shown].name,
                "label": self._names[label],
                "confidence": round(confidence, 5),
                **({"anomaly": round(anomaly, 4)} if anomaly is not None else {}),
                **extra,
            },
        )

    def acknowledge(self, stream: str | None = None, *, now: float | None = None) -> list[Event]:
        """Acknowledge the alarms of one stream (or all); return the level changes this causes.

        A latched alarm whose condition has cleared drops to the current level; an active alarm
        is marked acknowledged and will clear by itself. Forward the returned events to the same
        sinks as those from ``update`` (they carry ``"acknowledged": True``).
        """
        with self._lock:
            T = self._t
            ids = list(self._slots) if stream is None else [stream]
            events: list[Event] = []
            for sid in ids:
                slot = self._slots.get(sid)
                if slot is None:
                    continue
                T.peak[slot] = 0
                last = _opt(float(T.last_time[slot]))
                t = now if now is not None else (last if last is not None else 0.0)
                # the peak let go, the latch shows the condition itself
                events += self._show(sid, slot, t, int(T.cond[slot]), acknowledged=True)
            return events

    def unacknowledged(self, streams: Iterable[str]) -> set[str]:
        """Those of ``streams`` that reached an alarm level not yet acknowledged (one lock hold)."""
        with self._lock:
            peak, slots = self._t.peak, self._slots
            return {sid for sid in streams if (slot := slots.get(sid)) is not None and peak[slot] > 0}

    def export_state(self, stream: str) -> Any:
        """A picklable copy of the stream's whole state (level, latch, acknowledgement, debounce
        in progress, smoothing history), for ``restore_state`` elsewhere; None for an unknown stream."""
        with self._lock:
            slot = self._slots.get(stream)
            if slot is None:
                return None
            T, k = self._t, self._t.k
            n, end = int(T.hist_len[slot]), int(T.hist_pos[slot])
            history: deque[tuple[np.ndarray, int]] = deque(maxlen=k)
            for j in range(n):
                i = (end - n + j) % k
                history.append((T.hist[slot, i].copy(), int(T.hist_vote[slot, i])))
            ln, lend = int(T.levels_n[slot]), int(T.levels_pos[slot])
            levels: deque[float] = deque((float(T.levels[slot, (lend - ln + j) % _LEVELS_KEEP]) for j in range(ln)),
                                         maxlen=_LEVELS_KEEP)
            return _Stream(
                history=history,
                psum=T.psum[slot].copy() if n else None,
                votes=T.votes[slot].tolist(),
                best=int(T.best[slot]),
                ema=T.ema[slot].copy() if T.has_ema[slot] else None,
                label=self._names[int(T.label[slot])],
                confidence=float(T.confidence[slot]),
                probs=T.probs[slot].copy() if T.has_probs[slot] else None,
                cond=_LEVELS[int(T.cond[slot])],
                peak=_LEVELS[int(T.peak[slot])],
                shown=_LEVELS[int(T.shown[slot])],
                since=_opt(float(T.since[slot])),
                episode_since=_opt(float(T.episode[slot])),
                pending=_LEVELS[int(T.pending[slot])],
                pending_count=int(T.pending_count[slot]),
                healthy=bool(T.healthy[slot]),
                noise=float(T.noise[slot]),
                windows=int(T.windows[slot]),
                last_time=_opt(float(T.last_time[slot])),
                levels=levels,
                anomaly=_opt(float(T.anomaly[slot])),
                refused=bool(T.refused[slot]),
            )

    def restore_state(self, stream: str, state: Any) -> None:
        """Continue a stream from ``export_state``'s copy (a cluster host taking a stream over).
        A state this engine cannot take is a ``ConfigError`` that leaves the stream as it was."""
        if not isinstance(state, _Stream):
            raise ConfigError(f"cannot restore the decisions of {stream}: not a saved decision state")
        damaged = ConfigError(f"cannot restore the decisions of {stream}: the saved state is not one this engine "
                              "writes (a damaged or foreign checkpoint); the stream starts afresh without it")
        c = len(self.labels)
        try:
            rows = [np.asarray(p, dtype=np.float64) for p, _ in state.history]
        except (TypeError, ValueError):
            raise damaged from None
        if any(r.shape != (c,) for r in rows) or len(state.votes) not in (0, c):
            raise ConfigError(f"cannot restore the decisions of {stream}: saved for a model of other labels")
        # a checkpoint is read from a shared directory: its numbers become indexes of the state
        # table (the compiled loop does not check them), so each must be one the engine could
        # have written itself
        try:
            fits = (all(0 <= int(v) < c for _, v in state.history) and 0 <= int(state.best) < c
                    and all(int(lv) in (0, 1, 2) for lv in (state.cond, state.peak, state.shown, state.pending))
                    and int(state.pending_count) >= 0 and int(state.windows) >= 0
                    and all(int(v) >= 0 for v in state.votes))
        except (TypeError, ValueError, OverflowError):
            fits = False
        if not fits:
            raise damaged
        nan = math.nan
        with self._lock:
            T = self._t
            slot = T.take()  # a row of its own first: a state that does not fit leaves the stream as it was
            try:
                hist = list(zip(rows, (int(v) for _, v in state.history)))[-T.k :]
                for j, (p, v) in enumerate(hist):
                    T.hist[slot, j] = p
                    T.hist_vote[slot, j] = v
                T.hist_len[slot] = len(hist)
                T.hist_pos[slot] = len(hist) % T.k
                if state.psum is not None:
                    T.psum[slot] = state.psum
                if state.votes:
                    T.votes[slot] = state.votes
                T.best[slot] = state.best
                T.has_ema[slot] = state.ema is not None
                if state.ema is not None:
                    T.ema[slot] = state.ema
                names = {name: i for i, name in enumerate(self._names) if i >= 2}
                names.update({UNKNOWN_LABEL: 0, REFUSED_LABEL: 1})
                T.label[slot] = names.get(state.label, 0)
                T.confidence[slot] = state.confidence
                T.has_probs[slot] = state.probs is not None
                if state.probs is not None:
                    T.probs[slot] = state.probs
                T.cond[slot], T.peak[slot], T.shown[slot] = int(state.cond), int(state.peak), int(state.shown)
                T.since[slot] = nan if state.since is None else state.since
                T.episode[slot] = nan if state.episode_since is None else state.episode_since
                T.pending[slot], T.pending_count[slot] = int(state.pending), state.pending_count
                T.healthy[slot], T.noise[slot], T.windows[slot] = state.healthy, state.noise, state.windows
                T.last_time[slot] = nan if state.last_time is None else state.last_time
                levels = list(state.levels)[-_LEVELS_KEEP:]
                T.levels[slot, : len(levels)] = levels
                T.levels_n[slot] = len(levels)
                T.levels_pos[slot] = len(levels) % _LEVELS_KEEP
                T.anomaly[slot] = nan if state.anomaly is None else state.anomaly
                T.refused[slot] = state.refused
            except (TypeError, ValueError, IndexError, AttributeError, OverflowError):
                T.free.append(slot)
                raise damaged from None
            old = self._slots.get(stream)
            if old is not None:
                T.free.append(old)
            self._slots[stream] = slot

    def forget(self, stream: str) -> None:
        """Drop a stream's state (e.g. a sensor removed for good)."""
        with self._lock:
            slot = self._slots.pop(stream, None)
            if slot is not None:
                self._t.free.append(slot)

    # -- reading --------------------------------------------------------------------------

    @property
    def streams(self) -> list[str]:
        with self._lock:
            return list(self._slots)

    def state(self, stream: str) -> StreamDecision:
        """The stream's decision now; an unknown stream gives the empty NORMAL state."""
        return self.states([stream])[stream]

    def states(self, streams: Iterable[str] | None = None) -> dict[str, StreamDecision]:
        """Decisions of many streams; the lock is held only to copy their rows (a few numpy
        steps), so a snapshot of thousands of streams does not stall ``update``."""
        with self._lock:
            ids = list(self._slots) if streams is None else list(streams)
            known = [sid for sid in ids if sid in self._slots]
            slots = np.array([self._slots[sid] for sid in known], dtype=np.int64)
            T = self._t
            cols = {name: getattr(T, name)[slots] for name in (
                "label", "confidence", "shown", "cond", "peak", "since", "last_time", "noise", "healthy", "windows",
                "anomaly", "levels", "levels_n", "levels_pos", "probs", "has_probs")}
        names = self._names
        since, last = cols["since"], cols["last_time"]
        held = np.where(np.isnan(since) | np.isnan(last), 0.0, np.maximum(0.0, last - since))
        latched = cols["shown"] > cols["cond"]
        top = np.argsort(-cols["probs"], axis=1, kind="stable")[:, :3]
        out: dict[str, StreamDecision] = {}
        rows = zip(known, cols["label"].tolist(), cols["confidence"].tolist(), cols["shown"].tolist(), since.tolist(),
                   held.tolist(), cols["noise"].tolist(), latched.tolist(), (cols["peak"] > 0).tolist(),
                   cols["healthy"].tolist(), cols["windows"].tolist(), last.tolist(), cols["anomaly"].tolist(),
                   cols["levels"], cols["levels_n"].tolist(), cols["levels_pos"].tolist(), cols["probs"],
                   cols["has_probs"].tolist(), top.tolist())
        for (sid, label, conf, shown, since_i, held_i, noise, latch, unack, healthy, windows, last_i, anomaly,
             lv, ln, lpos, probs, has_probs, order) in rows:
            levels = tuple(lv[(lpos - ln + j) % _LEVELS_KEEP] for j in range(ln)) if ln else ()
            top3 = tuple((self.labels[i], float(probs[i])) for i in order) if has_probs else ()
            out[sid] = StreamDecision(
                stream_id=sid, label=names[label], confidence=conf, level=_LEVELS[shown], since=_opt(since_i),
                held_s=held_i, top3=top3, noise_index=noise, latched=latch, unacknowledged=unack, healthy=healthy,
                windows=windows, last_time=_opt(last_i), levels=tuple(float(x) for x in levels),
                anomaly=_opt(anomaly))
        return {sid: out.get(sid) or StreamDecision(sid) for sid in ids}

    def level_counts(self) -> dict[str, int]:
        """Streams per shown level, e.g. {"NORMAL": 180, "ALERT": 15, "DANGER": 5}."""
        with self._lock:
            shown = self._t.shown[np.array(list(self._slots.values()), dtype=np.int64)]
        counts = np.bincount(shown, minlength=len(_LEVELS)).tolist()
        return {lv.name: int(counts[int(lv)]) for lv in Level}

