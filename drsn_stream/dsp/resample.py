"""A stateful, chunk-size invariant polyphase resampler.

The filter is the one ``scipy.signal.resample_poly`` designs (Kaiser window, beta 5, 10 zero
crossings per side of the narrower band), and its group delay is compensated the same way, so a
streamed signal lines up with ``resample_poly`` of the whole signal: output sample ``j`` sits at
input time ``j / out_rate``.

Every output sample is a sum over the filter taps taken in one fixed order (a sequential
accumulate, never a BLAS dot whose blocking depends on the length), so feeding the same signal in
chunks of 1, 333 or 4096 samples gives bit-identical output.
"""

from __future__ import annotations

import functools
import math
from fractions import Fraction

import numpy as np

from drsn_stream.errors import ConfigError

# 44.1 kHz <-> 16 kHz needs 160/441. Both factors are bounded, so is the filter: at most
# 2 * 10 * 1000 + 1 taps (160 KB); a rate like 1.001 Hz -> 12 kHz (up 11988) is refused instead of
# building a 140-million-tap filter.
MAX_DENOMINATOR = 1000
MAX_FACTOR = 1000
MAX_RATIO_ERROR = 1e-3  # relative error of the rational approximation accepted (0.1 %: inaudible)
_SCRATCH = 1 << 20  # elements of the (block, taps) scratch per vectorized block (8 MB in float64)


class UnsupportedRate(ConfigError):
    """A sample rate that is no small rational multiple of the model's rate."""


def rational_ratio(in_rate: float, out_rate: float) -> tuple[int, int]:
    """``(up, down)`` with ``out_rate / in_rate ~= up / down``, both at most ``MAX_FACTOR``, within
    ``MAX_RATIO_ERROR``; raises ``UnsupportedRate`` for any other rate."""
    if not (math.isfinite(in_rate) and math.isfinite(out_rate) and in_rate > 0 and out_rate > 0):
        raise UnsupportedRate(f"sample rates must be positive and finite, got {in_rate} -> {out_rate} Hz")
    exact = float(out_rate) / float(in_rate)
    frac = Fraction(exact).limit_denominator(MAX_DENOMINATOR)
    if frac == 0 or frac.numerator > MAX_FACTOR or abs(float(frac) - exact) > MAX_RATIO_ERROR * exact:
        raise UnsupportedRate(
            f"cannot resample {in_rate:g} Hz to {out_rate:g} Hz: not a ratio up/down with up, down <= "
            f"{MAX_FACTOR}; send the stream at a standard rate (e.g. 8, 12, 16, 44.1 or 48 kHz)"
        )
    return frac.numerator, frac.denominator


@functools.lru_cache(maxsize=32)  # a stream switching between two rates designs each filter once
def design_filter(up: int, down: int) -> np.ndarray:
    """The anti-aliasing low-pass FIR for ``up/down`` resampling, scaled by ``up`` (float64, read-only)."""
    max_rate = max(up, down)
    half_len = 10 * max_rate
    # scipy.signal.firwin(2 * half_len + 1, 1 / max_rate, window=("kaiser", 5.0)), written out in
    # numpy (equal to 1e-17): importing scipy.signal costs ~1 s of CPU in every process that
    # imports the DSP, and a first frame at another rate would pay it in the ingest thread
    cutoff = 1.0 / max_rate
    taps = 2 * half_len + 1
    h = cutoff * np.sinc(cutoff * (np.arange(taps) - half_len)) * np.kaiser(taps, 5.0)
    out = h / h.sum() * up  # unit gain at DC, as firwin scales a low-pass
    out.flags.writeable = False
    return out


class StreamingResampler:
    """Resample a 1-D stream (or ``channels`` streams at once) from ``in_rate`` to ``out_rate`` Hz,
    chunk by chunk.

    ``process(x)`` takes any number of new input samples and returns the output samples that are
    now fully determined; the remainder is carried forward. With ``channels`` set, ``x`` is
    ``(channels, n)`` and every row gets exactly the output it would get alone. The stream is zero before its first
    sample (as in ``resample_poly``); output lags input by half the filter length
    (``delay_s``), which callers may read to know how fresh the newest output is.
    """

    def __init__(self, in_rate: float, out_rate: float, *, channels: int | None = None) -> None:
        self.channels = channels
        self.in_rate = float(in_rate)
        self.out_rate = float(out_rate)
        self.up, self.down = rational_ratio(in_rate, out_rate)
        self.identity = self.up == self.down
        h = design_filter(self.up, self.down) if not self.identity else np.ones(1)
        self._delay_up = (len(h) - 1) // 2  # in upsampled samples
        taps_per_phase = -(-len(h) // self.up)
        padded = np.zeros(taps_per_phase * self.up)
        padded[: len(h)] = h
        # Row p holds the taps that meet input samples for output phase p, newest input first.
        self._poly = padded.reshape(taps_per_phase, self.up).T.copy()
        self._taps = taps_per_phase
        self._lags = np.arange(taps_per_phase)
        self.reset()

    @property
    def delay_s(self) -> float:
        """Seconds of input the newest output sample waits for (filter half length)."""
        return 0.0 if self.identity else self._delay_up / (self.up * self.in_rate)

    def reset(self) -> None:
        """Forget all input; the next sample is sample 0 of a new stream."""
        # History starts with taps zeros standing for the silence before sample 0.
        lead = () if self.channels is None else (self.channels,)
        self._hist = np.zeros((*lead, self._taps), dtype=np.float64)
        self._hist_start = -self._taps  # absolute input index of _hist[0]
        self._n_in = 0
        self._n_out = 0

    def process(self, x: np.ndarray) -> np.ndarray:
        """Feed input samples ``x`` (n,) (or ``(channels, n)``), get the newly determined output
        samples (m,) (or ``(channels, m)``) float64."""
        x = np.asarray(x, dtype=np.float64)
        x = x.reshape(-1) if self.channels is None else x.reshape(self.channels, -1)
        n = x.shape[-1]
        if self.identity:
            self._n_in += n
            self._n_out += n
            return x.copy()
        self._hist = np.concatenate([self._hist, x], axis=-1)
        self._n_in += n
        # Output j needs input up to index (j*down + delay) // up.
        last_j = ((self._n_in - 1) * self.up - self._delay_up) // self.down if self._n_in else -1
        n_new = max(0, last_j + 1 - self._n_out)
        out = np.empty((*self._hist.shape[:-1], n_new), dtype=np.float64)
        block = max(1, _SCRATCH // (self._taps * max(1, int(np.prod(self._hist.shape[:-1])))))
        for b0 in range(0, n_new, block):
            j = self._n_out + b0 + np.arange(min(block, n_new - b0))
            m = j * self.down + self._delay_up
            phase = m % self.up
            base = m // self.up - self._hist_start
            gathered = self._hist[..., base[:, None] - self._lags[None, :]]
            prods = self._poly[phase] * gathered
            out[..., b0 : b0 + j.size] = np.add.accumulate(prods, axis=-1)[..., -1]
        self._n_out += n_new
        # Keep only what the next output still reaches back to.
        next_base = ((self._n_out * self.down + self._delay_up) // self.up) - (self._taps - 1)
        drop = min(max(0, next_base - self._hist_start), self._hist.shape[-1])
        if drop:
            self._hist = self._hist[..., drop:]
            self._hist_start += drop
        return out
