"""Per-stream DSP: resample -> window every hop -> normalize, chunk-size invariant.

``StreamDSP`` follows one channel of a stream; ``FrameDSP`` follows every channel of a
multi-channel stream at once, on ``(channels, samples)`` arrays through one resampler and one
windower, and gives each channel exactly the windows a ``StreamDSP`` of that channel would.
"""

from __future__ import annotations

import time
from typing import Any, Protocol

import numpy as np

from drsn_stream.dsp.normalize import normalize_with_level
from drsn_stream.dsp.resample import StreamingResampler
from drsn_stream.dsp.window import Windower
from drsn_stream.errors import ConfigError
from drsn_stream.types import Frame, Window, channel_ids

_F32 = np.dtype(np.float32)


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

    def __init__(self, meta: _Meta, *, hop: int | None = None, channel: int = 0, normalize: bool = True,
                 start: int = 0) -> None:
        """Args:
        meta: anything with ``sample_rate`` (Hz), ``window`` and ``hop`` (samples at that rate)
            and ``normalization`` (dict) - an ``ArtifactMeta`` in the monitor.
        hop: overrides ``meta.hop`` (samples), e.g. for denser windows on a GPU.
        channel: which column of multi-channel frames to use.
        start: where window 0 starts, in samples at the model's rate (``window.window_start``).
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
        self._channels: int | None = None  # None: one channel, (n,) arrays; FrameDSP: (channels, n)
        self._windower = Windower(self.window, self.hop, start=start)
        self._resampler: StreamingResampler | None = None
        self._direct = False  # the resampler's output is its input (the frames are at the model's rate)
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

    @property
    def seconds_seen(self) -> float:
        """Seconds of input since the last (re)start (a resampler's delay included, which
        the windower's count at the model's rate leaves out)."""
        n_in = self._n_in / self._in_rate if self._in_rate else 0.0
        return self._out_base / self.sample_rate + n_in

    @property
    def first_window_end(self) -> int:
        """How many samples at the model's rate window 0 needs (its start plus the window)."""
        return self._windower.start + self.window

    def reset(self) -> None:
        """Start over as if no sample had been seen (e.g. after a gap or a publisher restart)."""
        self._windower.reset()
        self._resampler = None
        self._in_rate = None
        self._n_in = 0
        self._out_base = 0

    def completes(self, frame: Frame) -> bool:
        """Whether ``frame`` would complete a window (its length at the model's rate, reckoned
        without the resampler's delay: an ordering hint, not a promise)."""
        n = frame.samples.shape[0]
        if frame.sample_rate != self.sample_rate:
            n = int(n * self.sample_rate / frame.sample_rate)
        w = self._windower
        return w.seen + n >= w._next + w.window

    def _samples(self, frame: Frame) -> np.ndarray:
        """The frame's samples this DSP follows, float32 ``(n,)``."""
        x = frame.samples
        if x.ndim == 2:
            if not 0 <= self.channel < x.shape[1]:
                raise ConfigError(
                    f"stream {frame.stream_id!r} has {x.shape[1]} channel(s); channel {self.channel} "
                    "does not exist (channels count from 0)"
                )
            x = x[:, self.channel]
        return np.ascontiguousarray(x, dtype=np.float32)

    def _count_nonfinite(self, bad: np.ndarray) -> None:
        self.nonfinite += int(np.count_nonzero(bad))

    def push(self, frame: Frame) -> list[Window]:
        """Feed one frame; return the windows it completes (possibly none)."""
        x = self._samples(frame)
        rate = float(frame.sample_rate)
        if self._in_rate is None or rate != self._in_rate:
            # UnsupportedRate leaves the state unchanged
            resampler = StreamingResampler(rate, self.sample_rate, channels=self._channels)
            if self._in_rate is not None:
                self.rate_changes += 1
            self._in_rate = rate
            self._resampler = resampler
            self._direct = resampler.identity
            self._out_base = self._windower.seen
            self._n_in = 0
        # one pass over the samples, and a closer look only when one is NaN or Inf (a sum would
        # do it too, but +Inf and -Inf in one frame make numpy print a warning, inf - inf)
        finite = np.isfinite(x)
        if not finite.all():
            bad = ~finite
            self._count_nonfinite(bad)
            x = np.where(bad, np.float32(0.0), x)
        assert self._resampler is not None
        frame_start = self._n_in
        self._n_in += x.shape[-1]
        y = x if self._resampler.identity else self._resampler.process(np.ascontiguousarray(x)).astype(np.float32)
        done = self._windower.push(y)
        if not done:
            return []
        return self._windows(frame, done, frame_start, rate)

    def _t_last(self, frame: Frame, end: int, frame_start: int, rate: float) -> float:
        # Output sample k sits at input time k/out_rate; anchor on this frame's capture time.
        return frame.t_capture + (end - 1 - self._out_base) / self.sample_rate - frame_start / rate

    def _ids(self, frame: Frame) -> tuple[str, ...]:
        """The stream id of each row of this DSP's windows."""
        return (frame.stream_id,)

    def _windows(self, frame: Frame, done: list[tuple[int, int, np.ndarray]], frame_start: int,
                 rate: float) -> list[Window]:
        now = time.time()
        ids = self._ids(frame)
        one = self._channels is None  # windows (window,), else (channels, window): one row per id
        out = []
        for index, end, data in done:
            t_last = self._t_last(frame, end, frame_start, rate)
            if self.defer_normalization:
                out += [Window(sid, index, t_last, row, now, 0.0, False)
                        for sid, row in zip(ids, (data,) if one else data)]
                continue
            normed, levels = normalize_with_level(data, self.normalization)
            if one:
                normed, levels = (normed,), (levels,)
            out += [Window(sid, index, t_last, row, now, float(level)) for sid, row, level in zip(ids, normed, levels)]
        self.windows += len(out)
        return out


class FrameDSP(StreamDSP):
    """Every channel of one multi-channel stream: frames ``(n, channels)`` in, one window per
    channel out every ``hop``, under the channels' stream ids (``types.channel_ids``).

    The channels share one resampler and one windower over ``(channels, samples)`` arrays, so a
    16-channel frame costs about one channel's Python work; channel ``k``'s windows are bit for
    bit those of ``StreamDSP(meta, channel=k)`` on the same frames.

    Counters: as ``StreamDSP`` (``nonfinite`` over all channels), plus ``nonfinite_by_stream()``.
    """

    def __init__(self, meta: _Meta, ids: tuple[str, ...], *, hop: int | None = None, normalize: bool = True,
                 start: int = 0) -> None:
        """Args:
        meta, hop, normalize, start: as for ``StreamDSP``.
        ids: the stream id of each channel, in channel order.
        """
        super().__init__(meta, hop=hop, normalize=normalize, start=start)
        self.ids = tuple(ids)
        self._channels = len(self.ids)
        self._windower = Windower(self.window, self.hop, channels=self._channels, start=start)
        self._nonfinite = np.zeros(self._channels, dtype=np.int64)

    def push(self, frame: Frame, finite: bool = False) -> list[Window]:
        """As ``StreamDSP.push``; a float32 frame of this layout at the rate of the frames before
        it, the model's, in fewer steps: no conversion, resampler or replacement to look at
        (a frame with NaN/Inf samples, or anything else, takes the long way).

        ``finite``: the caller found every sample of the frame finite already (the sensor health's
        gather reads them all: ``HealthMonitor.push_channels``), so they are not read for it again."""
        x = frame.samples
        if (self._direct and frame.sample_rate == self._in_rate and type(x) is np.ndarray and x.dtype == _F32
                and x.ndim == 2 and x.shape[1] == self._channels and (finite or np.isfinite(x).all())):
            frame_start = self._n_in
            self._n_in += x.shape[0]
            done = self._windower.push_exact(x.T)
            return self._windows(frame, done, frame_start, self._in_rate) if done else []
        return super().push(frame)

    def nonfinite_by_stream(self) -> dict[str, int]:
        """``{channel stream id: NaN/Inf samples replaced}`` for the channels that had any."""
        return {sid: int(n) for sid, n in zip(self.ids, self._nonfinite) if n}

    def _samples(self, frame: Frame) -> np.ndarray:
        """The frame's samples, float32 ``(channels, n)``: a transposed view where they are float32
        already (the windower's copy is then the only one)."""
        x = frame.samples
        if x.ndim != 2 or x.shape[1] != self._channels:
            raise ConfigError(f"stream {frame.stream_id!r} sent {x.shape[1] if x.ndim == 2 else 1} channel(s), "
                              f"this DSP follows {self._channels}; start a new one for the new layout")
        return x.T if x.dtype == np.float32 else np.ascontiguousarray(x.T, dtype=np.float32)

    def _count_nonfinite(self, bad: np.ndarray) -> None:
        counts = np.count_nonzero(bad, axis=1)
        self._nonfinite += counts
        self.nonfinite += int(counts.sum())

    def _ids(self, frame: Frame) -> tuple[str, ...]:
        return self.ids


def channel_layout(frame: Frame) -> tuple[str, ...] | None:
    """The stream ids of a multi-channel (or named) frame's channels; None for one plain channel."""
    x = frame.samples
    if frame.names is None and (x.ndim < 2 or x.shape[1] == 1):
        return None
    return channel_ids(frame.stream_id, x.shape[1], frame.names)


def raw_dsp_for(meta: _Meta, ids: tuple[str, ...] | None, hop: int | None, start: int = 0) -> StreamDSP:
    """The DSP of a stream with this channel layout (``channel_layout``), handing out raw windows
    for the batch normalization step (``dsp.normalize.BatchNormalizer``); window 0 starts at ``start``."""
    if ids is not None:
        return FrameDSP(meta, ids, hop=hop, normalize=False, start=start)
    return StreamDSP(meta, hop=hop, normalize=False, start=start)
