"""The records that flow through the pipeline: Frame -> Window -> Prediction -> Event.

Times are wall-clock seconds (``time.time()``) so that capture times from other hosts and
local result times can be compared; latency is ``t_result - Window.t_last``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


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
    """

    stream_id: str
    seq: int
    t_capture: float
    sample_rate: float
    samples: np.ndarray
    overflow: int = 0

    @property
    def n(self) -> int:
        return int(self.samples.shape[0])

    @property
    def duration(self) -> float:
        return self.n / float(self.sample_rate)


@dataclass(slots=True)
class Window:
    """A fixed-length, normalized slice of one stream, ready for the model.

    Attributes:
        stream_id: the stream it came from.
        index: running window number inside the stream (0, 1, ...).
        t_last: capture time of the window's last sample, seconds (wall clock).
        data: float32 array of shape (window,), normalized as the artifact says (or raw when
            ``normalized`` is False: the inference loop then normalizes the whole batch at once).
        t_ready: wall-clock time the window was formed (enters the batcher).
        level: RMS of the window before normalization (for sparklines and health); set by the
            inference loop for raw windows.
        normalized: whether ``data`` is already normalized.
        healthy: the stream's sensor health passed every sample of the window (set when it was
            formed, so a late result is still judged on the health of its own samples).
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

    def to_json(self) -> dict[str, Any]:
        healthy = self.health == "OK"
        return {
            "type": "prediction",
            "stream": self.stream_id,
            "time": self.t_last,
            "index": self.index,
            "label": self.label if healthy else "check_sensor",
            **({} if healthy else {"model_label": self.label}),
            "health": self.health,
            "confidence": round(float(self.confidence), 5),
            "probs": [round(float(p), 5) for p in self.probs],
            "noise_index": round(float(self.noise_index), 5),
            "latency_ms": round(float(self.latency_ms), 3),
            "batch_size": self.batch_size,
        }


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
