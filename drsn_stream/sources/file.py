"""``file:PATH``: replay a recording (WAV, FLAC, Ogg, MP3, AIFF, NPY, CSV, MATLAB .mat or TDMS)
through the live path.

Paced in real time by default (a frame is delivered when its last sample would have been
captured), ``fast`` for as fast as possible, ``loop`` to repeat. The stream id is the file name
without its suffix unless ``stream=`` says otherwise.

A CSV file is one column per channel. A header row's names name the channels (``STREAM/NAME``); a
first column named like a time axis (``t``, ``time``, ``Time (s)``, ``timestamp``, ``time_ms``),
as data loggers export, gives the sample rate (its rows must be evenly spaced) and is not a
channel. A column named like a shaft speed in rpm (``rpm``, ``Speed (rpm)``, ``tacho_rpm``,
``shaft_rpm``), a tachometer or a drive's speed logged beside the vibration, is no channel either:
each frame carries the mean of its rows' speeds (the wire format's ``rpm``), which the envelope
evidence follows and the baselines learn and check; a row that holds no speed (NaN,
negative) leaves its frame without one.

A file named otherwise is read by what it holds (``recording_type``): columns of numbers as a
CSV file (a .txt export; the IMS set's ``2004.02.12.10.32.39``), a WAV saved as .dat as a WAV.

A MATLAB file laid out as CWRU's (``X097_DE_time``) plays its DE channel (``?channel=FE|BA``); any
other plays the signal it holds (a numeric vector or matrix, also in a struct or cell: MFPT's
``bearing.gs``) at the rate a variable beside it states (``fs``, ``sr``, ``dt``, a time vector):
``_mat``. ``?channel=NAME`` picks one where it holds several. A TDMS file (NI's LabVIEW and
DAQmx logs) plays its channels the same way, at the rate their ``wf_increment`` states: ``_tdms``.
Sound files other than WAV are decoded by libsndfile in a child process (``drsn_stream.audiofile``).

A folder plays its recordings one after another as one stream (a run-to-failure set's
snapshots), in name order with numbers as numbers, chosen by ``files``, ``skip`` and ``count``;
one that cannot be read, or differs from the first in rate or channels, is skipped and said.
"""

from __future__ import annotations

import csv
import fnmatch
import logging
import math
import os
import re
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from drsn_stream.audiofile import SUFFIXES as SOUND_SUFFIXES
from drsn_stream.audiofile import AudioFileError, read_audio
from drsn_stream.errors import ConfigError, DrsnStreamError, SourceError
from drsn_stream.sources.base import Source, opt_bool, opt_finite, opt_index, opt_positive
from drsn_stream.sources.mat73 import Mat73Error, read_mat73
from drsn_stream.sources.matcheck import check_v4, variables
from drsn_stream.sources.wire import MAX_CHANNELS, shaft_speed
from drsn_stream.types import MAX_RPM, Frame, channel_ids
from drsn_stream.wav import WavError, read_wav

SUFFIXES = (".wav", ".npy", ".csv", ".mat", ".tdms", *SOUND_SUFFIXES)
_CWRU_RATE = re.compile(r"^(12|48)k_")


def recording_type(path: Path) -> str | None:
    """The format of recording ``path``, one of ``SUFFIXES``: by its suffix, else by its first
    bytes: columns of numbers are read as a CSV file (a logger's .txt or .tsv export; a data
    set's files named by their time, ``2004.02.12.10.32.39``, as the IMS bearing set's are), and
    a WAV, .npy, MATLAB, TDMS, FLAC, Ogg, MP3 (with an ID3 tag) or AIFF file saved under another
    name as what it is. None for a file that is none of them (notes beside the recordings), or
    is not there."""
    suffix = path.suffix.lower()
    if suffix in SUFFIXES:
        return suffix
    try:
        with open(path, "rb") as fh:
            head = fh.read(4096)
    except OSError:
        return None
    if head[:4] == b"RIFF" and head[8:12] == b"WAVE":
        return ".wav"
    if head[:6] == b"\x93NUMPY":
        return ".npy"
    if head[:6] == b"MATLAB":
        return ".mat"
    if head[:4] == b"TDSm":
        return ".tdms"
    if head[:4] == b"fLaC":
        return ".flac"
    if head[:4] == b"OggS":
        return ".ogg"
    if head[:3] == b"ID3":  # an MP3 without its tag starts with a frame's sync bits, too weak a sign to go by
        return ".mp3"
    if head[:4] == b"FORM" and head[8:12] in (b"AIFF", b"AIFC"):
        return ".aiff"
    text = head.decode("utf-8", errors="replace")
    lines = [line for line in (text.split("\n")[:-1] or [text]) if line.strip()]  # the last may be cut short
    data = next((i for i, line in enumerate(lines) if _is_numbers(line)), None)
    # text, then rows of numbers to the end of what was read (a header and a preamble may come first)
    if "\ufffd" not in text and data is not None and data <= _PREAMBLE and all(map(_is_numbers, lines[data:])):
        return ".csv"
    return None


def stream_name(path: Path) -> str:
    """The stream id a recording plays under: its name without its suffix (``.wav``, ``.txt``),
    or its whole name where what follows the last dot holds no letter, a part of the name
    (``2004.02.12.10.32.39``)."""
    return path.stem if re.search(r"[A-Za-z]", path.suffix) else path.name


def _wav(path: Path) -> tuple[np.ndarray, float]:
    try:
        return read_wav(path)
    except WavError as exc:
        raise SourceError(f"{path}: not a readable WAV file ({exc}); convert it with "
                          "sox to 16-bit or float WAV") from exc


def _sound(path: Path) -> tuple[np.ndarray, float]:
    try:
        return read_audio(path)
    except AudioFileError as exc:
        raise SourceError(f"{path}: not a readable sound file ({exc}); convert it to WAV, e.g. "
                          f"sox {path.name} {path.stem}.wav") from exc


def _cwru_rate(path: Path) -> float | None:
    """The CWRU naming rule: 12k_*/48k_* say so; the normal baselines are 48 kHz."""
    m = _CWRU_RATE.match(path.name)
    if m:
        return 1000.0 * int(m.group(1))
    if path.name.startswith("normal_"):
        return 48000.0
    return None


def _not_a_file(p: Path) -> str:
    """Why ``p``, which is not a file to read, is not one."""
    if p.is_dir():
        return "a folder, not a file"
    if p.is_symlink():  # a copied or moved data set leaves its links pointing nowhere
        try:
            target = os.readlink(p)
        except OSError:
            target = "?"
        return f"a link to {target}, which does not exist; fix or remove the link"
    return "not found"


def load_mat(path: str | Path, error: type[Exception] = SourceError) -> dict[str, Any]:
    """A MATLAB file's variables: numeric arrays as scipy (h5py for v7.3) reads them, in a v5 or
    v7.3 file the numeric arrays inside its structs and cells under their MATLAB names
    (``bearing.gs``) and any other
    variable (text, cells, structs) as an empty object array; ``error`` (one line: which file,
    what is wrong) for a file that is missing or is not a whole MATLAB file (text, empty, cut
    short, damaged inside: scipy's reader raises its own MatReadError, an IndexError and others
    for them, or crashes: ``matcheck``)."""
    import scipy.io

    p = Path(path)
    if not p.is_file():
        raise error(f"{p}: {_not_a_file(p)}")
    try:
        with warnings.catch_warnings():
            # scipy says a variable it cannot read (or a name used twice) in a warning on the
            # monitor's terminal, and leaves a string in its place: left out below instead
            warnings.simplefilter("ignore")
            # the structure checked first (scipy's reader can crash the process on a damaged v5
            # file, or ask for terabytes for a v4 one), and of a v5 file only the whole numeric
            # arrays read; v7.3 (HDF5) files, which scipy does not read, h5py reads in a child process
            version = scipy.io.matlab.matfile_version(p)[0]
            if version == 1:
                numeric, others, leaves = variables(p)
                mat = scipy.io.loadmat(p, variable_names=numeric)
                # the others are there, not samples: an empty object array says so to every caller
                mat.update((name, np.empty(0, dtype=object)) for name in others if name not in mat)
                mat.update(leaves)
            elif version == 2:  # HDF5 inside, read by h5py in a child process
                try:
                    mat, others = read_mat73(p)
                except Mat73Error as exc:
                    raise error(f"{p}: {exc}") from None
                mat.update((name, np.empty(0, dtype=object)) for name in others if name not in mat)
            else:
                if version == 0:
                    check_v4(p)
                mat = scipy.io.loadmat(p)
        return {k: v for k, v in mat.items() if k.startswith("__") or isinstance(v, np.ndarray)}
    except (MemoryError, error):
        raise
    except Exception as exc:  # noqa: BLE001 - scipy's reader meets any bytes with any exception (IndexError, ...)
        raise error(f"{p}: cannot read it as a MATLAB .mat file ({str(exc)[:160] or type(exc).__name__}); "
                    "re-copy it, or save the samples as WAV, NPY or CSV") from None


_CWRU_CHANNELS = ("DE", "FE", "BA")
# A MATLAB variable named like a sample rate (fs, Fs, sr, SampleRate, sampling_frequency, fs_hz,
# fs_khz) gives the rate of the signals beside it; one named like a sampling interval (dt, Ts,
# sample_time, sampling_period_ms) its inverse. A bare "rate" is left alone: test rigs' files use
# it for the shaft's rate as often as for the sampling's.
_RATE_VAR = re.compile(r"(?:fs|f_s|sr|srate|fsamp|fsample|sps|samp(?:le|ling)?_?(?:rate|freq|frequency))(?:_(hz|khz))?")
_PERIOD_VAR = re.compile(r"(?:dt|ts|sample_?time|samp(?:le|ling)?_?(?:interval|period))(?:_(s|secs?|ms|us))?")
_MIN_SIGNAL = 64  # a numeric variable of fewer values is a setting (a date, a geometry), not a signal


class _Signals(NamedTuple):
    """What a .mat or TDMS file holds for the monitor."""

    samples: np.ndarray  # (n, channels)
    rate: float | None  # what the file says (a CWRU name, a rate or time variable); None: not said
    names: tuple[str, ...] | None  # channel names where several variables make the channels
    cwru: bool  # CWRU's layout (X097_DE_time ...), whose channels are DE, FE and BA
    rpm: float | None  # the shaft speed it records


def _snake(name: str) -> str:
    """A name as the name patterns match it: lower case, its other characters one ``_`` each
    (``Time (s)`` -> ``time_s``)."""
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")


def _whole_hz(rate: float) -> float:
    """``rate``, a whole number of Hz where it is within 0.01 % of one (times or intervals written
    with a few decimals are a little off)."""
    return float(round(rate)) if abs(rate - round(rate)) <= 1e-4 * rate else float(rate)


def _leaf(name: str) -> str:
    """A MATLAB name's last part, lower case: ``bearing.gs`` -> ``gs``, ``Y(7).Data`` -> ``data``."""
    return _snake(re.sub(r"[({]\d+[)}]$", "", name).rsplit(".", 1)[-1])


def _scope(name: str) -> str:
    """The struct a MATLAB name is a field of (``bearing`` of ``bearing.gs``), "" for a variable."""
    return name.rsplit(".", 1)[0] if "." in name else ""


def _scopes(name: str) -> list[str]:
    """The structs a MATLAB name lies in, innermost first, then "" (the file's top):
    ``rec.Y(2).Data`` -> rec.Y(2), rec.Y, rec, ""."""
    out = []
    while (cut := max(name.rfind("."), name.rfind("("), name.rfind("{"))) > 0:
        name = name[:cut]
        out.append(name)
    return [*out, ""]


def _described(name: str, v: np.ndarray, title: str | None = None) -> str:
    return f"{name}{f' {title!r}' if title else ''} ({' x '.join(f'{d:,}' for d in v.shape)})"


# a text beside a signal in its struct, named like this, is that signal's name (a logger's
# rec.Y(7).Name = 'vibration_1' beside rec.Y(7).Data)
_TITLE_FIELD = re.compile(r"name|label|title|channel|channel_?name|signal_?name|sensor|sensor_?name")


def _choose(path: Path, values: dict[str, np.ndarray], signals: dict[str, np.ndarray], channel: str | None,
            titles: dict[str, str], pick: str) -> list[str]:
    """Which of a file's ``signals`` (of its numeric ``values``, by name) play: the one ``channel``
    names (its whole name, the end of it after a ``.`` or ``/`` where that is unique, or its title),
    else the only one, else all where they are vectors of one length; a SourceError listing
    them otherwise, saying how to choose one as ``pick`` does."""
    held = ", ".join(_described(k, v, titles.get(k)) for k, v in signals.items()) or "no signal"
    if channel is not None:
        c = channel.lower()
        found = ([k for k in values if k == channel] or [k for k in values if k.lower() == c]
                 or [k for k in values if k.lower().endswith(("." + c, "/" + c))]
                 or [k for k, t in titles.items() if t.strip().lower() == c])
        if len(found) != 1:
            why = f"several variables are named {channel}: {', '.join(found)}; give the whole name" if found else \
                f"no variable {channel}"
            raise SourceError(f"{path}: {why}; its signals: {held}; choose one with {pick}")
        if found[0] not in signals:
            raise SourceError(f"{path}: {_described(found[0], values[found[0]])} is not a signal (a vector or matrix "
                              f"of at least {_MIN_SIGNAL} samples); its signals: {held}")
        return found
    if not signals:
        raise SourceError(f"{path}: no signal in it (a numeric vector or matrix of at least {_MIN_SIGNAL} samples); "
                          f"it holds {', '.join(_described(k, v) for k, v in values.items()) or 'no numbers'}")
    if len(signals) == 1 or (len({max(v.shape) for v in signals.values()}) == 1
                             and all(min(v.shape) == 1 for v in signals.values())):
        return list(signals)
    raise SourceError(f"{path}: it holds several signals: {held}; choose one with {pick}")


def _mat(path: Path, channel: str | None, pick: str = "?channel=NAME") -> _Signals:
    """A .mat file's samples: CWRU's ``X###_DE_time`` (``channel`` DE, FE or BA, DE by default),
    or any other file's signal, a numeric vector or matrix (rows or columns the channels,
    whichever are fewer): the one it holds, the variable ``channel`` names (its whole MATLAB name,
    the end of it after a dot where that is unique, or the name a text beside it in its struct
    gives it), or several vectors of one length side by side."""
    mat = load_mat(path)
    layout = {k for k in mat if re.search(r"_(DE|FE|BA)_time$", k)}
    if layout and (channel is None or channel.upper() in _CWRU_CHANNELS):
        ch = (channel or "DE").upper()
        keys = sorted(k for k in layout if k.endswith(f"_{ch}_time"))
        if not keys:
            raise SourceError(f"{path}: no {ch} channel (*_{ch}_time); it has {', '.join(sorted(layout))}; "
                              "choose one with ?channel=DE|FE|BA")
        return _Signals(_real(path, mat[keys[0]], f"{keys[0]} is not").reshape(-1, 1), _cwru_rate(path), None, True,
                        _mat_rpm(mat))
    values = {k: v for k, v in mat.items() if not k.startswith("__") and v.dtype.kind in "biufc" and v.size}
    times = {k for k, v in values.items() if _TIME_COLUMN.fullmatch(_leaf(k)) and v.size == max(v.shape) > 1}
    signals = {k: v for k, v in values.items() if v.ndim == 2 and max(v.shape) >= _MIN_SIGNAL and k not in times}
    texts = {_scope(k): str(v) for k, v in mat.items()
             if not k.startswith("__") and v.dtype.kind == "U" and v.ndim == 0 and _TITLE_FIELD.fullmatch(_leaf(k))
             and str(v).strip()}
    titles = {k: texts[_scope(k)] for k in signals if _scope(k) and _scope(k) in texts
              and sum(_scope(j) == _scope(k) for j in signals) == 1}
    chosen = _choose(path, values, signals, channel, titles, pick)
    # rows or columns, whichever are fewer, are the channels: MATLAB code keeps signals in either
    parts = [_real(path, signals[k].T if signals[k].shape[0] < signals[k].shape[1] else signals[k], f"{k} is not")
             for k in chosen]
    x = parts[0] if len(parts) == 1 else np.concatenate(parts, axis=1)
    names = None
    if len(chosen) > 1:
        short = [_leaf(k) for k in chosen]
        said = [titles.get(k, "") for k in chosen]
        names = ((all(said) and channel_names(said)) or channel_names(short if len(set(short)) == len(short)
                                                                      else chosen))
    return _Signals(x, _mat_rate(path, values, times, chosen[0], x.shape[0]), names, False, _mat_rpm(mat))


def _stated_rate(name: str, value: float) -> float | None:
    """The sample rate a number named ``name`` states: a rate (``fs``, ``fs_khz``) or the inverse
    of a sampling interval (``dt``, ``Ts_ms``); None for another name, or a value not > 0."""
    if not value > 0:
        return None
    if m := _RATE_VAR.fullmatch(_leaf(name)):
        return value * (1000.0 if m.group(1) == "khz" else 1.0)
    if m := _PERIOD_VAR.fullmatch(_leaf(name)):
        return 1.0 / (value * _TIME_UNITS[m.group(1)])
    return None


def _mat_rate(path: Path, values: dict[str, np.ndarray], times: set[str], signal: str, n: int) -> float | None:
    """The sample rate a .mat file states for its variable ``signal`` (of ``n`` samples): a rate
    or sampling interval variable beside it, else in a struct around it, else at the top of the
    file, or a time vector of its length there; None where it states none, or several that differ."""
    for where in _scopes(signal):
        found = {_stated_rate(k, float(v.reshape(-1)[0])) for k, v in values.items()
                 if _scope(k) == where and v.size == 1 and v.dtype.kind != "c"} - {None}
        if len(found) == 1:
            return _whole_hz(found.pop())
        for k in sorted(times):
            if _scope(k) == where and values[k].size == n:
                m = _TIME_COLUMN.fullmatch(_leaf(k))
                assert m is not None
                return rate_of_time_column(values[k].reshape(-1).astype(np.float64) * _TIME_UNITS[m.group(1)], path, k)
    return None


def _real(path: Path, data: Any, what: str = "not") -> np.ndarray:
    """``data`` as float32 samples; a SourceError for what is not real numbers (complex samples
    lost their imaginary part quietly; text, cells or structs raised from numpy)."""
    a = np.asarray(data)
    if np.iscomplexobj(a):
        raise SourceError(f"{path}: the samples are complex numbers; save the real signal (e.g. x.real) "
                          "or the magnitude (abs(x)), one column per channel")
    if a.dtype.kind not in "biuf":
        held = "text, cells or structs" if a.dtype == object else f"{a.dtype} values"  # object: load_mat's
        raise SourceError(f"{path}: {what} numeric samples (it holds {held}); save the samples "
                          "as numbers, one column per channel")
    # beyond float32's range: +-Inf; a signalling NaN: NaN; both counted by the sensor health
    with np.errstate(over="ignore", invalid="ignore"):
        return a.astype(np.float32)


def _tdms(path: Path, channel: str | None, pick: str = "?channel=NAME") -> _Signals:
    """A TDMS file's samples (National Instruments' format, LabVIEW's and DAQmx's logs): its
    channels by ``GROUP/CHANNEL``, chosen as a .mat file's are (``_choose``), at the rate their
    waveform properties state (``wf_increment``), else a time channel's or a sample rate property's."""
    try:
        from nptdms import TdmsFile
    except ImportError:  # a dependency; an install without it says so
        raise SourceError(f"{path}: reading TDMS files needs npTDMS: pip install nptdms") from None
    # npTDMS logs what it mends in a damaged file (a segment cut short, bytes that are not UTF-8:
    # pages of them) through handlers of its own to the terminal the monitor draws on: quiet
    # while it reads
    logs = [logging.getLogger(n) for n in list(logging.root.manager.loggerDict) if n.split(".")[0] == "nptdms"]
    quiet = [lg for lg in logs if not lg.disabled]
    for lg in quiet:
        lg.disabled = True
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            f = TdmsFile.read(path)
            chans = {f"{g.name}/{c.name}": c for g in f.groups() for c in g.channels()}
            data = {k: np.asarray(c[:]) for k, c in chans.items()}
    except MemoryError:
        raise
    except Exception as exc:  # noqa: BLE001 - npTDMS meets damaged bytes with any exception
        raise SourceError(f"{path}: cannot read it as a TDMS file ({str(exc)[:160] or type(exc).__name__}); re-copy "
                          "it, or save the samples as WAV, NPY or CSV") from None
    finally:
        for lg in quiet:
            lg.disabled = False
    if not any(v.size for v in data.values()):
        raise SourceError(f"{path}: a TDMS file with no samples in it (cut short, or only its properties); re-copy it, "
                          "or save the samples as WAV, NPY or CSV")
    times = {k for k, v in data.items() if _TIME_COLUMN.fullmatch(_leaf(chans[k].name)) and v.ndim == 1
             and v.size > 1 and v.dtype.kind in "fM"}
    values = {k: v.reshape(-1, 1) for k, v in data.items() if v.dtype.kind in "biufc" and v.size and k not in times}
    signals = {k: v for k, v in values.items()
               if v.shape[0] >= _MIN_SIGNAL and not _leaf(chans[k].name).endswith("rpm")}
    chosen = _choose(path, values, signals, channel, {}, pick)
    x = np.concatenate([_real(path, signals[k], f"{k} is not") for k in chosen], axis=1)
    names = channel_names([chans[k].name for k in chosen]) if len(chosen) > 1 else None
    rates = set()
    for k in chosen:
        inc = chans[k].properties.get("wf_increment")
        if isinstance(inc, (int, float)) and inc > 0:
            rates.add(round(1.0 / inc, 6))
    if len(rates) > 1:
        raise SourceError(f"{path}: its channels {', '.join(chosen)} are sampled at different rates "
                          f"({', '.join(f'{r:g}' for r in sorted(rates))} Hz); choose one with {pick}")
    rate = rates.pop() if rates else None
    group = chans[chosen[0]].group_name
    if rate is None:  # a time channel beside it, or a sample rate property of it, its group or the file
        for k in sorted(times):
            if chans[k].group_name == group and data[k].size == x.shape[0]:
                t = data[k].astype("datetime64[ns]").astype(np.int64) * 1e-9 if data[k].dtype.kind == "M" else data[k]
                rate = rate_of_time_column(np.asarray(t, dtype=np.float64), path, k)
                break
    if rate is None:
        for where in (chans[chosen[0]].properties, f[group].properties, f.properties):
            found = {_stated_rate(n, float(v)) for n, v in where.items() if isinstance(v, (int, float))} - {None}
            if len(found) == 1:
                rate = found.pop()
                break
    if rate is not None:
        rate = _whole_hz(rate)
    rpm = None
    for k, v in data.items():  # a speed channel logged beside the vibration: its mean
        if _leaf(chans[k].name).endswith("rpm") and v.dtype.kind in "biuf" and v.size:
            mean = float(np.nanmean(v.astype(np.float64))) if np.isfinite(v).any() else math.nan
            rpm = mean if math.isfinite(mean) and mean > 0 else None
            break
    return _Signals(x, rate, names, False, rpm)


def mat_rpm(path: Path) -> float | None:
    """The shaft speed a .mat file records (a number named like ``rpm``: CWRU's ``X###RPM``,
    ``speed_rpm``, ``rec.rpm``), rpm; None without one."""
    try:
        return _mat_rpm(load_mat(path))
    except SourceError:
        return None


def _mat_rpm(mat: dict[str, Any]) -> float | None:
    for key in sorted(k for k in mat if not k.startswith("__") and _leaf(k).endswith("rpm")):
        v = np.asarray(mat[key]).reshape(-1)
        if v.size == 1 and v.dtype.kind in "biuf" and np.isfinite(v[0]) and v[0] > 0:
            return float(v[0])
    return None


_PREAMBLE = 100  # lines of a logger's export before its numbers (its name, the date, a header, units) looked at
# a row of units under a header row ("s, g, m/s^2"): not the channels' names
_UNITS = {"s", "ms", "us", "sec", "g", "m/s^2", "m/s2", "m/s²", "mm/s", "um", "mm", "v", "mv", "a", "ma", "n", "kn",
          "nm", "pa", "kpa", "bar", "c", "°c", "degc", "k", "hz", "rpm", "1/min", "u/min", "min-1", "%", "-", ""}


def _is_numbers(line: str) -> bool:
    """A row of numbers only (NaN and Inf among them), whatever separates them."""
    cells = [c for c in re.split(r"[;,\s]+", line.strip()) if c]
    for c in cells:
        try:
            float(c)
        except ValueError:
            return False
    return bool(cells)


def _cells(line: str, delimiter: str | None) -> list[str]:
    return [c.strip() for c in (next(csv.reader([line], delimiter=delimiter)) if delimiter else line.split())]


def _csv_layout(path: Path) -> tuple[str | None, list[str] | None, bool, int]:
    """(delimiter, the header row's column names or None without one, whether the numbers are
    written with decimal commas: ``0,25`` in the first data row of a CSV whose columns are not
    separated by commas, the rows before the numbers). A logger's export may put lines before its
    header (its name, the date) and a row of units after it: the header is the row nearest the
    numbers with as many columns that is not units."""
    with open(path, encoding="utf-8-sig", errors="replace") as fh:
        lines = [fh.readline() for _ in range(_PREAMBLE + 2)]
    data = next((i for i, line in enumerate(lines) if _is_numbers(line)), None)
    if data is None or data <= 1:  # no preamble, or a header row alone
        first, second = lines[0], lines[1]
        # a row with both: semicolons between the columns, commas in the numbers (Excel's export
        # where the decimal sign is a comma)
        delimiter = ";" if ";" in first else ("," if "," in first else None)
        header = None
        if re.search(r"[A-DF-Za-df-z_]", first):  # letters other than e/E: a header row
            header = _cells(first, delimiter)
        commas = delimiter != "," and re.search(r"\d,\d", first if header is None else second) is not None
        return delimiter, header, commas, 0 if header is None else 1
    row = lines[data]
    delimiter = ";" if ";" in row else (None if "\t" in row else ("," if "," in row else None))
    width = len(_cells(row, delimiter))
    named = [cells for line in lines[:data] if line.strip() and len(cells := _cells(line, delimiter)) == width
             and not all(re.sub(r"[\[\]()]", "", c).lower() in _UNITS for c in cells)]
    commas = delimiter != "," and re.search(r"\d,\d", row) is not None
    return delimiter, (named[-1] if named else None), commas, data


def _points(path: Path) -> Iterator[str]:
    """A CSV's lines, decimal commas made points."""
    with open(path, encoding="utf-8-sig") as fh:
        for line in fh:
            yield line.replace(",", ".")


def _csv(path: Path, *, dtype: Any = np.float32, usecols: int | None = None) -> np.ndarray:
    delimiter, _, commas, skip = _csv_layout(path)
    source: Any = _points(path) if commas else path
    try:
        with warnings.catch_warnings():  # an empty file: said below in words, not by numpy on the terminal
            warnings.simplefilter("ignore", UserWarning)
            x = np.loadtxt(source, delimiter=delimiter, skiprows=skip, dtype=dtype, ndmin=2, usecols=usecols,
                           encoding="utf-8-sig")
    except ValueError as exc:
        raise SourceError(f"{path}: not a numeric CSV with one column per channel ({exc})") from exc
    return x


# A CSV's first column named like a time axis ("t", "time", "Time (s)", "timestamp", "time_ms"; in the
# languages whose spreadsheets write decimal commas too: "Zeit", "temps", "tiempo", "tempo") holds each
# row's time, not a sensor: a data logger's export. The unit after the name, seconds by default.
_TIME_COLUMN = re.compile(r"(?:t|time|times|timestamp|elapsed|seconds|secs?|zeit|zeitstempel|temps|tiempo|tempo)"
                          r"(?:_(s|secs?|seconds|ms|us))?")
_TIME_UNITS = {None: 1.0, "s": 1.0, "sec": 1.0, "secs": 1.0, "seconds": 1.0, "ms": 1e-3, "us": 1e-6}
# A CSV column named like a shaft speed in rpm ("rpm", "Speed (rpm)", "tacho_rpm", "shaft_speed_rpm")
# holds the machine's speed at each row, not a sensor's signal.
_SPEED_COLUMN = re.compile(r"(?:(?:shaft|motor|tach|tacho|tachometer)_)?(?:speed_)?rpm")


def speed_column(header: list[str] | None) -> int | None:
    """The index of a CSV header's shaft-speed column (``_SPEED_COLUMN``), None without one; a
    SourceError where two columns could be it."""
    found = [i for i, name in enumerate(header or ())
             if _SPEED_COLUMN.fullmatch(_snake(name))]
    if len(found) > 1:
        raise SourceError(f"columns {', '.join(repr(header[i]) for i in found)} all look like the shaft speed "  # type: ignore[index]
                          "(rpm); rename all but the tachometer's")
    return found[0] if found else None


def csv_time_rate(path: Path) -> tuple[list[str] | None, float | None]:
    """(a CSV's column names or None, the sample rate its first column gives when that column is
    its time axis, else None). A time axis needs another column beside it."""
    _, header, _, _ = _csv_layout(path)
    if not header or len(header) < 2:
        return header, None
    m = _TIME_COLUMN.fullmatch(_snake(header[0]))
    if m is None:
        return header, None
    t = _csv(path, dtype=np.float64, usecols=0)[:, 0] * _TIME_UNITS[m.group(1)]
    return header, rate_of_time_column(t, path, header[0])


def rate_of_time_column(t: np.ndarray, path: Path, name: str) -> float:
    """The sample rate of evenly spaced row times ``t`` (seconds), a whole number of Hz where it is
    within 0.01 % of one (times printed with a few decimals are a little off the grid); a
    SourceError naming the first row that is off the grid (a gap, a jump back) otherwise."""
    if t.size == 0:
        raise SourceError(f"{path}: the recording holds no samples")
    if t.size < 2 or not np.all(np.isfinite(t)):
        raise SourceError(f"{path}: its time column {name!r} holds {'too few rows' if t.size < 2 else 'NaN or Inf'}; "
                          f"give the sample rate, e.g. file:{path}?rate=12000")
    dt = (t[-1] - t[0]) / (t.size - 1)
    off = np.abs(t - (t[0] + dt * np.arange(t.size)))
    bad = int(np.argmax(off))
    if not dt > 0 or off[bad] > 0.5 * dt:
        raise SourceError(f"{path}: its time column {name!r} is not evenly spaced (data row {bad + 1} is at {t[bad]:g} s, "
                          f"{off[bad]:.3g} s off a grid of {dt:.3g} s steps): the monitor needs samples at a fixed "
                          "rate; resample the recording, or give ?rate= if the times are only approximate")
    return _whole_hz(1.0 / dt)


def channel_names(names: list[str]) -> tuple[str, ...] | None:
    """A header's column names as channel names (the wire format's: 1-32 of A-Z a-z 0-9 _.:+-,
    distinct), or None (channels are then ch0, ch1, ...) when they do not make such names."""
    out = tuple(re.sub(r"[^A-Za-z0-9_.:+-]+", "_", n).strip("_")[:32] for n in names)
    return out if all(out) and len(set(out)) == len(out) else None


class _Take(NamedTuple):
    """One recording as the file source plays it (``FileSource._read``)."""

    samples: np.ndarray  # float32 (n, channels)
    rate: float
    names: tuple[str, ...] | None
    speeds: np.ndarray | None  # per row, a CSV's speed column (rpm)
    rpm: float | None  # the shaft speed the file records


_SAY_SKIPPED = 5  # a folder's skipped recordings said one by one; the rest counted, said at its end


def _natural(path: Path) -> list[Any]:
    """A name's sort key with its numbers as numbers: ``2.csv`` before ``10.csv``."""
    return [(0, int(part), "") if part.isdigit() else (1, 0, part) for part in re.split(r"(\d+)", path.name) if part]


class Recording(NamedTuple):
    samples: np.ndarray  # float32 (n, channels)
    rate: float
    names: tuple[str, ...] | None  # a .mat or TDMS file's channel names, where several variables make them
    cwru: bool  # a CWRU .mat file, whose channels are DE, FE and BA
    rpm: float | None  # the shaft speed a .mat or TDMS file records


def read_recording(path: Path, *, rate: float | None = None, channel: str | None = None) -> tuple[np.ndarray, float]:
    """Load a whole recording as float32 ``(n, channels)`` and its sample rate in Hz."""
    r = load_recording(path, rate=rate, channel=channel)
    return r.samples, r.rate


def load_recording(path: Path, *, rate: float | None = None, channel: str | None = None,
                   default_rate: float | None = None, give_rate: str = "", pick: str = "?channel=NAME") -> Recording:
    """Load a whole recording (``read_recording``) with what a .mat file says of its channels;
    ``channel`` picks a .mat file's: DE, FE or BA of CWRU's, a variable of any other.
    ``default_rate``: the rate where neither ``rate`` nor the file gives one; ``give_rate`` and
    ``pick``: how the caller's user gives a rate and a channel (default: the file source's
    ``?rate=`` and ``?channel=``)."""
    names, cwru, rpm = None, False, None
    if not path.is_file():
        raise SourceError(f"recording {path}: {_not_a_file(path)}")
    suffix = recording_type(path)
    if suffix == ".wav":
        x, file_rate = _wav(path)
        rate = rate or file_rate
    elif suffix == ".npy":
        try:
            # mapped, not read: a damaged header's shape must fit the file (else a ValueError),
            # rather than ask for terabytes
            x = np.load(path, mmap_mode="r", allow_pickle=False)
        except MemoryError:
            raise
        except Exception as exc:  # noqa: BLE001 - numpy's header parser meets damaged bytes with any exception
            raise SourceError(f"{path}: not a numeric .npy array ({str(exc)[:160] or type(exc).__name__})") from exc
        x = _real(path, x, "not a .npy array of")
    elif suffix == ".csv":
        x = _csv(path)
    elif suffix == ".mat":
        x, file_rate, names, cwru, rpm = _mat(path, channel, pick)
        rate = rate or file_rate
    elif suffix == ".tdms":
        x, file_rate, names, cwru, rpm = _tdms(path, channel, pick)
        rate = rate or file_rate
    elif suffix in SOUND_SUFFIXES:
        x, file_rate = _sound(path)
        rate = rate or file_rate
    else:
        raise ConfigError(f"{path}: {NOT_A_RECORDING}")
    if rate is None:  # (a WAV header's 0 Hz is said below as what the file says)
        rate = default_rate
    if rate is None:
        what = {".mat": "the file (no fs, sr or dt variable beside its signal)",
                ".tdms": "the file (no wf_increment property on its channel)"}.get(suffix or "", "the file")
        raise ConfigError(f"{path.name}: the sample rate is not in {what}; give it"
                          f"{give_rate or f', e.g. file:{path}?rate=12000'}")
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
    return Recording(np.ascontiguousarray(x), float(rate), names, cwru, rpm)


NOT_A_RECORDING = ("not a recording this reads (by its suffix or its first bytes); save it as WAV, NPY, MATLAB "
                    ".mat, TDMS, FLAC, Ogg, MP3, AIFF, or CSV / text columns of numbers (.csv, .txt)")


def _opt_bearing(value: Any) -> str:
    """``bearing=``: a named bearing, or its orders or dimensions as ``key=value`` pairs (checked now)."""
    from drsn_stream.dsp.envelope import bearing_geometry

    v = str(value).strip()
    bearing_geometry(v)  # a ConfigError that says what is wrong and what is known
    return v


def _opt_channel(value: Any) -> str | int:
    """``channel=``: a column counted from 0; DE, FE or BA (a CWRU .mat file's); or a signal of
    any other .mat or TDMS file by its name (``gs``, ``bearing.gs``, ``rec.Y(7).Data``,
    ``Vibration/accel_x``, ``Dev1/ai0``)."""
    v = str(value).strip()
    if v.upper() in _CWRU_CHANNELS:
        return v.upper()
    if v.isascii() and v.isdigit() and len(v) <= 6:
        return int(v)
    if 0 < len(v) <= 256 and v.isprintable():
        return v
    raise ValueError(f"must be a column counted from 0, DE, FE or BA (a CWRU .mat file's channel), or a .mat or "
                     f"TDMS file's signal by name, got {value!r}")


class FileSource(Source):
    """``file:PATH[?rate=HZ&channel=DE|K&chunk=N&fast=1&loop=1&start=S&duration=S&stream=ID&rpm=RPM&bearing=B]``."""

    kind = "file"
    OPTIONS = {
        "rate": (opt_positive(float, 1e6), None, "sample rate in Hz (needed for .npy, a .csv without a time column, "
                                                  "a .mat file without an fs variable, a TDMS file without "
                                                  "wf_increment)"),
        "channel": (_opt_channel, None, "one column K, counted from 0 (default: every column); a CWRU .mat file's "
                                        "channel, DE|FE|BA (default DE); another .mat or a TDMS file's signal by "
                                        "name"),
        "files": (str, "*", "a folder's recordings to play: names matching this pattern (e.g. acc_*.csv)"),
        "skip": (opt_index("recordings"), 0, "a folder: leave out its first N recordings (in name order)"),
        "count": (opt_positive(int), None, "a folder: play at most N of its recordings"),
        "chunk": (opt_positive(int), 1024, "samples per frame"),
        "fast": (opt_bool, False, "1 = as fast as possible, no pacing"),
        "loop": (opt_bool, False, "1 = repeat the recording forever"),
        "start": (opt_finite(0.0), 0.0, "start this many seconds into the recording (each of a folder's)"),
        "duration": (opt_positive(float), math.inf, "play at most this many seconds per pass (of each of a folder's "
                                                    "recordings)"),
        "stream": (str, "", "stream id (default: the file name without suffix, or the folder's name)"),
        "speed": (opt_positive(float), 1.0, "pace as a multiple of real time"),
        "rpm": (opt_positive(float), None, "shaft speed in rpm, for the envelope evidence (default: the "
                                           "speed a .mat or TDMS file records, or a CSV's speed column)"),
        "bearing": (_opt_bearing, None, "the machine's bearing, for the envelope evidence: a name (6205, 6203, ims, "
                                        "uer204, mfpt ...) or its dimensions or orders as key=value pairs "
                                        "(balls=9,ball_diameter=7.94,pitch_diameter=39.04); beats --bearing and "
                                        "[machine]"),
    }

    def __init__(self, target: str = "", **options: Any) -> None:
        super().__init__(target, **options)
        if not target:
            raise ConfigError("file source needs a path: file:PATH, e.g. file:recording.wav")
        self.path = Path(target).expanduser()
        # a folder of recordings (a run-to-failure set's snapshots) plays them one after another
        self.folder = self.path.is_dir()
        if not self.folder:
            # a file that is there must be a recording; one that is not yet is said by check(), unless
            # its name says it would not be one (an .flac, .mp3, .tdms ...)
            there = self.path.exists()
            kind = recording_type(self.path) if there else self.path.suffix.lower()
            if kind is None or not (there or kind in (*SUFFIXES, ".txt", ".tsv", ".dat", ".asc")
                                    or not re.search(r"[A-Za-z]", kind)):
                raise ConfigError(f"{self.path}: {NOT_A_RECORDING}")
            chosen = [k for k in ("files", "skip", "count") if k in options]
            if chosen:
                raise ConfigError(f"{', '.join(f'{k}=' for k in chosen)} choose(s) a folder's recordings; "
                                  f"{self.path} is a file")
        self.stream_id = self.options["stream"] or (
            (self.path.name or self.path.resolve().name) if self.folder else stream_name(self.path))
        self._streams = [self.stream_id]
        self.t0: float | None = None
        self.names: tuple[str, ...] | None = None  # channel names from a CSV's header row
        # the shaft speed (rpm) and whether the user gave it (?rpm=) rather than the file
        self.rpm: float | None = self.options["rpm"]
        self.rpm_given = self.rpm is not None
        self.bearing: str | None = self.options["bearing"]  # given on the source: beats the config's
        self.bearing_given = self.bearing is not None
        self.speeds: np.ndarray | None = None  # per row, a CSV's speed column (rpm)
        self.samples: np.ndarray | None = None
        self._said_no_speed = False
        self._paths: list[Path] = []  # a folder's recordings, in the order they play
        self._next = 0  # the next of them to read
        self.skipped = 0  # a folder's recordings skipped: unreadable, or of another rate or channels
        self._last_skip = ""
        self._passes = 0  # passes over the folder finished (loop=1)

    def check(self) -> None:
        if self.folder:
            self._recordings()
        elif not self.path.is_file():
            raise SourceError(f"recording {self.path}: {_not_a_file(self.path)}")

    def _read(self, path: Path) -> _Take:
        """One recording as this source plays it: its columns chosen, a time and a speed column
        taken out, cut to ``start`` / ``duration``."""
        rate, header, found = self.options["rate"], None, None
        kind = recording_type(path)
        if kind == ".csv":
            header, found = csv_time_rate(path)
        if found is not None:  # a logger's time column: the rate comes from it, and it is no channel
            assert header is not None
            if rate is not None and abs(rate - found) > 0.01 * found:
                raise ConfigError(f"{path.name}: rate={rate:g} Hz, but its time column {header[0]!r} says "
                                  f"{found:.6g} Hz; leave rate= out or correct it (times in milliseconds: name the column "
                                  "time_ms)")
            rate = rate or found
        chan, mat = self.options["channel"], kind in (".mat", ".tdms")
        if isinstance(chan, str) and not mat:
            raise ConfigError(f"{path.name}: channel={chan} names a .mat or TDMS file's channel; for this file "
                              "give a column counted from 0 (channel=1), or leave it out: every column is monitored")
        x, rate, names, cwru, rpm = load_recording(path, rate=rate, channel=chan if isinstance(chan, str) else None)
        if isinstance(chan, int) and cwru:
            raise ConfigError(f"{path.name}: channel={chan}: a CWRU .mat file's channels are named: channel=DE, "
                              "FE or BA")
        # channel=K counts the file's columns as training's channel counts them: a time column is 0
        if found is not None and chan == 0:
            raise ConfigError(f"{path.name}: channel=0 is its time column "
                              f"{header[0]!r}; give a sensor's column (1 or more)")  # type: ignore[index]
        cols = list(range(x.shape[1]))  # the file's column number of each column of x
        width = len(cols)
        if found is not None:
            x, header, cols = x[:, 1:], header[1:], cols[1:]  # type: ignore[index]
        speeds = None
        if (i := speed_column(header)) is not None and header is not None and len(header) == x.shape[1]:
            if x.shape[1] == 1:
                raise SourceError(f"{path}: its only column {header[i]!r} is a shaft speed; the vibration "
                                  "columns are missing")
            if chan == cols[i]:
                raise ConfigError(f"{path.name}: channel={chan} is its shaft speed column {header[i]!r}, not a "
                                  "sensor; give a sensor's column")
            speeds = x[:, i].astype(np.float64)
            x, header = np.ascontiguousarray(np.delete(x, i, axis=1)), header[:i] + header[i + 1 :]
            del cols[i]
        # a header's names name the channels (STREAM/accel_x), as a gateway's names field does
        names = channel_names(header) if header and len(header) == x.shape[1] > 1 else names
        if isinstance(chan, int):  # column K alone, under the id it has without ?channel, as zmq's keeps it
            if chan not in cols:
                raise ConfigError(f"{path.name}: channel={chan}, but it has {width} column(s), counted from 0")
            j = cols.index(chan)
            if x.shape[1] > 1:
                names = (names[j] if names is not None else f"ch{j}",)
                x = np.ascontiguousarray(x[:, j : j + 1])
        a = int(round(self.options["start"] * rate))
        b = x.shape[0] if math.isinf(self.options["duration"]) else a + int(round(self.options["duration"] * rate))
        if not 0 <= a < x.shape[0]:
            raise ConfigError(f"start={self.options['start']} s is outside {path.name} "
                              f"({x.shape[0] / rate:.2f} s long)")
        return _Take(x[a:b], rate, names, None if speeds is None else speeds[a:b], rpm)

    def _open(self) -> None:
        if self.folder:
            self._paths = self._recordings()
            self._next = 0
            take = self._next_take()
            if take is None:
                raise SourceError(f"{self.path}: none of its {len(self._paths)} recording(s) could be read "
                                  f"({self._last_skip})")
            self.notes.append((self.stream_id, f"{self.path.name or self.path}: {len(self._paths)} recordings played "
                                               f"as one stream, in name order ({self._paths[0].name} .. "
                                               f"{self._paths[-1].name})"))
        else:
            take = self._read(self.path)
        self.rate, self.names = take.rate, take.names
        self.samples, self.speeds = take.samples, take.speeds
        self._streams = list(channel_ids(self.stream_id, take.samples.shape[1], take.names))  # each channel is monitored
        if self.rpm is None:
            self.rpm = take.rpm
        self._start_clock()

    def _recordings(self) -> list[Path]:
        """A folder's recordings in the order they play: names with numbers compared as numbers
        (``2.csv`` before ``10.csv``), chosen by ``files``, ``skip`` and ``count``."""
        pattern = self.options["files"]
        try:
            entries = [p for p in self.path.iterdir() if not p.name.startswith(".") and p.is_file()
                       and fnmatch.fnmatchcase(p.name, pattern)]
        except OSError as exc:
            raise SourceError(f"{self.path}: the folder cannot be read ({exc.strerror or exc})") from None
        found = sorted((p for p in entries if recording_type(p) is not None), key=_natural)
        chosen = found[self.options["skip"] :][: self.options["count"]]
        if not chosen:
            what = f"{len(found)} recording(s) match files={pattern}" if pattern != "*" else f"{len(found)} recording(s)"
            raise SourceError(f"{self.path}: no recordings to play ({what} in it, skip={self.options['skip']}); "
                              f"recordings are {', '.join(SUFFIXES)} files or text columns of numbers")
        return chosen

    def _next_take(self) -> _Take | None:
        """The folder's next recording that plays as the first did (its rate and channels); each
        one that does not, or cannot be read, is skipped, said and counted. None at the end."""
        while self._next < len(self._paths):
            path = self._paths[self._next]
            self._next += 1
            try:
                take = self._read(path)
            except DrsnStreamError as exc:
                why = str(exc)
                for prefix in (f"{path}: ", f"recording {path}: ", f"{path.name}: "):
                    why = why.removeprefix(prefix)
                self._skip(path, why)
                continue
            if self.samples is not None and (take.rate != self.rate or take.samples.shape[1] != self.samples.shape[1]):
                self._skip(path, f"{take.rate:g} Hz, {take.samples.shape[1]} channel(s), where the folder's first "
                                 f"recording played at {self.rate:g} Hz, {self.samples.shape[1]} channel(s)")
                continue
            return take
        return None

    def _skip(self, path: Path, why: str) -> None:
        """Counted and said on the first pass over the folder (the first ``_SAY_SKIPPED`` by name);
        not again on the passes ``loop`` adds."""
        self._last_skip = why
        if self._passes:
            return
        self.skipped += 1
        if self.skipped <= _SAY_SKIPPED:
            self.notes.append((self.stream_id, f"{path.name}: skipped: {why}"
                                               + (" (more that are skipped are counted, said at the end)"
                                                  if self.skipped == _SAY_SKIPPED else "")))

    def _speed(self, pos: int, n: int) -> float | None:
        """The mean shaft speed (rpm) of rows ``pos`` .. ``pos + n`` of the speed column; None (said
        once) where one of them is no speed."""
        assert self.speeds is not None
        rows = self.speeds[pos : pos + n]
        ok = rows.size and np.isfinite(rows).all() and rows.min() >= 0  # (over MAX_RPM: the mean is too)
        rpm = shaft_speed(float(rows.mean())) if ok else None
        if rpm is None and not self._said_no_speed:
            self._said_no_speed = True
            self.notes.append((self.stream_id, f"{self.path.name}: rows of its speed column that hold no shaft speed "
                                               f"(NaN, negative, over {MAX_RPM:.0f} rpm): their frames carry none"))
        return rpm

    def _frames(self) -> Iterator[Frame]:
        assert self.t0 is not None
        x, chunk, rate = self.samples, self.options["chunk"], self.rate
        scale = 1.0 if self.options["fast"] else self.options["speed"]
        pos, seq, offset = 0, 0, 0  # offset: samples played in earlier passes
        while not self.closed:
            if pos >= x.shape[0]:
                offset += x.shape[0]
                pos = 0
                take = self._next_take() if self.folder else None
                if take is None and self.folder and not self._passes:
                    self._passes = 1
                    if self.skipped > _SAY_SKIPPED:
                        self.notes.append((self.stream_id, f"{self.skipped} of the folder's {len(self._paths)} "
                                                           f"recordings skipped (the first {_SAY_SKIPPED} said above)"))
                if take is None and not self.options["loop"]:
                    return
                if take is None and self.folder:  # the folder again, from its first recording
                    self._next = 0
                    take = self._next_take()
                    if take is None:
                        return
                if take is not None:
                    x, self.speeds = take.samples, take.speeds
            block = x[pos : pos + chunk]
            start = offset + pos
            if not self.options["fast"] and not self._sleep_until(self.t0 + (start + block.shape[0]) / (rate * scale)):
                return
            yield Frame(self.stream_id, seq, self.t0 + start / (rate * scale), rate, block.copy(), names=self.names,
                        rpm=None if self.speeds is None else self._speed(pos, block.shape[0]))
            pos += block.shape[0]
            seq += 1
