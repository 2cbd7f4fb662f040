"""Non-blocking key reader for the dashboard: cbreak mode + ``select`` on a TTY, nothing otherwise.

    with KeyReader() as keys:                  # sys.stdin; the terminal is restored on exit
        for key in keys.read(timeout=0.25):    # [] after the timeout when nothing was typed
            ...                                # "q", "p", "a", "?", "n", "b", "pgdn", "pgup", ...

When stdin is not a terminal (a pipe, a service, a test) the reader stays inactive: ``active``
is False, ``read`` returns [] at once, and nothing is read from stdin, so the caller waits its
own way. Cbreak mode keeps Ctrl-C working (signals stay on); echo is off while active.
"""

from __future__ import annotations

import os
import select
import sys
from typing import TextIO

try:
    import termios
    import tty
except ImportError:  # Windows: no termios; the dashboard runs without keys there
    termios = None  # type: ignore[assignment]
    tty = None  # type: ignore[assignment]

# Escape sequences of the keys the dashboard uses; others are dropped.
_SEQUENCES = {
    "\x1b[5~": "pgup",
    "\x1b[6~": "pgdn",
    "\x1b[A": "up",
    "\x1b[B": "down",
    "\x1b[H": "home",
    "\x1b[F": "end",
    "\x1bOH": "home",
    "\x1bOF": "end",
}


def parse_keys(text: str) -> list[str]:
    """Split typed text into keys: plain characters and named escape sequences ("pgdn")."""
    keys: list[str] = []
    i = 0
    while i < len(text):
        if text[i] == "\x1b":
            for seq, name in _SEQUENCES.items():
                if text.startswith(seq, i):
                    keys.append(name)
                    i += len(seq)
                    break
            else:
                # An unknown sequence: skip ESC and the CSI/SS3 body up to its final byte.
                j = i + 1
                if j < len(text) and text[j] in "[O":
                    j += 1
                    while j < len(text) and not ("@" <= text[j] <= "~"):
                        j += 1
                    j += 1
                if j == i + 1:
                    keys.append("esc")
                i = j
            continue
        keys.append(text[i])
        i += 1
    return keys


class KeyReader:
    """Reads single key presses without blocking and without waiting for Enter.

    Args:
        stream: the input (``sys.stdin`` when None and no ``fd`` is given).
        fd: a file descriptor to read instead (e.g. a pty in tests).
        enabled: False keeps the reader inactive whatever the input is.
    """

    def __init__(self, stream: TextIO | None = None, *, fd: int | None = None, enabled: bool = True) -> None:
        self._fd: int | None = fd
        if self._fd is None:
            stream = stream if stream is not None else sys.stdin
            try:
                self._fd = stream.fileno() if stream is not None else None
            except (AttributeError, OSError, ValueError):
                self._fd = None  # e.g. pytest's captured stdin
        self._enabled = enabled
        self._saved: list | None = None

    @property
    def active(self) -> bool:
        return self._saved is not None

    def __enter__(self) -> KeyReader:
        fd = self._fd
        if not self._enabled or fd is None or termios is None or not os.isatty(fd):
            return self
        try:
            self._saved = termios.tcgetattr(fd)
            tty.setcbreak(fd, termios.TCSANOW)
        except termios.error:
            self._saved = None
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Restore the terminal as it was (safe to call twice)."""
        if self._saved is not None and self._fd is not None:
            try:
                termios.tcsetattr(self._fd, termios.TCSADRAIN, self._saved)
            except termios.error:
                pass  # the terminal went away; nothing left to restore
            self._saved = None

    def read(self, timeout: float = 0.0) -> list[str]:
        """Keys typed so far, waiting up to ``timeout`` seconds for the first; [] if inactive."""
        if not self.active or self._fd is None:
            return []
        try:
            ready, _, _ = select.select([self._fd], [], [], max(0.0, timeout))
            if not ready:
                return []
            data = os.read(self._fd, 1024)
            # An escape sequence may arrive split; give its tail a moment.
            while data.endswith(b"\x1b") or (
                b"\x1b[" in data[-4:] and not data[-1:].isalpha() and not data.endswith(b"~")
            ):
                more, _, _ = select.select([self._fd], [], [], 0.02)
                if not more:
                    break
                data += os.read(self._fd, 1024)
        except OSError:
            return []
        return parse_keys(data.decode("utf-8", errors="ignore"))
