"""Per-stream DSP: resample -> window every hop -> normalize, chunk-size invariant."""

from __future__ import annotations

import time
from typing import Any, Protocol

import numpy as np

from drsn_stream.dsp.normalize import normalize_with_level
from drsn_stream.dsp.resample import StreamingResampler
from drsn_stream.dsp.window import Windower
from drsn_stream.errors import ConfigError
from drsn_stream.types import Frame, Window


class _Meta(Protocol):
    sample_rate: float
    window: int
    hop: int
    normalization: dict[str, Any]


class StreamDSP:
    """The state one stream needs between its frames and the model's windows.

    ``push(frame)`` takes a Frame of any length at any sample rate and returns the windows it
    completes: resampled to ``meta.sample_rate`` (stateful polyphase), ``meta.window`` samples long,
    one every ``hop`` samples, normalized as ``meta.normalization`` says. Feeding one signal in
    chunks of 1, 333 or 4096 samples gives bit-identical window data.

    Counters (plain ints, read them from any thread):
        nonfinite: NaN/Inf input samples replaced by 0 so they never reach the model.
        rate_changes: frames whose sample rate differed from the stream's so far.
        windows: windows produced.

    Rates: a frame's rate must be a small rational multiple of the model's
    (``resample.rational_ratio``), else ``push`` raises ``UnsupportedRate`` and keeps its state. A
    rate change swaps the resampler but keeps the samples already gathered at the model's rate, so
    a stream that keeps switching rates (12000 / 11025 Hz frame by frame) still yields windows;
    the change is counted here and made visible by the sensor-health check.
    """

    def __init__(self, meta: _Meta, *, hop: int | None = None, channel: int = 0, normalize: bool = True) -> None:
        """Args:
        meta: anything with ``sample_rate`` (Hz), ``window`` and ``hop`` (samples at that rate)
            and ``normalization`` (dict) - an ``ArtifactMeta`` in the monitor.
        hop: overrides ``meta.hop`` (samples), e.g. for denser windows on a GPU.
        channel: which column of multi-channel frames to use.
        normalize: False hands out raw windows (``Window.normalized`` False, level 0) for a
            consumer that normalizes whole batches at once, as the monitor's inference loop does:
            one vectorized call per batch instead of two per window on the ingest thread.
        """
        self.defer_normalization = not normalize
        self.sample_rate = float(meta.sample_rate)
        self.window = int(meta.window)
        self.hop = int(hop if hop is not None else meta.hop)
        self.normalization = dict(meta.normalization or {"kind": "none"})
        self.channel = int(channel)
        if self.hop < 1:
            raise ConfigError(f"hop must be >= 1 sample, got {self.hop}")
        normalize_with_level(np.zeros(1, np.float32), self.normalization)  # reject a bad spec now, not mid-stream
        self._windower = Windower(self.window, self.hop)
        self._resampler: StreamingResampler | None = None
        self._in_rate: float | None = None
        self._n_in = 0  # input samples since the last (re)start or rate change, at the input rate
        self._out_base = 0  # windower samples before the current resampler's first output
        self.nonfinite = 0
        self.rate_changes = 0
        self.windows = 0

    def counters(self) -> dict[str, int]:
        """``{"dsp.nonfinite": n, "dsp.rate_changes": n, "dsp.windows": n}`` for health and stats."""
        return {
            "dsp.nonfinite": self.nonfinite,
            "dsp.rate_changes": self.rate_changes,
            "dsp.windows": self.windows,
        }

    def reset(self) -> None:
        """Start over as if no sample had been seen (e.g. after a gap or a publisher restart)."""
        self._windower.reset()
        self._resampler = None
        self._in_rate = None
        self._n_in = 0
        self._out_base = 0

    def push(self, frame: Frame) -> list[Window]:
        """Feed one frame; return the windows it completes (possibly none)."""
        x = frame.samples
        if x.ndim == 2:
            if not 0 <= self.channel < x.shape[1]:
                raise ConfigError(
                    f"stream {frame.stream_id!r} has {x.shape[1]} channel(s); channel {self.channel} "
                    "does not exist (channels count from 0)"
                )
            x = x[:, self.channel]
        rate = float(frame.sample_rate)
        if self._in_rate is None or rate != self._in_rate:
            resampler = StreamingResampler(rate, self.sample_rate)  # UnsupportedRate: state unchanged
            if self._in_rate is not None:
                self.rate_changes += 1
            self._in_rate = rate
            self._resampler = resampler
            self._out_base = self._windower.seen
            self._n_in = 0
        x = np.ascontiguousarray(x, dtype=np.float32)
        bad = ~np.isfinite(x)
        n_bad = int(np.count_nonzero(bad))
        if n_bad:
            self.nonfinite += n_bad
            x = np.where(bad, np.float32(0.0), x)
        assert self._resampler is not None
        frame_start = self._n_in
        self._n_in += x.size
        y = x if self._resampler.identity else self._resampler.process(x).astype(np.float32)
        done = self._windower.push(y)
        if not done:
            return []
        now = time.time()
        out = []
        for index, end, data in done:
            # Output sample k sits at input time k/out_rate; anchor on this frame's capture time.
            t_last = (
                frame.t_capture
                + (end - 1 - self._out_base) / self.sample_rate
                - frame_start / rate
            )
            if self.defer_normalization:
                out.append(Window(frame.stream_id, index, t_last, data, now, 0.0, False))
                continue
            normed, level = normalize_with_level(data, self.normalization)
            out.append(
                Window(
                    stream_id=frame.stream_id,
                    index=index,
                    t_last=t_last,
                    data=normed,
                    t_ready=now,
                    level=float(level),
                )
            )
        self.windows += len(out)
        return out
