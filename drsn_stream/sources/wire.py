"""The ZeroMQ wire format for sensor samples (see docs/wire-format.md).

A data message is three frames: ``[topic, header, payload]``

- topic: the stream id, UTF-8 (SUB sockets filter on its prefix);
- header: UTF-8 JSON ``{"v": 1, "stream", "seq", "t", "rate", "dtype", "channels", "n"}`` plus
  optional ``"scale"`` (multiplier to physical units), ``"units"``, ``"names"`` (one short
  name per channel) and ``"rpm"`` (the machine's shaft speed while the frame was captured);
- payload: ``n * channels`` interleaved little-endian samples of ``dtype``.

End of stream is ``[topic, {"v": 1, "stream": ..., "eos": true}]``. Nothing is ever unpickled.
``decode`` raises ``WireFormatError`` whose ``reason`` is one of ``REASONS`` so that receivers can
count rejected messages by cause and carry on.
"""

from __future__ import annotations

import json
import math
import re
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from drsn_stream.errors import WireFormatError
from drsn_stream.types import MAX_RPM, Frame

VERSION = 1
DTYPES: dict[str, np.dtype] = {
    "float32": np.dtype("<f4"),
    "float64": np.dtype("<f8"),
    "int16": np.dtype("<i2"),
    "int32": np.dtype("<i4"),
}
_F32 = np.dtype(np.float32)  # the machine's own float32: a payload in it needs no conversion
_F32_MAX = float(np.finfo(np.float32).max)
_F32_SMALLEST = float(np.finfo(np.float32).smallest_subnormal)  # a subnormal: not health.py's _F32_TINY
# Integers without an explicit scale are read as fractions of full scale (the audio convention).
DEFAULT_SCALE = {"float32": 1.0, "float64": 1.0, "int16": 1.0 / 32768.0, "int32": 1.0 / 2147483648.0}
MIN_RATE, MAX_RATE = 1.0, 1e6  # Hz
MAX_CHANNELS = 256
MAX_SAMPLES = 1 << 24  # per message and channel
# Bounds checked before the header is parsed or the payload copied: a header is ~150 bytes and one
# level deep, a payload of 1 s of 256 channels at 12 kHz in float32 is 12 MiB.
MAX_HEADER_BYTES = 4096
MAX_DEPTH = 8  # nesting of JSON arrays/objects in a header
MAX_PAYLOAD_BYTES = 16 << 20
MAX_STREAM_ID = 256  # characters
MAX_SEQ = 1 << 63
# Integer literals longer than this are not converted: Python's int() of a decimal string takes
# time quadratic in its length (a stream of thousands-of-digits seqs would tie up the ingest
# thread), and no field needs more than 19 digits.
MAX_INT_DIGITS = 40
# A capture time further than this from the receiver's clock is a broken clock or a forged frame
# (wide enough for hosts with a wrong date and for publishers replaying recordings ahead of time).
MAX_CLOCK_SKEW_S = 366 * 86400.0
REASONS = (
    "wrong_parts",  # not 2 (eos) or 3 (data) frames
    "bad_header",  # header larger than MAX_HEADER_BYTES or nested deeper than MAX_DEPTH
    "bad_json",  # header is not UTF-8 JSON object
    "bad_version",  # "v" missing or not 1
    "missing_field",  # a required header field is absent
    "bad_field",  # a field has the wrong type or an impossible value (n < 1, channels > 256, ...)
    "bad_seq",  # seq not an integer in [0, 2**63)
    "bad_time",  # t not a number within MAX_CLOCK_SKEW_S of the receiver's clock
    "unknown_dtype",  # dtype not one of DTYPES
    "absurd_rate",  # rate not a number in 1 Hz .. 1 MHz
    "too_large",  # payload larger than MAX_PAYLOAD_BYTES
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
    rpm: float | None = None,
) -> list[bytes]:
    """Frames of one data message.

    Args:
        samples: ``(n,)`` or ``(n, channels)`` in physical units; converted to ``dtype``. For
            integer dtypes the values are divided by ``scale`` (default: full scale = 1.0) and
            rounded, so the receiver gets ``round(x / scale) * scale`` back.
        t_capture: capture time of the first sample, wall-clock seconds.
        names: one distinct short name per channel (``CHANNEL_NAME``); the receiver monitors
            channel ``k`` as ``"STREAM/names[k]"`` (without names: ``"STREAM/chK"``).
        rpm: the shaft speed while the frame was captured (a tachometer's reading, 0 .. MAX_RPM;
            0: stopped): the receiver's envelope evidence then follows the speed. Written right
            after ``t``, where a receiver reads it without parsing the header again.
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
        **({} if rpm is None else {"rpm": _check_rpm(float(rpm))}),
        "rate": float(sample_rate),
        "dtype": dtype,
        "channels": int(x.shape[1]),
        "n": int(x.shape[0]),
    }
    if scale is not None:
        _check_scale(float(scale))  # what receivers refuse is refused here
    if dt.kind == "i":
        if not np.isfinite(x).all():
            raise WireFormatError(f"bad_field: {dtype} cannot carry NaN or Inf samples (stream {stream_id!r}, "
                                  f"seq {seq}); send float32 or float64")
        s = DEFAULT_SCALE[dtype] if scale is None else float(scale)
        info = np.iinfo(dt)
        # in float64: int32's full scale (2**31 - 1) is 2**31 in float32, and a cast of 2**31 to
        # int32 wraps to -2**31: a positive peak at full scale would arrive as the negative one
        payload = np.clip(np.rint(x.astype(np.float64) / s), info.min, info.max).astype(dt)
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


class _LongInt:
    """An integer literal of more than MAX_INT_DIGITS digits, left unconverted: no field accepts it,
    so each field's own check refuses it with that field's reason."""

    __slots__ = ("digits",)

    def __init__(self, digits: int) -> None:
        self.digits = digits

    def __repr__(self) -> str:
        return f"<{self.digits}-digit integer>"


def _parse_int(text: str) -> int | _LongInt:
    return int(text) if len(text) <= MAX_INT_DIGITS else _LongInt(len(text))


def _loads(text: str | bytes) -> Any:
    return json.loads(text, parse_int=_parse_int)


def _field(header: dict[str, Any], name: str, kind: type | tuple[type, ...], reason: str = "bad_field") -> Any:
    value = header[name]
    if isinstance(value, bool) or not isinstance(value, kind):
        if isinstance(value, _LongInt):
            raise WireError(reason, f"{name} is an integer of {value.digits} digits; at most {MAX_INT_DIGITS}")
        names = " or ".join(k.__name__ for k in kind) if isinstance(kind, tuple) else kind.__name__
        raise WireError(reason, f"{name}={_short(value)} should be {names}")
    return value


def _number(header: dict[str, Any], name: str, reason: str) -> float:
    """A finite JSON number as float; huge integers (``1e400`` written out) are refused, not
    overflowed (they arrive as ``_LongInt``, which is no number)."""
    value = _field(header, name, (int, float), reason)
    out = float(value)
    if not math.isfinite(out):
        raise WireError(reason, f"{name}={out} is not finite")
    return out


def _scale(header: dict[str, Any]) -> float:
    """The ``scale`` field: a nonzero number that stays finite and nonzero as the float32 the
    samples are multiplied by (``1e300`` would turn every sample into Inf, ``1e-300`` into 0)."""
    return _check_scale(_number(header, "scale", "bad_field"))


def _check_scale(scale: float) -> float:
    """``scale`` where float32 holds it nonzero and finite, else ``bad_field`` (NaN fails too)."""
    if not _F32_SMALLEST <= abs(scale) <= _F32_MAX:
        raise WireError("bad_field", f"scale={scale:.6g} must be a nonzero number float32 can hold "
                        f"(magnitude {_F32_SMALLEST:.3g} .. {_F32_MAX:.3g})")
    return scale


def _check_rpm(rpm: float) -> float:
    """``rpm`` where it is a shaft speed (``shaft_speed``), else ``bad_field`` (what ``encode`` refuses)."""
    if shaft_speed(rpm) is None:
        raise WireError("bad_field", f"rpm={rpm:.6g} must be a shaft speed of 0 .. {MAX_RPM:.0f} rpm (0: stopped)")
    return rpm


def shaft_speed(value: Any) -> float | None:
    """The ``rpm`` field as a speed, or None where it is none (NaN, Inf, negative, over MAX_RPM, not a
    number): the frame is taken without a speed rather than lost. A tachometer's reading of a
    stopped shaft (no pulses) is easily 60 / 0; the samples are still the sensor's."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    rpm = float(value)
    return rpm if 0.0 <= rpm <= MAX_RPM else None


def _apart(seconds: float, *, side: bool = True) -> str:
    """``seconds`` between two clocks as people say it: "54 years behind", "3.2 hours ahead of"."""
    d = abs(seconds)
    for unit, size in (("years", 365.25 * 86400), ("days", 86400), ("hours", 3600), ("minutes", 60)):
        if d >= 2 * size:
            v = d / size
            text = f"{v:.3g} {unit}" if v < 100 else f"{v:,.0f} {unit}"
            break
    else:
        text = f"{d:.3g} s"
    return f"{text} {'ahead of' if seconds > 0 else 'behind'}" if side else text


def _short(value: Any) -> str:
    text = repr(value) if not isinstance(value, int) or value.bit_length() < 200 else f"<{value.bit_length()}-bit int>"
    return text if len(text) <= 60 else text[:57] + "..."


def _check_nesting(raw: bytes) -> None:
    """Refuses headers nested deeper than MAX_DEPTH before ``json.loads`` recurses into them."""
    if raw.count(b"[") + raw.count(b"{") <= MAX_DEPTH:  # the common case: no need to scan
        return
    depth, in_str, escaped = 0, False, False
    for c in raw:
        if in_str:
            if escaped:
                escaped = False
            elif c == 0x5C:  # backslash
                escaped = True
            elif c == 0x22:  # quote
                in_str = False
        elif c == 0x22:
            in_str = True
        elif c in (0x5B, 0x7B):  # [ {
            depth += 1
            if depth > MAX_DEPTH:
                raise WireError("bad_header", f"header nested deeper than {MAX_DEPTH} levels")
        elif c in (0x5D, 0x7D):
            depth -= 1


def _names(value: Any, channels: int) -> tuple[str, ...]:
    """The ``names`` field checked: a list of ``channels`` distinct ``CHANNEL_NAME`` strings."""
    if (not isinstance(value, list) or len(value) != channels
            or not all(isinstance(v, str) and CHANNEL_NAME.fullmatch(v) for v in value)
            or len(set(value)) != channels):
        raise WireError("bad_field", f"names={_short(value)} should be {channels} distinct names of 1-32 "
                        "letters, digits or _.:+-")
    return tuple(value)


def decode(parts: list[bytes] | list[Any], *, now: float | None = None,
           max_skew_s: float = MAX_CLOCK_SKEW_S) -> Frame | EndOfStream:
    """Parse one received multipart message into a Frame (samples float32 ``(n, channels)``,
    multiplied by the scale) or an EndOfStream. Raises ``WireError`` (a ``WireFormatError``) with
    a ``reason`` from ``REASONS`` and nothing else, whatever the bytes.

    Args:
        now: the receiver's clock (s) that ``t`` is checked against (``time.time()`` when None).
        max_skew_s: the largest ``|t - now|`` accepted (``bad_time`` beyond it).
    """
    if len(parts) not in (2, 3):
        raise WireError("wrong_parts", f"expected 3 frames (topic, header, payload) or 2 (eos), got {len(parts)}")
    if len(parts[1]) > MAX_HEADER_BYTES:
        raise WireError("bad_header", f"header of {len(parts[1])} bytes; at most {MAX_HEADER_BYTES}")
    if len(parts) == 3 and len(parts[2]) > MAX_PAYLOAD_BYTES:
        raise WireError("too_large", f"payload of {len(parts[2])} bytes; at most {MAX_PAYLOAD_BYTES} per message "
                        "(send shorter frames)")
    raw = [bytes(p) for p in parts]
    _check_nesting(raw[1])
    try:
        header = _loads(raw[1].decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise WireError("bad_json", f"header is not UTF-8 JSON ({str(exc)[:80]})") from None
    if not isinstance(header, dict):
        raise WireError("bad_json", f"header must be a JSON object, got {type(header).__name__}")
    version = header.get("v")
    if isinstance(version, bool) or not isinstance(version, int) or version != VERSION:
        raise WireError("bad_version", f"format version {_short(version)}; this receiver reads v{VERSION}")
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
    if not 0 < len(stream) <= MAX_STREAM_ID:
        raise WireError("bad_field", f"stream id of {len(stream)} characters; 1..{MAX_STREAM_ID}")
    # the id is shown on operators' terminals (dashboard, --headless lines, summaries, error lines):
    # control characters (ESC, CR, BEL ...), bidirectional overrides and other format characters
    # in it would be the sender's keystrokes there
    if not stream.isprintable():
        raise WireError("bad_field", f"stream id {_short(stream)} has control or format characters; "
                        "use printable ones")
    seq = _field(header, "seq", int, "bad_seq")
    if not 0 <= seq < MAX_SEQ:
        raise WireError("bad_seq", f"seq={_short(seq)} outside 0..2**63-1")
    t = _number(header, "t", "bad_time")
    now = time.time() if now is None else now
    if abs(t - now) > max_skew_s:
        raise WireError("bad_time", f"t={t:.6g} is {_apart(t - now)} this receiver's clock (at most "
                        f"{_apart(max_skew_s, side=False)} apart); set the publisher's clock (NTP)")
    rate = _number(header, "rate", "absurd_rate")
    channels = _field(header, "channels", int)
    n = _field(header, "n", int)
    dtype = header["dtype"]
    if not 1 <= channels <= MAX_CHANNELS or not 1 <= n <= MAX_SAMPLES:
        raise WireError("bad_field", f"channels={_short(channels)}, n={_short(n)} out of range")
    if not isinstance(dtype, str) or dtype not in DTYPES:
        raise WireError("unknown_dtype", f"dtype {_short(dtype)}; valid: {', '.join(DTYPES)}")
    if not MIN_RATE <= rate <= MAX_RATE:
        raise WireError("absurd_rate", f"rate {rate:.6g} Hz outside {MIN_RATE:g}..{MAX_RATE:g} Hz")
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
    scale = _scale(header) if "scale" in header else DEFAULT_SCALE[dtype]
    names = _names(header["names"], channels) if "names" in header else None
    rpm = shaft_speed(header["rpm"]) if "rpm" in header else None
    return Frame(stream, seq, t, rate, _samples(raw[2], dt, n, channels, scale), names=names, rpm=rpm)


def _samples(payload: Any, dt: np.dtype, n: int, channels: int, scale: float) -> np.ndarray:
    return _float32(np.frombuffer(payload, dtype=dt).reshape(n, channels), scale)


def _float32(raw: np.ndarray, scale: float) -> np.ndarray:
    """``raw`` samples as float32 in physical units, in one pass: each converted to float32, then
    multiplied by ``scale`` in float32 (``decode`` and ``to_frames`` give the same bits)."""
    if scale == 1.0 and raw.dtype != np.float64:  # float32 and int16/int32 fit float32's range
        return raw.astype(np.float32)
    # float64 samples (or scaled ones) beyond float32's range become +-Inf, which the sensor
    # health counts as non-finite samples of the stream; numpy's warning about it would only be
    # a line on the monitor's terminal
    with np.errstate(over="ignore", invalid="ignore"):
        return raw.astype(np.float32) if scale == 1.0 else np.multiply(raw, np.float32(scale), dtype=np.float32)


@dataclass(frozen=True, slots=True)
class _Template:
    """What every header with the same bytes around ``seq`` and ``t`` says, checked once."""

    stream: str
    topic: bytes
    rate: float
    dtype: np.dtype
    channels: int
    n: int
    scale: float
    names: tuple[str, ...] | None
    size: int  # payload bytes
    # (dtype, n, channels, scale), one object per Decoder for all templates of that layout:
    # payloads of one layout are converted together
    layout: tuple[np.dtype, int, int, float]


# ``,"seq":<int>,"t":<number>[,"rpm":<number>],`` of a header as ``encode`` writes it (JSON's own
# number grammar; a speed is never negative)
_NUMBER = rb'(?:0|[1-9][0-9]{0,20})(?:\.[0-9]{1,20})?(?:[eE][-+]?[0-9]{1,3})?'
_SEQ_T = re.compile(rb',"seq":(0|[1-9][0-9]{0,18}),"t":(-?' + _NUMBER + rb')(?:,"rpm":(' + _NUMBER + rb'))?,')
MAX_TEMPLATES = 4096  # header templates a Decoder keeps (one per stream and layout); then it starts over
CONVERT_BYTES = 256 << 10  # payload bytes to_frames converts in one numpy step at most
# a float32 payload at least this big is used where it lies (a read-only view of the message),
# not copied into a block: its bytes arrive cold from the socket's I/O thread, and the copy cost
# more than one numpy call per message (docs/performance.md)
VIEW_BYTES = 8 << 10
Head = tuple[_Template, int, float, float | None]  # a known message's template, seq, t and rpm


class Decoder:
    """``decode`` for a receiver of many frames per stream, with the same result for every message
    (the same Frame, or the same ``WireError`` reason).

    A publisher's headers differ from frame to frame only in ``seq`` and ``t`` (and ``rpm`` right
    after ``t``, where it is sent): the bytes around them are the same for every frame of a stream. The first header of each such template is
    parsed and checked in full (``decode``); later ones with the same bytes around ``seq`` and ``t``
    only need those two numbers read and checked (range, clock skew), the topic compared and the
    payload size checked. Anything else, and any message a check refuses, goes through ``decode``.
    A receiver of many messages at once checks their headers one by one (``head``) and converts
    the payloads of all of them together (``to_frames``).

    Args:
        max_skew_s: as for ``decode``.
    """

    def __init__(self, *, max_skew_s: float = MAX_CLOCK_SKEW_S) -> None:
        self.max_skew_s = max_skew_s
        self._templates: dict[tuple[bytes, bytes], _Template] = {}
        # topic -> (bytes before seq, bytes after t, their lengths, template) of its latest frame: a
        # stream's next header is checked against them without slicing and hashing it (the same
        # template is found: seq and t are the first match of _SEQ_T, which cannot begin inside
        # the prefix)
        self._last: dict[bytes, tuple[bytes, bytes, int, int, _Template]] = {}
        self._layouts: dict[tuple[np.dtype, int, int, float], tuple[np.dtype, int, int, float]] = {}

    def decode(self, parts: list[bytes] | list[Any], *, now: float | None = None) -> Frame | EndOfStream:
        """As ``decode(parts, now=now, max_skew_s=self.max_skew_s)``."""
        if len(parts) == 3 and type(parts[0]) is bytes and type(parts[1]) is bytes and type(parts[2]) is bytes:
            head = self.head(parts[0], parts[1], len(parts[2]), time.time() if now is None else now)
            if head is not None:
                return to_frames([head], [parts[2]])[0]
        msg = decode(parts, now=now, max_skew_s=self.max_skew_s)
        if isinstance(msg, Frame):
            self._learn(bytes(parts[1]), msg)
        return msg

    def head(self, topic: bytes, header: bytes, size: int, now: float, at: list[int] | None = None) -> Head | None:
        """The template, seq, t and rpm (None: not sent) of a data message (``topic`` and ``header`` bytes, a payload of
        ``size`` bytes) whose header fits a known template and passes every check, else None
        (``decode`` then says what it is). ``at``: where the header has its seq, t and rpm, as
        ``recv_jit``'s compiled receive found them (its ``_locate``; a first value of -1: not
        found), which spares the regular expression where they are where the template has them."""
        if len(header) > MAX_HEADER_BYTES:
            return None
        last = self._last.get(topic)
        m = None
        t_text = None  # the bytes of t, once found
        if last is not None and header.startswith(last[0]) and header.endswith(last[1]):
            tpl = last[4]
            if at is not None and at[0] == last[2] and at[1] == len(header) - last[3]:
                # _SEQ_T's match, and the only one: its bytes between the template's alone
                seq, t_text = at[2], header[at[3] : at[4]]
                rpm = header[at[5] : at[6]] if at[5] >= 0 else None
            else:
                m = _SEQ_T.fullmatch(header, last[2], len(header) - last[3])
        if t_text is None:
            if m is None:
                m = _SEQ_T.search(header)
                if m is None:
                    return None
                key = (header[: m.start()], header[m.end():])
                tpl = self._templates.get(key)
                if tpl is None or topic != tpl.topic:
                    return None
                self._last[topic] = (*key, len(key[0]), len(key[1]), tpl)
            seq, t_text, rpm = int(m.group(1)), m.group(2), m.group(3)
        if size != tpl.size:
            return None
        t = float(t_text)
        if seq >= MAX_SEQ or not abs(t - now) <= self.max_skew_s:
            return None
        if rpm is None:
            return tpl, seq, t, None
        speed = float(rpm)
        return (tpl, seq, t, speed) if speed <= MAX_RPM else None  # decode says what else it is

    def _learn(self, header: bytes, frame: Frame) -> None:
        """Keep the template of a header ``decode`` accepted, where ``seq`` and ``t`` (and ``rpm``,
        where sent) appear once each, in ``encode``'s order, and nowhere else: the bytes around
        them then say the same for every header that shares them."""
        m = _SEQ_T.search(header)
        # no backslash: no escaped key ("\\u0073eq") can repeat seq, t or rpm after the part kept
        if (m is None or b"\\" in header or header.count(b'"seq"') != 1 or header.count(b'"t"') != 1
                or header.count(b'"rpm"') != (m.group(3) is not None)):
            return
        if len(self._templates) >= MAX_TEMPLATES:
            self._templates.clear()
            self._last.clear()
            self._layouts.clear()
        n, channels = frame.samples.shape
        head = _loads(header)
        dt = DTYPES[head["dtype"]]
        scale = float(head["scale"]) if "scale" in head else DEFAULT_SCALE[head["dtype"]]
        self._templates[(header[: m.start()], header[m.end():])] = _Template(
            frame.stream_id, frame.stream_id.encode("utf-8"), frame.sample_rate, dt, channels, n,
            scale, frame.names, n * channels * dt.itemsize,
            self._layouts.setdefault((dt, n, channels, scale), (dt, n, channels, scale)))


def to_frames(heads: list[Head], payloads: list[Any]) -> list[Frame]:
    """The frames of messages ``Decoder.head`` accepted, their payloads (bytes or any buffer)
    converted in one numpy step per layout (dtype, n, channels, scale) rather than one per
    message: the same samples, bit for bit, as ``decode`` gives each. A frame's samples are a
    view of its layout's block, or, for big native float32 payloads (``VIEW_BYTES``), a read-only
    view of the payload itself."""
    if not heads:
        return []
    layout = heads[0][0].layout
    if all(h[0].layout is layout for h in heads):
        groups = {layout: range(len(heads))}
    else:
        groups = {}
        for i, h in enumerate(heads):
            groups.setdefault(h[0].layout, []).append(i)
    out: list[Frame] = [None] * len(heads)  # type: ignore[list-item]
    for (dt, n, channels, scale), idx in groups.items():
        if scale == 1.0 and dt == _F32 and n * channels * 4 >= VIEW_BYTES:
            for i in idx:
                tpl, seq, t, rpm = heads[i]
                x = np.frombuffer(payloads[i], dtype=dt).reshape(n, channels)
                # a message's bytes where its socket put them need not be 4-byte aligned
                out[i] = Frame(tpl.stream, seq, t, tpl.rate, x if x.flags.aligned else x.copy(), names=tpl.names,
                               rpm=rpm)
            continue
        # blocks of at most CONVERT_BYTES: they stay in the CPU's cache and need no fresh pages
        per = max(1, CONVERT_BYTES // (n * channels * dt.itemsize))
        # native float32 as sent: the joined payloads (a bytearray: writable) are the samples, no
        # second copy; any other layout is converted in one numpy step
        as_is = scale == 1.0 and dt == _F32
        for at in range(0, len(idx), per):
            part = idx[at : at + per]
            if as_is:
                block = np.frombuffer(bytearray().join([payloads[i] for i in part]), dtype=_F32)
                block = (block if block.flags.aligned else block.copy()).reshape(len(part), n, channels)
            else:
                block = np.frombuffer(b"".join([payloads[i] for i in part]), dtype=dt).reshape(len(part), n, channels)
                block = _float32(block, scale)
            for i, x in zip(part, block):
                tpl, seq, t, rpm = heads[i]
                out[i] = Frame(tpl.stream, seq, t, tpl.rate, x, 0, tpl.names, rpm)  # positional: no keyword parsing per frame
    return out
