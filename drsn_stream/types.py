"""The records that flow through the pipeline: Frame -> Window -> Prediction -> Event.

Times are wall-clock seconds (``time.time()``) so that capture times from other hosts and
local result times can be compared; latency is ``t_result - Window.t_last``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np

T = TypeVar("T")

# A frame's shaft speed (``Frame.rpm``, the wire format's rpm) is 0 .. MAX_RPM; a shaft slower than
# STANDSTILL_RPM (1 Hz) is at a standstill: its fault lines lie within a few bins of 0 Hz in a
# 1-s block (no envelope evidence), and its windows are no running machine's (never learned from)
MAX_RPM = 1e6
STANDSTILL_RPM = 60.0


@dataclass(slots=True)
class Frame:
    """A chunk of samples from one stream, as a source produces it.

    Attributes:
        stream_id: unique id of the stream ("sim/m0", "mic", "zmq/sensor-3", ...).
        seq: per-stream sequence number, +1 per frame; a jump is a gap.
        t_capture: capture time of the first sample, seconds (wall clock).
        sample_rate: Hz.
        samples: float32 array of shape (n, channels).
        overflow: number of input overflows the source saw since the previous frame.
        names: one short name per channel (the wire format's ``names``), or None; see
            ``channel_ids`` for the stream id each channel is monitored under.
        rpm: the machine's shaft speed while the frame was captured (the wire format's ``rpm``, a
            tachometer's reading; 0: stopped), or None where the source does not know it.
    """

    stream_id: str
    seq: int
    t_capture: float
    sample_rate: float
    samples: np.ndarray
    overflow: int = 0
    names: tuple[str, ...] | None = None
    rpm: float | None = None

    @property
    def n(self) -> int:
        return int(self.samples.shape[0])

    @property
    def duration(self) -> float:
        return self.n / float(self.sample_rate)


@functools.lru_cache(maxsize=4096)
def channel_ids(stream_id: str, channels: int, names: tuple[str, ...] | None = None) -> tuple[str, ...]:
    """The stream id each channel of a frame is monitored under.

    A single-channel frame without names keeps its own id (``"press-3"``); otherwise channel ``k``
    is ``"STREAM/NAME"`` with ``names[k]``, or ``"STREAM/chK"`` without names. Cached: a source
    sends the same few (id, channels, names) over and over.
    """
    if names is not None:
        return tuple(f"{stream_id}/{name}" for name in names)
    if channels == 1:
        return (stream_id,)
    return tuple(f"{stream_id}/ch{k}" for k in range(channels))


def split_channels(frame: Frame) -> list[Frame]:
    """One single-channel Frame per channel of ``frame``, under its ``channel_ids``; the samples
    are (n, 1) views of the frame's, nothing is copied."""
    x = frame.samples
    ids = channel_ids(frame.stream_id, x.shape[1], frame.names)
    return [Frame(sid, frame.seq, frame.t_capture, frame.sample_rate, x[:, k : k + 1], frame.overflow, rpm=frame.rpm)
            for k, sid in enumerate(ids)]


def rounds_by_stream(items: Sequence[T], stream_of: Callable[[T], str]) -> list[list[T]]:
    """``items`` in rounds that hold at most one item per stream, each stream's items in their
    order (round k holds every stream's k-th item): what one poll's frames become when the
    frames of different streams are processed together but a stream's frames one after another."""
    rounds: list[list[T]] = []
    count: dict[str, int] = {}  # items of each stream so far: the round its next one goes to
    for item in items:
        sid = stream_of(item)
        k = count.get(sid, 0)
        count[sid] = k + 1
        if k < len(rounds):
            rounds[k].append(item)
        else:
            rounds.append([item])
    return rounds


@dataclass(slots=True)
class Window:
    """A fixed-length, normalized slice of one stream, ready for the model.

    Attributes:
        stream_id: the stream it came from.
        index: running window number inside the stream (0, 1, ...).
        t_last: capture time of the window's last sample, seconds (wall clock).
        data: float32 array of shape (window,), normalized as the artifact says (or raw when
            ``normalized`` is False: the DSP's batch step ``dsp.normalize.BatchNormalizer`` then
            normalizes it with the rest of its batch).
        t_ready: wall-clock time the window was formed (enters the batcher).
        level: the window's level before normalization, its RMS about its mean (the sensor's DC
            offset left out; for sparklines, baselines and health); 0 for a raw window, whose
            level the batch normalization step returns beside the batch.
        normalized: whether ``data`` is already normalized.
        healthy: the stream's sensor health passed every sample of the window (judged when it was
            formed, so a late result is still judged on the health of its own samples).

    A window is not written after it is made: a stage that learns more about it returns a value
    (levels beside the batch) or a new Window.
    """

    stream_id: str
    index: int
    t_last: float
    data: np.ndarray
    t_ready: float = 0.0
    level: float = 0.0
    normalized: bool = True
    healthy: bool = True


@dataclass(slots=True)
class Prediction:
    """A window's scores as the model produced them.

    Attributes:
        probs: float32 array (classes,), softmax over the artifact's labels.
        label / confidence: argmax label and its probability.
        noise_index: share of activations the DRSN's shrinkage units set to zero (0..1).
        latency_ms: from the capture of the window's last sample to the result.
        t_batched / t_done: wall-clock times the batch left the batcher / the result was ready.
        batch_size: size of the batch the window was inferred in.
        health: the stream's sensor health when the result was handed on, "OK" or
            "CHECK_SENSOR". A window from a sensor in CHECK_SENSOR is no evidence of the machine's
            condition: its JSON says ``"label": "check_sensor"`` (the model's own top label stays
            in ``"model_label"``, the scores in ``"probs"``) and it raises no alarm.
        features: the model's pooled features (features,) when the runner returns them.
        unknown_score: distance to the model's training data over its threshold (models/ood.py);
            above 1 the label is refused: ``label`` is then "unknown" and ``model_label`` keeps
            the model's own argmax. None: the artifact carries no statistics to decide.
        anomaly: distance to the stream's learned baseline over its threshold (monitor/baseline.py;
            1.0 = the threshold); None without a baseline.
        envelope_db: how far one bearing-fault family's envelope evidence rose over what it needs
            to be named, dB, on each of the stream's latest blocks up to the window
            (``EnvelopeStage.reading``); None without envelope evidence. The alarm's third opinion.
    """

    stream_id: str
    index: int
    t_last: float
    probs: np.ndarray
    label: str
    confidence: float
    noise_index: float
    latency_ms: float
    t_batched: float = 0.0
    t_done: float = 0.0
    batch_size: int = 1
    level: float = 0.0
    health: str = "OK"
    features: np.ndarray | None = None
    unknown_score: float | None = None
    model_label: str | None = None
    anomaly: float | None = None
    envelope_db: float | None = None

    def to_json(self) -> dict[str, Any]:
        healthy = self.health == "OK"
        out = {
            "type": "prediction",
            "stream": self.stream_id,
            "time": self.t_last,
            "index": self.index,
            "label": self.label if healthy else "check_sensor",
            "health": self.health,
            "confidence": round(float(self.confidence), 5),
            "probs": [round(float(p), 5) for p in self.probs],
            "noise_index": round(float(self.noise_index), 5),
            "latency_ms": round(float(self.latency_ms), 3),
            "batch_size": self.batch_size,
        }
        if self.unknown_score is not None:
            out["unknown_score"] = round(float(self.unknown_score), 4)
        if self.model_label is not None or not healthy:
            out["model_label"] = self.model_label or self.label  # the model's own argmax
        if self.anomaly is not None:
            out["anomaly"] = round(float(self.anomaly), 4)
        return out


class Predictions(list):
    """One batch's Predictions as ``engine.predictions_from`` made them, in the batch's order,
    with the batch's columns, whose row ``i`` is ``self[i]``'s field: ``probs`` ``(b, classes)``,
    ``features`` ``(b, features)`` or None, ``t_last``, ``level`` and ``noise_index`` ``(b,)``.
    A stage that takes a whole batch reads a column (``batch_columns``) instead of gathering the
    field from every Prediction; those fields of a Prediction are never assigned after it is made.
    A list built from it (filtered, reordered, joined) is a plain list, gathered row by row."""

    __slots__ = ("probs", "features", "t_last", "level", "noise_index")

    def __init__(self, rows: list[Prediction], probs: np.ndarray, features: np.ndarray | None,
                 t_last: np.ndarray, level: np.ndarray, noise_index: np.ndarray) -> None:
        super().__init__(rows)
        self.probs, self.features, self.t_last, self.level, self.noise_index = probs, features, t_last, level, noise_index

    def _reordered(self, *args: Any, **kwargs: Any) -> None:
        # what keeps the length but not the order would leave the columns wrong without a sign
        raise TypeError("a batch's rows stay in its columns' order; reorder or replace them in list(batch)")

    sort = reverse = __setitem__ = _reordered  # type: ignore[assignment]


def batch_columns(preds: Sequence[Prediction]) -> Predictions | None:
    """``preds`` itself where its columns can be read (a whole ``Predictions`` batch), else None."""
    return preds if type(preds) is Predictions and len(preds) == len(preds.probs) else None


@dataclass(slots=True)
class Event:
    """Something operators see: an alarm change, a sensor-health change, a detection, stats.

    ``type`` is one of "alarm", "health", "detection", "stats"; ``data`` holds the
    type-specific fields (e.g. from/to/label/confidence for alarms).
    """

    type: str
    stream_id: str
    time: float
    data: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": self.type, "stream": self.stream_id, "time": self.time}
        out.update(self.data)
        return out
