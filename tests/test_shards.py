"""Ingest across processes (app/shards.py), end to end: real ZeroMQ on loopback, CWRU recordings,
the shipped model, real child interpreters."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import zmq
from helpers import NoteSink, cwru_signal, free_port, require_cwru, tool, wait_until

from drsn_stream.app.pipeline import Pipeline, RunConfig
from drsn_stream.app.shards import ShardedSource, shard_of
from drsn_stream.monitor.health import CHECK_SENSOR
from drsn_stream.sources.wire import encode, encode_eos

RATE = 12000
CHUNK = 512
RECORDINGS = {  # stream id -> CWRU recording; the ids fall to both of two ingest processes
    "press-1": "12k_Drive_End_IR014_0_169.mat",
    "press-2": "12k_Drive_End_OR021@6_1_235.mat",
    "press-3": "12k_Drive_End_B014_0_185.mat",
    "press-4": "12k_Drive_End_IR014_1_170.mat",
}


def _streams(seconds: float) -> dict[str, np.ndarray]:
    """``seconds`` of each stream; the recordings (10 s each) are looped to last that long."""
    n = int(seconds * RATE)
    out = {sid: np.resize(cwru_signal(name), n).astype(np.float32) for sid, name in RECORDINGS.items()}
    out["flat-5"] = np.full(n, 0.25, np.float32)  # a stuck sensor: its health is judged in a child
    return out


def _publisher(port: int, subscribers: int, streams: dict[str, np.ndarray], *, pace: bool,
               stop: threading.Event, errors: list[str], late: dict[str, int] | None = None,
               pause_s: float = 0.0, rpm: Callable[[str, int], float | None] | None = None) -> threading.Thread:
    """Sends ``streams`` in CHUNK-sample frames once ``subscribers`` SUB sockets have subscribed
    to every topic (XPUB, verbose: every subscription is heard), then end of stream; one malformed
    message too. ``late``: streams that start only at this frame number. Only subscriptions to
    every topic are counted: an ingest process that subscribes to a stream's own topic (one
    another publisher's traffic revealed) does so at every publisher it is connected to, and
    counting that would start this one before the other process has joined, which then misses
    the first frames. ``pause_s``: quiet this long after the malformed message, before the frames.
    ``rpm(stream, seq)``: the shaft speed a frame carries (None: none). The socket stays open until
    ``stop``."""

    def run() -> None:
        sock = zmq.Context.instance().socket(zmq.XPUB)
        sock.setsockopt(zmq.XPUB_VERBOSE, 1)
        sock.setsockopt(zmq.SNDHWM, 100000)
        sock.setsockopt(zmq.LINGER, 5000)
        try:
            sock.bind(f"tcp://127.0.0.1:{port}")
            heard, deadline = 0, time.time() + 60
            while heard < subscribers and time.time() < deadline:
                if sock.poll(100) and sock.recv() == b"\x01":
                    heard += 1
            if heard < subscribers:
                errors.append(f"only {heard} of {subscribers} subscribers")
                return
            sock.send_multipart([b"press-1", b"{not json", b""])  # counted once, by its process
            time.sleep(pause_s)
            n = min(len(x) for x in streams.values())
            t0 = time.time()
            for seq, i in enumerate(range(0, n - CHUNK + 1, CHUNK)):
                if stop.is_set():
                    break
                for sid, x in streams.items():
                    if late and seq < late.get(sid, 0):
                        continue
                    sock.send_multipart(encode(sid, seq, t0 + i / RATE, RATE, x[i : i + CHUNK],
                                               rpm=rpm(sid, seq) if rpm else None))
                if pace:
                    time.sleep(max(0.0, t0 + (i + CHUNK) / RATE - time.time()))
            for sid in streams:
                sock.send_multipart(encode_eos(sid))
            # open until the run is over, as a gateway stays up: an ingest process behind that
            # changes its subscriptions after a close gets a TCP reset, which throws away what it
            # had not read yet (tests/test_wire.py; `drsn-stream publish` stays open a moment)
            while not stop.is_set():
                if sock.poll(100):
                    sock.recv()
        finally:
            sock.close()

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


def _why(pipe: Pipeline) -> dict:
    """What a failing run's message needs: its errors, the source's counters (ends, gaps) and each
    stream's frames and health as the ingest processes reported them (a run that ended by its
    duration shows which stream stopped arriving)."""
    states = pipe.health.states()
    return {"errors": pipe.errors[:8], "sources": pipe.stats_json()["sources"],
            "streams": {sid: (h.frames, h.state, h.reasons) for sid, h in states.items()}}


def _config(port: int, procs: int, **kw: object) -> RunConfig:
    return RunConfig(sources=(f"zmq://127.0.0.1:{port}?until_eos=1",), device="cpu", engine_process=False,
                     ingest_procs=procs, stale_ms=60000, stats_every_s=3600, **kw)  # type: ignore[arg-type]


def _started(port: int, duration: float) -> tuple[Pipeline, ShardedSource]:
    """A running monitor whose one source is read by 2 ingest processes, and that source."""
    pipe = Pipeline(_config(port, 2, duration=duration))
    pipe.start()
    src = pipe.sources[0]
    assert isinstance(src, ShardedSource)
    return pipe, src


def _run_until_eos(port: int, procs: int, streams: dict[str, np.ndarray], *, config: dict | None = None,
                   results: dict | None = None, sink: object = None, **kw: object) -> Pipeline:
    """A monitor of ``procs`` ingest processes (1: the ingest thread) run over ``streams`` to their
    end (stopped: its envelope stage has analysed every block); ``results`` (if given) gets, by
    (stream, index), every window's model input (bytes) and level as the engine loop handed them
    to the model, and its label and scores; ``sink`` (if given) every JSON object it writes."""
    pipe = Pipeline(_config(port, procs, duration=120, **(config or {})))
    if sink is not None:
        pipe.outputs.add(sink)
    if results is not None:
        prepare, hand_on = pipe.engine.prepare, pipe.engine.on_predictions

        def inputs(batch: list) -> tuple:
            x, levels = prepare(batch)
            for w, row, level in zip(batch, x, levels):
                results[(w.stream_id, w.index)] = {"input": row.tobytes(), "level": float(level)}
            return x, levels

        def outputs(preds: list) -> None:
            for p in preds:
                results[(p.stream_id, p.index)].update(label=p.label, probs=p.probs.copy())
            hand_on(preds)

        pipe.engine.prepare, pipe.engine.on_predictions = inputs, outputs
    pipe.start()
    stop, errors = threading.Event(), []
    pub = _publisher(port, procs, streams, stop=stop, errors=errors, **kw)  # type: ignore[arg-type]
    try:
        pipe.wait()
    finally:
        stop.set()
        pipe.stop()
        pub.join(timeout=10)
    assert not errors, errors
    return pipe


@pytest.mark.slow
def test_the_mirror_of_the_ingest_processes_health_can_leave_silent_streams_out() -> None:
    """As on one process, a stream an ingest process found silent is unhealthy, except for a result
    that comes out late (no_data=False); a stream with another reason stays unhealthy there too."""
    from drsn_stream.app.shards import HealthMirror
    from drsn_stream.types import Event

    mirror = HealthMirror()
    mirror.note(Event("health", "quiet", 1.0, {"from": "OK", "to": CHECK_SENSOR, "reasons": ["no data"]}))
    mirror.note(Event("health", "flat", 1.0, {"from": "OK", "to": CHECK_SENSOR, "reasons": ["flat line", "no data"]}))
    assert mirror.unhealthy(["quiet", "flat", "fine"]) == {"quiet", "flat"}
    assert mirror.unhealthy(["quiet", "flat", "fine"], no_data=False) == {"flat"}


def test_two_ingest_processes_give_the_labels_windows_health_and_counts_of_one(
        free_tcp_port: int, monkeypatch: pytest.MonkeyPatch) -> None:
    require_cwru()
    from drsn_stream.app import shards

    # process 2 moves from the shared subscription to its own streams' topics mid-run
    monkeypatch.setattr(shards, "LEARN_S", 1.0)
    streams = _streams(4.0)
    streams["gw-6"] = np.stack([streams["press-2"], streams["press-3"]], axis=1)  # a 2-channel DAQ module
    ids = [s for s in streams if s != "gw-6"] + ["gw-6/ch0", "gw-6/ch1"]  # the streams monitored
    assert {shard_of(sid.encode(), 2) for sid in streams} == {0, 1}  # both processes get streams
    one = _run_until_eos(free_tcp_port, 1, streams, pace=True)
    two = _run_until_eos(free_tcp_port, 2, streams, pace=True)
    assert not isinstance(one.sources[0], ShardedSource) and isinstance(two.sources[0], ShardedSource)

    frames = 4 * RATE // CHUNK
    windows = (frames * CHUNK - 2048) // 512 + 1
    assert {sid: sum(c.values()) for sid, c in one.label_counts.items()} == dict.fromkeys(ids, windows)
    assert two.label_counts == one.label_counts  # the same windows, labels and sensor verdicts
    assert one.label_counts["press-2"].most_common(1)[0][0] == "outer_021"
    assert one.label_counts["gw-6/ch0"] == one.label_counts["press-2"]
    assert one.label_counts["flat-5"] == Counter(check_sensor=windows)
    # what the dashboard and the summary show comes from the children too
    for pipe in (one, two):
        assert pipe.health.state("flat-5").state == CHECK_SENSOR and pipe.health.healthy("press-1")
        assert any(e.type == "health" and e.stream_id == "flat-5" for e in pipe.events.recent(50))
        assert pipe.malformed_total() == 1
        src = pipe.stats_json()["sources"][pipe.config.sources[0]]
        assert src["frames"] == len(streams) * frames and sorted(src["ended"]) == sorted(streams)
        rows = {r.stream_id: r for r in pipe.snapshot().rows}
        assert rows["flat-5"].health == CHECK_SENSOR and set(rows) == set(ids)
    assert "flat-5" in two.summary() and not two.errors
    # process 1 keeps the shared subscription and drops process 2's stream throughout; process 2
    # stopped receiving process 1's streams once it subscribed to its own
    others = [sum(1 for s in streams if shard_of(s.encode(), 2) != k) for k in (0, 1)]
    foreign = two.sources[0].foreign  # type: ignore[attr-defined]
    assert foreign[0] == others[0] * (frames + 1) and 0 < foreign[1] < others[1] * frames, (foreign, others)


@pytest.mark.slow
def test_a_publisher_quiet_after_its_first_message_loses_no_frame_of_any_stream(
        free_tcp_port: int, monkeypatch: pytest.MonkeyPatch) -> None:
    # One message (of a stream of process 1), then nothing for longer than LEARN_S, then every
    # stream at once. Process 2 counted its learning time from that first message and dropped the
    # shared subscription before any stream of its own had come: press-4 then came only through
    # process 1's discovery, after the burst, and lost most of its windows (CI saw 46 of 67 go).
    require_cwru()
    from drsn_stream.app import shards

    monkeypatch.setattr(shards, "LEARN_S", 1.0)
    streams = _streams(3.0)
    assert shard_of(b"press-1", 2) == 0 and shard_of(b"press-4", 2) == 1  # the first message is not process 2's
    pipe = _run_until_eos(free_tcp_port, 2, streams, pace=False, pause_s=2.0)
    windows = (3 * RATE // CHUNK * CHUNK - 2048) // 512 + 1
    assert {sid: sum(c.values()) for sid, c in pipe.label_counts.items()} == dict.fromkeys(streams, windows), \
        _why(pipe)
    assert sorted(pipe.stats_json()["sources"][pipe.config.sources[0]]["ended"]) == sorted(streams)


@pytest.mark.slow
def test_ingest_processes_read_several_gateways_as_one_source(free_tcp_port: int) -> None:
    # One source subscribed to two publishers (zmq://A,B), each sending some of the streams, read
    # by two ingest processes: every stream of both is monitored, with the windows, labels and
    # sensor verdicts that one ingest thread gives when one publisher sends them all.
    require_cwru()
    streams = _streams(3.0)
    one = _run_until_eos(free_tcp_port, 1, streams, pace=True)
    ports = [free_port(), free_port()]
    first = ("press-1", "press-3", "flat-5")
    halves = [{s: x for s, x in streams.items() if (s in first) == (k == 0)} for k in (0, 1)]
    spec = f"zmq://127.0.0.1:{ports[0]},127.0.0.1:{ports[1]}?until_eos=1"
    pipe = Pipeline(RunConfig(sources=(spec,), device="cpu", engine_process=False, ingest_procs=2, stale_ms=60000,
                              stats_every_s=3600, duration=120))
    pipe.start()
    stop, errors = threading.Event(), []
    pubs = [_publisher(port, 2, half, pace=True, stop=stop, errors=errors) for port, half in zip(ports, halves)]
    try:
        pipe.wait()
    finally:
        stop.set()
        pipe.stop()
        for pub in pubs:
            pub.join(timeout=10)
    assert not errors, errors
    assert isinstance(pipe.sources[0], ShardedSource)
    assert set(pipe.label_counts) == set(streams)
    assert pipe.label_counts == one.label_counts
    assert pipe.malformed_total() == 2  # one from each publisher


@pytest.mark.slow
def test_ingest_processes_cut_the_windows_of_phases_as_the_ingest_thread_does(free_tcp_port: int) -> None:
    """``--phases`` reaches the ingest processes: every stream gets the windows its phase gives
    it (a stream started later in the hop has fewer of them), the same as with one ingest thread."""
    require_cwru()
    from drsn_stream.dsp.window import window_start

    streams = _streams(3.0)
    config = {"hop": 2048, "phases": 4}
    one = _run_until_eos(free_tcp_port, 1, streams, pace=False, config=config)
    two = _run_until_eos(free_tcp_port, 2, streams, pace=False, config=config)
    n = (3 * RATE // CHUNK) * CHUNK
    want = {sid: (n - window_start(sid, 2048, 4) - 2048) // 2048 + 1 for sid in streams}
    assert len(set(want.values())) > 1  # the streams' phases differ
    assert {sid: sum(c.values()) for sid, c in one.label_counts.items()} == want
    assert two.label_counts == one.label_counts


@pytest.mark.slow
def test_a_stream_that_starts_after_the_processes_took_their_own_topics_is_monitored(
        free_tcp_port: int, monkeypatch: pytest.MonkeyPatch) -> None:
    require_cwru()
    from drsn_stream.app import shards

    monkeypatch.setattr(shards, "LEARN_S", 0.5)
    streams = _streams(4.0)
    streams["late-4"] = streams.pop("press-4")  # process 2's only stream, from 2.5 s on
    assert shard_of(b"late-4", 2) == 1 and all(shard_of(s.encode(), 2) == 0 for s in streams if s != "late-4")
    start = 60
    pipe = _run_until_eos(free_tcp_port, 2, streams, pace=True, late={"late-4": start})
    sent = (4 * RATE // CHUNK - start) * CHUNK
    # process 1 saw it first and told the parent, which had process 2 subscribe to it: at most
    # its first frames are missed, while the subscription reaches the publisher
    got = sum(pipe.label_counts["late-4"].values())
    assert (sent - 2048) // 512 + 1 - 8 <= got <= (sent - 2048) // 512 + 1, got
    assert pipe.label_counts["late-4"].most_common(1)[0][0] == "inner_014"


@pytest.mark.slow
def test_a_killed_ingest_process_is_said_replaced_and_nothing_is_left_at_the_end(free_tcp_port: int) -> None:
    require_cwru()
    streams = _streams(60.0)
    pipe, src = _started(free_tcp_port, 120)
    assert len(src.pids) == 2
    victim = src.pids[0]
    mine = [sid for sid in streams if shard_of(sid.encode(), 2) == 0]
    shm = [f"/dev/shm/{c.shm.name.lstrip('/')}" for c in src._children]
    stop, errors = threading.Event(), []
    pub = _publisher(free_tcp_port, 2, streams, pace=True, stop=stop, errors=errors)
    seen: set[int] = set(src.pids)
    try:
        # each step has its own deadline, and the publisher sends 60 s of each stream (the
        # recordings are looped): a slow step on a loaded machine leaves the new process the time
        # to start and take its streams up
        wait_until(lambda: all(pipe.label_counts.get(s) for s in mine), 60)
        assert all(pipe.label_counts.get(s) for s in mine), pipe.label_counts
        os.kill(victim, signal.SIGKILL)
        wait_until(lambda: any("ended (signal SIGKILL)" in e for e in pipe.errors), 30)
        before = {s: sum(pipe.label_counts[s].values()) for s in mine}

        def resumed() -> bool:  # the new process takes its streams up again
            seen.update(src.pids)
            return all(sum(pipe.label_counts[s].values()) > before[s] + 4 for s in mine)

        wait_until(resumed, 40)
        seen.update(src.pids)
    finally:
        stop.set()
        pipe.stop()
        pub.join(timeout=10)
    line = next(e for e in pipe.errors if "ended (signal SIGKILL)" in e)
    assert f"ingest process 1 of 2 (pid {victim})" in line and "started a new one" in line and src.restarts == 1
    assert not pipe.failed_sources, pipe.errors
    assert all(sum(pipe.label_counts[s].values()) > before[s] + 4 for s in mine), (before, pipe.label_counts)
    assert line in pipe.summary()
    assert victim not in src.pids and len(seen) == 3
    # stop() leaves no ingest process and no shared memory behind
    assert src.pids == []
    for pid in seen:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    assert not any(Path(p).exists() for p in shm)


@pytest.mark.slow
def test_a_process_killed_before_its_first_report_is_replaced_and_the_source_goes_on(free_tcp_port: int) -> None:
    """A child that dies before it has reported any counters (it reports every STATS_S) is
    replaced like any other; the source sums the counters of the processes that did report."""
    pipe, src = _started(free_tcp_port, 60)
    victim = src.pids[0]
    try:
        os.kill(victim, signal.SIGKILL)  # at once, well within its first STATS_S
        # both processes report again: the new one, and the other, whose report sums them all
        wait_until(lambda: src.restarts == 1 and all(c.stats for c in src._children) or bool(pipe.failed_sources), 30)
        stats = pipe.stats_json()["sources"][pipe.config.sources[0]]
    finally:
        pipe.stop()
    assert not pipe.failed_sources, pipe.errors
    assert any(f"(pid {victim}) ended (signal SIGKILL); started a new one" in e for e in pipe.errors), pipe.errors
    assert src.restarts == 1 and stats["frames"] == 0, stats


def test_other_sources_keep_their_ingest_thread_and_one_process_is_todays_path(free_tcp_port: int) -> None:
    port = free_tcp_port
    pipe = Pipeline(RunConfig(sources=("sim:bearing?machines=2", f"zmq+bind://127.0.0.1:{port}",
                                       f"zmq+pull://127.0.0.1:{port}", f"zmq://127.0.0.1:{port}"),
                              device="cpu", engine_process=False, ingest_procs=3))
    kinds = [type(s).__name__ for s in pipe.sources]
    assert kinds[:3] == ["BearingSim", "ZmqSubBindSource", "ZmqPullSource"] and kinds[3] == "ShardedSource"
    assert pipe.sources[3].procs == 3  # type: ignore[attr-defined]
    one = Pipeline(RunConfig(sources=(f"zmq://127.0.0.1:{port}",), device="cpu", engine_process=False,
                             ingest_procs=1))
    assert type(one.sources[0]).__name__ == "ZmqSubSource"


@pytest.mark.slow
def test_a_process_that_keeps_dying_loses_its_streams_visibly_and_losing_all_ends_the_source(
        free_tcp_port: int, monkeypatch: pytest.MonkeyPatch) -> None:
    require_cwru()
    from drsn_stream.app import shards

    monkeypatch.setattr(shards, "MAX_RESTARTS", 0)  # the first death is one too many
    streams = _streams(60.0)
    pipe, src = _started(free_tcp_port, 120)
    first, second = src.pids
    mine = sorted(sid for sid in streams if shard_of(sid.encode(), 2) == 0)
    stop, errors = threading.Event(), []
    pub = _publisher(free_tcp_port, 2, streams, pace=True, stop=stop, errors=errors)
    try:
        deadline = time.time() + 60
        while time.time() < deadline and not all(pipe.health.state(s).frames for s in streams):
            time.sleep(0.2)  # every process has reported its streams' health
        assert all(pipe.health.state(s).frames for s in streams), "not every stream reported before the kill"
        os.kill(first, signal.SIGKILL)
        while time.time() < deadline and not any("not started again" in e for e in pipe.errors):
            time.sleep(0.1)
        assert any("not started again" in e for e in pipe.errors), pipe.errors
        os.kill(second, signal.SIGKILL)
        pipe.wait()  # ends by itself: the source has no process left
        ended_by_itself = len(pipe._ended_sources) == len(pipe.sources)  # not by its 120-s duration
    finally:
        stop.set()
        pipe.stop()
        pub.join(timeout=10)
    line = next(e for e in pipe.errors if "not started again" in e)
    assert f"ingest process 1 of 2 (pid {first}) ended (signal SIGKILL)" in line
    assert "its streams are no longer monitored (" + ", ".join(mine) in line
    for sid in mine:
        assert pipe.health.state(sid).state == CHECK_SENSOR and "ingest process lost" in pipe.health.state(sid).reasons
    assert any("every ingest process is lost" in f for f in pipe.failed_sources), pipe.failed_sources
    assert src.pids == [] and ended_by_itself


@pytest.mark.slow
def test_a_stuck_ingest_process_is_ended_and_replaced_not_waited_for(free_tcp_port: int,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    from drsn_stream.app import shards

    monkeypatch.setattr(shards, "SILENT_S", 2.0)
    pipe, src = _started(free_tcp_port, 60)
    stuck = src.pids[1]
    try:
        time.sleep(0.5)  # no publisher: the processes are idle, and say so
        os.kill(stuck, signal.SIGSTOP)
        deadline = time.time() + 60
        while time.time() < deadline and not src.restarts:
            time.sleep(0.1)
    finally:
        pipe.stop()
    assert any(f"ingest process 2 of 2 (pid {stuck}) did not answer for" in e for e in pipe.errors), pipe.errors
    assert any(f"(pid {stuck}) ended (signal SIGKILL); started a new one" in e for e in pipe.errors), pipe.errors
    assert src.pids == []


@pytest.mark.slow
@pytest.mark.parametrize("geometry", [False, True], ids=["normalized-in-the-processes", "raw-for-the-envelope"])
def test_ingest_processes_give_every_window_the_numbers_of_one_thread(free_tcp_port: int, geometry: bool) -> None:
    # The ingest processes hand each window over in shared memory with its numbers beside it;
    # without an envelope stage they normalize it themselves. Either way the model gets every
    # window exactly as one ingest thread gives it (its normalized samples and level, bit for
    # bit), so the labels are the same (the scores within float rounding: the model's last bits
    # vary with how windows share a batch), and with a bearing geometry the envelope stage sees
    # the same samples.
    require_cwru()
    streams = _streams(3.0)
    config = {"machine": {"bearing": "6205", "rpm": 1797}} if geometry else {}
    runs, evidence = [], []
    for procs in (1, 2):
        results: dict = {}
        pipe = _run_until_eos(free_tcp_port, procs, streams, pace=False, config=config, results=results)
        assert isinstance(pipe.sources[0], ShardedSource) == (procs == 2)
        assert (pipe.envelope is not None) == geometry
        runs.append(results)
        if geometry:
            evidence.append({sid: (r.to_json() if (r := pipe.envelope.latest(sid)) else None) for sid in streams})
    one, two = runs
    assert len(one) == len(streams) * ((3 * RATE // CHUNK * CHUNK - 2048) // 512 + 1)
    assert two.keys() == one.keys(), (sorted(set(one) ^ set(two))[:8], _why(pipe))  # the last run's
    assert [(two[k]["input"], two[k]["level"], two[k]["label"]) for k in sorted(one)] == \
        [(one[k]["input"], one[k]["level"], one[k]["label"]) for k in sorted(one)]
    assert max(float(np.abs(two[k]["probs"] - one[k]["probs"]).max()) for k in one) < 1e-4
    if geometry:
        assert evidence[0]["press-2"] is not None and evidence[1] == evidence[0]


@pytest.mark.parametrize("procs", [1, 2])
def test_the_envelope_analyses_each_stream_at_the_speed_its_frames_carry(free_tcp_port: int, procs: int) -> None:
    """A gateway with a tachometer sends each frame's shaft speed (the wire format's rpm). The
    envelope evidence is analysed at that speed, not at the configured nameplate speed (5 % off
    here: at it, the outer-race fault below reads as an inner-race one); a stream whose shaft
    stands still gets no evidence, and says so; one whose frames stop carrying a speed is analysed
    at the configured one from then on; one whose speed keeps falling (4 % per second, twice the
    lines' tolerance per block) is followed through it (order tracking) and named. The same read
    by one ingest thread or by two ingest processes (the speeds come from the processes)."""
    require_cwru()
    n = 3 * RATE
    slowing = np.linspace(1.0, 0.88, n)  # press-6's speed, as a share of its recording's
    streams = {"press-1": cwru_signal("12k_Drive_End_IR014_0_169.mat")[:n].astype(np.float32),
               "press-4": cwru_signal("12k_Drive_End_OR021@6_1_235.mat")[:n].astype(np.float32),
               "press-3": cwru_signal("12k_Drive_End_OR021@6_1_235.mat")[:n].astype(np.float32),
               "press-5": cwru_signal("12k_Drive_End_OR021@6_1_235.mat")[:n].astype(np.float32),
               "press-6": tool("eval_envelope").warp(cwru_signal("12k_Drive_End_IR014_0_169.mat"), RATE, slowing)}
    assert [shard_of(sid.encode(), 2) for sid in streams][:4] == [0, 1, 0, 1]
    speeds = {"press-1": 1797.0, "press-4": 1772.0, "press-3": 0.0, "press-5": 1772.0}

    def rpm(sid: str, seq: int) -> float | None:
        if sid == "press-6":  # each frame its mean speed, as a tachometer reads it
            return 1797.0 * float(slowing[seq * CHUNK : (seq + 1) * CHUNK].mean())
        return None if sid == "press-5" and seq >= n // CHUNK // 2 else speeds[sid]

    from drsn_stream.sinks.metrics import format_metrics

    class Notes(NoteSink):  # and the speed each prediction says its window was captured at
        def __init__(self) -> None:
            super().__init__()
            self.said: dict[str, list] = {}

        def write(self, obj: dict) -> None:
            super().write(obj)
            if obj.get("type") == "prediction":
                self.said.setdefault(obj["stream"], []).append(obj.get("rpm"))

    notes = Notes()
    pipe = _run_until_eos(free_tcp_port, procs, streams, config={"machine": {"bearing": "6205", "rpm": 1.05 * 1772}},
                          sink=notes, pace=False, rpm=rpm)
    latest = {sid: pipe.envelope.latest(sid) for sid in streams}
    # each prediction says the speed, the snapshot the latest (and so the Prometheus metrics)
    assert set(notes.said["press-4"]) == {1772.0} and set(notes.said["press-3"]) == {0.0}
    assert notes.said["press-5"][0] == 1772.0 and notes.said["press-5"][-1] is None
    metrics = format_metrics(pipe.snapshot())
    assert 'drsn_stream_shaft_rpm{stream="press-4"} 1772.0' in metrics and 'stream="press-5"} 1772' not in metrics
    assert isinstance(pipe.sources[0], ShardedSource) == (procs == 2)
    assert latest["press-1"] is not None and latest["press-1"].fault_type == "inner_race", _why(pipe)
    assert latest["press-4"] is not None and latest["press-4"].fault_type == "outer_race"
    assert abs(latest["press-4"].shaft_hz * 60 - 1772) < 1
    assert latest["press-3"] is None
    said = "\n".join(notes.lines)
    assert "press-4" in pipe.envelope.views() and "press-3" not in pipe.envelope.views()
    assert "shaft speed from the stream's frames (now 1772 rpm" in said, said
    assert "slower than 60 rpm" in said
    assert abs(latest["press-5"].shaft_hz * 60 - 1.05 * 1772) < 1
    assert [sid for sid, ln in notes.by_stream if "shaft 1861 rpm" in ln] == ["press-5"], notes.by_stream
    assert latest["press-6"] is not None and latest["press-6"].fault_type == "inner_race", _why(pipe)
    assert pipe.envelope.stats()["tracked"] >= 2 and latest["press-6"].shaft_hz * 60 < 1700
    assert [sid for sid, ln in notes.by_stream if "follows the shaft through changes" in ln] == ["press-6"]


def test_what_the_ingest_processes_refuse_is_said_once(free_tcp_port: int) -> None:
    """Messages every one of which is refused (a gateway stamping the 1970s), on streams of both
    processes: each process refuses its own and says so; the monitor says it once. Before, the
    processes' notes never reached the monitor: it said it waited for publishers, nothing more."""
    ids = ["gw-a", next(f"gw-{i}" for i in range(100) if shard_of(f"gw-{i}".encode(), 2) != shard_of(b"gw-a", 2))]
    pub = zmq.Context.instance().socket(zmq.PUB)
    pub.setsockopt(zmq.LINGER, 0)
    pub.bind(f"tcp://127.0.0.1:{free_tcp_port}")
    pipe = Pipeline(_config(free_tcp_port, 2, duration=30))
    notes = NoteSink()
    pipe.outputs.add(notes)
    pipe.start()
    try:
        x = np.zeros(CHUNK, dtype=np.float32)
        deadline, seq = time.monotonic() + 20, 0
        while time.monotonic() < deadline and pipe.sources[0].stats.malformed_total < 40:
            for sid in ids:
                pub.send_multipart(encode(sid, seq, 1e8 + seq * CHUNK / RATE, RATE, x))
            seq += 1
            pipe.wait(duration=0.05)
        pipe.wait(duration=1.5)  # the processes' next reports
        malformed = pipe.sources[0].stats.snapshot()["malformed"]
    finally:
        pub.close(0)
        pipe.stop()
    assert malformed.get("bad_time", 0) >= 40, malformed
    refused = [n for n in notes.lines if "refused: bad_time" in n and "years behind" in n]
    assert len(refused) == 1, notes.lines


@pytest.mark.slow
def test_ingest_processes_take_a_machines_stop_and_start_for_the_machines_where_its_baseline_knows_its_rest(
        free_tcp_port: int, tmp_path: Path, cli_in_process) -> None:
    """The sensor health of a stream runs in an ingest process, its baseline in the monitor's: the
    level its machine rests under is told to the processes, so its stop and start (the signal x200
    down to the sensor's noise for 4 s, and up again) are not an "amplitude step" there; the same
    signal on a stream with no baseline still is."""
    name = "12k_Drive_End_IR014_0_169.mat"
    prof = tmp_path / "p.json"
    res = cli_in_process("baseline", "learn", "--source", f"file:{require_cwru() / name}?stream=press-4",
                         "--out", str(prof))
    assert res.returncode == 0, res.stderr
    x = cwru_signal(name)
    rest = 1e-3 * np.random.default_rng(17).standard_normal(4 * RATE)
    sig = np.concatenate([x[: 4 * RATE], rest, x[4 * RATE : 7 * RATE]]).astype(np.float32)
    streams = {"press-4": sig, "press-2": sig.copy()}
    assert {shard_of(sid.encode(), 2) for sid in streams} == {0, 1}
    pipe = _run_until_eos(free_tcp_port, 2, streams, pace=True, config={"baseline": str(prof)})
    assert isinstance(pipe.sources[0], ShardedSource)
    steps = Counter(e.stream_id for e in pipe.events.recent(200)
                    if e.type == "health" and "amplitude step" in e.data.get("reasons", ()))
    assert steps == Counter({"press-2": 2}), (steps, _why(pipe))


def test_a_sensor_gone_quiet_while_the_frames_say_the_shaft_turns_is_judged_not_taken_for_a_rest(
        free_tcp_port: int) -> None:
    """A machine learned at 1797 rpm whose accelerometer then reads only faint noise (come loose,
    unplugged). By its level alone that is a machine at rest: held, no alarm, the fault it might
    hide unseen (no speed in its frames). Where the frames say the shaft still turns at its
    learned speed, it is no rest: judged, far from its normal, alarmed on, and said once as a
    sensor to check; where they say the shaft stopped, it is a rest as before. (One stream per
    run: a run's baselines are fitted one at a time, and a replay faster than real time would
    be seconds further along by a second stream's fit.)"""
    from scipy.signal import resample_poly

    x = resample_poly(cwru_signal("normal_0_97.mat"), 1, 4).astype(np.float32)  # 5 s, 48 -> 12 kHz
    cut = 8 * RATE  # 5 s learned, then judged
    faint = (np.random.default_rng(3).standard_normal(6 * RATE) * 1e-4 * float(np.std(x))).astype(np.float32)
    sig = np.concatenate([np.resize(x, cut), faint])
    speeds = {"turning": lambda seq: 1797.0, "none": lambda seq: None,
              "stopped": lambda seq: 0.0 if seq >= cut // CHUNK else 1797.0}

    class Keep(NoteSink):  # and the predictions and alarms
        def __init__(self) -> None:
            super().__init__()
            self.got: list[dict] = []

        def write(self, obj: dict) -> None:
            super().write(obj)
            if obj.get("type") in ("prediction", "alarm"):
                self.got.append(obj)

    runs = {}
    for case, speed in speeds.items():
        keep = Keep()
        got = keep.got
        port = free_tcp_port if case == "turning" else free_port()
        _run_until_eos(port, 1, {"press-1": sig}, config={"learn_s": 5.0}, sink=keep, pace=False,
                       rpm=lambda sid, seq, speed=speed: speed(seq))
        t0 = min(o["time"] for o in got if o["type"] == "prediction") - 2048 / RATE
        quiet = [o for o in got if o["type"] == "prediction" and (o["time"] - t0) * RATE > cut + 2048]
        alarms = [o for o in got if o["type"] == "alarm" and o["to"] != "NORMAL"]
        runs[case] = (quiet, alarms, [ln for _, ln in keep.by_stream if "the sensor come loose" in ln])
    quiet, alarms, said = runs["turning"]
    assert len(quiet) > 100 and all("anomaly" in o and o["anomaly"] > 4.0 for o in quiet), quiet[:2]
    assert alarms and len(said) == 1 and "shaft turns at 1797 rpm" in said[0]
    for case in ("none", "stopped"):  # held as at rest: neither judged nor labelled, no alarm
        quiet, alarms, said = runs[case]
        assert len(quiet) > 100 and all("anomaly" not in o and o["label"] == "unknown" for o in quiet), case
        assert not alarms and not said, case


def test_a_baseline_holds_the_windows_of_a_speed_it_never_learned_where_the_frames_carry_the_speed(
        free_tcp_port: int) -> None:
    """A machine learned at 1797 rpm, then run at 85 % of that speed (the recording's frequencies
    all moved: another set point), then back. Where its frames carry the speed, its baseline knows
    the speeds it was learned at: the windows at the other speed (and those over the changes) are
    shown unknown and not judged (no anomaly, no alarm), said once, and back at its speed it is
    judged again at once. The same signal without the speed raises a false alarm there."""
    from scipy.signal import resample_poly

    x = resample_poly(cwru_signal("normal_0_97.mat"), 1, 4).astype(np.float32)  # 5 s, 48 -> 12 kHz
    cut = 7 * RATE
    slow = resample_poly(x, 20, 17).astype(np.float32)  # 85 % of the speed: 20/17 as long
    sig = np.concatenate([np.resize(x, cut), slow, x])
    edges = [cut // CHUNK, (cut + len(slow)) // CHUNK]  # the frames where the speed changes
    streams = {"press-1": sig, "press-4": sig.copy()}

    def rpm(sid: str, seq: int) -> float | None:
        return None if sid == "press-4" else (0.85 * 1797 if edges[0] <= seq < edges[1] else 1797.0)

    got: list[dict] = []

    class Keep(NoteSink):
        def write(self, obj: dict) -> None:
            super().write(obj)
            if obj.get("type") in ("prediction", "alarm"):
                got.append(obj)

    keep = Keep()
    _run_until_eos(free_tcp_port, 1, streams, config={"learn_s": 5.0}, sink=keep, pace=False, rpm=rpm)
    t0 = min(o["time"] for o in got if o["type"] == "prediction") - 2048 / RATE
    part = {"press-1": Counter(), "press-4": Counter()}
    for o in got:
        if o["type"] != "prediction":
            continue
        at = (o["time"] - t0) * RATE
        # the windows wholly of the other speed, and those wholly back at the learned one
        where = "slow" if cut + 2048 <= at <= cut + len(slow) - 2048 else "back" if at > cut + len(slow) + 2048 else None
        if where is not None:
            part[o["stream"]][(where, "anomaly" in o, o["label"])] += 1
    slow1 = {k: n for k, n in part["press-1"].items() if k[0] == "slow"}
    assert slow1 and all(not judged and label == "unknown" for (_, judged, label) in slow1), part
    assert sum(n for (w, judged, _), n in part["press-1"].items() if w == "back" and judged) >= 10, part
    back = [o["anomaly"] for o in got if o["type"] == "prediction" and o["stream"] == "press-1" and "anomaly" in o
            and (o["time"] - t0) * RATE > cut + len(slow) + 2048]
    assert np.median(back) < 1.0, back  # as learned
    # the same signal without the speed: judged at the other speed, far from its normal, alarmed on
    assert any(judged for (w, judged, _) in part["press-4"] if w == "slow"), part
    alarms = Counter(o["stream"] for o in got if o["type"] == "alarm")
    assert alarms["press-1"] == 0 and alarms["press-4"] >= 1, [o for o in got if o["type"] == "alarm"]
    said = [ln for sid, ln in keep.by_stream if sid == "press-1" and "outside the speeds its baseline" in ln]
    assert len(said) == 1 and "runs at 1527 rpm" in said[0] and "(1797-1797 rpm)" in said[0], keep.by_stream
