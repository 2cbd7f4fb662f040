"""The live dashboard in a real terminal: tmux runs `drsn-stream --source sim`, we read the screen.

Checks what an operator sees: the simulated machines' rows with changing labels, an alarm within
seconds, and that `q` quits cleanly with a summary.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from drsn_stream.train.cwru import LABELS_10

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed (tools/setup.sh --dev)")


def _tmux(*args: str) -> str:
    return subprocess.run(["tmux", *args], check=True, capture_output=True, text=True).stdout


def _pane(session: str) -> str:
    return _tmux("capture-pane", "-p", "-t", session, "-S", "-60")


@pytest.mark.slow
def test_dashboard_shows_changing_labels_and_alarms_and_q_quits(tmp_path: Path) -> None:
    session = f"drsn-test-{os.getpid()}"
    done = tmp_path / "exit-code"
    cmd = (
        f"cd {ROOT} && {sys.executable} -m drsn_stream --source 'sim:bearing?machines=4&seed=11&speed=2' "
        f"--refresh 4; echo $? > {done}; sleep 60"
    )
    env_cmd = ["env", "TERM=xterm-256color", "COLUMNS=140", "LINES=45"]
    subprocess.run(["tmux", "new-session", "-d", "-s", session, "-x", "140", "-y", "45", *env_cmd, "bash", "-c", cmd],
                   check=True)
    try:
        seen_labels: set[str] = set()
        alarm_seen = False
        deadline = time.time() + 90
        screen = ""
        while time.time() < deadline:
            time.sleep(1.0)
            screen = _pane(session)
            for line in screen.splitlines():
                if "sim/m" in line:
                    for word in line.split():
                        if word in LABELS_10:
                            seen_labels.add(word)
            alarm_seen = alarm_seen or "ALERT" in screen or "DANGER" in screen
            if alarm_seen and len(seen_labels) >= 2:
                break
        assert "bearing-cwru" in screen, screen
        assert all(f"sim/m{i}" in screen for i in range(4)), screen
        assert len(seen_labels) >= 2, f"labels never changed: {seen_labels}\n{screen}"
        assert alarm_seen, f"no alarm within 90 s\n{screen}"
        _tmux("send-keys", "-t", session, "q")
        deadline = time.time() + 20
        while time.time() < deadline and not done.exists():
            time.sleep(0.25)
        assert done.exists(), "q did not quit the dashboard\n" + _pane(session)
        assert done.read_text().strip() == "0"
        assert "drsn-stream:" in _pane(session)  # the end-of-run summary
    finally:
        subprocess.run(["tmux", "kill-session", "-t", session], capture_output=True)
