"""``file:PATH``: replay a recording (WAV, NPY, CSV or CWRU .mat) through the live path.

Paced in real time by default (a frame is delivered when its last sample would have been
captured), ``fast`` for as fast as possible, ``loop`` to repeat. The stream id is the file name
without its suffix unless ``stream=`` says otherwise.
"""

from __future__ import annotations

import math
import re
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from drsn_stream.errors import ConfigError, SourceError
from drsn_stream.sources.base import Source, opt_bool, opt_choice, opt_finite, opt_positive
from drsn_stream.sources.wire import MAX_CHANNELS
from drsn_stream.types import Frame, channel_ids
from drsn_stream.wav import WavError, read_wav

SUFFIXES = (".wav", ".npy", ".csv", ".mat")
_CWRU_RATE = re.compile(r"^(12|48)k_")


def _wav(path: Path) -> tuple[np.ndarray, float]:
    try:
        return read_wav(path)
    except WavError as exc:
        raise SourceError(f"{path}: not a readable WAV file ({exc}); convert it with "
                          "sox to 16-bit or float WAV") from exc


def _cwru_rate(path: Path) -> float | None:
    """The CWRU naming rule: 12k_*/48k_* say so; the normal baselines are 48 kHz."""
    m = _CWRU_RATE.match(path.name)
    if m:
        return 1000.0 * int(m.group(1))
    if path.name.startswith("normal_"):
        return 48000.0
    return None


def load_mat(path: str | Path, error: type[Exception] = SourceError) -> dict[str, Any]:
    """A MATLAB file's variables; ``error`` (one line: which file, what is wrong) for a file that
    is missing or is not a MATLAB file (text, empty, cut short: scipy's reader raises its own
    MatReadError, an IndexError and others for them)."""
    import scipy.io

    p = Path(path)
    if not p.is_file():
        raise error(f"{p}: {'a folder, not a file' if p.is_dir() else 'not found'}")
    try:
        return scipy.io.loadmat(p)
    except MemoryError:
        raise
    except Exception as exc:  # noqa: BLE001 - scipy's reader meets any bytes with any exception (IndexError, ...)
        raise error(f"{p}: cannot read it as a MATLAB .mat file ({str(exc)[:160] or type(exc).__name__}); "
                    "re-copy it, or save the samples as WAV, NPY or CSV") from None


def _mat(path: Path, channel: str) -> np.ndarray:
    mat = load_mat(path)
    keys = sorted(k for k in mat if k.endswith(f"_{channel}_time"))
    if not keys:
        have = sorted(k for k in mat if k.endswith("_time"))
        raise SourceError(f"{path}: no {channel} channel (*_{channel}_time); it has {', '.join(have) or 'none'}; "
                          "choose one with ?channel=DE|FE|BA")
    return _real(path, mat[keys[0]], f"{keys[0]} is not").reshape(-1, 1)


def _real(path: Path, data: Any, what: str = "not") -> np.ndarray:
    """``data`` as float32 samples; a SourceError for what is not real numbers (complex samples
    lost their imaginary part quietly; text, cells or structs raised from numpy)."""
    a = np.asarray(data)
    if np.iscomplexobj(a):
        raise SourceError(f"{path}: the samples are complex numbers; save the real signal (e.g. x.real) "
                          "or the magnitude (abs(x)), one column per channel")
    if a.dtype.kind not in "biuf":
        raise SourceError(f"{path}: {what} numeric samples (it holds {a.dtype} values); save the samples "
                          "as numbers, one column per channel")
    with np.errstate(over="ignore"):  # beyond float32's range: +-Inf, which the sensor health counts
        return a.astype(np.float32)


def mat_rpm(path: Path) -> float | None:
    """The shaft speed a CWRU .mat file records (its ``X###RPM`` variable), rpm; None without one."""
    try:
        mat = load_mat(path)
    except SourceError:
        return None
    for key in sorted(k for k in mat if k.endswith("RPM")):
        v = np.asarray(mat[key], dtype=np.float64).reshape(-1)
        if v.size and np.isfinite(v[0]) and v[0] > 0:
            return float(v[0])
    return None


def _csv(path: Path) -> np.ndarray:
    with open(path, encoding="utf-8", errors="replace") as fh:
        first = fh.readline()
    delimiter = "," if "," in first else (";" if ";" in first else None)
    header = 1 if re.search(r"[A-DF-Za-df-z_]", first) else 0  # letters other than e/E: a header row
    try:
        with warnings.catch_warnings():  # an empty file: said below in words, not by numpy on the terminal
            warnings.simplefilter("ignore", UserWarning)
            x = np.loadtxt(path, delimiter=delimiter, skiprows=header, dtype=np.float32, ndmin=2)
    except ValueError as exc:
        raise SourceError(f"{path}: not a numeric CSV with one column per channel ({exc})") from exc
    return x


def read_recording(path: Path, *, rate: float | None = None, channel: str = "DE") -> tuple[np.ndarray, float]:
    """Load a whole recording as float32 ``(n, channels)`` and its sample rate in Hz."""
    suffix = path.suffix.lower()
    if not path.is_file():
        raise SourceError(f"recording {path} not found")
    if suffix == ".wav":
        x, file_rate = _wav(path)
        rate = rate or file_rate
    elif suffix == ".npy":
        try:
            x = np.load(path, allow_pickle=False)
        except (ValueError, OSError, EOFError) as exc:
            raise SourceError(f"{path}: not a numeric .npy array ({exc})") from exc
        x = _real(path, x, "not a .npy array of")
    elif suffix == ".csv":
        x = _csv(path)
    elif suffix == ".mat":
        x = _mat(path, channel)
        rate = rate or _cwru_rate(path)
    else:
        raise ConfigError(f"{path}: unknown recording type {suffix!r}; use one of {', '.join(SUFFIXES)}")
    if rate is None:
        raise ConfigError(f"{path.name}: the sample rate is not in the file; give it, e.g. file:{path}?rate=12000")
    if not (math.isfinite(rate) and rate > 0):  # a WAV header can say 0 Hz
        raise SourceError(f"{path}: the file says its sample rate is {rate:g} Hz; give the real one, "
                          f"e.g. file:{path}?rate=12000")
    if x.ndim == 1:
        x = x[:, None]
    if x.ndim == 2 and x.size == 0:  # no rows, or rows of no channels
        raise SourceError(f"{path}: the recording holds no samples")
    if x.ndim != 2:
        raise SourceError(f"{path}: expected samples as (n,) or (n, channels), got shape {x.shape}")
    if x.shape[1] > MAX_CHANNELS:  # each channel is a stream: 10^5 of them is a transposed array
        raise SourceError(f"{path}: {x.shape[1]:,} channels of {x.shape[0]:,} samples; a recording has at most "
                          f"{MAX_CHANNELS} channels, one per column: if its rows are channels, save it "
                          "transposed (x.T)")
    return np.ascontiguousarray(x), float(rate)


class FileSource(Source):
    """``file:PATH[?rate=HZ&channel=DE&chunk=N&fast=1&loop=1&start=S&duration=S&stream=ID&rpm=RPM]``."""

    kind = "file"
    OPTIONS = {
        "rate": (opt_positive(float, 1e6), None, "sample rate in Hz (needed for .npy/.csv and non-CWRU .mat)"),
        "channel": (opt_choice("de", "fe", "ba"), "de", "CWRU .mat channel: DE|FE|BA"),
        "chunk": (opt_positive(int), 1024, "samples per frame"),
        "fast": (opt_bool, False, "1 = as fast as possible, no pacing"),
        "loop": (opt_bool, False, "1 = repeat the recording forever"),
        "start": (opt_finite(0.0), 0.0, "start this many seconds into the recording"),
        "duration": (opt_positive(float), math.inf, "play at most this many seconds per pass"),
        "stream": (str, "", "stream id (default: the file name without suffix)"),
        "speed": (opt_positive(float), 1.0, "pace as a multiple of real time"),
        "rpm": (opt_positive(float), None, "shaft speed in rpm, for the envelope evidence (default: the "
                                           "RPM a CWRU .mat file records)"),
    }

    def __init__(self, target: str = "", **options: Any) -> None:
        super().__init__(target, **options)
        if not target:
            raise ConfigError("file source needs a path: file:PATH, e.g. file:recording.wav")
        self.path = Path(target).expanduser()
        if self.path.suffix.lower() not in SUFFIXES:
            raise ConfigError(f"{self.path}: unknown recording type; use one of {', '.join(SUFFIXES)}")
        self.stream_id = self.options["stream"] or self.path.stem
        self._streams = [self.stream_id]
        self.t0: float | None = None
        # the shaft speed (rpm) and whether the user gave it (?rpm=) rather than the file
        self.rpm: float | None = self.options["rpm"]
        self.rpm_given = self.rpm is not None

    def check(self) -> None:
        if not self.path.is_file():
            raise SourceError(f"recording {self.path} not found")

    def _open(self) -> None:
        x, self.rate = read_recording(self.path, rate=self.options["rate"], channel=self.options["channel"].upper())
        a = int(round(self.options["start"] * self.rate))
        b = x.shape[0] if math.isinf(self.options["duration"]) else a + int(round(self.options["duration"] * self.rate))
        if not 0 <= a < x.shape[0]:
            raise ConfigError(f"start={self.options['start']} s is outside {self.path.name} "
                              f"({x.shape[0] / self.rate:.2f} s long)")
        self.samples = x[a:b]
        self._streams = list(channel_ids(self.stream_id, x.shape[1]))  # each channel is monitored
        if self.rpm is None and self.path.suffix.lower() == ".mat":
            self.rpm = mat_rpm(self.path)
        self.t0 = time.time()

    def _frames(self) -> Iterator[Frame]:
        assert self.t0 is not None
        x, chunk, rate = self.samples, self.options["chunk"], self.rate
        scale = 1.0 if self.options["fast"] else self.options["speed"]
        pos, seq, offset = 0, 0, 0  # offset: samples played in earlier passes
        while not self.closed:
            if pos >= x.shape[0]:
                if not self.options["loop"]:
                    return
                offset += x.shape[0]
                pos = 0
            block = x[pos : pos + chunk]
            start = offset + pos
            if not self.options["fast"] and not self._sleep_until(self.t0 + (start + block.shape[0]) / (rate * scale)):
                return
            yield Frame(self.stream_id, seq, self.t0 + start / (rate * scale), rate, block.copy())
            pos += block.shape[0]
            seq += 1
