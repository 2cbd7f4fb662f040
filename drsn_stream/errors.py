"""One root exception for the whole package.

Each stage wraps foreign errors where they enter and says what the user should do next, e.g.
``SourceError("PortAudio not found: install libportaudio2 (apt-get install libportaudio2)")``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable


class DrsnStreamError(Exception):
    """Root of every error drsn-stream raises on purpose. The message says what to do."""


class ConfigError(DrsnStreamError):
    """A configuration file, flag or source spec is wrong."""


class ArtifactError(DrsnStreamError):
    """A model artifact is missing, truncated, corrupt or not a drsn-stream artifact."""


class SourceError(DrsnStreamError):
    """A source cannot be opened or read (device missing, file unreadable, bad address)."""


class WireFormatError(DrsnStreamError):
    """A ZeroMQ message does not follow the wire format (counted and skipped, never fatal)."""


class DataError(DrsnStreamError):
    """A training or evaluation data set is missing or malformed."""


class WriteError(DrsnStreamError, OSError):
    """A file could not be written (disk full, no permission, a folder in the way). Also an
    OSError with the cause's ``errno`` and ``strerror``, for callers that catch those; its
    message names the file and says what to do."""

    def __init__(self, message: str, cause: OSError | None = None) -> None:
        super().__init__(message)
        if cause is not None:
            self.errno, self.strerror = cause.errno, cause.strerror

    def __str__(self) -> str:  # OSError's own would print "[Errno 28] ..." without the file
        return str(self.args[0])


class EngineError(DrsnStreamError):
    """The inference engine failed (its process died, or kept dying)."""


def did_you_mean(unknown: Iterable[str], known: Iterable[str]) -> str:
    """`` (did you mean NAME?)`` for the known names nearest to mistyped ones (``set_window`` ->
    ``set_windows``), "" where none is near: said before the list of every valid name, which can
    run to several lines."""
    import difflib

    known = list(known)
    near = dict.fromkeys(m for u in unknown for m in difflib.get_close_matches(u, known, n=1, cutoff=0.75))
    return f" (did you mean {', '.join(near)}?)" if near else ""


def run_tool(main: Callable[[], int | None], name: str) -> int:
    """A script's ``main`` (``tools/*.py``) with the commands' manners: a ``DrsnStreamError``
    (whose message says what to do) is one line ``NAME: error: ...`` on stderr and exit status 2,
    not a traceback; Ctrl-C is one line and 130."""
    import sys

    try:
        return int(main() or 0)
    except DrsnStreamError as exc:
        print(f"{name}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{name}: interrupted", file=sys.stderr)
        return 130
