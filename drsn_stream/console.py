"""The commands' rich console, with a broken pipe left to ``drsn_stream.cli.main``.

Rich ends the process with exit code 1 when the reader of stdout goes away
(``drsn-stream models | head -1``); here the BrokenPipeError propagates instead, and ``main``
treats it as a reader that has what it wanted (exit 0, nothing printed).
"""

from __future__ import annotations

from typing import Any

from rich.console import Console


class PipeConsole(Console):
    def on_broken_pipe(self) -> None:
        raise BrokenPipeError("stdout's reader went away")


def console(**kwargs: Any) -> Console:
    return PipeConsole(**kwargs)
