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
    # scipy's reader meets damaged bytes with any exception: struct.error for a header cut short,
    # ZeroDivisionError for one that says 0 channels, UnboundLocalError for a file without a
    # format chunk, ...
    except Exception as exc:  # noqa: BLE001
        raise WavError(str(exc) or type(exc).__name__) from exc
    if data.dtype == np.uint8:
        x = (data.astype(np.float32) - 128.0) / 128.0
    elif data.dtype.kind == "i":
        x = data.astype(np.float32) / float(-np.iinfo(data.dtype).min)
    else:
        # float64 beyond float32's range: +-Inf; a signalling NaN: NaN; both counted by the sensor health
        with np.errstate(over="ignore", invalid="ignore"):
            x = data.astype(np.float32)
    return x, float(rate)
