"""``sim:speech``: real spoken digits separated by pauses, over real background noise.

Replays the shipped excerpts (``drsn_stream/data/speech_excerpts.npz``: 30 FSDD test-split words
by six speakers, and held-out Speech Commands background noise; see
``drsn_stream.speech.excerpts``) on one stream ``sim/speech``. The word order, the pauses and the
noise offset are seeded, so ``truth(stream, t)`` and ``words()`` tell tests and demos what was
said when. Paced in real time unless ``fast`` is set; capture times follow the sample clock
either way.

Credits: Free Spoken Digit Dataset (CC BY-SA 4.0); Speech Commands background noise (CC BY 4.0).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import numpy as np

from drsn_stream.errors import ConfigError
from drsn_stream.sources.base import Source, opt_bool, opt_choice, opt_finite, opt_positive
from drsn_stream.sources.sim import looped
from drsn_stream.speech.dataset import to_rate
from drsn_stream.speech.excerpts import load_excerpts
from drsn_stream.types import Frame

STREAM = "sim/speech"
BACKGROUND = "_silence_"  # truth() between words


class SpeechSim(Source):
    """One stream of digits spoken by several speakers, with pauses of ``gap``-``1.5 gap`` seconds.

    Frames are float32 ``(chunk, 1)`` at ``rate`` Hz, words at -20 dBFS RMS, the background at
    ``snr`` dB below the words (``noise=none``: digital silence between words).
    """

    kind = "sim"
    OPTIONS = {
        "seed": (int, 0, "seed of the word order, pauses and noise offset"),
        "rate": (opt_positive(int, 1_000_000), 8000, "output sample rate in Hz (8000 or 16000, for instance)"),
        "chunk": (opt_positive(int), 400, "samples per frame"),
        "speed": (opt_positive(float), 1.0, "pace as a multiple of real time"),
        "fast": (opt_bool, False, "1 = as fast as possible, no pacing"),
        "duration": (opt_positive(float), math.inf, "stop after this many seconds of signal"),
        "words": (opt_positive(int), 0, "stop after this many words (and a final pause); 0 = endless"),
        "gap": (opt_positive(float), 1.2, "shortest pause between words, seconds"),
        "noise": (opt_choice("real", "none"), "real", "background: real (recorded noise) | none"),
        "snr": (opt_finite(), 20.0, "background level in dB below the words"),
    }

    def __init__(self, target: str = "speech", **options: Any) -> None:
        super().__init__(target, **options)
        self.rate = int(self.options["rate"])
        self._streams = [STREAM]
        self._time_scale = 1.0 if self.options["fast"] else float(self.options["speed"])
        self.t0: float | None = None
        self._rng = np.random.default_rng(self.options["seed"])
        self._starts: list[int] = []  # sample positions of the scheduled words
        self._items: list[int] = []  # index into the excerpts of each scheduled word
        self._next_start = 0

    @property
    def labels(self) -> list[str]:
        return [str(d) for d in range(10)]

    def _open(self) -> None:
        words, noises, _ = load_excerpts()
        self._words = [(lab, to_rate(x, 8000, self.rate)) for lab, x in words]
        self._noise = None
        if self.options["noise"] == "real":
            name = sorted(noises)[int(self._rng.integers(len(noises)))]
            gain = 0.1 / 10.0 ** (self.options["snr"] / 20.0)  # words sit at 0.1 RMS
            self._noise = (to_rate(noises[name], 8000, self.rate) * gain).astype(np.float32)
            self._noise_offset = int(self._rng.integers(self._noise.size))
        self._next_start = int(self.rate * self._rng.uniform(1.0, 1.5))  # background first
        self._start_clock()

    def _schedule_to(self, pos: int) -> None:
        """Draws words until the schedule covers sample ``pos``."""
        limit = self.options["words"] or math.inf
        gap = self.options["gap"]
        while self._next_start <= pos and len(self._starts) < limit:
            # Each round uses every excerpt once before repeating, in a seeded order.
            if len(self._items) % len(self._words) == 0:
                self._order = list(self._rng.permutation(len(self._words)))
            item = int(self._order[len(self._items) % len(self._words)])
            self._starts.append(self._next_start)
            self._items.append(item)
            length = self._words[item][1].size
            self._next_start += length + int(self.rate * self._rng.uniform(gap, 1.5 * gap))

    def _total(self) -> float:
        total = self.options["duration"] * self.rate
        if self.options["words"]:
            self._schedule_to(10**12)
            total = min(total, self._next_start)
        return total

    def words(self) -> list[tuple[float, float, str]]:
        """Words scheduled so far: ``[(t_start, t_end, digit)]`` in capture-time seconds."""
        if self.t0 is None:
            raise ConfigError("words() needs an opened simulator (its clock starts at open)")
        out = []
        for s, i in zip(self._starts, self._items, strict=True):
            n = self._words[i][1].size
            out.append((self._t(s), self._t(s + n), self._words[i][0]))
        return out

    def truth(self, stream_id: str, t: float) -> str:
        """The digit being spoken at capture time ``t`` (wall-clock seconds), else ``_silence_``."""
        if stream_id != STREAM:
            raise ConfigError(f"unknown stream {stream_id!r}; this simulator has {STREAM}")
        if self.t0 is None:
            raise ConfigError("truth() needs an opened simulator (its clock starts at open)")
        pos = int(math.floor((t - self.t0) * self.rate * self._time_scale))
        self._schedule_to(pos)
        i = int(np.searchsorted(self._starts, pos, side="right")) - 1
        if i >= 0:
            lab, x = self._words[self._items[i]]
            if pos < self._starts[i] + x.size:
                return lab
        return BACKGROUND

    def _t(self, pos: int) -> float:
        assert self.t0 is not None
        return self.t0 + pos / (self.rate * self._time_scale)

    def _signal(self, a: int, b: int) -> np.ndarray:
        out = np.zeros(b - a, dtype=np.float32)
        if self._noise is not None:
            out += looped(self._noise, a + self._noise_offset, b - a)
        self._schedule_to(b)
        first = max(0, int(np.searchsorted(self._starts, a, side="right")) - 1)
        for s, i in zip(self._starts[first:], self._items[first:], strict=True):
            if s >= b:
                break
            x = self._words[i][1]
            lo, hi = max(a, s), min(b, s + x.size)
            if hi > lo:
                out[lo - a : hi - a] += x[lo - s : hi - s]
        return out

    def _frames(self) -> Iterator[Frame]:
        chunk = self.options["chunk"]
        total = self._total()
        pos, seq = 0, 0
        while pos < total and not self.closed:
            n = int(min(chunk, total - pos))
            if not self.options["fast"] and not self._sleep_until(self._t(pos + n)):
                return
            yield Frame(STREAM, seq, self._t(pos), float(self.rate), self._signal(pos, pos + n)[:, None])
            pos += n
            seq += 1
