"""The ZeroMQ wire format for sensor samples (see docs/wire-format.md).

A data message is three frames: ``[topic, header, payload]``

- topic: the stream id, UTF-8 (SUB sockets filter on its prefix);
- header: UTF-8 JSON ``{"v": 1, "stream", "seq", "t", "rate", "dtype", "channels", "n"}`` plus
  optional ``"scale"`` (multiplier to physical units), ``"units"`` and ``"names"`` (one short
  name per channel);
- payload: ``n * channels`` interleaved little-endian samples of ``dtype``.

End of stream is ``[topic, {"v": 1, "stream": ..., "eos": true}]``. Nothing is ever unpickled.
``decode`` raises ``WireFormatError`` whose ``reason`` is one of ``REASONS`` so that receivers can
count rejected messages by cause and carry on.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Any

import numpy as np

from drsn_stream.errors import WireFormatError
from drsn_stream.types import Frame

VERSION = 1
DTYPES: dict[str, np.dtype] = {
    "float32": np.dtype("<f4"),
    "float64": np.dtype("<f8"),
    "int16": np.dtype("<i2"),
    "int32": np.dtype("<i4"),
}
# Integers without an explicit scale are read as fractions of full scale (the audio convention).
DEFAULT_SCALE = {"float32": 1.0, "float64": 1.0, "int16": 1.0 / 32768.0, "int32": 1.0 / 2147483648.0}
MIN_RATE, MAX_RATE = 1.0, 1e6  # Hz
MAX_CHANNELS = 256
MAX_SAMPLES = 1 << 24  # per message and channel
REASONS = (
    "wrong_parts",  # not 2 (eos) or 3 (data) frames
    "bad_json",  # header is not UTF-8 JSON object
    "bad_version",  # "v" missing or not 1
    "missing_field",  # a required header field is absent
    "bad_field",  # a field has the wrong type or an impossible value (seq < 0, n < 1, ...)
    "unknown_dtype",  # dtype not one of DTYPES
    "absurd_rate",  # rate outside 1 Hz .. 1 MHz
    "bad_size",  # payload length != n * channels * itemsize
    "topic_mismatch",  # topic frame differs from the header's stream
)
_REQUIRED = ("stream", "seq", "t", "rate", "dtype", "channels", "n")
# A channel name becomes the last part of a stream id ("press-3/DE"): short, no "/" or spaces.
CHANNEL_NAME = re.compile(r"[A-Za-z0-9_.:+-]{1,32}")


class WireError(WireFormatError):
    """A rejected message; ``reason`` is one of ``REASONS``."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


@dataclass(frozen=True, slots=True)
class EndOfStream:
    """A publisher's explicit end of one stream."""

    stream_id: str


def encode(
    stream_id: str,
    seq: int,
    t_capture: float,
    sample_rate: float,
    samples: np.ndarray,
    *,
    dtype: str = "float32",
    scale: float | None = None,
    units: str | None = None,
    names: tuple[str, ...] | list[str] | None = None,
) -> list[bytes]:
    """Frames of one data message.

    Args:
        samples: ``(n,)`` or ``(n, channels)`` in physical units; converted to ``dtype``. For
            integer dtypes the values are divided by ``scale`` (default: full scale = 1.0) and
            rounded, so the receiver gets ``round(x / scale) * scale`` back.
        t_capture: capture time of the first sample, wall-clock seconds.
        names: one distinct short name per channel (``CHANNEL_NAME``); the receiver monitors
            channel ``k`` as ``"STREAM/names[k]"`` (without names: ``"STREAM/chK"``).
    """
    if dtype not in DTYPES:
        raise WireFormatError(f"unknown_dtype: {dtype!r}; use one of {', '.join(DTYPES)}")
    x = np.asarray(samples)
    if x.ndim == 1:
        x = x[:, None]
    if x.ndim != 2 or x.shape[0] < 1:
        raise WireFormatError(f"bad_field: samples must be (n,) or (n, channels) with n >= 1, got {x.shape}")
    dt = DTYPES[dtype]
    header: dict[str, Any] = {
        "v": VERSION,
        "stream": stream_id,
        "seq": int(seq),
        "t": float(t_capture),
        "rate": float(sample_rate),
        "dtype": dtype,
        "channels": int(x.shape[1]),
        "n": int(x.shape[0]),
    }
    if dt.kind == "i":
        s = DEFAULT_SCALE[dtype] if scale is None else float(scale)
        info = np.iinfo(dt)
        payload = np.clip(np.rint(x / s), info.min, info.max).astype(dt)
        if scale is not None:
            header["scale"] = s
    else:
        payload = x.astype(dt)
        if scale is not None:
            header["scale"] = float(scale)
            payload = (x / float(scale)).astype(dt)
    if units is not None:
        header["units"] = str(units)
    if names is not None:
        header["names"] = list(_names(list(names), int(x.shape[1])))
    return [
        stream_id.encode("utf-8"),
        json.dumps(header, separators=(",", ":")).encode("utf-8"),
        np.ascontiguousarray(payload).tobytes(),
    ]


def encode_eos(stream_id: str) -> list[bytes]:
    """Frames of an end-of-stream message for ``stream_id``."""
    header = {"v": VERSION, "stream": stream_id, "eos": True}
    return [stream_id.encode("utf-8"), json.dumps(header, separators=(",", ":")).encode("utf-8")]


def _field(header: dict[str, Any], name: str, kind: type | tuple[type, ...]) -> Any:
    value = header[name]
    if isinstance(value, bool) or not isinstance(value, kind):
        raise WireError("bad_field", f"{name}={value!r} should be {getattr(kind, '__name__', kind)}")
    return value


def _names(value: Any, channels: int) -> tuple[str, ...]:
    """The ``names`` field checked: a list of ``channels`` distinct ``CHANNEL_NAME`` strings."""
    if (not isinstance(value, list) or len(value) != channels
            or not all(isinstance(v, str) and CHANNEL_NAME.fullmatch(v) for v in value)
            or len(set(value)) != channels):
        raise WireError("bad_field", f"names={str(value)[:80]} should be {channels} distinct names of 1-32 "
                        "letters, digits or _.:+-")
    return tuple(value)


def decode(parts: list[bytes] | list[Any]) -> Frame | EndOfStream:
    """Parse one received multipart message into a Frame (samples float32 ``(n, channels)``,
    multiplied by the scale) or an EndOfStream. Raises ``WireError`` (a ``WireFormatError``) with
    a ``reason`` from ``REASONS``."""
    if len(parts) not in (2, 3):
        raise WireError("wrong_parts", f"expected 3 frames (topic, header, payload) or 2 (eos), got {len(parts)}")
    raw = [bytes(p) for p in parts]
    try:
        header = json.loads(raw[1].decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise WireError("bad_json", f"header is not UTF-8 JSON ({exc})") from None
    if not isinstance(header, dict):
        raise WireError("bad_json", f"header must be a JSON object, got {type(header).__name__}")
    if header.get("v") != VERSION:
        raise WireError("bad_version", f"format version {header.get('v')!r}; this receiver reads v{VERSION}")
    if header.get("eos") is True:
        if "stream" not in header:
            raise WireError("missing_field", "end-of-stream message without 'stream'")
        return EndOfStream(str(_field(header, "stream", str)))
    if len(raw) != 3:
        raise WireError("wrong_parts", "data message needs 3 frames: topic, header, payload")
    missing = [k for k in _REQUIRED if k not in header]
    if missing:
        raise WireError("missing_field", f"header lacks {', '.join(missing)}")
    stream = _field(header, "stream", str)
    seq = _field(header, "seq", int)
    t = float(_field(header, "t", (int, float)))
    rate = float(_field(header, "rate", (int, float)))
    channels = _field(header, "channels", int)
    n = _field(header, "n", int)
    dtype = header["dtype"]
    if seq < 0 or not math.isfinite(t) or not 1 <= channels <= MAX_CHANNELS or not 1 <= n <= MAX_SAMPLES:
        raise WireError("bad_field", f"seq={seq}, t={t}, channels={channels}, n={n} out of range")
    if dtype not in DTYPES:
        raise WireError("unknown_dtype", f"dtype {dtype!r}; valid: {', '.join(DTYPES)}")
    if not MIN_RATE <= rate <= MAX_RATE:
        raise WireError("absurd_rate", f"rate {rate} Hz outside {MIN_RATE:g}..{MAX_RATE:g} Hz")
    try:
        topic = raw[0].decode("utf-8")
    except UnicodeDecodeError:
        topic = None
    if topic != stream:
        raise WireError("topic_mismatch", f"topic {raw[0][:40]!r} but header stream {stream!r}")
    dt = DTYPES[dtype]
    if len(raw[2]) != n * channels * dt.itemsize:
        raise WireError("bad_size", f"payload {len(raw[2])} bytes, header says {n}x{channels} {dtype} "
                        f"= {n * channels * dt.itemsize}")
    scale = header.get("scale", DEFAULT_SCALE[dtype])
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not math.isfinite(scale):
        raise WireError("bad_field", f"scale={scale!r} should be a finite number")
    names = _names(header["names"], channels) if "names" in header else None
    samples = np.frombuffer(raw[2], dtype=dt).reshape(n, channels).astype(np.float32)
    if scale != 1.0:
        samples *= np.float32(scale)
    return Frame(stream, seq, t, rate, samples, names=names)
