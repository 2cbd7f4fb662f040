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
has lasted ``danger_after_s``; the same debounce and latching apply. The level a window supports
is the higher of what its label and its anomaly support.

Every change of the shown level returns an ``Event(type="alarm", stream_id, time,
data={"from", "to", "label", "confidence"})``; ``time`` is the window's capture time (seconds).
"""

from __future__ import annotations

import copy
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

from drsn_stream.config import TOMLDecodeError, from_table, loads_toml
from drsn_stream.errors import ConfigError
from drsn_stream.models.ood import UNKNOWN as REFUSED_LABEL
from drsn_stream.types import Event, Prediction

UNKNOWN_LABEL = "?"
_LEVELS_KEEP = 32  # input levels per stream kept for the sparkline
# From this many predictions of distinct streams on, ``update_many`` runs the majority vote's
# arithmetic over the whole batch (a few numpy steps) instead of a few per prediction; below it
# the per-prediction steps cost less than the batch's.
_BATCH_VOTE_MIN = 16


def _majority(votes: list[int], smoothed: np.ndarray) -> int:
    """The label with the most votes; among labels tied for it, the highest smoothed score's."""
    top = max(votes)
    if votes.count(top) == 1:  # the common case: one label has the most votes
        return votes.index(top)
    return max((i for i, c in enumerate(votes) if c == top), key=lambda i: smoothed[i])


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

    def __post_init__(self) -> None:
        # Strings from TOML arrays arrive as lists; store tuples so the config stays hashable.
        object.__setattr__(self, "alert_labels", _patterns(self.alert_labels, "alert_labels"))
        object.__setattr__(self, "danger_labels", _patterns(self.danger_labels, "danger_labels"))
        problems = []
        if self.smoothing not in ("majority", "ema"):
            problems.append(f"smoothing must be 'majority' or 'ema', not {self.smoothing!r}")
        if not (isinstance(self.window_count, int) and self.window_count >= 1):
            problems.append(f"window_count must be an integer >= 1, not {self.window_count!r}")
        if not 0.0 < float(self.ema_alpha) <= 1.0:
            problems.append(f"ema_alpha must be in (0, 1], not {self.ema_alpha!r}")
        if not 0.0 < float(self.noise_alpha) <= 1.0:
            problems.append(f"noise_alpha must be in (0, 1], not {self.noise_alpha!r}")
        for name in ("set_windows", "clear_windows"):
            value = getattr(self, name)
            if not (isinstance(value, int) and value >= 1):
                problems.append(f"{name} must be an integer >= 1, not {value!r}")
        if not 0.0 <= self.leave_confidence <= self.enter_confidence <= 1.0:
            problems.append(
                "need 0 <= leave_confidence <= enter_confidence <= 1 "
                f"(got leave {self.leave_confidence}, enter {self.enter_confidence})"
            )
        if self.danger_after_s is not None and self.danger_after_s < 0:
            problems.append(f"danger_after_s must be >= 0 seconds, not {self.danger_after_s!r}")
        if not 0.0 < self.anomaly_leave <= self.anomaly_enter:
            problems.append(f"need 0 < anomaly_leave <= anomaly_enter (got {self.anomaly_leave}, {self.anomaly_enter})")
        if self.anomaly_danger is not None and not self.anomaly_danger >= self.anomaly_enter:
            problems.append(f"anomaly_danger must be >= anomaly_enter, not {self.anomaly_danger!r}")
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
            data = loads_toml(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigError(f"cannot read decision config {path}: {exc}; check the path") from exc
        except TOMLDecodeError as exc:
            raise ConfigError(f"{path} is not valid TOML: {exc}") from exc
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
            raise ConfigError(f"[decision]: unknown key(s) {', '.join(sorted(self.given - names))}; "
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
        levels: recent input RMS levels (before normalization), oldest first.
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
    """Mutable per-stream state (private; guarded by the engine's lock)."""

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


class DecisionEngine:
    """Smoothed labels and alarm levels for every stream of one model.

    Args:
        labels: the artifact's labels, in the order of ``Prediction.probs``.
        config: smoothing and alarm settings; ``DecisionConfig.for_labels(labels)`` when None.

    Thread safety: ``update`` runs in the pipeline thread; ``state``, ``states``, ``acknowledge``
    and ``level_counts`` may be called from any thread (one lock, held for microseconds).
    """

    def __init__(self, labels: Sequence[str], config: DecisionConfig | None = None) -> None:
        self.labels: tuple[str, ...] = tuple(labels)
        if not self.labels:
            raise ConfigError("DecisionEngine needs the model's labels (ArtifactMeta.labels); got none")
        self.config = config if config is not None else DecisionConfig.for_labels(self.labels)
        self._label_level = tuple(self._level_of(lab) for lab in self.labels)  # by label index
        self._streams: dict[str, _Stream] = {}
        self._lock = threading.Lock()
        self.windows_total = 0

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
        shown level right after it (what ``state`` would have said then). The scores of all of
        them are copied, checked for NaN/Inf and voted on in one numpy step each, not one per
        prediction."""
        if not predictions:
            return []
        b = len(predictions)
        try:  # a copy: the histories keep its rows
            probs = np.array([p.probs for p in predictions], dtype=np.float64).reshape(b, -1)
        except ValueError:  # scores of different lengths
            probs = None
        if probs is None or probs.shape[1] != len(self.labels):
            bad = next((p for p in predictions if np.size(p.probs) != len(self.labels)), predictions[0])
            raise ConfigError(
                f"prediction for {bad.stream_id} has {np.size(bad.probs)} scores but the decision "
                f"engine was built for {len(self.labels)} labels; build DecisionEngine with the "
                "loaded artifact's labels"
            )
        finite = np.isfinite(probs.sum(axis=1)).tolist()  # NaN/Inf propagate through a sum
        votes = probs.argmax(axis=1).tolist()
        out: list[tuple[list[Event], str, Level]] = []
        with self._lock:
            if (b >= _BATCH_VOTE_MIN and self.config.smoothing == "majority"
                    and len({p.stream_id for p in predictions}) == b):
                return self._update_batch(predictions, healthy, probs, finite, votes)
            for prediction, ok, row, is_finite, vote in zip(predictions, healthy, probs, finite, votes):
                st = self._streams.get(prediction.stream_id)
                if st is None:
                    st = self._streams[prediction.stream_id] = _Stream(history=deque(maxlen=self.config.window_count))
                events = self._update(prediction, st, ok and is_finite, row, vote)
                out.append((events, st.label, st.shown))
        return out

    def _update_batch(self, predictions: Sequence[Prediction], healthy: Sequence[bool], probs: np.ndarray,
                      finite: list[bool], votes: list[int]) -> list[tuple[list[Event], str, Level]]:
        """``update_many``'s loop for predictions of distinct streams (so no one's update depends
        on another's): each one's bookkeeping, then the majority vote of all that need it at
        once (``_vote_many``), then each one's alarm step; the same results, bit for bit."""
        streams, window_count = self._streams, self.config.window_count
        sts, modes = [], []
        for prediction, ok, is_finite in zip(predictions, healthy, finite):
            st = streams.get(prediction.stream_id)
            if st is None:
                st = streams[prediction.stream_id] = _Stream(history=deque(maxlen=window_count))
            sts.append(st)
            modes.append(self._begin(prediction, st, ok and is_finite))
        voting = [i for i, mode in enumerate(modes) if mode]
        if voting:
            self._vote_many([sts[i] for i in voting], probs[voting], [votes[i] for i in voting])
        return [([] if mode is None else self._step(prediction.stream_id, st, float(prediction.t_last)), st.label, st.shown)
                for prediction, st, mode in zip(predictions, sts, modes)]

    def _update(self, prediction: Prediction, st: _Stream, evidence: bool, probs: np.ndarray, vote: int) -> list[Event]:
        """``update`` of one prediction whose scores are ``probs`` (float64, their argmax
        ``vote``); ``evidence``: from a healthy sensor, every score finite."""
        mode = self._begin(prediction, st, evidence)
        if mode is None:
            return []
        if mode:
            self._smooth(st, probs, vote)
        return self._step(prediction.stream_id, st, float(prediction.t_last))

    def _begin(self, prediction: Prediction, st: _Stream, evidence: bool) -> bool | None:
        """A prediction's bookkeeping before its smoothing: None when nothing more is to be done
        (no evidence, or a refused label without an anomaly score), True when it is smoothed and
        then stepped, False when only stepped (a refused label with an anomaly score)."""
        t = float(prediction.t_last)
        self.windows_total += 1
        st.windows += 1
        st.last_time = t
        st.levels.append(float(prediction.level))
        if math.isfinite(prediction.noise_index):
            a = self.config.noise_alpha
            st.noise = (
                float(prediction.noise_index)
                if st.windows == 1
                else (1 - a) * st.noise + a * float(prediction.noise_index)
            )
        if st.since is None:
            st.since = t
        anomaly = prediction.anomaly
        st.anomaly = float(anomaly) if anomaly is not None and math.isfinite(anomaly) else None
        if not evidence:
            self._unknown(st)
            return None
        st.healthy = True
        st.refused = prediction.model_label is not None and prediction.label == REFUSED_LABEL
        if st.refused:
            self._unknown(st, label=REFUSED_LABEL)
            st.healthy = True
            return None if st.anomaly is None else False  # None: no evidence either way
        return True

    def _unknown(self, st: _Stream, label: str = UNKNOWN_LABEL) -> None:
        # No evidence either way: keep the level, forget the history, restart the debounce.
        st.healthy = False
        st.history.clear()
        st.psum = None
        st.ema = None
        st.probs = None
        st.label = label
        st.confidence = 0.0
        st.pending_count = 0

    def _smooth(self, st: _Stream, probs: np.ndarray, vote: int) -> None:
        cfg = self.config
        if cfg.smoothing == "ema":
            st.ema = probs.copy() if st.ema is None else (1 - cfg.ema_alpha) * st.ema + cfg.ema_alpha * probs
            smoothed = st.ema
            best = int(smoothed.argmax())
        else:
            # Running sum and vote counts over the last k windows: O(classes) per window.
            fresh, old_probs = self._take_vote(st, probs, vote)
            if fresh:
                st.psum = np.zeros(len(self.labels))
            if old_probs is not None:
                st.psum -= old_probs
            if st.windows % 1024 == 0:
                st.psum = np.sum([h[0] for h in st.history], axis=0)  # shed rounding drift
            else:
                st.psum += probs
            smoothed = st.psum / len(st.history)
            best = _majority(st.votes, smoothed)
        st.probs = smoothed
        st.best = best
        st.label = self.labels[best]
        st.confidence = float(smoothed[best])

    def _vote_many(self, sts: list[_Stream], probs: np.ndarray, votes: list[int]) -> None:
        """``_smooth`` of the majority vote for distinct streams ``sts`` at once (``probs`` (m,
        classes) float64, one row each): the running sums take the same per-element steps as
        there (minus the oldest window's scores, plus the newest's, over the count), so the same
        bits; the history, the vote counts and the label choice per stream as there."""
        m, classes = probs.shape
        sums = np.zeros((m, classes))
        old = np.zeros((m, classes))
        drop = np.zeros(m, dtype=bool)
        counts = np.empty(m)
        resum = []
        for k, (st, vote) in enumerate(zip(sts, votes)):
            fresh, old_probs = self._take_vote(st, probs[k], vote)
            if not fresh:  # else the sums start at zero
                sums[k] = st.psum
            if old_probs is not None:
                old[k] = old_probs
                drop[k] = True
            counts[k] = len(st.history)
            if st.windows % 1024 == 0:
                resum.append(k)
        np.subtract(sums, old, out=sums, where=drop[:, None])
        sums += probs
        for k in resum:  # shed rounding drift, as _smooth does
            sums[k] = np.sum([h[0] for h in sts[k].history], axis=0)
        smoothed = sums / counts[:, None]
        labels = self.labels
        best = []
        for st, row, sm in zip(sts, sums, smoothed):
            st.psum = row
            st.probs = sm
            b = st.best = _majority(st.votes, sm)
            st.label = labels[b]
            best.append(b)
        for st, c in zip(sts, smoothed[np.arange(m), best].tolist()):
            st.confidence = c

    def _take_vote(self, st: _Stream, probs: np.ndarray, vote: int) -> tuple[bool, np.ndarray | None]:
        """The majority vote's bookkeeping of a new window (``_smooth``, ``_vote_many``): its
        scores into the history and its vote counted, the oldest window's vote taken back once
        the history is full. Returns whether the running sums start anew at zero (the counts
        have), and the scores of the window that left the history (None: none did); the sums
        themselves are the caller's."""
        fresh = st.psum is None or not st.history
        if fresh:
            st.votes = [0] * len(self.labels)
        old_probs = None
        if len(st.history) == st.history.maxlen:
            old_probs, old_vote = st.history[0]
            st.votes[old_vote] -= 1
        st.history.append((probs, vote))
        st.votes[vote] += 1
        return fresh, old_probs

    def _supported(self, st: _Stream, t: float) -> Level:
        """The level this window supports (before debouncing): the higher of its label's and its
        anomaly score's."""
        by_label = Level.NORMAL if st.refused else self._label_supported(st, t)
        return max(by_label, self._anomaly_supported(st, t))

    def _anomaly_supported(self, st: _Stream, t: float) -> Level:
        cfg = self.config
        a = st.anomaly
        if a is None or a < (cfg.anomaly_enter if st.cond == Level.NORMAL else cfg.anomaly_leave):
            return Level.NORMAL
        if cfg.anomaly_danger is not None and a >= cfg.anomaly_danger:
            return Level.DANGER
        if cfg.danger_after_s is not None and st.episode_since is not None and t - st.episode_since >= cfg.danger_after_s:
            return Level.DANGER
        return Level.ALERT

    def _label_supported(self, st: _Stream, t: float) -> Level:
        cfg = self.config
        level = self._label_level[st.best]
        if level == Level.NORMAL:
            return level
        threshold = cfg.enter_confidence if level > st.cond else cfg.leave_confidence
        if st.confidence < threshold:
            return Level.NORMAL
        if cfg.danger_confidence is not None and st.confidence >= cfg.danger_confidence:
            return Level.DANGER
        if (
            cfg.danger_after_s is not None
            and st.episode_since is not None
            and t - st.episode_since >= cfg.danger_after_s
        ):
            return Level.DANGER
        return level

    def _step(self, stream_id: str, st: _Stream, t: float) -> list[Event]:
        cfg = self.config
        target = self._supported(st, t)
        if target == st.cond:
            st.pending_count = 0
        else:
            rising = target > st.cond
            if st.pending_count and (target > st.cond) == (st.pending > st.cond):
                # Same direction as the streak: a rise settles on the lowest level it saw.
                st.pending = min(st.pending, target) if rising else max(st.pending, target)
                st.pending_count += 1
            else:
                st.pending, st.pending_count = target, 1
            needed = cfg.set_windows if rising else cfg.clear_windows
            if st.pending_count >= needed:
                st.cond = st.pending
                st.pending_count = 0
                if st.cond > Level.NORMAL and st.episode_since is None:
                    st.episode_since = t
                elif st.cond == Level.NORMAL:
                    st.episode_since = None
                    if not cfg.latching:
                        st.peak = Level.NORMAL  # without latching, a cleared alarm needs no acknowledgement
                st.peak = max(st.peak, st.cond)
        return self._show(stream_id, st, t)

    def _show(self, stream_id: str, st: _Stream, t: float, **extra: Any) -> list[Event]:
        shown = max(st.cond, st.peak) if self.config.latching else st.cond
        if shown == st.shown:
            return []
        event = Event(
            type="alarm",
            stream_id=stream_id,
            time=t,
            data={
                "from": st.shown.name,
                "to": shown.name,
                "label": st.label,
                "confidence": round(st.confidence, 5),
                **({"anomaly": round(st.anomaly, 4)} if st.anomaly is not None else {}),
                **extra,
            },
        )
        st.shown = shown
        st.since = t
        return [event]

    def acknowledge(self, stream: str | None = None, *, now: float | None = None) -> list[Event]:
        """Acknowledge the alarms of one stream (or all); return the level changes this causes.

        A latched alarm whose condition has cleared drops to the current level; an active alarm
        is marked acknowledged and will clear by itself. Forward the returned events to the same
        sinks as those from ``update`` (they carry ``"acknowledged": True``).
        """
        with self._lock:
            ids = list(self._streams) if stream is None else [stream]
            events: list[Event] = []
            for sid in ids:
                st = self._streams.get(sid)
                if st is None:
                    continue
                st.peak = Level.NORMAL
                t = now if now is not None else (st.last_time if st.last_time is not None else 0.0)
                events += self._show(sid, st, t, acknowledged=True)
            return events

    def export_state(self, stream: str) -> Any:
        """A picklable copy of the stream's whole state (level, latch, acknowledgement, debounce
        in progress, smoothing history), for ``restore_state`` elsewhere; None for an unknown stream."""
        with self._lock:
            st = self._streams.get(stream)
            return None if st is None else copy.deepcopy(st)

    def restore_state(self, stream: str, state: Any) -> None:
        """Continue a stream from ``export_state``'s copy (a cluster host taking a stream over)."""
        if not isinstance(state, _Stream):
            raise ConfigError(f"cannot restore the decisions of {stream}: not a saved decision state")
        with self._lock:
            self._streams[stream] = copy.deepcopy(state)

    def forget(self, stream: str) -> None:
        """Drop a stream's state (e.g. a sensor removed for good)."""
        with self._lock:
            self._streams.pop(stream, None)

    # -- reading --------------------------------------------------------------------------

    @property
    def streams(self) -> list[str]:
        with self._lock:
            return list(self._streams)

    def state(self, stream: str) -> StreamDecision:
        """The stream's decision now; an unknown stream gives the empty NORMAL state."""
        return self.states([stream])[stream]

    def states(self, streams: Iterable[str] | None = None) -> dict[str, StreamDecision]:
        """Decisions of many streams; the lock is held only to copy the raw state, so a snapshot
        of hundreds of streams does not stall ``update`` in the pipeline thread."""
        with self._lock:
            ids = list(self._streams) if streams is None else list(streams)
            raw = {sid: self._raw(self._streams[sid]) for sid in ids if sid in self._streams}
        return {sid: (self._freeze(sid, *raw[sid]) if sid in raw else StreamDecision(sid)) for sid in ids}

    def level_counts(self) -> dict[str, int]:
        """Streams per shown level, e.g. {"NORMAL": 180, "ALERT": 15, "DANGER": 5}."""
        with self._lock:
            counts = {lv.name: 0 for lv in Level}
            for st in self._streams.values():
                counts[st.shown.name] += 1
            return counts

    @staticmethod
    def _raw(st: _Stream) -> tuple[dict[str, Any], np.ndarray | None]:
        held = 0.0
        if st.since is not None and st.last_time is not None:
            held = max(0.0, st.last_time - st.since)
        fields_ = {
            "label": st.label,
            "confidence": st.confidence,
            "level": st.shown,
            "since": st.since,
            "held_s": held,
            "noise_index": st.noise,
            "latched": st.shown > st.cond,
            "unacknowledged": st.peak > Level.NORMAL,
            "healthy": st.healthy,
            "windows": st.windows,
            "last_time": st.last_time,
            "levels": tuple(st.levels),
            "anomaly": st.anomaly,
        }
        # st.probs is replaced, never written in place, so a reference is a safe copy.
        return fields_, st.probs

    def _freeze(self, stream_id: str, fields_: dict[str, Any], probs: np.ndarray | None) -> StreamDecision:
        top3: tuple[tuple[str, float], ...] = ()
        if probs is not None:
            order = np.argsort(-probs, kind="stable")[:3]
            top3 = tuple((self.labels[i], float(probs[i])) for i in order)
        return StreamDecision(stream_id=stream_id, top3=top3, **fields_)

