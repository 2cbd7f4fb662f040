"""Shared fixtures: the real data folder and free loopback ports."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

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
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def child_env() -> dict[str, str]:
    """Environment for child processes that import drsn_stream from this checkout."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH", "")]))
    return env
