"""A newcomer's first hour (issue 14): every mistake gets one line and a clear exit code, Ctrl-C
and SIGTERM work at any moment, stdout stays machine-readable where promised, and what ships in
the package (configs, licences) is found. Real subprocesses of the command, real sockets."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from helpers import NoteSink
from scipy.io import wavfile

from drsn_stream.config import loads_toml

ROOT = Path(__file__).resolve().parents[1]
ENV = dict(os.environ, PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1")
ENV.pop("DRSN_STREAM_DURATION", None)
CMD = [sys.executable, "-m", "drsn_stream"]


def _cli(*args: str, timeout: float = 180, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([*CMD, *args], cwd=cwd, env=ENV, capture_output=True, text=True, timeout=timeout)


def _one_line_error(res: subprocess.CompletedProcess, *words: str) -> None:
    assert res.returncode == 2, (res.returncode, res.stderr[-2000:])
    assert "Traceback" not in res.stderr and "drsn-stream: ready" not in res.stderr, res.stderr[-2000:]
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    for w in words:
        assert w in lines[0], lines[0]


# ------------------------------------------------------------------ errors before "ready"
def test_a_missing_file_is_one_line_before_ready(tmp_path: Path) -> None:
    res = _cli("--source", f"file:{tmp_path / 'nope.wav'}", "--headless")
    _one_line_error(res, "nope.wav", "not found")
    assert res.stdout == ""


def test_an_absent_sound_card_is_one_line_before_ready() -> None:
    res = _cli("--source", "mic:NoSuchDevice42", "--headless")
    _one_line_error(res)
    # no sound card at all (CI), or one without that name
    assert "no input sound device" in res.stderr or "NoSuchDevice42" in res.stderr, res.stderr


def test_a_bad_spec_and_a_bad_metrics_port_are_one_line() -> None:
    _one_line_error(_cli("--source", "sim?machinez=3", "--headless"), "machinez", "valid")
    _one_line_error(_cli("--source", "sim", "--metrics-port", "99999", "--headless"), "99999")


def test_a_mistyped_flag_is_refused_with_the_commands_usage_and_the_nearest_flag(capsys) -> None:
    # in-process: argparse alone; the usage was the top level's (only COMMAND), no help at all
    from drsn_stream.cli import main

    for argv, command, near in [(["--source", "sim", "--duraton=3"], "run", "--duration"),
                                (["--sources", "sim"], "run", "--source"),
                                (["publish", "--source", "sim", "--jsonlines", "-"], "publish", None),
                                (["models", "--jsn"], "models", "--json"),
                                (["baseline", "learn", "--source", "sim", "--out", "p.json", "--durration", "3"],
                                 "baseline learn", "--duration")]:
        with pytest.raises(SystemExit) as info:
            main(argv)
        err = capsys.readouterr().err
        assert info.value.code == 2 and f"usage: drsn-stream {command} " in err, err
        last = err.strip().splitlines()[-1]
        assert last.startswith(f"drsn-stream {command}: error: unrecognized arguments: "), last
        assert (f"(did you mean {near}?)" in last) if near else "did you mean" not in last, last


@pytest.mark.slow
def test_a_port_taken_by_another_program_is_one_line_before_ready(free_tcp_port: int) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", free_tcp_port))
        s.listen()
        _one_line_error(_cli("--source", f"zmq+bind://127.0.0.1:{free_tcp_port}", "--headless"),
                        "Address already in use")


def test_a_mistyped_config_section_is_refused_naming_the_valid_ones(tmp_path: Path) -> None:
    cfg = tmp_path / "run.toml"
    cfg.write_text('[decisions]\nwindow_count = 3\n[run]\nsources = ["sim"]\n')
    _one_line_error(_cli("--config", str(cfg), "--headless"), "[decisions]", "[decision]", "[health]")


@pytest.mark.slow
def test_shipped_configs_are_found_from_any_directory(tmp_path: Path) -> None:
    from drsn_stream.config import SHIPPED, find_config

    assert find_config("demo") == SHIPPED / "demo.toml" and find_config("configs/demo.toml").is_file()
    res = _cli("--config", "demo", "--once", "--duration", "1", cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "sim/m7" in res.stdout  # configs/demo.toml: 8 machines
    # the wheel carries them: package data of drsn_stream, next to the code that looks for them
    pyproject = loads_toml((ROOT / "pyproject.toml").read_text())
    assert "configs/*.toml" in pyproject["tool"]["setuptools"]["package-data"]["drsn_stream"]
    assert sorted(p.name for p in SHIPPED.glob("*.toml")) == sorted(p.name for p in (ROOT / "configs").glob("*.toml"))


def test_the_package_states_the_licences_of_the_data_it_ships() -> None:
    pyproject = loads_toml((ROOT / "pyproject.toml").read_text())["project"]
    assert "LICENSE" in pyproject["license-files"]
    assert {"MIT", "CC-BY-SA-4.0", "CC-BY-4.0"} <= set(pyproject["license"].replace("AND", " ").split())
    text = (ROOT / "LICENSE").read_text()
    for needle in ("MIT License", "CC BY-SA 4.0", "CC BY 4.0", "speech_excerpts.npz", "cwru_excerpts.npz",
                   "digits-fsdd.pt", "bearing-cwru.pt"):
        assert needle in text, needle
    shipped = {p.name for p in (ROOT / "drsn_stream" / "data").glob("*.npz")}
    assert shipped <= {"speech_excerpts.npz", "cwru_excerpts.npz"}, f"a new excerpt needs its licence: {shipped}"


# ------------------------------------------------------------------ stdout for machines
def test_models_into_a_closed_pipe_exits_0_quietly() -> None:
    # `drsn-stream models | head -1`: the reader has gone before the command writes
    r, w = os.pipe()
    os.close(r)
    proc = subprocess.run([*CMD, "models"], cwd=ROOT, env=ENV, stdout=w, stderr=subprocess.PIPE, text=True,
                          timeout=120)
    os.close(w)
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr


@pytest.mark.parametrize("columns", [60, 80, 100])
def test_models_keeps_each_accuracy_beside_its_name_at_any_width(columns: int, capsys, monkeypatch) -> None:
    # at 80 columns the terminal's wrap left "pink@0dB" at a line's end and "99.8 %" on the next
    from drsn_stream.cli import main
    from drsn_stream.models import read_meta

    monkeypatch.setenv("COLUMNS", str(columns))
    assert main(["models"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert max(map(len, (ln.rstrip() for ln in lines))) <= columns
    acc = read_meta("bearing-cwru").accuracy
    for name in ("clean", "gaussian@0dB", "laplacian@0dB", "pink@0dB"):
        said = f"{name} {100 * acc[name]:.1f} %"
        assert any(said in ln for ln in lines), (said, lines)


@pytest.mark.slow
def test_jsonl_to_stdout_keeps_stdout_pure_json_lines() -> None:
    res = _cli("--source", "sim?machines=2", "--headless", "--jsonl", "-", "--duration", "3")
    assert res.returncode == 0, res.stderr[-2000:]
    objs = [json.loads(line) for line in res.stdout.splitlines()]  # every line, not just "{..."
    assert any(o["type"] == "prediction" for o in objs) and objs[-1]["type"] == "stats"
    assert "ready" in res.stderr and "sim/m0" in res.stderr  # the readable lines went to stderr


@pytest.mark.slow
def test_a_stream_name_the_terminal_cannot_show_is_escaped_not_fatal(tmp_path: Path) -> None:
    # a stream named in a script the terminal's encoding lacks (an ASCII or Latin-1 locale):
    # before, not one result line reached stdout and the summary was a traceback (exit 1)
    wav = tmp_path / "pump.wav"
    wavfile.write(wav, 12000, (np.random.default_rng(0).standard_normal(3 * 12000) * 0.1).astype(np.float32))
    res = subprocess.run([*CMD, "--source", f"file:{wav}?stream=Pumpe-\u00d6lstand-\u6cf5", "--fast", "--headless"],
                         cwd=ROOT, env={**ENV, "PYTHONIOENCODING": "ascii"}, capture_output=True, text=True,
                         encoding="ascii", errors="strict", timeout=300)
    assert res.returncode == 0 and "Traceback" not in res.stderr, res.stderr[-2000:]
    lines = [line for line in res.stdout.splitlines() if "Pumpe-\\xd6lstand-\\u6cf5" in line]
    assert len(lines) >= 10, res.stdout[-2000:]
    assert "Pumpe-\\xd6lstand-\\u6cf5" in res.stderr  # the summary


@pytest.mark.slow
def test_a_zmq_source_without_data_says_what_it_waits_for(free_tcp_port: int) -> None:
    res = _cli("--source", f"zmq://127.0.0.1:{free_tcp_port}", "--headless", "--duration", "3", "--engine-process", "off")
    assert res.returncode == 0, res.stderr[-2000:]
    assert f"waiting for publishers on tcp://127.0.0.1:{free_tcp_port}" in res.stdout, res.stdout


def _waiting_status(source: str) -> str:
    """The dashboard's status line of a monitor of ``source`` that got no data for 1.6 s."""
    from drsn_stream.app.pipeline import Pipeline, RunConfig

    pipe = Pipeline(RunConfig(sources=(source,), engine_process=False))
    pipe.start()
    try:
        pipe.wait(duration=1.6)
        return pipe.snapshot().header.status
    finally:
        pipe.stop()


def test_the_waiting_line_tells_a_wrong_port_from_a_silent_publisher(free_tcp_port: int) -> None:
    # before, both said only "waiting for publishers on ... (no data yet)"
    import zmq

    address = f"tcp://127.0.0.1:{free_tcp_port}"
    status = _waiting_status(f"zmq://127.0.0.1:{free_tcp_port}")  # nothing listens there
    assert f"nothing listens at {address}: is the publisher running, and on that port?" in status, status
    pub = zmq.Context.instance().socket(zmq.PUB)  # a publisher that sends nothing (on that topic)
    pub.setsockopt(zmq.LINGER, 0)
    pub.bind(address)
    try:
        status = _waiting_status(f"zmq://127.0.0.1:{free_tcp_port}?topic=press")
    finally:
        pub.close(0)
    assert f"connected to {address}, which sent nothing on streams whose id starts with 'press'" in status, status


def test_a_sender_whose_clock_is_decades_off_is_said_not_taken_for_silence(free_tcp_port: int) -> None:
    # a gateway that booted without a real-time clock or NTP stamps its frames in the 1970s: every
    # message is refused (bad_time); before, the monitor said "waiting for senders (no data yet)"
    import zmq

    from drsn_stream.app.pipeline import Pipeline, RunConfig
    from drsn_stream.sources.wire import encode

    pipe = Pipeline(RunConfig(sources=(f"zmq+pull+bind://127.0.0.1:{free_tcp_port}",), engine_process=False))
    notes = NoteSink()
    pipe.outputs.add(notes)
    pipe.start()
    push = zmq.Context.instance().socket(zmq.PUSH)
    push.setsockopt(zmq.LINGER, 0)
    push.connect(f"tcp://127.0.0.1:{free_tcp_port}")
    try:
        x = np.zeros(512, dtype=np.float32)
        for i in range(20):
            push.send_multipart(encode("gw/pump", i, 1e8 + i * 512 / 12000, 12000.0, x))
            time.sleep(0.02)
        pipe.wait(duration=1.6)
        status = pipe.snapshot().header.status
    finally:
        push.close(0)
        pipe.stop()
    assert "20 messages received, none accepted (bad_time 20)" in status, status
    assert "years behind this receiver's clock" in status and "set the publisher's clock (NTP)" in status, status
    said = [n for n in notes.lines if "refused: bad_time" in n]
    assert len(said) == 1, notes.lines  # the refusal is said once, however many messages


def test_a_publisher_of_the_wrong_socket_kind_is_said_and_its_fix_is_picked_up(free_tcp_port: int) -> None:
    # `drsn-stream publish --pull` (a PUSH socket) read with zmq:// (SUB): the peers' ZeroMQ
    # handshake fails, and libzmq never connects again after that: before, the monitor said
    # "waiting for publishers (no data yet)" for ever, even after the publisher was fixed
    import zmq

    from drsn_stream.app.pipeline import Pipeline, RunConfig
    from drsn_stream.sources.wire import encode
    from drsn_stream.sources.zmq_source import bind_socket

    address = f"tcp://127.0.0.1:{free_tcp_port}"
    ctx = zmq.Context.instance()
    wrong = ctx.socket(zmq.PUSH)
    wrong.setsockopt(zmq.LINGER, 0)
    wrong.bind(address)
    pipe = Pipeline(RunConfig(sources=(f"zmq://127.0.0.1:{free_tcp_port}",), engine_process=False))
    notes = NoteSink()
    pipe.outputs.add(notes)
    pipe.start()
    pub = None
    try:
        pipe.wait(duration=1.6)
        status = pipe.snapshot().header.status
        wrong.close(0)
        pub = ctx.socket(zmq.PUB)
        pub.setsockopt(zmq.LINGER, 0)
        bind_socket(pub, address)  # libzmq frees the closed socket's port a moment later
        x = np.zeros(512, dtype=np.float32)
        deadline = time.monotonic() + 30
        seq = 0
        while pipe.sources[0].stats.frames == 0 and time.monotonic() < deadline:
            pub.send_multipart(encode("gw/pump", seq, time.time(), 12000.0, x))
            seq += 1
            pipe.wait(duration=0.05)
        frames = pipe.sources[0].stats.frames
    finally:
        if pub is not None:
            pub.close(0)
        pipe.stop()
    assert "ZeroMQ handshake: it is not a PUB socket" in status and "zmq+pull://" in status, status
    assert sum(n.startswith(f"{address}: the peer closed the connection") for n in notes.lines) == 1, notes.lines
    assert frames > 0, "the monitor never read the publisher once it was a PUB"


def test_the_dashboard_shows_what_a_zmq_source_waits_for(free_tcp_port: int) -> None:
    status = _waiting_status(f"zmq://127.0.0.1:{free_tcp_port}")
    assert f"waiting for publishers on tcp://127.0.0.1:{free_tcp_port}" in status


def test_a_publisher_name_that_does_not_resolve_is_said(free_tcp_port: int) -> None:
    # ZeroMQ retries a host name that does not resolve for ever, without a word: a mistyped
    # gateway name looked like a gateway that sends nothing
    status = _waiting_status(f"zmq://gateway.invalid:{free_tcp_port},localhost:{free_tcp_port}")
    assert "(no data yet; gateway.invalid does not resolve to an address: check the name)" in status, status


@pytest.mark.slow
def test_publish_says_what_it_sends_and_its_rate_unless_quiet(free_tcp_port: int) -> None:
    res = _cli("publish", "--source", "sim?machines=2", "--to", f"tcp://127.0.0.1:{free_tcp_port}",
               "--duration", "2.6")
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert lines[0].startswith("publishing sim?machines=2 as PUB at tcp://127.0.0.1:")
    rates = [ln for ln in lines if "msg/s" in ln]
    assert len(rates) >= 2 and all("2 streams" in ln for ln in rates), lines
    # nobody subscribed: a rate alone looked like data flowing (a PUB drops what no one takes)
    assert all(ln.endswith("no receiver connected") for ln in rates), lines
    assert "no receiver was connected: every message went nowhere" in res.stdout, lines
    quiet = _cli("publish", "--source", "sim?machines=2", "--to", f"tcp://127.0.0.1:{free_tcp_port}",
                 "--duration", "1.5", "--quiet")
    assert quiet.returncode == 0 and quiet.stdout == "", quiet.stdout


def test_publish_refuses_a_missing_file_and_an_address_it_cannot_bind_before_it_starts(tmp_path: Path,
                                                                                       free_tcp_port: int) -> None:
    # each was "publishing ... Ctrl-C stops" first, then "error: ..." (a missing file: after
    # publishing 0 messages, exit 1), unlike every other command's "drsn-stream CMD: error: ..."
    for args, words in [(["--source", f"file:{tmp_path / 'nope.wav'}", "--to", f"tcp://127.0.0.1:{free_tcp_port}"],
                         ["drsn-stream publish: error: ", "nope.wav", "not found"]),
                        (["--source", "sim", "--to", "tcp://192.0.2.1:5555"],  # TEST-NET: never this machine's
                         ["drsn-stream publish: error: cannot bind tcp://192.0.2.1:5555", "bind to 127.0.0.1"])]:
        res = _cli("publish", *args, "--duration", "1")
        _one_line_error(res, *words)
        assert res.stdout == "", res.stdout


def test_publish_counts_the_receivers_connected(free_tcp_port: int) -> None:
    import zmq

    from drsn_stream.sources.publish import publish

    seen: list[dict] = []
    sub = zmq.Context.instance().socket(zmq.SUB)
    sub.setsockopt(zmq.LINGER, 0)
    sub.setsockopt(zmq.SUBSCRIBE, b"")

    def progress(p: dict) -> None:  # a subscriber that comes after the first report
        seen.append(p)
        if len(seen) == 1:
            sub.connect(f"tcp://127.0.0.1:{free_tcp_port}")

    try:
        summary = publish(["sim?machines=1"], f"tcp://127.0.0.1:{free_tcp_port}", duration=4.5, progress=progress)
    finally:
        sub.close(0)
    receivers = [p["receivers"] for p in seen]
    assert receivers[0] == 0 and receivers[-1] == 1, receivers
    assert summary["receivers"] == 1


# ------------------------------------------------------------------ Ctrl-C and SIGTERM
def _wait_until_mapped(proc: subprocess.Popen, library: str, timeout: float = 60.0) -> None:
    """Waits until the process has ``library`` in its memory map (Linux /proc)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if library in Path(f"/proc/{proc.pid}/maps").read_text():
                return
        except OSError:
            pass
        time.sleep(0.01)
    raise AssertionError(f"the command never loaded {library} (exit {proc.poll()})")


def _start(*args: str, nohup: bool = False) -> subprocess.Popen:
    # its own process group, as in a terminal, where Ctrl-C reaches every process of the group
    return subprocess.Popen([*CMD, *args], cwd=ROOT, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True,
                            preexec_fn=(lambda: signal.signal(signal.SIGHUP, signal.SIG_IGN)) if nohup else None)


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP], ids=["SIGINT", "SIGTERM", "SIGHUP"])
def test_a_signal_during_start_up_ends_it_without_a_traceback(sig: signal.Signals) -> None:
    for delay in (0.0, 1.0, 2.5):  # importing, the engine process loading torch and the model, warming up
        proc = _start("--source", "sim", "--headless")
        try:
            # counted from when numpy starts loading: the command's own code is running by then (a
            # signal while the interpreter itself starts, before any of our code, is not ours to
            # catch, and on a loaded machine that can take longer than any fixed delay)
            _wait_until_mapped(proc, "_multiarray_umath")
            time.sleep(delay)
            os.killpg(proc.pid, sig)
            out, err = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:  # a failed wait leaves no monitor running on after the test
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        if "ready" in err:  # it was already running: a normal stop
            assert proc.returncode == 0, err[-2000:]
        else:
            assert proc.returncode == 128 + sig, (delay, proc.returncode, err[-2000:])
        assert "Traceback" not in err and "Error" not in err, (delay, err[-3000:])


def test_a_signal_while_a_kernel_is_compiled_stops_the_command_after_it(monkeypatch) -> None:
    # numba compiles (or loads) the monitor's kernels as it starts, through llvmlite, whose
    # objects print a traceback from their finalizer when an exception unwinds them half made:
    # the start-up handler's exception must come once the kernel is built, not inside it
    from drsn_stream import jit
    from drsn_stream.runtime import Terminated, forget_start_up_signal, start_up_signal_handler

    built = []

    def build() -> str:
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.05)  # bytecodes run meanwhile: an unheld handler would raise here
        built.append("whole")
        return "kernel"

    monkeypatch.setattr(jit, "numba", jit.numba or object())  # a build needs numba "there"
    old = signal.signal(signal.SIGTERM, start_up_signal_handler)
    try:
        kernels = jit.Kernels(build)
        with pytest.raises(Terminated):
            kernels.get()
        assert built == ["whole"] and kernels.get() == "kernel" and built == ["whole"]
        assert signal.getsignal(signal.SIGTERM) is start_up_signal_handler
    finally:
        signal.signal(signal.SIGTERM, old)
        forget_start_up_signal()


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP], ids=["SIGINT", "SIGTERM", "SIGHUP"])
def test_a_signal_stops_a_running_monitor_with_its_summary(sig: signal.Signals, tmp_path: Path) -> None:
    log = tmp_path / "r.jsonl"
    proc = _start("--source", "sim?machines=2", "--headless", "--jsonl", str(log))
    try:
        assert "ready" in proc.stderr.readline()
        # the model runs in the engine process: the monitor's own process never loads torch
        # (seconds of CPU and hundreds of MB it would hold for nothing)
        assert "libtorch" not in Path(f"/proc/{proc.pid}/maps").read_text()
        time.sleep(1.0)
        os.killpg(proc.pid, sig)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 0, err[-2000:]
    assert "drsn-stream:" in out and "windows in" in out and "sim/m0:" in out  # the summary
    assert "Traceback" not in err
    objs = [json.loads(line) for line in log.read_text().splitlines()]
    final = objs[-1]
    assert final["type"] == "stats" and final["final"]
    # every window the engine scored reached the log before the exit
    assert sum(o["type"] == "prediction" for o in objs) == final["engine"]["windows"] > 0


_TRACKER_HANG_UP = r"""
import os, signal, sys, time
from multiprocessing import resource_tracker
from drsn_stream import runtime
got = []
signal.signal(signal.SIGHUP, lambda signum, frame: got.append(signum))
spawn = resource_tracker.ensure_running
def hung_up_meanwhile():
    os.kill(os.getpid(), signal.SIGHUP)  # the terminal closes while the tracker starts
    time.sleep(0.2)
    spawn()
resource_tracker.ensure_running = hung_up_meanwhile
runtime.start_resource_tracker()
tracker = resource_tracker._resource_tracker._pid
os.kill(tracker, signal.SIGHUP)  # and the tracker hears the hang-up too
time.sleep(0.5)
alive = os.waitpid(tracker, os.WNOHANG) == (0, 0)
print(got == [signal.SIGHUP], alive)
"""


@pytest.mark.skipif(not hasattr(signal, "pthread_sigmask"), reason="no signal masks here")
def test_a_hang_up_while_the_resource_tracker_starts_is_not_lost_and_the_tracker_lives_on() -> None:
    """Before: SIGHUP was set to ignore while the tracker started, so that it inherited deafness;
    a hang-up in that moment (a CI run's killpg, a terminal closed as the monitor started) was
    lost, and the monitor ran on until killed. Now the parent gets it after the spawn, and the
    tracker still does not die of one."""
    res = subprocess.run([sys.executable, "-c", _TRACKER_HANG_UP], cwd=ROOT, env=ENV, capture_output=True, text=True,
                         timeout=60)
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.split() == ["True", "True"], (res.stdout, res.stderr[-2000:])


@pytest.mark.slow
def test_a_hang_up_leaves_no_shared_memory_behind_and_under_nohup_the_monitor_runs_on(tmp_path: Path) -> None:
    # Its terminal closed (an SSH session dropped): SIGHUP killed the monitor on the spot, and the
    # resource tracker that would have freed its engine's shared memory with it: every hang-up
    # left megabytes in /dev/shm for good (a container's holds 64 MiB).
    proc = _start("--source", "sim?machines=2", "--headless")
    try:
        assert "ready" in proc.stderr.readline()
        segments = {line.split()[-1] for line in Path(f"/proc/{proc.pid}/maps").read_text().splitlines()
                    if "/dev/shm/psm_" in line}
        assert segments  # the engine process's
        os.killpg(proc.pid, signal.SIGHUP)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 0 and "windows in" in out and "Traceback" not in err, err[-2000:]
    assert [s for s in segments if Path(s).exists()] == []

    log = tmp_path / "r.jsonl"
    proc = _start("--source", "sim?machines=2", "--headless", "--jsonl", str(log), nohup=True)  # `nohup drsn-stream`
    try:
        assert "ready" in proc.stderr.readline()
        hung_up = time.time()
        os.killpg(proc.pid, signal.SIGHUP)

        def labeled_since() -> bool:  # windows captured a second after the hang-up: it ran on
            return any(o.get("type") == "prediction" and o["time"] > hung_up + 1.0
                       for o in map(json.loads, log.read_text().split("\n")[:-1]))  # whole lines only

        deadline = time.monotonic() + 60
        while proc.poll() is None and not labeled_since() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert proc.poll() is None and labeled_since()  # ignored, as asked
        os.killpg(proc.pid, signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 0 and "windows in" in out, err[-2000:]


def test_a_start_up_signal_a_library_swallowed_still_ends_the_start_up(cli_in_process, monkeypatch) -> None:
    # Ctrl-C while the monitor starts, caught on its way by code that is not ours (a finalizer, a
    # broad except in a library): the start-up must still end as interrupted, not run on unasked.
    from drsn_stream.app.pipeline import Pipeline

    start = Pipeline.start

    def start_then_swallow_a_ctrl_c(self: Pipeline) -> Pipeline:
        out = start(self)
        try:
            signal.raise_signal(signal.SIGINT)
        except KeyboardInterrupt:
            pass
        return out

    monkeypatch.setattr(Pipeline, "start", start_then_swallow_a_ctrl_c)
    res = cli_in_process("--source", "sim", "--headless", "--duration", "60")
    assert res.returncode == 130, res.stderr
    assert "interrupted" in res.stderr and "ready" not in res.stderr


def test_a_start_up_signal_a_library_turned_into_its_own_error_still_ends_the_start_up(cli_in_process, monkeypatch) -> None:
    # SIGHUP while a module defined a dataclass: Python 3.11 wraps an exception raised in a
    # descriptor's __set_name__ in a RuntimeError, and the start-up ended in that traceback (CI)
    from drsn_stream.app.pipeline import Pipeline

    class Field:
        def __set_name__(self, owner: type, name: str) -> None:
            signal.raise_signal(signal.SIGHUP)

    def start_while_a_class_is_made(self: Pipeline) -> Pipeline:
        class Late:  # noqa: F841 - made for its field's __set_name__
            field = Field()
        return self

    monkeypatch.setattr(Pipeline, "start", start_while_a_class_is_made)
    res = cli_in_process("--source", "sim", "--headless", "--duration", "60")
    assert res.returncode == 128 + signal.SIGHUP, res.stderr
    assert res.stderr.strip().splitlines()[-1] == "drsn-stream run: stopped (SIGHUP)", res.stderr


def test_a_start_up_signal_that_python_could_not_raise_where_it_came_ends_the_start_up_in_one_line() -> None:
    # Ctrl-C while importlib ran a module lock's weakref callback: an exception raised there cannot
    # unwind anything, so Python printed it ("Exception ignored in ... Traceback ... KeyboardInterrupt")
    # before the start-up ended in its one line (CI). A child: pytest takes such exceptions itself.
    script = (
        "import signal, sys, weakref\n"
        "from drsn_stream.app.pipeline import Pipeline\n"
        "class Lock:\n"
        "    pass\n"
        "def start_while_a_callback_runs(self):\n"
        "    lock = Lock()\n"
        "    ref = weakref.ref(lock, lambda _: signal.raise_signal(signal.SIGINT))\n"
        "    del lock  # the callback runs here\n"
        "    return self\n"
        "Pipeline.start = start_while_a_callback_runs\n"
        "from drsn_stream.cli import main\n"
        "sys.exit(main(['--source', 'sim', '--headless', '--duration', '60', '--engine-process', 'off']))\n"
    )
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert r.returncode == 128 + signal.SIGINT, r.stderr[-2000:]
    assert r.stderr.strip().splitlines() == ["drsn-stream run: interrupted"], r.stderr[-2000:]

def test_the_monitors_help_and_a_config_error_answer_without_loading_torch():
    # torch takes seconds of CPU to import: help, the list of models and a mistyped option must not wait for it
    script = (
        "import contextlib, io, sys\n"
        "from drsn_stream.cli import main\n"
        "err = io.StringIO()\n"
        "def code(argv):\n"
        "    try:\n"
        "        return main(argv)\n"
        "    except SystemExit as exc:  # argparse: --help, a value of the wrong type\n"
        "        return exc.code\n"
        "with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()) as out:\n"
        "    for argv in (['--help'], ['models'], ['bench', '--help'], ['train', '--help'], ['run', '--help']):\n"
        "        code(argv)\n"
        "    code = code(['--source', 'sim', '--config', 'no-such-config'])\n"
        "print(code, 'torch' in sys.modules, '--stale-ms' in out.getvalue(), err.getvalue().strip()[:200])\n"
    )
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, cwd=ROOT)
    code, torch_loaded, helped, error = r.stdout.split(" ", 3)
    assert (code, torch_loaded, helped) == ("2", "False", "True"), r.stdout + r.stderr
    assert "no-such-config" in error, error
