"""WAV files as float32 samples at full scale 1.0: one reader for the file source and the data sets.

Each caller says in its own words what to do about a file it cannot use (``SourceError`` for a
recording, ``DataError`` for a data set); this module only reads.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np


class WavError(ValueError):
    """The file is not a WAV file scipy can read; the message says why."""


def read_wav(path: str | Path) -> tuple[np.ndarray, float]:
    """``path`` -> (float32 samples, ``(n,)`` mono or ``(n, channels)``, at full scale 1.0; the
    sample rate the header gives, in Hz, which may be 0: the caller checks it)."""
    from scipy.io import wavfile  # scipy.io: only where a WAV file is read

    try:
        with warnings.catch_warnings():
            # chunks scipy does not parse (LIST, e.g. the background-noise set's): the samples are
            # read correctly, and a warning on the monitor's terminal would say otherwise
            warnings.simplefilter("ignore", wavfile.WavFileWarning)
            rate, data = wavfile.read(str(path))
    except MemoryError:
        raise
    # scipy's reader meets damaged bytes with any exception; those whose own words name scipy's
    # internals rather than the file are said in the file's terms
    except Exception as exc:  # noqa: BLE001
        raise WavError(_damage(exc)) from exc
    if data.dtype == np.uint8:
        x = (data.astype(np.float32) - 128.0) / 128.0
    elif data.dtype.kind == "i":
        x = data.astype(np.float32) / float(-np.iinfo(data.dtype).min)
    else:
        # float64 beyond float32's range: +-Inf; a signalling NaN: NaN; both counted by the sensor health
        with np.errstate(over="ignore", invalid="ignore"):
            x = data.astype(np.float32)
    return x, float(rate)


def _damage(exc: Exception) -> str:
    """What is wrong with the file, from the exception scipy's reader raised on it."""
    import struct

    if isinstance(exc, UnboundLocalError):  # the data chunk came with no format chunk before it
        return "no format chunk ('fmt ') before the samples"
    if isinstance(exc, ZeroDivisionError):  # scipy divides by the header's channel count
        return "the header says 0 channels"
    if isinstance(exc, struct.error):  # a chunk's fields unpacked from fewer bytes than they need
        return f"the header is cut short ({exc})"
    return str(exc) or type(exc).__name__
