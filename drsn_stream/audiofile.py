"""Compressed and other sound files (FLAC, Ogg Vorbis and Opus, MP3, AIFF) as float32 samples.

libsndfile (through python-soundfile) decodes them, in a child process of its own, because a
damaged file can make a decoder misbehave in ways no exception catches: libmpg123 writes its
complaints straight to the process's stderr (the dashboard's terminal), a scrambled MP3 can
decode to tens of millions of samples of noise, and a decoder that crashes or hangs would take
the monitor with it. The child's stderr goes nowhere, what it decodes is capped relative to the
file's size, and it is given a time limit. Like ``drsn_stream.wav``, this module only reads:
each caller says in its own words what to do about a file it cannot use.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

from drsn_stream.childread import run_child

SUFFIXES = (".flac", ".ogg", ".oga", ".opus", ".mp3", ".aif", ".aiff")
MAX_SAMPLES = 1 << 27  # 512 MiB of float32, every channel counted: longer recordings, split them
SAMPLES_PER_BYTE = 256  # far above any real file's (digital silence in FLAC comes nearest)
MIN_CAP = 1 << 24  # a small file may still decode to this many samples (64 MiB)
MAX_CHANNELS = 1024  # libsndfile's own limit; the file source then allows fewer, saying so
_MAGIC = b"DRSNPCM1"
_HEAD = struct.Struct("<8sdI")

# The child (``childread``): only soundfile and numpy, no drsn_stream.
_CHILD = r"""
import struct
path, cap, max_ch, magic = sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
try:
    import soundfile as sf
except Exception as exc:
    fail("no-soundfile " + type(exc).__name__ + ": " + str(exc))
try:
    f = sf.SoundFile(path)
except Exception as exc:
    fail(exc)
if not 0 < f.channels <= max_ch:
    fail("the header says %d channels" % f.channels)
if not f.samplerate > 0:
    fail("the header says %d Hz" % f.samplerate)
out = sys.stdout.buffer
out.write(struct.pack("<8sdI", magic.encode(), float(f.samplerate), f.channels))
n = 0
while True:
    try:
        block = f.read(16384, dtype="float32", always_2d=True)
    except Exception as exc:
        msg = str(exc).strip().rstrip(".")
        fail(msg + (", after %.2f s of sound" % (n / f.channels / f.samplerate) if n else ""))
    if not len(block):
        break
    n += block.size
    if n > cap:
        fail("cap %d" % cap)
    out.write(block.tobytes())
out.flush()
"""


class AudioFileError(ValueError):
    """The file is not a sound file this reads; the message says why, in the file's terms."""


def cap_for(size: int) -> int:
    """How many samples (every channel counted) a file of ``size`` bytes may decode to."""
    return min(MAX_SAMPLES, max(MIN_CAP, size * SAMPLES_PER_BYTE))


def read_audio(path: str | Path, *, cap: int | None = None, timeout: float | None = None) -> tuple[np.ndarray, float]:
    """``path`` -> (float32 samples ``(n, channels)`` at full scale 1.0, the sample rate in Hz).

    ``cap``: the most samples it may decode to (default ``cap_for`` its size); ``timeout``: the
    seconds its decoding may take (default 60 s and 2 s per MB). Raises ``AudioFileError``."""
    path = Path(path)
    size = path.stat().st_size
    cap = cap_for(size) if cap is None else cap
    timeout = 60.0 + 2.0 * size / 1e6 if timeout is None else timeout
    res = run_child(_CHILD, [str(path), str(cap), str(MAX_CHANNELS), _MAGIC.decode()], timeout)
    data = res.out
    if res.said is not None:
        raise AudioFileError(_reason(res.said))
    if res.rc != 0:
        if res.late:
            raise AudioFileError(f"decoding took longer than {timeout:g} s; the file may be damaged")
        raise AudioFileError(f"the decoder stopped on it (exit status {res.rc}); the file may be damaged")
    if len(data) < _HEAD.size:
        raise AudioFileError("the decoder gave nothing for it")
    magic, rate, channels = _HEAD.unpack_from(data)
    body = len(data) - _HEAD.size
    if magic != _MAGIC or not 0 < channels <= MAX_CHANNELS or body % (4 * channels):
        raise AudioFileError("the decoder's output was cut short")
    x = np.frombuffer(data, dtype="<f4", offset=_HEAD.size).reshape(-1, channels)
    if x.dtype != np.float32:  # on a big-endian host
        x = x.astype(np.float32)
    return x, float(rate)


def _reason(line: str) -> str:
    """The child's one line, said in the file's terms."""
    if line.startswith("no-soundfile "):
        return ("reading FLAC, Ogg, MP3 and AIFF files needs python-soundfile, which did not load "
                f"({line[len('no-soundfile '):]}); install it: pip install soundfile")
    if line.startswith("cap "):
        return (f"it decodes to more than {int(line[4:]):,} samples, more than a file of its size holds; the "
                "file is damaged, or split a very long recording into parts")
    # libsndfile's own words: "Error opening 'x.mp3': Format not recognised."
    line = line.split("': ", 1)[-1] if line.startswith("Error opening ") else line
    if line.startswith("File does not exist"):  # what it says of an MP3 name holding no MPEG stream
        return "no sound stream found in it"
    if line.startswith("Error : "):  # a decoder's error mid-way: a damaged file, or one cut short
        return f"damaged or cut short: {line[8:]}"
    return line.rstrip(".")
