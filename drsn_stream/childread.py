"""Reading an untrusted file with a compiled library in a child process of its own.

A decoder that meets damaged bytes can write to the process's stderr (the dashboard's terminal),
decode without end, hang or crash; in a child, its stderr goes to /dev/null, a time limit ends it,
and a crash is one exit status. The child runs a script given as text (``python -I -c``: away
from the caller's current folder and PYTHONPATH), which says why it failed in one line on a copy
of stderr, behind ``SAID``, and writes what it read to stdout.
"""

from __future__ import annotations

import subprocess
import sys
import threading
from typing import NamedTuple

SAID = "drsn-child: "

# What every child script starts with: its stderr to /dev/null, ``fail(msg)`` to say why in one
# line and exit 2, no core file.
PRELUDE = r"""
import os, sys
said = sys.argv[1]
err = os.fdopen(os.dup(2), "w")
null = os.open(os.devnull, os.O_WRONLY)
os.dup2(null, 2)
def fail(msg):
    err.write(said + " ".join(str(msg).split())[:300] + "\n")
    err.flush()
    os._exit(2)
try:
    import resource
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
except Exception:
    pass
"""


class ChildResult(NamedTuple):
    out: bytearray  # what it wrote to stdout
    said: str | None  # its one line of why it failed, without SAID; None where it said none
    rc: int  # its exit status (negative: the signal that ended it)
    late: bool  # it ran past the time limit and was killed


def start_child(script: str, args: list[str], *, stdin: bool = False) -> subprocess.Popen:
    """``PRELUDE + script`` started with ``sys.argv[2:]`` = ``args`` (``sys.argv[1]`` is ``SAID``),
    its stdout and stderr piped; its stdin piped too where ``stdin`` (a child that serves
    requests), else empty."""
    return subprocess.Popen([sys.executable, "-I", "-c", PRELUDE + script, SAID, *args],
                            stdin=subprocess.PIPE if stdin else subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)


def said_by(proc: subprocess.Popen) -> str | None:
    """The one line of why a child that ended failed, without ``SAID``; None where it said none."""
    text = proc.stderr.read(4096).decode("utf-8", "replace") if proc.stderr is not None else ""
    return next((s[len(SAID):] for s in text.splitlines() if s.startswith(SAID)), None)


def run_child(script: str, args: list[str], timeout: float) -> ChildResult:
    """Runs ``PRELUDE + script`` with ``sys.argv[2:]`` = ``args`` (``sys.argv[1]`` is ``SAID``)."""
    proc = start_child(script, args)
    late = threading.Event()

    def stop() -> None:
        late.set()
        proc.kill()

    timer = threading.Timer(timeout, stop)
    timer.daemon = True
    timer.start()
    try:
        assert proc.stdout is not None and proc.stderr is not None
        out = bytearray()
        while chunk := proc.stdout.read(1 << 20):
            out += chunk
        said = said_by(proc)
        rc = proc.wait()
    finally:
        timer.cancel()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for pipe in (proc.stdout, proc.stderr):
            if pipe is not None:
                pipe.close()
    return ChildResult(out, said, rc, late.is_set())
