"""Stream ids that stop for good (a gateway restarted under new names, a sensor replaced) give
their places to new ones once ``--max-streams`` are taken, instead of holding them for the rest of
the run while every new sensor is refused; channels a stream's new layout leaves out (renamed, fewer)
are no longer monitored instead of showing "no data" for good: a live monitor on a real ZeroMQ
socket on loopback."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zmq

from drsn_stream.app.pipeline import Pipeline, RunConfig
from drsn_stream.errors import ConfigError
from drsn_stream.sinks.jsonl import JsonlSink
from drsn_stream.sources.wire import encode, encode_eos

RATE = 12000.0
N = 600  # a frame every 50 ms


def _send(port: int, plan: list[tuple[float, float, list[str]]], t0: float, done: threading.Event,
          seq: dict[str, int]) -> None:
    """Every 50 ms, a frame of each stream whose (start, stop) span (s after t0) holds now; a
    stream named ``*/2ch`` sends 2-channel frames. ``seq``: the frames sent per stream."""
    push = zmq.Context.instance().socket(zmq.PUSH)
    push.connect(f"tcp://127.0.0.1:{port}")
    rng = np.random.default_rng(0)
    i = 0
    while not done.is_set():
        now = time.time() - t0
        if now > max(stop for _, stop, _ in plan):
            break
        for start, stop, ids in plan:
            if start <= now < stop:
                for sid in ids:
                    shape = (N, 2) if sid.endswith("2ch") else (N,)
                    x = (0.1 * rng.standard_normal(shape)).astype(np.float32)
                    push.send_multipart(encode(sid, seq.setdefault(sid, 0), time.time() - N / RATE, RATE, x))
                    seq[sid] += 1
        i += 1
        time.sleep(max(0.0, t0 + 0.05 * i - time.time()))
    push.close(0)


def _run(tmp_path: Path, port: int, plan: list[tuple[float, float, list[str]]],
         **cfg: object) -> tuple[Pipeline, list[dict], dict[str, int]]:
    """The plan sent to a live monitor until its source has taken or refused every frame sent;
    the monitor, what it wrote, and the frames sent per stream."""
    import json

    config = RunConfig(sources=(f"zmq+pull+bind://127.0.0.1:{port}",), engine_process=False, threads=1,
                       stale_ms=60_000.0, health={"timeout_s": 0.5}, **cfg)
    pipe = Pipeline(config, sinks=[JsonlSink(tmp_path / "out.jsonl", flush_every=1)])
    done = threading.Event()
    pipe.start()
    waiter = threading.Thread(target=pipe.wait, daemon=True)  # its loop says the notes and ticks the health
    try:
        waiter.start()
        sent: dict[str, int] = {}
        sender = threading.Thread(target=_send, args=(port, plan, time.time(), done, sent), daemon=True)
        sender.start()
        sender.join(timeout=60)
        stats = pipe.sources[0].stats
        deadline = time.monotonic() + 60
        while stats.frames + stats.malformed_total < sum(sent.values()) and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(1.0)  # the last windows through the engine and the output thread
    finally:
        done.set()
        pipe.quit.set()
        waiter.join(timeout=10)
        pipe.stop()
    objs = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    return pipe, objs, sent


@contextmanager
def _live(port: int, procs: int, **cfg: Any) -> Iterator[tuple[Pipeline, zmq.Socket, list[str]]]:
    """A running monitor of one ZeroMQ source (``procs`` 2: read by 2 ingest processes, the test's
    PUB binding; 1: a PULL the test's PUSH connects to), the test's socket, and the notes said."""
    from drsn_stream.app.shards import ShardedSource

    spec = f"zmq+pull+bind://127.0.0.1:{port}" if procs == 1 else f"zmq://127.0.0.1:{port}"
    pipe = Pipeline(RunConfig(sources=(spec,), engine_process=False, threads=1, ingest_procs=procs, **cfg))
    assert isinstance(pipe.sources[0], ShardedSource) == (procs == 2)
    said: list[str] = []
    emit = pipe._emit_events
    pipe._emit_events = lambda events: (said.extend(e.data.get("message", "") for e in events if e.type == "note"),
                                        emit(events))[-1]
    pipe.start()
    waiter = threading.Thread(target=pipe.wait, daemon=True)
    waiter.start()
    push = zmq.Context.instance().socket(zmq.PUSH if procs == 1 else zmq.PUB)
    try:
        if procs == 1:
            push.connect(f"tcp://127.0.0.1:{port}")
        else:
            push.bind(f"tcp://127.0.0.1:{port}")
            time.sleep(1.5)  # the ingest processes connect and subscribe
        yield pipe, push, said
    finally:
        push.close(0)
        pipe.quit.set()
        waiter.join(timeout=10)
        pipe.stop()


@pytest.mark.slow
def test_silent_streams_give_their_places_to_new_ones(tmp_path: Path, free_tcp_port: int) -> None:
    """--max-streams 4: "live" sends throughout; a0 and a1 stop at 1.5 s, a 2-channel a2 at 2 s,
    when b0 and b1 start. Each new id takes the place of the stream silent the longest once it
    has been silent for --reclaim-after (1 s), said in a note naming both: a0 and a1; "live" is
    never retired; a2, whose place nobody needs, stays, shown as "no data"."""
    plan = [(0.0, 5.0, ["live"]), (0.0, 1.5, ["a0", "a1"]), (0.0, 2.0, ["a2/2ch"]), (2.0, 5.0, ["b0", "b1"])]
    pipe, objs, sent = _run(tmp_path, free_tcp_port, plan, max_streams=4, reclaim_after_s=1.0)
    notes = [o for o in objs if o["type"] == "note" and "retired" in o["message"]]
    retired = {o["stream"] for o in notes}
    assert retired == {"a0", "a1"}, [o["message"] for o in notes]
    for o in notes:
        assert "without data" in o["message"] and "new stream b" in o["message"], o["message"]
    preds = [o for o in objs if o["type"] == "prediction"]
    for sid in ("live", "b0", "b1"):
        assert [p for p in preds if p["stream"] == sid], f"no results for {sid}"
    # the places were free only once a0 and a1 had been silent 1 s: b's frames before were refused
    final = [o for o in objs if o["type"] == "stats" and o.get("final")][-1]
    refused = next(iter(final["sources"].values()))["malformed"].get("too_many_streams", 0)
    assert 0 < refused < sent["b0"] + sent["b1"], (refused, sent)
    assert next(iter(final["sources"].values()))["retired"] == 2
    # the retired streams' state is gone everywhere; the one still silent is kept and shown
    assert set(pipe.ingest.dsp) == {"live", "a2/2ch", "b0", "b1"}
    assert not {"a0", "a1"} & set(pipe.health.streams)
    assert not {"a0", "a1"} & set(pipe.decisions.streams)
    assert "no data" in pipe.health.state("a2/2ch/ch0").reasons


@pytest.mark.slow
def test_with_reclaim_off_new_ids_are_refused_as_before(tmp_path: Path, free_tcp_port: int) -> None:
    """--reclaim-after 0: the places stay taken, the new ids are refused and counted."""
    plan = [(0.0, 1.5, ["a0", "a1"]), (1.5, 3.5, ["b0"])]
    pipe, objs, sent = _run(tmp_path, free_tcp_port, plan, max_streams=2, reclaim_after_s=0.0)
    assert not [o for o in objs if o["type"] == "note" and "retired" in o["message"]]
    assert not [o for o in objs if o["type"] == "prediction" and o["stream"] == "b0"]
    final = [o for o in objs if o["type"] == "stats" and o.get("final")][-1]
    assert next(iter(final["sources"].values()))["malformed"]["too_many_streams"] == sent["b0"], sent
    assert set(pipe.ingest.dsp) == {"a0", "a1"}


def test_reclaim_after_is_checked() -> None:
    for bad in (-1.0, float("nan"), float("inf")):
        with pytest.raises(ConfigError, match="reclaim_after_s"):
            RunConfig(reclaim_after_s=bad)


def test_the_monitor_wide_limit_takes_the_place_of_any_sources_silent_stream() -> None:
    """Two sources share --max-streams 2 (the monitor's own table, not one source's): a new id of
    source 2 takes the place of source 1's stream once that has been silent --reclaim-after, not
    before, and never that of a stream with a frame in the same poll."""
    from drsn_stream.app.ingest import Ingest
    from drsn_stream.models.artifact import read_meta
    from drsn_stream.monitor.health import HealthMonitor
    from drsn_stream.sources.base import Source
    from drsn_stream.types import Frame

    meta = read_meta("bearing-cwru")
    health = HealthMonitor()
    said: list[tuple[str, tuple[str, ...], str]] = []
    ingest = Ingest(meta, None, health, 2, on_events=lambda events: None, on_error=lambda line: None,
                    reclaim_after_s=0.3, on_retire=lambda *args: said.append(args))
    one, two = Source(), Source()
    x = np.zeros((512, 1), np.float32) + np.float32(0.01) * np.arange(512, dtype=np.float32)[:, None]

    def frame(sid: str, seq: int) -> Frame:
        return Frame(sid, seq, time.time(), meta.sample_rate, x)

    ingest.frames([frame("busy", 0)], two)
    ingest.frames([frame("old", 0)], one)
    ingest.frames([frame("new", 0)], two)  # nothing silent long enough: refused
    assert set(ingest.dsp) == {"old", "busy"} and two.stats.snapshot()["malformed"] == {"too_many_streams": 1}
    time.sleep(0.4)
    ingest.frames([frame("busy", 1), frame("new", 1)], two)  # "busy", silent longer, sends in this poll
    assert set(ingest.dsp) == {"busy", "new"}
    assert [(sid, ids) for sid, ids, _ in said] == [("old", ("old",))]
    assert "old" not in health.streams and "new" in health.streams
    assert "its place goes to new stream new" in said[0][2]


def _shard0_names(n: int, shard: int = 0) -> list[str]:
    """``n`` stream ids that the first (or ``shard``) of 2 ingest processes owns."""
    from drsn_stream.app.shards import shard_of

    return [f"s{k}" for k in range(200) if shard_of(f"s{k}".encode(), 2) == shard][:n]


def _through_ingest_processes(port: int, plan: list[tuple[float, float, list[str]]], seconds: float,
                              signal: dict[str, np.ndarray] | None = None,
                              **cfg: Any) -> tuple[Pipeline, list[tuple[str, str]], dict]:
    """The plan published (an XPUB on loopback, every 50 ms a frame of each stream whose span
    holds; ``signal``: a stream's samples, else noise) for ``seconds`` to a monitor whose 2 ingest
    processes read it; the monitor, the notes it said, and its label counts at the end."""
    from drsn_stream.app.shards import ShardedSource

    config = RunConfig(sources=(f"zmq://127.0.0.1:{port}",), device="cpu", engine_process=False,
                       ingest_procs=2, stale_ms=60000, health={"timeout_s": 0.5}, **cfg)
    pipe = Pipeline(config)
    said: list[tuple[str, str]] = []
    emit = pipe._emit_events
    pipe._emit_events = lambda events: (said.extend((e.stream_id, e.data.get("message", "")) for e in events
                                                    if e.type == "note"), emit(events))[-1]
    assert isinstance(pipe.sources[0], ShardedSource)
    pipe.start()
    waiter = threading.Thread(target=pipe.wait, daemon=True)
    pub = zmq.Context.instance().socket(zmq.XPUB)
    try:
        waiter.start()
        pub.setsockopt(zmq.XPUB_VERBOSE, 1)
        pub.bind(f"tcp://127.0.0.1:{port}")
        heard, deadline = 0, time.time() + 60
        while heard < 2 and time.time() < deadline:  # both processes subscribed to everything
            if pub.poll(100) and pub.recv() == b"\x01":
                heard += 1
        assert heard == 2
        rng = np.random.default_rng(0)
        t0, i, seq = time.time(), 0, {}
        while time.time() - t0 < seconds:
            now = time.time() - t0
            for start, stop, ids in plan:
                for sid in ids if start <= now < stop else ():
                    k = seq.setdefault(sid, 0)
                    if signal is not None and sid in signal:
                        x = signal[sid][k * N % (len(signal[sid]) - N):][:N]
                    else:
                        x = (0.1 * rng.standard_normal(N)).astype(np.float32)
                    pub.send_multipart(encode(sid, k, time.time() - N / RATE, RATE, x))
                    seq[sid] += 1
            i += 1
            time.sleep(max(0.0, t0 + 0.05 * i - time.time()))
        time.sleep(1.5)  # the last reports, windows and results
        preds = dict(pipe.label_counts)
    finally:
        pipe.quit.set()
        waiter.join(timeout=10)
        pipe.stop()
        pub.close(0)
    return pipe, said, preds


@pytest.mark.slow
def test_ingest_processes_retire_silent_streams_and_the_monitor_forgets_them(free_tcp_port: int) -> None:
    """--ingest-procs 2, --max-streams 3: each process keeps its own table of the streams of its
    shard. A generation of ids in one shard is replaced by another: the process retires the
    silent ones for the new ids, and the monitor drops them from its sources, health mirror and
    decisions, and says so in a note."""
    names = _shard0_names(5)
    live, a, b = names[0], names[1:3], names[3:5]
    plan = [(0.0, 6.0, [live]), (0.0, 2.0, a), (2.5, 6.0, b)]
    pipe, said, preds = _through_ingest_processes(free_tcp_port, plan, 6.0, max_streams=3, reclaim_after_s=1.0)
    src = pipe.sources[0]
    retired = sorted(sid for sid, line in said if "retired" in line)
    assert retired == sorted(a), said
    assert all(preds.get(sid) for sid in (live, *b)), preds
    assert not set(a) & set(src.streams) and set(b) <= set(src.streams)
    assert not set(a) & set(pipe.health.streams) and not set(a) & set(pipe.decisions.streams)
    assert src.stats.snapshot()["retired"] == 2
    # the new streams' windows came under the codes the retired ones had: the table of codes
    # stays as large as the streams held (their results above are theirs, not the old ids')
    assert sorted(src._children[0].ids) == sorted([live, *b]), src._children[0].ids


def test_a_retired_streams_latencies_leave_with_it_and_its_row_is_reused() -> None:
    from drsn_stream.engine.stats import EngineStats

    stats = EngineStats()
    stats.record_batch(["a", "b"], np.array([900.0, 10.0]), 0.001)
    stats.forget("a")
    stats.record_batch(["c"], np.array([20.0]), 0.001)
    assert stats.stream_p50_p99(["a", "b", "c"]).keys() <= {"b", "c"}
    assert stats.percentiles("c")[0] == 20.0  # not the 900 ms of the stream whose row it took
    assert len(stats._lat_n) == 64 and stats.windows == 3


def test_a_forgotten_streams_health_state_is_freed() -> None:
    """The health's groups of streams (its array path) no longer keep a forgotten stream's state
    alive: a monitor retiring ids for months does not grow by them."""
    import gc
    import weakref

    from drsn_stream.monitor.health import HealthMonitor
    from drsn_stream.types import Frame

    health = HealthMonitor()
    ids = [f"s{k}" for k in range(64)]
    x = np.linspace(-1, 1, 600, dtype=np.float32)[:, None]
    for seq in range(3):  # known streams of one round: the array path, through its groups
        health.push_channels([Frame(sid, seq, 0.0, RATE, x) for sid in ids], now=float(seq))
    refs = [weakref.ref(health._streams[sid]) for sid in ids]
    for sid in ids:
        health.forget(sid)
    gc.collect()
    assert not [r for r in refs if r() is not None]


@pytest.mark.slow
@pytest.mark.parametrize("procs", [1, 2])
def test_channels_a_new_layout_leaves_out_are_no_longer_monitored(tmp_path: Path, free_tcp_port: int,
                                                                   procs: int) -> None:
    """A gateway module renames its channels (x, y -> axial, radial), another goes from 4 channels
    to 2: the channels left out leave the health and the decisions (once their last windows are
    through), said in one note each; before, they showed "no data" for the rest of the run. The
    same through 2 ingest processes."""
    rng = np.random.default_rng(0)
    with _live(free_tcp_port, procs, stale_ms=1000.0, health={"timeout_s": 1.0}) as (pipe, push, said):
        t0, i = time.time(), 0
        while time.time() - t0 < 6.0:
            late = time.time() - t0 >= 2.0
            x = (0.1 * rng.standard_normal((N, 4))).astype(np.float32)
            push.send_multipart(encode("gw/a", i, time.time() - N / RATE, RATE, x[:, :2],
                                       names=("axial", "radial") if late else ("x", "y")))
            push.send_multipart(encode("gw/b", i, time.time() - N / RATE, RATE, x[:, :2] if late else x))
            i += 1
            time.sleep(max(0.0, t0 + 0.05 * i - time.time()))
        health, decisions = set(pipe.health.streams), set(pipe.decisions.streams)
        scored = dict(pipe.label_counts)
    now = {"gw/a/axial", "gw/a/radial", "gw/b/ch0", "gw/b/ch1"}
    assert health == now, health
    assert decisions == now, decisions
    assert all(scored.get(sid) for sid in now), scored
    lines = [line for line in said if "no longer monitored" in line]
    assert any("(x, y -> axial, radial): gw/a/x, gw/a/y" in line for line in lines), said
    assert any("gw/b/ch2, gw/b/ch3 no longer" in line for line in lines), said


@pytest.mark.slow
@pytest.mark.parametrize("procs", [1, 2])
def test_a_stream_that_announced_its_end_is_no_sensor_fault(tmp_path: Path, free_tcp_port: int, procs: int) -> None:
    """A publisher ends two of its streams with end of stream (one of 2 channels) while a third
    goes on: their silence is no "no data" (before: CHECK_SENSOR for the rest of the run). One of
    them then sends again and stops without a word: that silence is "no data" again."""
    from drsn_stream.sources.wire import encode_eos

    rng = np.random.default_rng(0)
    with _live(free_tcp_port, procs, stale_ms=60_000.0, health={"timeout_s": 0.5}) as (pipe, push, _):

        def states() -> dict[str, tuple[str, tuple[str, ...]]]:
            return {sid: (h.state, h.reasons) for sid, h in pipe.health.states().items()}

        t0, i, ended, seen = time.time(), 0, False, {}
        while time.time() - t0 < 6.0:
            now = time.time() - t0
            x = (0.1 * rng.standard_normal((N, 2))).astype(np.float32)
            push.send_multipart(encode("live", i, time.time() - N / RATE, RATE, x[:, 0]))
            if now < 1.5 or 4.0 <= now < 4.5:
                push.send_multipart(encode("ends", i, time.time() - N / RATE, RATE, x[:, 1]))
            if now < 1.5:
                push.send_multipart(encode("ends2", i, time.time() - N / RATE, RATE, x))
            elif not ended:
                push.send_multipart(encode_eos("ends"))
                push.send_multipart(encode_eos("ends2"))
                ended = True
            if 3.5 <= now and "after the end" not in seen:
                seen["after the end"] = states()
            i += 1
            time.sleep(max(0.0, t0 + 0.05 * i - time.time()))
        after_silence = states()
    quiet = seen["after the end"]  # 2 s after the ends, 4 timeouts of silence
    assert {sid: quiet[sid] for sid in ("live", "ends", "ends2/ch0", "ends2/ch1")} == dict.fromkeys(
        ("live", "ends", "ends2/ch0", "ends2/ch1"), ("OK", ())), quiet
    assert after_silence["ends"] == ("CHECK_SENSOR", ("no data",)), after_silence  # sent again, then silent
    assert after_silence["ends2/ch0"] == ("OK", ()) and after_silence["live"] == ("OK", ()), after_silence


def test_an_end_of_stream_clears_a_no_data_already_shown() -> None:
    from drsn_stream.monitor.health import HealthMonitor
    from drsn_stream.types import Frame

    health = HealthMonitor()
    health.push(Frame("s", 0, 0.0, RATE, np.linspace(-1, 1, 600, dtype=np.float32)), now=0.0)
    events = health.tick(now=10.0)
    assert [e.data["to"] for e in events] == ["CHECK_SENSOR"]
    events = health.end(["s", "unknown"], now=11.0)
    assert [(e.data["from"], e.data["to"]) for e in events] == [("CHECK_SENSOR", "OK")]
    assert health.tick(now=100.0) == [] and health.state("s").ok


@pytest.mark.slow
def test_a_source_that_came_to_its_end_leaves_no_sensor_fault_behind() -> None:
    """Two simulators, one of 1.5 s: once it has ended, its stream shows no "no data" while the
    other goes on (before: CHECK_SENSOR for the rest of the run)."""
    config = RunConfig(sources=("sim:bearing?machines=1&duration=1.5", "sim:bearing?machines=1&first=1"),
                       engine_process=False, threads=1, health={"timeout_s": 0.5})
    pipe = Pipeline(config)
    pipe.start()
    waiter = threading.Thread(target=pipe.wait, daemon=True)
    try:
        waiter.start()
        time.sleep(4.0)
        states = {sid: (h.state, h.reasons) for sid, h in pipe.health.states().items()}
        ended = id(pipe.sources[0]) in pipe._ended_sources
    finally:
        pipe.quit.set()
        waiter.join(timeout=10)
        pipe.stop()
    assert ended
    assert states == {"sim/m0": ("OK", ()), "sim/m1": ("OK", ())}, states


def test_a_stream_holding_an_alarm_not_yet_acknowledged_keeps_its_place() -> None:
    """Retiring a silent stream whose alarm nobody has acknowledged would make the alarm vanish
    unseen: such a stream keeps its place (the new id is refused, and a line says what to do), the
    next silent one gives its place instead, and after the acknowledgement it can go too."""
    from drsn_stream.app.ingest import Ingest
    from drsn_stream.models.artifact import read_meta
    from drsn_stream.monitor.health import HealthMonitor
    from drsn_stream.sources.base import Source
    from drsn_stream.types import Frame

    meta = read_meta("bearing-cwru")
    alarmed = {"alarm"}
    lines: list[str] = []
    ingest = Ingest(meta, None, HealthMonitor(), 2, on_events=lambda events: None, on_error=lines.append,
                    reclaim_after_s=0.2, keep=lambda ids: alarmed & set(ids))
    src = Source()
    x = np.zeros((512, 1), np.float32) + np.float32(0.01) * np.arange(512, dtype=np.float32)[:, None]

    def send(sid: str) -> None:
        ingest.frames([Frame(sid, 0, time.time(), meta.sample_rate, x)], src)

    send("alarm")
    time.sleep(0.05)
    send("quiet")
    time.sleep(0.3)
    send("new-1")  # "alarm" is the quietest, but keeps its place: "quiet" gives its own
    assert set(ingest.dsp) == {"alarm", "new-1"}
    send("new-2")  # nothing but "alarm" is silent long enough
    assert set(ingest.dsp) == {"alarm", "new-1"}
    assert any("not yet acknowledged" in line for line in lines), lines
    alarmed.clear()  # acknowledged
    time.sleep(0.3)
    send("new-3")  # "alarm", the quietest, goes now
    assert set(ingest.dsp) == {"new-1", "new-3"}


@pytest.mark.slow
def test_ingest_processes_never_retire_a_stream_holding_an_alarm_not_yet_acknowledged(free_tcp_port: int) -> None:
    """--ingest-procs 2, --max-streams 3: a bearing sending an inner-race fault raises a real alarm,
    then falls silent beside a healthy one. New ids come: the healthy silent stream gives its
    place, the alarmed one keeps it (the monitor told the process of the alarm): the next new id is
    refused and a line says to acknowledge, and the alarm is still there to be seen."""
    names = _shard0_names(5)
    live, alarmed, quiet, b = names[0], names[1], names[2], names[3:5]
    data = np.load(Path(__file__).resolve().parents[1] / "drsn_stream" / "data" / "cwru_excerpts.npz")
    fault = (data["inner_014"] * float(data["inner_014__scale"])).astype(np.float32)
    plan = [(0.0, 7.0, [live]), (0.0, 2.5, [alarmed, quiet]), (4.0, 7.0, b)]
    pipe, said, _ = _through_ingest_processes(free_tcp_port, plan, 7.0, {alarmed: fault}, max_streams=3,
                                              reclaim_after_s=1.0)
    src = pipe.sources[0]
    assert pipe.decisions.unacknowledged([alarmed]) == {alarmed}, pipe.decisions.state(alarmed)
    retired = sorted(sid for sid, line in said if "retired" in line)
    assert retired == [quiet], said
    assert alarmed in src.streams and b[0] in src.streams and b[1] not in src.streams, src.streams
    assert any("not yet acknowledged" in line for line in pipe.errors), pipe.errors


@pytest.mark.slow
def test_the_runs_record_of_retired_streams_is_folded_into_totals(tmp_path: Path, free_tcp_port: int,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """Generation after generation of ids replaced (a gateway restarted under new names, again and
    again): the per-stream record (windows per label, drops, alarm counts) keeps the streams
    monitored only, the retired ones' windows move into the run's totals, and no window is lost
    from the count; the summary says how many streams went."""
    from drsn_stream.app import pipeline as pipeline_mod

    monkeypatch.setattr(pipeline_mod, "FOLD_GONE", 2)
    gens = [[f"g{g}/{k}" for k in range(2)] for g in range(4)]
    plan = [(0.0, 5.5, ["live"])] + [(1.5 * g, 1.5 * g + 1.0, ids) for g, ids in enumerate(gens)]
    pipe, objs, _ = _run(tmp_path, free_tcp_port, plan, max_streams=3, reclaim_after_s=0.4)
    retired = sorted(o["stream"] for o in objs if o["type"] == "note" and "retired" in o["message"])
    assert retired == sorted(sid for ids in gens[:3] for sid in ids), retired
    counts = pipe.label_counts
    assert set(counts) <= {"live", *gens[3]} and counts.get("live"), counts
    assert pipe.gone_streams == 6 and sum(pipe.gone_tally.values()) > 0
    scored = sum(1 for o in objs if o["type"] == "prediction")
    assert sum(sum(c.values()) for c in counts.values()) + sum(pipe.gone_tally.values()) == scored
    assert "6 streams no longer monitored" in pipe.summary()
    final = [o for o in objs if o["type"] == "stats" and o.get("final")][-1]
    assert "of_streams_gone" in final["dropped"] and next(iter(final["sources"].values()))["retired"] == 6


def test_a_retired_streams_source_counters_move_into_the_totals_of_streams_gone() -> None:
    """A source's per-stream counters (gaps, duplicates ...) of a stream that gave its place
    leave the per-stream record and add to ``gone``: the totals stay whole."""
    from drsn_stream.sources.base import Source

    src = Source()
    for sid in ("a", "b"):
        assert src._known(sid)
    src.stats.gap("a", 3)
    src.stats.duplicate("a")
    src.stats.gap("b", 1)
    src.forget_stream("a")
    snap = src.stats.snapshot()
    assert snap["gaps"] == {"b": 1} and snap["missing"] == {"b": 1} and snap["duplicates"] == {}
    assert snap["gone"] == {"gaps": 1, "missing": 3, "duplicates": 1} and snap["retired"] == 1
    src.forget_stream("b", retired=False)  # handed over to another host: not retired, its counts gone all the same
    snap = src.stats.snapshot()
    assert snap["gaps"] == {} and snap["gone"]["gaps"] == 2 and snap["retired"] == 1


@pytest.mark.parametrize("order", ["silent_first", "new_id_first", "new_id_and_its_end_first"])
def test_a_stream_with_a_frame_in_the_poll_of_a_new_id_keeps_its_place(free_tcp_port: int, order: str) -> None:
    """A real ZeroMQ source with room for 2 ids, both silent longer than --reclaim-after: in one
    poll, a frame of the quietest and a new id's first frame, in either order (or the new id's
    first frame and its end of stream, then the quietest's frame). The source asks for room once
    the poll's messages are all in, before handing them over; the stream that just sent keeps its
    place and the other silent one gives its own (before, the one that just sent was retired, and
    its frame came back as a new stream's: always where its frame came first, and still where it
    came after the new id's (or its end's), which the source had asked room for on the spot)."""
    from drsn_stream.app.ingest import Ingest
    from drsn_stream.models.artifact import read_meta
    from drsn_stream.monitor.health import HealthMonitor
    from drsn_stream.sources import make_source

    meta = read_meta("bearing-cwru")
    said: list[tuple[str, tuple[str, ...], str]] = []
    ingest = Ingest(meta, None, HealthMonitor(), 8, on_events=lambda events: None, on_error=lambda line: None,
                    reclaim_after_s=0.3, on_retire=lambda *args: said.append(args))
    src = make_source(f"zmq+pull+bind://127.0.0.1:{free_tcp_port}")
    src.max_streams = 2
    src.make_room = lambda new_id: ingest.make_room(src, new_id)
    push = zmq.Context.instance().socket(zmq.PUSH)
    push.connect(f"tcp://127.0.0.1:{free_tcp_port}")
    x = (0.1 * np.random.default_rng(0).standard_normal(N)).astype(np.float32)

    def send(*frames: tuple[str, int | None]) -> list[str]:
        for sid, seq in frames:  # seq None: an end of stream
            push.send_multipart(encode(sid, seq, time.time(), RATE, x) if seq is not None else encode_eos(sid))
        time.sleep(0.2)  # all of them queued at the source's socket: one poll takes them
        batch = next(batches)
        ingest.frames(batch, src)
        return [f.stream_id for f in batch]

    try:
        with src:
            batches = src.batches()
            assert send(("old", 0)) == ["old"]
            assert send(("quiet", 0)) == ["quiet"]
            time.sleep(0.5)  # both silent longer than --reclaim-after, "old" the longest
            poll = {"silent_first": [("old", 1), ("new", 0)], "new_id_first": [("new", 0), ("old", 1)],
                    "new_id_and_its_end_first": [("new", 0), ("new", None), ("old", 1)]}[order]
            assert sorted(send(*poll)) == ["new", "old"]
            # the new stream's next frames are those of a known stream (after its end: a new sequence)
            assert sorted(send(("new", 1), ("old", 2))) == ["new", "old"]
    finally:
        push.close(0)
    assert [sid for sid, _, _ in said] == ["quiet"], said
    assert ("new" in src.stats.snapshot()["ended"]) == (order == "new_id_and_its_end_first")
    assert sorted(src.streams) == ["new", "old"] and sorted(ingest.dsp) == ["new", "old"]
    stats = src.stats.snapshot()
    assert not stats["malformed"].get("too_many_streams") and stats["gaps"] == {}, stats


@pytest.mark.slow
def test_a_stream_retired_by_the_second_ingest_process_is_read_again_when_it_comes_back(free_tcp_port: int) -> None:
    """--ingest-procs 2, streams of the second process: once it has taken its own topics, it drops
    the topic of a stream it retires (the publisher stops sending it there: a process's topics
    stay as many as its streams however many ids come and go), and the first process announces
    the topic again when the stream comes back, so that it is read and monitored again."""
    live, a, b = _shard0_names(3, shard=1)
    plan = [(0.0, 9.5, [live]), (0.0, 2.0, [a]), (5.0, 6.0, [b]), (7.5, 9.5, [a])]
    pipe, said, preds = _through_ingest_processes(free_tcp_port, plan, 9.5, max_streams=2, reclaim_after_s=1.0)
    src = pipe.sources[0]
    retired = [(sid, line) for sid, line in said if "retired" in line]
    assert [sid for sid, _ in retired] == [a, b], said
    assert f"new stream {a}" in retired[1][1]  # a came back through its own process
    assert preds.get(live) and a in src.streams and b not in src.streams
    assert src._children[1].subscriptions == 2, src._children[1].subscriptions  # live and a; b's dropped
