"""Fault injection: malformed, hostile and odd input over real sockets into real processes.

Each case is one an outside probe found (issue #14): a message that killed a ZeroMQ source or the
whole monitor, an in-range value that built gigabytes, a pickled file that ran code, a stream
whose trouble went unseen. Each is counted by its reason here, and the monitor goes on.
``tools/fault_probe.py`` runs the long versions (thousands per kind, a soak with RSS sampled).
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import threading
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
import zmq

from drsn_stream.app.pipeline import Pipeline, RunConfig
from drsn_stream.dsp import StreamDSP
from drsn_stream.dsp.resample import MAX_FACTOR, StreamingResampler, UnsupportedRate, rational_ratio
from drsn_stream.engine import procrunner
from drsn_stream.engine.procrunner import EngineRestarted, ProcessRunner
from drsn_stream.errors import ArtifactError, DataError, EngineError, SourceError
from drsn_stream.models.artifact import load_validation, read_meta, resolve_artifact
from drsn_stream.monitor.health import AMP_STEP, DC_JUMP, RATE_CHANGE, HealthMonitor
from drsn_stream.sources import make_source
from drsn_stream.sources.base import Source
from drsn_stream.sources.file import read_recording
from drsn_stream.sources.sim import load_excerpts
from drsn_stream.sources.wire import WireError, decode, encode, encode_eos
from drsn_stream.types import Frame

ROOT = Path(__file__).resolve().parents[1]
ENV = dict(os.environ, PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1")
RATE = 12000
TICK = 1200  # samples per frame: 0.1 s


def _normal(seconds: float) -> np.ndarray:
    """The shipped healthy CWRU excerpt, looped to ``seconds`` (float32, g)."""
    x = load_excerpts()["normal"]
    return np.tile(x, int(seconds * RATE) // x.size + 1)[: int(seconds * RATE)].astype(np.float32)


def _header(**kw) -> dict:
    h = {"v": 1, "stream": "s", "seq": 0, "t": time.time(), "rate": 12000.0, "dtype": "float32", "channels": 1,
         "n": 4}
    h.update(kw)
    return h


def _raw(header: dict | bytes, payload: bytes = b"\0" * 16, topic: bytes = b"s") -> list[bytes]:
    return [topic, header if isinstance(header, bytes) else json.dumps(header).encode(), payload]


def _template(text: str) -> list[bytes]:
    """A message whose header is written out by hand (numbers JSON allows but Python floats do not)."""
    return _raw(text.replace("NOW", repr(time.time())).encode())


# The messages that stopped a source or the monitor before, and the reason each is counted under.
ATTACKS: dict[str, tuple[str, callable]] = {
    "nested 100,000 deep": ("bad_header", lambda: _raw(b"[" * 100_000 + b"]" * 100_000)),
    "nested 2,000 deep, small": ("bad_header", lambda: _raw(b"[" * 2000 + b"]" * 2000)),
    "dtype [1]": ("unknown_dtype", lambda: _raw(_header(dtype=[1]))),
    "dtype {}": ("unknown_dtype", lambda: _raw(_header(dtype={}))),
    "rate 1e400 as an integer": ("absurd_rate", lambda: _template(
        '{"v":1,"stream":"s","seq":0,"t":NOW,"rate":1' + "0" * 400 + ',"dtype":"float32","channels":1,"n":4}')),
    "t 1e400 as an integer": ("bad_time", lambda: _template(
        '{"v":1,"stream":"s","seq":0,"t":1' + "0" * 400 + ',"rate":12000,"dtype":"float32","channels":1,"n":4}')),
    "seq of 4,300 digits": ("bad_header", lambda: _template(
        '{"v":1,"stream":"s","seq":' + "9" * 4300 + ',"t":NOW,"rate":12000,"dtype":"float32","channels":1,"n":4}')),
    "seq of 3,900 digits": ("bad_seq", lambda: _template(
        '{"v":1,"stream":"s","seq":' + "9" * 3900 + ',"t":NOW,"rate":12000,"dtype":"float32","channels":1,"n":4}')),
    "seq 2**63": ("bad_seq", lambda: _raw(_header(seq=2**63))),
    "t 7e16": ("bad_time", lambda: _raw(_header(t=7e16))),
    "t a day in the past, 1000 years": ("bad_time", lambda: _raw(_header(t=time.time() - 3.2e10))),
    "scale 1e400 as an integer": ("bad_field", lambda: _template(
        '{"v":1,"stream":"s","seq":0,"t":NOW,"rate":12000,"dtype":"float32","channels":1,"n":4,"scale":1'
        + "0" * 400 + "}")),
    "version true": ("bad_version", lambda: _raw(_header(v=True))),
    "stream id of 10,000 characters": ("bad_header", lambda: _raw(_header(stream="s" * 10_000))),
    "50 MB payload": ("too_large", lambda: _raw(_header(n=50 * 2**20 // 4), b"\0" * (50 * 2**20))),
    "header not JSON": ("bad_json", lambda: _raw(b"\xff\xfe{")),
}


@pytest.mark.parametrize("kind", sorted(ATTACKS))
def test_decoder_refuses_each_attack_with_its_reason(kind: str) -> None:
    reason, make = ATTACKS[kind]
    with pytest.raises(WireError) as info:
        decode(make())
    assert info.value.reason == reason, str(info.value)


def test_a_zmq_source_counts_every_attack_and_delivers_every_good_frame(free_tcp_port: int) -> None:
    """Before: the first nested header (RecursionError), dtype [1] (TypeError) or integer rate
    1e400 (OverflowError) ended the source, silently."""
    src = make_source(f"zmq+pull+bind://127.0.0.1:{free_tcp_port}?until_eos=1")
    push = zmq.Context.instance().socket(zmq.PUSH)
    x = _normal(0.1 * (len(ATTACKS) + 1))
    t0 = time.time()
    with src:
        push.connect(f"tcp://127.0.0.1:{free_tcp_port}")
        push.send_multipart(encode("s", 0, t0, RATE, x[:TICK]))
        for seq, kind in enumerate(sorted(ATTACKS), start=1):
            push.send_multipart(ATTACKS[kind][1]())
            push.send_multipart(encode("s", seq, t0 + 0.1 * seq, RATE, x[seq * TICK : (seq + 1) * TICK]))
        push.send_multipart([b"s", b'{"v":1,"stream":"s","eos":true}'])
        frames = list(src)
    push.close(0)
    assert [f.seq for f in frames] == list(range(len(ATTACKS) + 1))
    stats = src.stats.snapshot()
    want: dict[str, int] = {}
    for reason, _ in ATTACKS.values():
        want[reason] = want.get(reason, 0) + 1
    assert stats["malformed"] == want
    assert stats["crashes"] == 0


class _Breaks(Source):
    """A source whose frame generator raises after ``good`` frames on its first run (a bug)."""

    kind = "breaks"

    def __init__(self, *, restartable: bool, good: int = 3) -> None:
        super().__init__("")
        self.restartable = restartable
        self.good, self.runs = good, 0

    def _open(self) -> None:
        pass

    def _frames(self):
        self.runs += 1
        for seq in range(self.good):
            yield Frame("b", seq + 10 * (self.runs - 1), time.time(), RATE, np.zeros((TICK, 1), np.float32))
        if self.runs == 1:
            raise KeyError("a bug in a source")


def test_a_failing_source_is_restarted_or_stops_with_one_line_never_silently() -> None:
    socket_like = _Breaks(restartable=True)
    frames = list(socket_like)
    assert len(frames) == 6 and socket_like.stats.snapshot()["crashes"] == 1
    assert "KeyError" in socket_like.stats.snapshot()["last_crash"]
    once = _Breaks(restartable=False)
    with pytest.raises(SourceError, match="source breaks:.* stopped: KeyError: 'a bug in a source'"):
        list(once)
    assert once.stats.snapshot()["crashes"] == 1


@pytest.mark.slow
def test_an_only_source_that_dies_is_an_error_of_the_run(tmp_path: Path) -> None:
    """The monitor's exit status: 1 with one clear line when its only source ended with an error
    (before: rc 0 once any window had been classified)."""
    script = tmp_path / "run.py"
    script.write_text(
        "import sys\n"
        f"sys.path.insert(0, {str(ROOT / 'tests')!r})\n"
        "from test_faults import _Breaks\n"
        "import drsn_stream.app.pipeline as p\n"
        "real = p.make_source\n"
        "p.make_source = lambda spec, **kw: _Breaks(restartable=False, good=40) if spec == 'breaks' else real(spec, **kw)\n"
        "from drsn_stream.cli import main\n"
        "sys.exit(main(['--source', 'breaks', '--headless', '--duration', '20', '--engine-process', 'off']))\n"
    )
    res = subprocess.run([sys.executable, str(script)], cwd=ROOT, env=ENV, capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 1, res.stderr
    assert "drsn-stream: error: source breaks:" in res.stderr and "KeyError" in res.stderr
    assert "Traceback" not in res.stderr


def _monitor(port: int, tmp_path: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "drsn_stream", "--source", f"zmq+pull+bind://127.0.0.1:{port}?until_eos=1", "--headless",
         "--jsonl", str(tmp_path / "out.jsonl"), "--duration", "60", "--stale-ms", "60000", *extra],
        cwd=ROOT, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


@pytest.mark.slow
def test_the_monitor_counts_every_fault_and_keeps_watching(tmp_path: Path, free_tcp_port: int) -> None:
    """One live monitor (child process, ZeroMQ on loopback, --capture on) under every fault at once:
    attacks, too many stream ids, an unsupported rate, a rate that flaps, duplicates and a late
    frame, a DC jump, a x100 amplitude step, NaN and flat samples. Everything is counted by its
    reason, nothing stops, the healthy stream is classified to the end."""
    # the faults are the input's: the engine runs in the monitor's process (the engine process's
    # own faults: test_engine_process_deaths_are_limited_per_time_window)
    mon = _monitor(free_tcp_port, tmp_path, "--max-streams", "10", "--capture", str(tmp_path / "cap"),
                   "--engine-process", "off")
    try:
        ready = mon.stderr.readline()
        assert "ready" in ready, ready + mon.stderr.read()
        push = zmq.Context.instance().socket(zmq.PUSH)
        push.connect(f"tcp://127.0.0.1:{free_tcp_port}")
        ticks = 80
        x = _normal(ticks * 0.1 + 0.1)
        t0 = time.time()
        sent_dup = sent_late = 0
        for i in range(ticks):
            t = t0 + 0.1 * i
            block = x[i * TICK : (i + 1) * TICK]
            push.send_multipart(encode("good", i, t, RATE, block))
            push.send_multipart(encode("dc", i, t, RATE, block + (0.5 if i >= 40 else 0.0)))
            push.send_multipart(encode("amp", i, t, RATE, block * (100.0 if i >= 40 else 1.0)))
            bad = np.full(TICK, np.nan, np.float32) if 40 <= i < 45 else np.zeros(TICK, np.float32)
            push.send_multipart(encode("nan", i, t, RATE, bad if 40 <= i < 55 else block))
            push.send_multipart(encode("flap", i, t, 11025.0 if i % 2 else RATE, block))
            push.send_multipart(encode("badrate", i, t, 1.001, block[:4]))
            if i == 50:
                pass  # "dup": 51 goes out before 50 (a late frame)
            elif i == 51:
                push.send_multipart(encode("dup", 51, t, RATE, block))
                push.send_multipart(encode("dup", 50, t - 0.1, RATE, x[50 * TICK : 51 * TICK]))
                sent_late += 1
            else:
                push.send_multipart(encode("dup", i, t, RATE, block))
                if i in (20, 30):
                    push.send_multipart(encode("dup", i, t, RATE, block))
                    sent_dup += 1
            if i == 10:
                for _, make in ATTACKS.values():
                    push.send_multipart(make())
            if i == 15:
                for k in range(20):  # 7 streams so far, --max-streams 10: 3 more taken, 17 refused
                    push.send_multipart(encode(f"extra-{k}", 0, t, RATE, block))
            time.sleep(max(0.0, t0 + 0.1 * (i + 1) - time.time()))
        for sid in ("good", "dc", "amp", "nan", "flap", "badrate", "dup", *(f"extra-{k}" for k in range(20))):
            push.send_multipart(encode_eos(sid))  # the monitor ends once it has read everything
        push.close(1000)
        stdout, stderr = mon.communicate(timeout=120)
    finally:
        mon.kill()
    assert mon.returncode == 0, stderr
    assert "Traceback" not in stderr
    objs = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    final = [o for o in objs if o["type"] == "stats" and o.get("final")][-1]
    src = next(iter(final["sources"].values()))
    want: dict[str, int] = {"unsupported_rate": ticks, "too_many_streams": 17}
    for reason, _ in ATTACKS.values():
        want[reason] = want.get(reason, 0) + 1
    assert src["malformed"] == want
    assert src["duplicates"] == {"dup": sent_dup} and src["late"] == {"dup": sent_late}
    assert src["missing"].get("dup", 0) == 0 and src["restarts"] == {}
    assert src["crashes"] == 0 and final["failed_sources"] == []
    preds = [o for o in objs if o["type"] == "prediction"]
    health = [o for o in objs if o["type"] == "health"]

    def reasons(stream: str) -> set[str]:
        return {r for o in health if o["stream"] == stream for r in o["reasons"]}

    good = [p for p in preds if p["stream"] == "good"]
    assert good and max(p["time"] for p in good) > t0 + 7.5  # watched to the end
    # a healthy signal raises no sensor fault (a loaded machine may stall ingest long enough for "no data")
    assert reasons("good") <= {"no data"}, [(o["time"] - t0, o["reasons"]) for o in health if o["stream"] == "good"]
    assert DC_JUMP in reasons("dc") and AMP_STEP in reasons("amp")
    assert RATE_CHANGE in reasons("flap")
    assert [p for p in preds if p["stream"] == "flap"], "a flapping rate silenced the stream"
    assert "NaN/Inf samples" in reasons("nan")  # then flat zeros: CHECK_SENSOR goes on (predictions below)
    nan_preds = [p for p in preds if p["stream"] == "nan"]
    inside = [p for p in nan_preds if t0 + 4.2 <= p["time"] < t0 + 5.5]
    shown = [(round(p["time"] - t0, 3), p["health"], p["label"]) for p in nan_preds]
    assert inside and all(p["health"] == "CHECK_SENSOR" and p["label"] == "check_sensor" for p in inside), shown
    assert all("model_label" in p for p in inside)
    assert not [o for o in objs if o["type"] == "alarm" and o["stream"] == "nan"]
    assert "good" in stdout and "Traceback" not in stdout


@pytest.mark.slow
def test_a_stalled_monitor_does_not_blame_its_delay_on_the_sensors(tmp_path: Path, free_tcp_port: int) -> None:
    """The monitor's ingest stalls for twice the "no data" timeout while two sensors keep sending
    (their frames wait in the socket): neither shows "no data". Then one sensor really stops: it
    alone shows "no data", and not before the timeout has passed since its last frame."""
    from drsn_stream.sinks.jsonl import JsonlSink

    timeout = 1.5
    cfg = RunConfig(sources=(f"zmq+pull+bind://127.0.0.1:{free_tcp_port}",), engine_process=False, threads=1,
                    stale_ms=60_000.0, health={"timeout_s": timeout})
    pipe = Pipeline(cfg, sinks=[JsonlSink(tmp_path / "out.jsonl", flush_every=1)])
    x = _normal(30.0)
    n = RATE // 20  # a frame every 50 ms
    sending = {"a": True, "b": True}
    stopped: dict[str, float] = {}
    done = threading.Event()

    def send() -> None:
        push = zmq.Context.instance().socket(zmq.PUSH)
        push.connect(f"tcp://127.0.0.1:{free_tcp_port}")
        t0 = time.time()
        for i in range(int(len(x) / n)):
            if done.is_set():
                break
            for sid in ("a", "b"):
                if sending[sid]:
                    push.send_multipart(encode(sid, i, time.time(), RATE, x[i * n : (i + 1) * n]))
                elif sid not in stopped:
                    stopped[sid] = time.time()
            time.sleep(max(0.0, t0 + 0.05 * (i + 1) - time.time()))
        push.close(0)

    sender = threading.Thread(target=send, daemon=True)
    pipe.start()
    waiter = threading.Thread(target=pipe.wait, daemon=True)  # its supervision loop ticks the health
    try:
        waiter.start()
        sender.start()
        deadline = time.time() + 30
        while {"a", "b"} - set(pipe.health.states()) and time.time() < deadline:
            time.sleep(0.05)
        time.sleep(0.5)
        with pipe.ingest.lock:  # the ingest thread waits here with a poll in hand, as on a stalled host
            stalled_at = time.time()
            time.sleep(2 * timeout)
        time.sleep(1.0)  # it reads the frames that waited
        sending["b"] = False
        deadline = time.time() + 10 * timeout
        while pipe.health.state("b").state == "OK" and time.time() < deadline:
            time.sleep(0.05)
        time.sleep(0.5)  # the event reaches the file
    finally:
        done.set()
        pipe.stop()
        sender.join(timeout=5)
    health = [o for o in map(json.loads, (tmp_path / "out.jsonl").read_text().splitlines()) if o["type"] == "health"]
    seen = [(o["stream"], round(o["time"] - stalled_at, 2), o["reasons"]) for o in health]
    assert not [o for o in health if o["stream"] == "a"], seen
    raised = [o for o in health if o["stream"] == "b" and o["to"] == "CHECK_SENSOR"]
    assert len(raised) == 1 and raised[0]["reasons"] == ["no data"], seen
    # judged up to where the source was read: never earlier than the timeout after b's last frame
    # (how soon after is the machine's speed, not a behaviour)
    assert raised[0]["time"] >= stopped["b"] - 0.1 + timeout, (seen, stopped["b"] - stalled_at)


@pytest.mark.slow
def test_results_that_come_out_after_their_stream_went_silent_keep_their_labels(free_tcp_port: int) -> None:
    """The monitor's output falls behind (a sink holds it up, as a slow disk would) while a sensor
    sends 3 s of healthy signal and stops; "no data" is raised meanwhile. The windows from before
    the silence still get the model's labels when they come out, not check_sensor."""
    timeout = 1.5
    gate = threading.Event()
    objs: list[dict] = []

    class Held:
        def write(self, obj: dict) -> None:
            if obj["type"] == "prediction":
                gate.wait(60)
            objs.append(obj)

        def close(self) -> None:
            pass

    cfg = RunConfig(sources=(f"zmq+pull+bind://127.0.0.1:{free_tcp_port}",), engine_process=False, threads=1,
                    stale_ms=60_000.0, health={"timeout_s": timeout})
    pipe = Pipeline(cfg, sinks=[Held()])
    x = _normal(3.0)
    n = RATE // 20
    pipe.start()
    waiter = threading.Thread(target=pipe.wait, daemon=True)  # its supervision loop ticks the health
    try:
        waiter.start()
        push = zmq.Context.instance().socket(zmq.PUSH)
        push.connect(f"tcp://127.0.0.1:{free_tcp_port}")
        t0 = time.time()
        for i in range(len(x) // n):
            push.send_multipart(encode("a", i, time.time(), RATE, x[i * n : (i + 1) * n]))
            time.sleep(max(0.0, t0 + 0.05 * (i + 1) - time.time()))
        push.close(0)
        deadline = time.time() + 30
        while not [o for o in objs if o["type"] == "health"] and time.time() < deadline:
            time.sleep(0.05)
        gate.set()
        deadline = time.time() + 30
        while len([o for o in objs if o["type"] == "prediction"]) < 1 + (len(x) - 2048) // 512 and time.time() < deadline:
            time.sleep(0.05)
    finally:
        gate.set()
        pipe.stop()
    health = [(o["to"], o["reasons"]) for o in objs if o["type"] == "health"]
    assert health[:1] == [("CHECK_SENSOR", ["no data"])], health
    labels = [o["label"] for o in objs if o["type"] == "prediction"]
    assert len(labels) == 1 + (len(x) - 2048) // 512, labels
    assert "check_sensor" not in labels, labels


def test_a_stuck_reader_does_not_hide_silent_sensors_for_ever() -> None:
    """Streams are judged up to where their sources were read; a reader stuck for longer than
    MAX_STALL_S no longer holds that back, and a source not read yet does not count."""
    from drsn_stream.sources.base import MAX_STALL_S, read_to

    now = 1_000.0
    busy, stuck, new = make_source("sim"), make_source("sim"), make_source("sim")
    busy.read_at = now - 2.0
    assert read_to([busy, new], now) == now - 2.0  # the frames after it may wait in its socket
    stuck.read_at = now - 10 * MAX_STALL_S
    assert read_to([stuck], now) == now - MAX_STALL_S
    assert read_to([new], now) == now


def test_stats_can_be_read_while_new_streams_arrive(free_tcp_port: int) -> None:
    """Before: ``stats_json`` iterated the streams while the ingest thread added some ("dictionary
    changed size during iteration")."""
    pipe = Pipeline(RunConfig(sources=(f"zmq+pull+bind://127.0.0.1:{free_tcp_port}",), engine_process=False,
                              stats_every_s=3600.0))
    pipe.start()
    try:
        push = zmq.Context.instance().socket(zmq.PUSH)
        push.connect(f"tcp://127.0.0.1:{free_tcp_port}")
        block = _normal(0.1)
        done = threading.Event()

        def send() -> None:
            for k in range(3000):
                push.send_multipart(encode(f"id-{k}", 0, time.time(), RATE, block))
            done.set()

        sender = threading.Thread(target=send)
        sender.start()
        reads = 0
        while not done.is_set() or reads < 50:
            json.dumps(pipe.stats_json())
            reads += 1
        sender.join()
        push.close(0)
    finally:
        pipe.stop()
    assert pipe.errors == [] or all("id-" not in e for e in pipe.errors)


# ---------------------------------------------------------------------------------------- rates
def test_a_rate_that_is_no_small_ratio_is_refused_at_once() -> None:
    """Before: rate 1.001 built a 140-million-tap filter (6.5 GB peak)."""
    meta = read_meta("bearing-cwru")
    dsp = StreamDSP(meta)
    with pytest.raises(UnsupportedRate, match="1.001 Hz"):
        dsp.push(Frame("s", 0, time.time(), 1.001, np.zeros((100, 1), np.float32)))
    for rate in (8000.0, 11025.0, 44100.0, 48000.0, 96000.0, 12000.5):
        up, down = rational_ratio(rate, 12000.0)
        assert up <= MAX_FACTOR and down <= MAX_FACTOR
        r = StreamingResampler(rate, 12000.0)
        assert r._poly.size <= 2 * 10 * MAX_FACTOR + MAX_FACTOR  # the filter stays small


def test_a_stream_flapping_between_two_rates_still_gives_windows_and_a_health_event() -> None:
    """Before: 12000 / 11025 Hz frame by frame reset the stream each time: 0 windows, no event."""
    meta = read_meta("bearing-cwru")
    dsp, health = StreamDSP(meta), HealthMonitor()
    x = _normal(10.0)
    windows, events = 0, []
    for i in range(100):
        frame = Frame("f", i, 1.8e9 + 0.1 * i, 11025.0 if i % 2 else RATE, x[i * TICK : (i + 1) * TICK, None])
        events += health.push(frame, now=frame.t_capture)
        windows += len(dsp.push(frame))
    assert windows > 20 and dsp.rate_changes == 99
    assert any(RATE_CHANGE in e.data["reasons"] for e in events)


# ---------------------------------------------------------------------------------------- health
def _health_events(x: np.ndarray) -> list:
    monitor, events = HealthMonitor(), []
    for i in range(0, x.size - 600, 600):
        t = 1.8e9 + i / RATE
        events += monitor.push(Frame("s", i // 600, t, RATE, x[i : i + 600, None]), now=t)
    return events


def test_health_sees_a_dc_jump_and_an_amplitude_step_but_not_a_bearing_fault() -> None:
    x = _normal(10.0)
    jump, step, drop = x.copy(), x.copy(), x.copy()
    jump[5 * RATE :] += 0.5
    step[5 * RATE :] *= 100
    drop[5 * RATE :] /= 100
    assert [e.data["reasons"] for e in _health_events(jump)][:1] == [[DC_JUMP]]
    assert [e.data["reasons"] for e in _health_events(step)][:1] == [[AMP_STEP]]
    assert [e.data["reasons"] for e in _health_events(drop)][:1] == [[AMP_STEP]]
    assert _health_events(x) == []
    ex = load_excerpts()
    for fault in ("inner_021", "outer_007", "ball_014"):  # up to x9 the healthy level: a real fault
        f = np.tile(ex[fault], 3)[: 5 * RATE]
        assert _health_events(np.concatenate([x[: 5 * RATE], f, x[: 5 * RATE]])) == [], fault


# ---------------------------------------------------------------------------------------- engine
@pytest.mark.slow
def test_engine_process_deaths_are_limited_per_time_window(monkeypatch: pytest.MonkeyPatch) -> None:
    """Before: the 6th death in a run ended the monitor however far apart the deaths were."""
    meta = read_meta("bearing-cwru")
    runner = ProcessRunner("bearing-cwru", window=meta.window, classes=len(meta.labels), max_batch=4)
    x = np.zeros((2, meta.window), np.float32)

    def kill_and_infer() -> None:
        runner.warmup()
        os.kill(runner.pid, signal.SIGKILL)
        runner._proc.wait(timeout=10)
        with pytest.raises(EngineRestarted):
            runner.collect(runner.submit(x))

    try:
        # every death in its own window; a lower limit than the shipped one exercises the same rule
        # with fewer engine processes to start (each imports torch)
        monkeypatch.setattr(procrunner, "RESTART_WINDOW_S", 0.0)
        monkeypatch.setattr(procrunner, "MAX_RESTARTS", 1)
        for _ in range(procrunner.MAX_RESTARTS + 1):
            kill_and_infer()
        probs, _ = runner.collect(runner.submit(x))
        assert probs.shape == (2, len(meta.labels)) and runner.restarts == procrunner.MAX_RESTARTS + 1
        monkeypatch.setattr(procrunner, "RESTART_WINDOW_S", 600.0)
        monkeypatch.setattr(procrunner, "MAX_RESTARTS", 1)
        os.kill(runner.pid, signal.SIGKILL)
        runner._proc.wait(timeout=10)
        with pytest.raises(EngineError, match="times within 600 s; giving up"):
            runner.collect(runner.submit(x))
    finally:
        runner.close()


@pytest.mark.slow
def test_a_hung_engine_process_is_replaced_not_waited_for(monkeypatch: pytest.MonkeyPatch) -> None:
    """An engine process that is alive but answers nothing (here stopped with SIGSTOP: a deadlock
    or a wedged GPU looks the same from outside) is killed and replaced like a dead one, within
    the reply timeout; before, the monitor waited 20 minutes for its reply, labelling nothing."""
    meta = read_meta("bearing-cwru")
    runner = ProcessRunner("bearing-cwru", window=meta.window, classes=len(meta.labels), max_batch=4)
    x = np.zeros((2, meta.window), np.float32)
    monkeypatch.setattr(procrunner, "REPLY_TIMEOUT_S", 1.0)  # the shipped 30 s, shortened
    monkeypatch.setattr(procrunner, "REPLY_GRACE_S", 0.5)
    try:
        runner.warmup()
        hung = runner.pid
        os.kill(hung, signal.SIGSTOP)
        with pytest.raises(EngineRestarted, match=r"did not answer a batch for 2 s \(hung; stopped it\); started a new one"):
            runner.collect(runner.submit(x))
        assert runner.pid != hung and runner.restarts == 1
        with pytest.raises(ProcessLookupError):  # killed and reaped, not left stopped
            os.kill(hung, 0)
        probs, _ = runner.collect(runner.submit(x))
        assert probs.shape == (2, len(meta.labels))
    finally:
        runner.close()


@pytest.mark.slow
def test_a_model_that_fails_in_the_engine_process_gives_one_line(tmp_path: Path) -> None:
    """Before: a traceback ending in "cannot join thread before it is started"."""
    broken = tmp_path / "broken.pt"
    with zipfile.ZipFile(resolve_artifact("bearing-cwru")) as src, zipfile.ZipFile(broken, "w") as dst:
        for item in src.infolist():
            if "/code/" not in item.filename:  # metadata readable, TorchScript not
                dst.writestr(item, src.read(item.filename))
    res = subprocess.run(
        [sys.executable, "-m", "drsn_stream", "--model", str(broken), "--source", "sim", "--headless",
         "--duration", "5", "--engine-process", "on"],
        cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=180,
    )
    assert res.returncode == 2, res.stderr
    assert "Traceback" not in res.stderr and "cannot join thread" not in res.stderr
    errors = [line for line in res.stderr.splitlines() if "error" in line]
    assert len(errors) == 1 and "engine process failed to start" in errors[0], res.stderr


# ---------------------------------------------------------------------------------------- pickles
class _Payload:
    """Unpickling this creates a file: proof that code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_a_checkpoint_with_pickled_code_is_refused_not_run(tmp_path: Path) -> None:
    from drsn_stream.train.cli import main as train_cli

    marker = tmp_path / "ran"
    ck = tmp_path / "evil.pt"
    torch.save({"model_state": {}, "model_config": {}, "meta": {}, "x": _Payload(marker)}, ck)
    rc = train_cli(["export", "--checkpoint", str(ck), "--out", str(tmp_path / "out.pt")])
    assert rc == 2 and not marker.exists() and not (tmp_path / "out.pt").exists()
    from drsn_stream.train.loop import load_checkpoint

    with pytest.raises(ArtifactError, match="refused: the checkpoint holds pickled Python objects"):
        load_checkpoint(ck)
    assert not marker.exists()


def test_a_checkpoint_a_flipped_bit_changed_is_refused_not_exported(tmp_path: Path) -> None:
    """Before: torch.load read a checkpoint whose weights a flipped bit had changed, and export
    made a model of it without a word; the archive's checksums say so."""
    from drsn_stream.train.cli import main as train_cli
    from drsn_stream.train.loop import load_checkpoint

    ck = tmp_path / "best.pt"
    torch.save({"model_state": {"w": torch.arange(256, dtype=torch.float32)}, "model_config": {}, "meta": {}}, ck)
    data = bytearray(ck.read_bytes())
    at = data.find(torch.arange(256, dtype=torch.float32).numpy().tobytes())
    assert at > 0
    data[at + 4 * 100 + 3] ^= 0x01  # one bit of w[100]
    ck.write_bytes(bytes(data))
    assert torch.load(ck, weights_only=True)["model_state"]["w"][100] != 100  # torch alone takes it
    with pytest.raises(ArtifactError, match="best.pt: damaged: .*does not match the checksum"):
        load_checkpoint(ck)
    assert train_cli(["export", "--checkpoint", str(ck), "--out", str(tmp_path / "out.pt")]) == 2
    assert not (tmp_path / "out.pt").exists()


def test_pickled_arrays_in_artifacts_recordings_and_caches_are_refused(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    evil = np.array([_Payload(marker)], dtype=object)
    # the artifact's validation windows (an extra file inside the TorchScript zip)
    art = tmp_path / "model.pt"
    with zipfile.ZipFile(resolve_artifact("bearing-cwru")) as src, zipfile.ZipFile(art, "w") as dst:
        for item in src.infolist():
            data = src.read(item.filename)
            if item.filename.endswith("/extra/drsn_stream/validation.npz"):
                buf = tmp_path / "v.npz"
                np.savez(buf, windows=evil)
                data = buf.read_bytes()
            dst.writestr(item, data)
    with pytest.raises(ArtifactError, match="refused: its validation windows"):
        load_validation(art)
    # a recording replayed by the file source
    np.save(tmp_path / "rec.npy", evil, allow_pickle=True)
    with pytest.raises(SourceError, match="not a numeric .npy array"):
        read_recording(tmp_path / "rec.npy", rate=12000)
    # the speech synthesizer's cache
    import hashlib

    from drsn_stream.speech import tts

    words, labels, voices = ("one",), ("1",), tts.voices(1)
    key = json.dumps([list(words), list(labels), [v.id for v in voices], 8000])
    cache = tmp_path / "cache"
    cache.mkdir()
    np.savez(cache / f"tts-{hashlib.sha256(key.encode()).hexdigest()[:16]}.npz", audio=evil, lens=evil, meta=evil)
    with pytest.raises(DataError, match="refused"):
        tts.generate(cache, words, labels, voices, sample_rate=8000)
    assert not marker.exists()


# ------------------------------------------------------------------------------ damaged recordings
def _cwru_like_mat(path: Path, **kw) -> bytes:
    """A small recording saved as CWRU's files are (``X097_DE_time``, ``X097RPM``); its bytes."""
    import scipy.io

    rng = np.random.default_rng(0)
    scipy.io.savemat(path, {"X097_DE_time": rng.standard_normal((3000, 1)), "X097RPM": np.array([[1797.0]])}, **kw)
    return path.read_bytes()


def test_a_damaged_mat_file_is_one_line_and_exit_2_not_a_crash(tmp_path: Path) -> None:
    """Before: a .mat file whose first array says it is complex but holds no imaginary part (one
    flipped bit) took the monitor down with SIGSEGV inside scipy's reader, no word said."""
    raw = bytearray(_cwru_like_mat(tmp_path / "good.mat"))
    assert raw[144] == 6 and raw[145] == 0  # the first array's class (double) and its flags
    raw[145] = 0x08  # complex
    bad = tmp_path / "12k_Drive_End_IR014_0_169.mat"
    bad.write_bytes(bytes(raw))
    res = subprocess.run([sys.executable, "-m", "drsn_stream", "--source", f"file:{bad}", "--fast", "--headless"],
                         cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=120)
    assert res.returncode == 2, (res.returncode, res.stderr[-2000:])
    assert "cannot read it as a MATLAB .mat file" in res.stderr and "re-copy it" in res.stderr
    assert "Traceback" not in res.stderr


def test_damaged_recordings_of_every_format_are_refused_in_words(tmp_path: Path) -> None:
    """Bytes a download cut short or a disk flipped: a SourceError that says what is wrong, not
    an UnboundLocalError (a WAV file without a format chunk), a TokenError (an .npy header cut
    mid-way) or a MemoryError (a header that says terabytes, .npy and MATLAB v4)."""
    good = _cwru_like_mat(tmp_path / "good.mat")
    (tmp_path / "no-format.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk")
    np.save(tmp_path / "rec.npy", np.zeros(64, np.float32))
    npy = (tmp_path / "rec.npy").read_bytes()
    (tmp_path / "cut-header.npy").write_bytes(npy[:40])
    with open(tmp_path / "huge.npy", "wb") as fh:  # a header that says 40 TB, then 64 bytes
        np.lib.format.write_array_header_1_0(fh, {"descr": "<f4", "fortran_order": False, "shape": (10**13,)})
        fh.write(bytes(64))
    v4 = _cwru_like_mat(tmp_path / "v4.mat", format="4")
    big = bytearray(v4)
    big[4:8] = (2**31 - 1).to_bytes(4, "little")  # the first variable's rows
    (tmp_path / "v4-huge.mat").write_bytes(bytes(big))
    (tmp_path / "cut.mat").write_bytes(good[: len(good) // 2])
    for name, match in [("no-format.wav", r"not a readable WAV file \(no format chunk"),
                        ("cut-header.npy", "not a numeric .npy array"),
                        ("huge.npy", "not a numeric .npy array"), ("v4-huge.mat", "cannot read it as a MATLAB"),
                        ("cut.mat", "cannot read it as a MATLAB")]:
        with pytest.raises(SourceError, match=match):
            read_recording(tmp_path / name, rate=12000)
    # the undamaged files, v5 (compressed or not) and v4, read as scipy reads them
    import scipy.io

    _cwru_like_mat(tmp_path / "z.mat", do_compression=True)
    for name in ("good.mat", "z.mat", "v4.mat"):
        x, rate = read_recording(tmp_path / name, rate=12000)
        assert np.array_equal(x[:, 0], scipy.io.loadmat(tmp_path / name)["X097_DE_time"][:, 0].astype(np.float32))


def test_the_mat_check_reads_every_file_of_scipys_own_collection_that_scipy_reads() -> None:
    """The structure check refuses no MATLAB file scipy reads whole: scipy's own test files (v4,
    v5 and v7, either byte order, compressed, structs, cells, objects, sparse, UTF-8 names,
    unsigned dimensions) give the same numeric arrays through ``load_mat``, those in their
    structs and cells too, and those scipy refuses are refused in one line, but for the v7.3
    file MATLAB 7.4 wrote, which h5py reads, to the numbers of its v7 twin."""
    import warnings

    import scipy.io

    from drsn_stream.sources.file import load_mat

    folder = Path(scipy.io.__file__).parent / "matlab" / "tests" / "data"
    files = sorted(folder.glob("*.mat"))
    if len(files) < 50:
        pytest.skip(f"scipy's test files are not installed here ({folder})")
    read = leaves = v73 = 0
    for f in files:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ref = scipy.io.loadmat(f)
        except Exception:  # noqa: BLE001 - scipy refuses it: so must we, in one line, but a v7.3 (HDF5) file
            if scipy.io.matlab.matfile_version(f)[0] == 2 and importlib.util.find_spec("h5py") is not None:
                # MATLAB 7.4's own v7.3 file: its arrays as scipy reads the same variables saved as v7
                twin = scipy.io.loadmat(folder / f.name.replace("testhdf5", "testdouble"))
                assert np.array_equal(load_mat(f)["testdouble"], twin["testdouble"])
                v73 += 1
                continue
            with pytest.raises(SourceError, match=r"cannot read it as a MATLAB .mat file|v7.3 .*needs h5py"):
                load_mat(f)
            continue
        ours = load_mat(f)
        inside: dict[str, np.ndarray] = {}
        for name, v in ref.items():
            if not name.startswith("__") and isinstance(v, np.ndarray) and v.dtype.kind in "biufc":
                assert np.array_equal(ours[name], v, equal_nan=True), (f.name, name)
            elif not name.startswith("__"):
                _numeric_inside(v, name, inside)
        # the arrays in structs and cells too, under their MATLAB names (not inside objects,
        # which scipy reads as structs and we leave alone)
        found = {k: v for k, v in ours.items() if ("." in k or "{" in k) and v.dtype.kind in "biufcU"}
        for name, v in found.items():
            if v.dtype.kind == "U":  # (a text of no bytes: scipy fills it with spaces)
                assert str(v).strip() == str(inside[name]).strip(), (f.name, name)
            else:
                assert np.array_equal(v, inside[name], equal_nan=True), (f.name, name)
        leaves += len(found)
        read += 1
    assert read >= 50 and leaves >= 80 and v73 >= (importlib.util.find_spec("h5py") is not None)


def _numeric_inside(v: object, path: str, out: dict[str, np.ndarray], depth: int = 0) -> None:
    """The numeric arrays and one-line texts in a struct or cell scipy read, by MATLAB names (``s.a``, ``c{1}``)."""
    if depth > 4 or not isinstance(v, np.ndarray):
        return
    if depth and v.dtype.kind in "biufc":
        out.setdefault(path, v)
    elif depth and v.dtype.kind == "U" and v.shape == (1,):  # a one-line text: one string
        out.setdefault(path, np.array(v[0]))
    elif v.dtype.names:
        for k, item in enumerate(v.flatten(order="F")):
            for field in v.dtype.names:
                _numeric_inside(item[field], f"{path}{f'({k + 1})' if v.size > 1 else ''}.{field}", out, depth + 1)
    elif v.dtype == object:
        for k, item in enumerate(v.flatten(order="F")):
            _numeric_inside(item, f"{path}{{{k + 1}}}", out, depth + 1)


_MAT_SWEEP = r"""
import io, json, random, sys, warnings
import numpy as np, scipy.io, scipy.sparse
from pathlib import Path
from drsn_stream.errors import SourceError
from drsn_stream.sources.file import load_mat
rng = random.Random(17)
def saved(d, **kw):
    b = io.BytesIO(); scipy.io.savemat(b, d, **kw); return b.getvalue()
plain = {"X097_DE_time": np.arange(300.0).reshape(300, 1), "X097RPM": np.array([[1797.0]])}
rich = dict(plain, s={"a": np.arange(3), "b": "text", "n": {"gs": np.arange(90.0), "sr": 12000.0}}, t="words",
            sp=scipy.sparse.eye(4, format="csc"), z=np.arange(4) + 1j, i=np.arange(5, dtype=np.int16),
            e=np.zeros((0, 3)), c=np.array([np.arange(4.0), "x", {"y": np.ones(2)}], dtype=object))
first = {"s": rich["s"], "c": rich["c"], **plain}  # the struct's and cell's bytes first, where bits are flipped
goods = [saved(plain), saved(plain, do_compression=True), saved(plain, format="4"), saved(rich),
         saved(rich, do_compression=True), saved(first), saved(first, do_compression=True)]
path = Path(sys.argv[1])
outcomes = {"read": 0, "refused": 0, "in structs": 0}
def damaged():
    for good in goods:  # every bit of the first variables' tags and headers flipped, one at a time
        for i in range(128 if good[:4] != bytes(4) else 0, 128 + 160):
            for bit in range(8):
                d = bytearray(good)
                d[i] ^= 1 << bit
                yield d
        for n in range(0, len(good), 97):  # cut short
            yield good[:n]
    for _ in range(int(sys.argv[2])):  # a few bytes anywhere set to anything
        d = bytearray(rng.choice(goods))
        for _ in range(rng.randrange(1, 6)):
            d[rng.randrange(len(d))] = rng.randrange(256)
        yield d
for d in damaged():
    path.write_bytes(bytes(d))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            got = load_mat(path)
        outcomes["read"] += 1
        outcomes["in structs"] += "s.n.gs" in got
    except SourceError:
        outcomes["refused"] += 1
print(json.dumps(outcomes))
"""


def test_a_sweep_of_damaged_mat_files_is_read_or_refused_never_a_crash(tmp_path: Path) -> None:
    """Each of these files is read or refused with a SourceError, with no warning on the terminal:
    run in a child process, since scipy's reader alone crashed (SIGSEGV, SIGBUS) within a few
    hundred of them."""
    res = subprocess.run([sys.executable, "-c", _MAT_SWEEP, str(tmp_path / "f.mat"), "600"], cwd=ROOT, env=ENV,
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, (res.returncode, res.stderr[-3000:])
    outcomes = json.loads(res.stdout.strip().splitlines()[-1])
    assert outcomes["read"] > 1000 and outcomes["refused"] > 1000 and outcomes["in structs"] > 500


def test_damaged_tdms_files_are_read_or_refused_in_one_line_and_quietly(tmp_path: Path, capfd) -> None:
    """npTDMS reads what it can of a damaged file and logs what it mends through handlers of
    its own, pages of raw bytes on the monitor's terminal: every flipped bit of a file's first
    segments and every cut is read or refused with a SourceError, and nothing is printed."""
    import random

    from nptdms import ChannelObject, GroupObject, RootObject, TdmsWriter

    path = tmp_path / "f.tdms"
    x = np.arange(600.0)
    with TdmsWriter(path) as w:
        w.write_segment([RootObject({"title": "t"}), GroupObject("V"),
                         ChannelObject("V", "a", x, properties={"wf_increment": 1 / 12000}),
                         ChannelObject("V", "b", -x, properties={"wf_increment": 1 / 12000})])
        w.write_segment([ChannelObject("V", "a", x), ChannelObject("V", "b", -x)])
    good = path.read_bytes()
    rng = random.Random(5)
    damaged = [bytes(good[:i]) + bytes([good[i] ^ (1 << bit)]) + good[i + 1 :] for i in range(0, 400) for bit in range(8)]
    damaged += [good[:n] for n in range(0, len(good), 61)]
    for _ in range(300):
        d = bytearray(good)
        for _ in range(rng.randrange(1, 6)):
            d[rng.randrange(len(d))] = rng.randrange(256)
        damaged.append(bytes(d))
    outcomes = {"read": 0, "refused": 0}
    capfd.readouterr()
    for d in damaged:
        path.write_bytes(d)
        try:
            read_recording(path, rate=12000)
            outcomes["read"] += 1
        except SourceError:
            outcomes["refused"] += 1
    out, err = capfd.readouterr()
    assert out == "" and err == "", err[:500]
    assert outcomes["read"] > 300 and outcomes["refused"] > 300, outcomes


@pytest.mark.slow
def test_damaged_matlab_v73_files_are_read_or_refused_in_one_line_and_quietly(tmp_path: Path, capfd) -> None:
    """A v7.3 file is HDF5, read by the HDF5 C library (h5py): in a child process, so that a
    damaged one is one line, whatever the library does with it, and prints nothing here."""
    import random

    from helpers import save_mat73

    x = np.sin(np.arange(6000) / 5.0)
    good = save_mat73(tmp_path / "good.mat", {"bearing": {"gs": x[:, None], "sr": 12000.0},
                                              "c": (x[:200], "vibration")}).read_bytes()
    rng = random.Random(3)
    damaged = [good[:n] for n in sorted(rng.sample(range(600, len(good)), 20))]
    for _ in range(50):
        d = bytearray(good)
        for _ in range(rng.randrange(1, 6)):  # the HDF5 superblock and object headers follow the 512-byte header
            d[rng.randrange(512, min(len(d), 4096))] = rng.randrange(256)
        damaged.append(bytes(d))
    path = tmp_path / "d.mat"
    outcomes = {"read": 0, "refused": 0}
    capfd.readouterr()
    for d in damaged:
        path.write_bytes(d)
        try:
            got, rate = read_recording(path)
            assert rate == 12000.0 and got.shape == (6000, 1)
            outcomes["read"] += 1
        except SourceError as exc:
            assert "\n" not in str(exc)
            outcomes["refused"] += 1
    out, err = capfd.readouterr()
    assert out == "" and err == "", err[:500]
    assert outcomes["refused"] >= 20 and sum(outcomes.values()) == 70, outcomes


def test_damaged_mp3_files_are_decoded_quietly_and_a_runaway_decode_is_cut(tmp_path: Path, capfd) -> None:
    """libmpg123 writes its complaints about a damaged MP3 frame straight to the process's stderr
    (the dashboard's terminal), and a scrambled file can decode to millions of samples of noise:
    sound files are decoded in a child process whose stderr goes nowhere, with a cap on what a
    file of its size may decode to and a time limit. The same files read in this process would
    have printed."""
    import random

    import soundfile

    from drsn_stream.audiofile import AudioFileError, decoding, read_audio

    t = np.arange(16000) / 8000
    good_path = tmp_path / "good.mp3"
    soundfile.write(good_path, 0.3 * np.sin(2 * np.pi * 440 * t) * np.sin(2 * np.pi * 1.3 * t), 8000)
    good = good_path.read_bytes()
    paths = []
    for seed in range(12):
        rng, d = random.Random(seed), bytearray(good)
        for _ in range(20):
            d[rng.randrange(len(d))] = rng.randrange(256)
        paths.append(tmp_path / f"d{seed}.mp3")
        paths[-1].write_bytes(d)
    direct = subprocess.run([sys.executable, "-c", "import sys, soundfile\nfor p in sys.argv[1:]:\n"
                             "    try: soundfile.read(p)\n    except Exception: pass", *map(str, paths)],
                            capture_output=True, text=True, timeout=120)
    assert "libmpg123" in direct.stderr  # what these files do to a process that decodes them itself
    capfd.readouterr()
    outcomes = {"read": 0, "refused": 0}
    for p in paths:
        try:
            x, rate = read_recording(p)
            assert rate == 8000 and x.shape[1] == 1 and x.shape[0] <= 2 * t.size
            outcomes["read"] += 1
        except SourceError as exc:
            assert "not a readable sound file" in str(exc) and "\n" not in str(exc)
            outcomes["refused"] += 1
    out, err = capfd.readouterr()
    assert out == "" and err == "", err[:500]
    assert outcomes["read"] > 0, outcomes
    with pytest.raises(AudioFileError, match=r"decodes to more than 4,000 samples, more than a file of its size holds"):
        read_audio(good_path, cap=4000)
    with pytest.raises(AudioFileError, match=r"decoding took longer than 0.01 s; the file may be damaged"):
        read_audio(good_path, timeout=0.01)
    # a data set's files share one child (decoding()): the same samples and the same refusals, in
    # the same words, one after another, and a child that ran out of time is replaced for the next
    alone = [_outcome(read_audio, p) for p in [good_path, *paths]]
    with decoding():
        shared = [_outcome(read_audio, p) for p in [good_path, *paths]]
        with pytest.raises(AudioFileError, match=r"decoding took longer than 1e-06 s"):
            read_audio(good_path, timeout=1e-6)  # (a warm child decodes this file in a few ms)
        shared.append(_outcome(read_audio, good_path))
    assert shared[:-1] == alone and shared[-1] == alone[0]
    assert capfd.readouterr() == ("", "")


def _outcome(read, path: Path) -> tuple:
    """What reading ``path`` gave: its samples' bytes and rate, or the refusal's words."""
    try:
        x, rate = read(path)
        return x.shape, x.tobytes(), rate
    except Exception as exc:  # noqa: BLE001 - the refusal is the outcome
        return type(exc).__name__, str(exc)


# ---------------------------------------------------------------------------------------- capture
def test_capture_rings_are_bounded_and_odd_times_do_not_crash(tmp_path: Path) -> None:
    """Before: a 1 MHz, 256-channel stream reserved an 11 GB ring; an alarm at t ~ 7e16 raised
    OSError from time.gmtime and ended the monitor."""
    from drsn_stream.sinks.capture import CaptureConfig, EventCapture
    from drsn_stream.types import Event

    cap = EventCapture(tmp_path, CaptureConfig(pre_s=0.001, post_s=0.001))
    big = Frame("wide", 0, time.time(), 1e6, np.zeros((1000, 256), np.float32))
    cap.push(big)
    assert cap._rings["wide"].data.nbytes <= CaptureConfig().max_ring_bytes
    odd = Frame("odd", 0, 7e16, RATE, np.ones((TICK, 1), np.float32))
    cap.push(odd)
    assert cap.on_event(Event("alarm", "odd", 7e16 + 0.01, {"from": "NORMAL", "to": "ALERT"}))
    written = cap.push(Frame("odd", 1, 7e16 + 0.1, RATE, np.ones((TICK, 1), np.float32))) + cap.close()
    assert cap.errors == 0 and len(written) == 1 and written[0].wav.is_file()
