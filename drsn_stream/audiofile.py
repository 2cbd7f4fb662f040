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

import contextlib
import json
import os
import select
import struct
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from drsn_stream.childread import said_by, start_child

SUFFIXES = (".flac", ".ogg", ".oga", ".opus", ".mp3", ".aif", ".aiff")
MAX_SAMPLES = 1 << 27  # 512 MiB of float32, every channel counted: longer recordings, split them
SAMPLES_PER_BYTE = 256  # far above any real file's (digital silence in FLAC comes nearest)
MIN_CAP = 1 << 24  # a small file may still decode to this many samples (64 MiB)
MAX_CHANNELS = 1024  # libsndfile's own limit; the file source then allows fewer, saying so
_MAGIC = b"DRSNPCM2"
# a record: magic, kind (0 a block of samples, 1 the end of a file, 2 why it failed), rate,
# channels, then the payload's length and the payload (float32 samples, or the reason in UTF-8)
_HEAD = struct.Struct("<8sBdIQ")
_BLOCK, _END, _FAILED = 0, 1, 2

# The child (``childread``): only soundfile, no drsn_stream. It serves requests, one JSON line
# [path, cap] each, with records on stdout, until its stdin ends.
_CHILD = r"""
import json, struct
max_ch, magic = int(sys.argv[2]), sys.argv[3].encode()
try:
    import soundfile as sf
except Exception as exc:
    fail("no-soundfile " + type(exc).__name__ + ": " + str(exc))
out = sys.stdout.buffer
def record(kind, rate=0.0, channels=0, payload=b""):
    out.write(struct.pack("<8sBdIQ", magic, kind, rate, channels, len(payload)))
    out.write(payload)
def decode(path, cap):
    try:
        f = sf.SoundFile(path)
    except Exception as exc:
        return str(exc)
    with f:
        if not 0 < f.channels <= max_ch:
            return "the header says %d channels" % f.channels
        if not f.samplerate > 0:
            return "the header says %d Hz" % f.samplerate
        n = 0
        while True:
            try:
                block = f.read(16384, dtype="float32", always_2d=True)
            except Exception as exc:
                msg = str(exc).strip().rstrip(".")
                return msg + (", after %.2f s of sound" % (n / f.channels / f.samplerate) if n else "")
            if not len(block):
                record(1, float(f.samplerate), f.channels)
                return None
            n += block.size
            if n > cap:
                return "cap %d" % cap
            record(0, float(f.samplerate), f.channels, block.astype("<f4").tobytes())
for line in sys.stdin:
    path, cap = json.loads(line)
    why = decode(path, int(cap))
    if why is not None:
        record(2, payload=" ".join(str(why).split())[:300].encode("utf-8", "replace"))
    out.flush()
"""


class AudioFileError(ValueError):
    """The file is not a sound file this reads; the message says why, in the file's terms."""


def cap_for(size: int) -> int:
    """How many samples (every channel counted) a file of ``size`` bytes may decode to."""
    return min(MAX_SAMPLES, max(MIN_CAP, size * SAMPLES_PER_BYTE))


class _Decoder:
    """One decoding child, which serves file after file; replaced when it fails."""

    def __init__(self) -> None:
        self.proc = start_child(_CHILD, [str(MAX_CHANNELS), _MAGIC.decode()], stdin=True)

    def close(self) -> None:
        proc = self.proc
        for pipe in (proc.stdin, proc.stdout, proc.stderr):
            if pipe is not None:
                try:
                    pipe.close()
                except OSError:
                    pass
        if proc.poll() is None:
            proc.kill()
        proc.wait()

    def decode(self, path: Path, cap: int, timeout: float) -> tuple[np.ndarray, float]:
        """Raises AudioFileError; ``_Broken`` (an AudioFileError) where the child is no use after it."""
        proc = self.proc
        assert proc.stdin is not None and proc.stdout is not None
        deadline = time.monotonic() + timeout
        try:
            proc.stdin.write((json.dumps([str(path), cap]) + "\n").encode())
            proc.stdin.flush()
        except OSError:
            raise self._ended() from None
        fd = proc.stdout.fileno()
        blocks: list[np.ndarray] = []
        while True:
            head = self._read(fd, _HEAD.size, deadline, timeout)
            magic, kind, rate, channels, size = _HEAD.unpack(head)
            if magic != _MAGIC or kind not in (_BLOCK, _END, _FAILED) or size > 4 * (MAX_SAMPLES + 16384 * MAX_CHANNELS):
                raise _Broken("the decoder's output was not what it writes")
            payload = self._read(fd, size, deadline, timeout)
            if kind == _FAILED:
                raise AudioFileError(_reason(payload.decode("utf-8", "replace")))
            if kind == _END:
                x = np.concatenate(blocks) if blocks else np.zeros((0, channels), np.float32)
                return x, float(rate)
            if not 0 < channels <= MAX_CHANNELS or size % (4 * channels):
                raise _Broken("the decoder's output was not what it writes")
            blocks.append(np.frombuffer(payload, dtype="<f4").astype(np.float32, copy=False).reshape(-1, channels))

    def _read(self, fd: int, n: int, deadline: float, timeout: float) -> bytes:
        parts, got = [], 0
        while got < n:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                raise _Broken(f"decoding took longer than {timeout:g} s; the file may be damaged")
            chunk = os.read(fd, min(n - got, 1 << 20))
            if not chunk:
                raise self._ended()
            parts.append(chunk)
            got += len(chunk)
        return b"".join(parts)

    def _ended(self) -> _Broken:
        """What the child that closed its output said, or its exit status."""
        rc = self.proc.wait()
        said = said_by(self.proc)
        if said is not None:
            return _Broken(_reason(said))
        return _Broken(f"the decoder stopped on it (exit status {rc}); the file may be damaged")


class _Broken(AudioFileError):
    """The decoding child is no use any more (it ended, or ran past its time)."""


_serving: _Decoder | None = None  # the child of the files read inside decoding(), once one is read
_active = False  # inside decoding()
_lock = threading.Lock()


@contextlib.contextmanager
def decoding() -> Iterator[None]:
    """Files read inside it share one decoding child (a data set of compressed clips: about 0.1 s
    of a child's start saved per file), started by the first; one that breaks it is replaced for
    the next."""
    global _serving, _active
    with _lock:
        mine, _active = not _active, True
    try:
        yield
    finally:
        if mine:
            with _lock:
                done, _serving, _active = _serving, None, False
            if done is not None:
                done.close()


def read_audio(path: str | Path, *, cap: int | None = None, timeout: float | None = None) -> tuple[np.ndarray, float]:
    """``path`` -> (float32 samples ``(n, channels)`` at full scale 1.0, the sample rate in Hz).

    ``cap``: the most samples it may decode to (default ``cap_for`` its size); ``timeout``: the
    seconds its decoding may take (default 60 s and 2 s per MB). Raises ``AudioFileError``."""
    global _serving
    path = Path(path)
    size = path.stat().st_size
    cap = cap_for(size) if cap is None else cap
    timeout = 60.0 + 2.0 * size / 1e6 if timeout is None else timeout
    with _lock:
        if _active:  # inside decoding(): its child, one file at a time
            if _serving is not None and _serving.proc.poll() is not None:  # ended after the file before
                _serving.close()
                _serving = None
            if _serving is None:
                _serving = _Decoder()
            try:
                return _serving.decode(path, cap, timeout)
            except _Broken:
                _serving.close()
                _serving = None
                raise
    decoder = _Decoder()  # a child of its own: files read one at a time, from any thread
    try:
        return decoder.decode(path, cap, timeout)
    finally:
        decoder.close()


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
