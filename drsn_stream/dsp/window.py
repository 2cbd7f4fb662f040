"""Cutting a stream into fixed-length windows every ``hop`` samples, with a bounded buffer."""

from __future__ import annotations

import numpy as np

from drsn_stream.errors import ConfigError


class Windower:
    """Accepts chunks of any length and returns every complete window they finish.

    Window ``k`` covers absolute samples ``[k*hop, k*hop + window)`` of the stream. Only the samples
    a future window can still use are kept (a buffer of about ``window + chunk`` samples), and the
    buffer is preallocated and reused, so memory stays bounded on endless streams.
    """

    def __init__(self, window: int, hop: int, *, dtype: np.dtype | type = np.float32) -> None:
        if window < 1 or hop < 1:
            raise ConfigError(f"window and hop must be >= 1 sample, got window={window}, hop={hop}")
        self.window = int(window)
        self.hop = int(hop)
        self._dtype = np.dtype(dtype)
        self._buf = np.zeros(2 * self.window, dtype=self._dtype)
        self.reset()

    def reset(self) -> None:
        """Forget buffered samples; the next sample is sample 0 again."""
        self._len = 0  # valid samples in _buf
        self._buf_start = 0  # absolute index of _buf[0]
        self._n = 0  # samples seen
        self._next = 0  # absolute start of the next window
        self.count = 0  # windows emitted

    @property
    def seen(self) -> int:
        """Samples pushed since the last reset."""
        return self._n

    def push(self, x: np.ndarray) -> list[tuple[int, int, np.ndarray]]:
        """Add samples ``x`` (n,); return ``[(index, end, window), ...]`` for the windows completed.

        ``end`` is the absolute index one past the window's last sample; ``window`` is a fresh
        ``(window,)`` array the caller may keep.
        """
        x = np.asarray(x, dtype=self._dtype).reshape(-1)
        self._append(x)
        out: list[tuple[int, int, np.ndarray]] = []
        while self._next + self.window <= self._n:
            s = self._next - self._buf_start
            out.append((self.count, self._next + self.window, self._buf[s : s + self.window].copy()))
            self.count += 1
            self._next += self.hop
        self._discard_before(self._next)
        return out

    def _append(self, x: np.ndarray) -> None:
        # Samples before the next window start (hop > window) are never needed: skip them.
        skip = min(x.size, max(0, self._next - self._n))
        if skip and self._len == 0:
            self._buf_start += skip
            x = x[skip:]
        self._n += skip
        need = self._len + x.size
        if need > self._buf.size:
            grown = np.zeros(max(need, 2 * self._buf.size), dtype=self._dtype)
            grown[: self._len] = self._buf[: self._len]
            self._buf = grown
        self._buf[self._len : need] = x
        self._len = need
        self._n += x.size

    def _discard_before(self, absolute: int) -> None:
        drop = min(self._len, max(0, absolute - self._buf_start))
        if drop:
            keep = self._len - drop
            self._buf[:keep] = self._buf[drop : self._len]
            self._len = keep
            self._buf_start += drop
