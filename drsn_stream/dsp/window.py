"""Cutting a stream into fixed-length windows every ``hop`` samples, with a bounded buffer."""

from __future__ import annotations

import sys
import zlib

import numpy as np

from drsn_stream.errors import ConfigError


class Windower:
    """Accepts chunks of any length and returns every complete window they finish.

    Window ``k`` covers absolute samples ``[start + k*hop, start + k*hop + window)`` of the stream
    (``start`` is 0 unless given: see ``window_start``). Only the samples a future window can
    still use are kept, in a buffer of a few windows that is written forward only: windows are
    views of it, and when it is full the kept samples move to its front once no window refers to
    it any more, else to a fresh one (the old one lives on while a window still refers to it), so
    memory stays bounded on endless streams. With ``channels`` set,
    chunks are ``(channels, n)`` and windows ``(channels, window)``: every row is cut exactly as
    it would be alone.
    """

    def __init__(self, window: int, hop: int, *, dtype: np.dtype | type = np.float32,
                 channels: int | None = None, start: int = 0) -> None:
        if window < 1 or hop < 1:
            raise ConfigError(f"window and hop must be >= 1 sample, got window={window}, hop={hop}")
        if start < 0:
            raise ConfigError(f"the first window's start must be >= 0 samples, got {start}")
        self.window = int(window)
        self.hop = int(hop)
        self.start = int(start)
        self.channels = channels
        self._dtype = np.dtype(dtype)
        self._lead: tuple[int, ...] = () if channels is None else (int(channels),)
        # room for several hops past a window: dropping samples moves an offset, and the kept
        # samples move to the front of a fresh buffer only when the room runs out, not on every push
        self._use(np.zeros((*self._lead, 4 * self.window), dtype=self._dtype))
        self.reset()

    def _use(self, buf: np.ndarray) -> None:
        self._buf = buf
        # windows are slices of a read-only view (windows overlap: a write into one would change the next)
        self._ro = buf.view()
        self._ro.flags.writeable = False

    def reset(self) -> None:
        """Forget buffered samples; the next sample is sample 0 again (the next window starts at ``start``)."""
        self._off = 0  # index in _buf of the first kept sample
        self._len = 0  # kept samples, _buf[off : off + len]
        self._buf_start = 0  # absolute index of _buf[off]
        self._n = 0  # samples seen
        self._next = self.start  # absolute start of the next window
        self.count = 0  # windows emitted

    @property
    def seen(self) -> int:
        """Samples pushed since the last reset."""
        return self._n

    def push(self, x: np.ndarray) -> list[tuple[int, int, np.ndarray]]:
        """Add samples ``x`` (n,) (or ``(channels, n)``); return ``[(index, end, window), ...]`` for
        the windows completed.

        ``end`` is the absolute index one past the window's last sample; ``window`` is a
        ``(window,)`` (or ``(channels, window)``) read-only view the caller may keep: samples once
        written are never written again while a window refers to them (see ``_append``), so no
        copy per window is needed.
        """
        return self.push_exact(np.asarray(x, dtype=self._dtype).reshape(*self._lead, -1))

    def push_exact(self, x: np.ndarray) -> list[tuple[int, int, np.ndarray]]:
        """``push`` of samples already of this windower's dtype and shape (``(channels, n)`` or
        ``(n,)``): no conversion looked for."""
        self._append(x)
        out: list[tuple[int, int, np.ndarray]] = []
        while self._next + self.window <= self._n:
            s = self._off + self._next - self._buf_start
            out.append((self.count, self._next + self.window, self._ro[..., s : s + self.window]))
            self.count += 1
            self._next += self.hop
        self._discard_before(self._next)
        return out

    def _append(self, x: np.ndarray) -> None:
        # Samples before the next window start (hop > window) are never needed: skip them.
        n = x.shape[-1]
        skip = min(n, max(0, self._next - self._n))
        if skip and self._len == 0:
            self._buf_start += skip
            x = x[..., skip:]
            n -= skip
        self._n += skip
        off, kept = self._off, self._len
        if off + kept + n > self._buf.shape[-1]:  # out of room: the kept samples to the front
            size = self._buf.shape[-1]
            if kept + n <= size and not self._shared():
                self._buf[..., :kept] = self._buf[..., off : off + kept]
            else:  # of a new buffer, while a window handed out is a view of this one
                buf = np.empty((*self._lead, size if kept + n <= size else max(kept + n, 2 * size)), dtype=self._dtype)
                buf[..., :kept] = self._buf[..., off : off + kept]
                self._use(buf)
            self._off = off = 0
        self._buf[..., off + kept : off + kept + n] = x
        self._len = kept + n
        self._n += n

    def _shared(self) -> bool:
        """Whether a window handed out still refers to the buffer: a view's base is the buffer
        itself (numpy collapses views of views), so beyond ``_buf``, ``_ro`` and the call's own
        argument, any reference is a window's. None left: the buffer can be written over, with
        no fresh one to allocate and fault in (a 16-channel stream's is 512 KB)."""
        return sys.getrefcount(self._buf) > 3

    def _discard_before(self, absolute: int) -> None:
        drop = min(self._len, max(0, absolute - self._buf_start))
        if drop:
            self._off += drop
            self._len -= drop
            self._buf_start += drop


def window_start(stream_id: str, hop: int, phases: int) -> int:
    """Where a stream's first window starts when its windows are spread over ``phases`` phases:
    ``p * hop // phases`` samples, ``p`` from the stream id alone (the same in every process and
    run, whatever the chunk size or source kind). Streams whose frames arrive in step (a gateway's
    modules) then complete their windows in turn, a ``1 / phases`` share of them per
    ``hop / phases`` samples, rather than all in the same frame."""
    if phases <= 1:
        return 0
    return (zlib.crc32(stream_id.encode("utf-8", "surrogatepass")) % phases) * hop // phases
