"""Shared fixtures: the real data folder, free loopback ports, the command run in this process."""

from __future__ import annotations

import gc
import os
import subprocess
from pathlib import Path

import pytest
from helpers import free_port

REPO = Path(__file__).resolve().parents[1]


def data_root() -> Path:
    """``../shared/data`` next to the repository, or ``$DRSN_DATA``."""
    return Path(os.environ.get("DRSN_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def data_dir() -> Path:
    root = data_root()
    if not (root / "cwru").is_dir():
        pytest.skip(f"real data not found at {root} (set DRSN_DATA to the shared data folder)")
    return root


@pytest.fixture
def free_tcp_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (``helpers.free_port``)."""
    return free_port()


@pytest.fixture
def child_env() -> dict[str, str]:
    """Environment for child processes that import drsn_stream from this checkout."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH", "")]))
    return env


@pytest.fixture
def cli_in_process(capsys: pytest.CaptureFixture[str]):
    """``cli_in_process(*args)``: ``drsn-stream ARGS`` run by ``drsn_stream.cli.main`` in this process,
    returned as a ``CompletedProcess`` (returncode, stdout, stderr).

    For tests of what a command computes or says, not of the process around it: it saves a child
    that imports torch (seconds each on the 2-core CI machine). Exit codes, signals, pipes and
    start-up keep their real subprocess tests (test_first_hour.py, test_pipeline.py), at least one
    per command. The monitor runs its engine in this process too (``--engine-process off`` unless
    given): the engine process is a child that imports torch, and gives the same labels
    (test_pipeline.py, test_engine.py).
    """
    from drsn_stream.cli import SUBCOMMANDS, main

    def run(*args: str) -> subprocess.CompletedProcess:
        argv = list(args)
        monitor = not argv or argv[0] == "run" or argv[0] not in {*SUBCOMMANDS, "-h", "--help", "--version"}
        if monitor and "--engine-process" not in argv:
            argv += ["--engine-process", "off"]
        capsys.readouterr()
        try:
            code = main(argv)
        finally:
            gc.unfreeze()  # ``run`` freezes what it built before its exit; this process goes on
        out, err = capsys.readouterr()
        return subprocess.CompletedProcess(["drsn-stream", *args], code, out, err)

    return run


@pytest.hookimpl(optionalhook=True)  # runs without xdist too (-p no:xdist)
def pytest_xdist_auto_num_workers(config: pytest.Config) -> int | None:
    """``-n auto`` (README) starts one worker more than there are cores: many tests spend part of
    their time waiting on a subprocess, a socket or a real-time audio device, and with one worker
    per core those waits leave the cores idle. ``PYTEST_XDIST_AUTO_NUM_WORKERS`` still decides
    where it is set."""
    if os.environ.get("PYTEST_XDIST_AUTO_NUM_WORKERS"):
        return None  # xdist's own hook reads it
    return len(os.sched_getaffinity(0)) + 1


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook, which turns the group marks into node ids
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Under pytest-xdist (``-n``, README), the tests of the virtual microphone run one after
    another on one worker: each paces a real-time ALSA/JACK device, and two at once on a 2-core
    machine would fall behind the clock they assert. (``--dist loadgroup`` reads the group.)

    The tests marked ``slow`` come first: xdist hands the tests out in this order, one at a time
    to whichever worker is free, and a long test handed out last would run on alone at the end
    while the other workers wait."""
    for item in items:
        if item.get_closest_marker("audio") is not None:
            item.add_marker(pytest.mark.xdist_group("audio"))
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)  # stable: file order otherwise
