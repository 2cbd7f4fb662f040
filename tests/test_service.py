"""The monitor under systemd (``Type=notify``, ``WatchdogSec=``): the notify messages it sends on
a real Unix datagram socket, as systemd receives them, and a watchdog that stops when the engine
stops turning."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import NotifyManager as Manager
from helpers import wait_until

from drsn_stream.app.runconfig import RunConfig
from drsn_stream.app.service import Notifier

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_under_systemd_the_monitor_says_ready_status_watchdog_and_stopping_from_its_main_process() -> None:
    manager = Manager()
    env = dict(os.environ, PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1", NOTIFY_SOCKET=manager.name,
               WATCHDOG_USEC="2000000")
    env.pop("DRSN_STREAM_DURATION", None)
    try:
        proc = subprocess.Popen([sys.executable, "-m", "drsn_stream", "--source", "sim?machines=2", "--headless",
                                 "--duration", "8"], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True)
        _, err = proc.communicate(timeout=180)
        assert proc.returncode == 0, err[-2000:]
        time.sleep(0.3)
    finally:
        manager.close()
    kinds = [next(iter(k for k in ("READY", "STOPPING", "WATCHDOG", "STATUS") if k in f)) for _, _, f in manager.messages]
    assert kinds[0] == "READY" and kinds[-1] == "STOPPING", kinds
    assert {pid for _, pid, _ in manager.messages} == {proc.pid}  # none from the engine process it started
    pings = manager.with_key("WATCHDOG")
    assert len(pings) >= 3, kinds  # twice per watchdog interval (2 s) over the 8-s run
    status = pings[-1][2]["STATUS"]
    assert status.startswith("2 streams: ") and " ALERT, " in status and "windows/s" in status, status


def test_without_notify_socket_nothing_is_sent_and_children_do_not_inherit_it() -> None:
    assert Notifier.from_env({}) is None
    env = {"NOTIFY_SOCKET": "/run/systemd/notify", "WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid())}
    n = Notifier.from_env(env)
    assert n is not None and n.watchdog_s == 30.0 and env == {}  # taken out for the processes it starts
    n.close()
    other = Notifier.from_env({"NOTIFY_SOCKET": "/run/systemd/notify", "WATCHDOG_USEC": "30000000",
                               "WATCHDOG_PID": str(os.getpid() + 1)})
    assert other is not None and other.watchdog_s is None  # the watchdog is another process's
    other.close()


def _probe(url: str) -> tuple[int, str]:
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


@pytest.mark.slow
def test_the_watchdog_and_the_probes_fail_while_the_engine_hangs_and_recover_when_it_answers(monkeypatch) -> None:
    """A monitor whose engine process is stopped labels nothing: it must not tell systemd, or a
    container's liveness probe, that it works. Here the reply timeout is longer than the
    watchdog, so systemd (or the orchestrator) would restart it first."""
    from drsn_stream.app import pipeline as pipeline_module
    from drsn_stream.app.pipeline import Pipeline
    from drsn_stream.app.service import status_line
    from drsn_stream.engine import procrunner
    from drsn_stream.sinks.metrics import MetricsServer

    monkeypatch.setattr(procrunner, "REPLY_TIMEOUT_S", 120.0)
    monkeypatch.setattr(pipeline_module, "STALL_SHOWN_S", 1.0)  # the shipped 5 s, shortened
    manager = Manager()
    pipe = Pipeline(RunConfig(sources=("sim:bearing?machines=2",), device="cpu", engine_process=True,
                              stats_every_s=3600))
    service = Notifier(manager.name, watchdog_s=1.0)
    metrics = MetricsServer(pipe.snapshot, port=0, health=lambda: pipe.trouble(1.0)).start()
    base = metrics.url.removesuffix("/metrics")
    try:
        assert _probe(base + "/healthz") == (200, "starting\n")  # alive as far as a liveness probe goes
        assert _probe(base + "/readyz") == (503, "starting\n")  # not ready for traffic yet
        pipe.start()
        service.watch(pipe.alive, lambda: status_line(pipe.snapshot()))
        assert wait_until(lambda: len(manager.with_key("WATCHDOG")) >= 2, 30), manager.messages
        assert _probe(base + "/healthz") == (200, "ok\n") and _probe(base + "/readyz") == (200, "ok\n")
        os.kill(pipe.runner.pid, signal.SIGSTOP)
        # pings came every 0.5 s; 2 s without one: they stopped (a late one has arrived by then)
        assert wait_until(lambda: time.monotonic() - manager.with_key("WATCHDOG")[-1][0] > 2.0, 20), \
            "the watchdog went on being pinged while the engine hung"
        hung = len(manager.with_key("WATCHDOG"))
        code, why = _probe(base + "/healthz")
        assert code == 503 and "the engine loop has not turned for" in why, (code, why)
        assert "has not turned for" in pipe.snapshot().header.status  # on the dashboard at once
        quiet = [ln for ln in _probe(base + "/metrics")[1].splitlines() if ln.startswith("drsn_engine_quiet_seconds ")]
        assert len(quiet) == 1 and float(quiet[0].split()[1]) > 2.0, quiet  # for an alert rule
        time.sleep(3.0)
        assert len(manager.with_key("WATCHDOG")) == hung, "pinged while the engine hung"
        status = manager.with_key("STATUS")[-1][2]["STATUS"]
        assert status.startswith("2 streams") and "has not turned for" in status, status  # says why, too
        os.kill(pipe.runner.pid, signal.SIGCONT)
        assert wait_until(lambda: len(manager.with_key("WATCHDOG")) > hung, 10), "no ping once it answered"
        assert _probe(base + "/healthz") == (200, "ok\n")
        assert _probe(base + "/nope")[0] == 404
    finally:
        try:
            os.kill(pipe.runner.pid, signal.SIGCONT)
        except ProcessLookupError:
            pass
        metrics.stop()
        service.stopping()
        service.close()
        pipe.stop()
        manager.close()


def test_the_documented_unit_is_one_systemd_accepts_and_its_command_one_the_monitor_takes(tmp_path: Path) -> None:
    import re
    import shlex
    import shutil

    from drsn_stream.app.cli import config_from_args
    from drsn_stream.cli import build_parser

    text = (ROOT / "docs" / "service.md").read_text(encoding="utf-8")
    unit = re.search(r"```ini\n(.*?)```", text, re.S)
    assert unit is not None, "docs/service.md has no unit file"
    lines = unit.group(1).splitlines()
    exec_start = next(line for line in lines if line.startswith("ExecStart="))
    argv = shlex.split(exec_start.removeprefix("ExecStart="))
    assert argv[0].endswith("/.venv/bin/drsn-stream") and "Type=notify" in lines and "WatchdogSec=60" in lines
    cfg = config_from_args(build_parser().parse_args(["run", *argv[1:]]))  # every flag one the monitor takes
    assert cfg.sinks.every == 60.0 and cfg.sinks.headless and cfg.learn_s == 3600.0
    analyze = shutil.which("systemd-analyze")
    here = Path(sys.executable).parent / "drsn-stream"
    if analyze is None or not here.exists():
        pytest.skip("no systemd-analyze here, or no installed drsn-stream command")
    service = tmp_path / "drsn-stream.service"
    service.write_text(unit.group(1).replace(argv[0], str(here)))
    res = subprocess.run([analyze, "verify", str(service)], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0 and not res.stderr.strip() and not res.stdout.strip(), res.stdout + res.stderr


@pytest.mark.slow
def test_with_no_terminal_and_no_output_chosen_the_lines_are_summed_up_not_a_dashboard(tmp_path: Path) -> None:
    """stdout that is no terminal (the journal of a unit that gave no output flag, `docker logs`,
    a file) and no output flag: lines summed up per stream and events as they happen. The
    dashboard cannot refresh there: it said nothing until the run ended."""
    journal = tmp_path / "journal"
    env = dict(os.environ, PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1")
    env.pop("DRSN_STREAM_DURATION", None)
    with journal.open("w") as out:
        res = subprocess.run([sys.executable, "-m", "drsn_stream", "--source", "sim?machines=2", "--duration", "4"],
                             cwd=ROOT, env=env, stdout=out, stderr=subprocess.PIPE, text=True, timeout=180)
    assert res.returncode == 0, res.stderr[-2000:]
    text = journal.read_text()
    assert "sim/m0" in text and "windows in" in text and "streams (2)" not in text, text[-2000:]
    assert "NOTE   sim/m0  envelope evidence on" in text  # the events, as they happened
