"""Cluster mode without Ray: the hash ring, the shard source, checkpointed hand-over between two real
host pipelines, the aggregator's one dashboard and Prometheus endpoint, and that the single-machine
monitor never imports Ray. (The same parts on a real Ray cluster: tests/test_cluster_ray.py.)"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zmq
from helpers import free_port as _free_port
from helpers import wait_until

from drsn_stream.cluster.aggregator import Aggregator, ClusterCollector
from drsn_stream.cluster.coordinator import listen_for_streams
from drsn_stream.cluster.ring import HashRing
from drsn_stream.cluster.shard_source import ShardSource
from drsn_stream.cluster.state import CheckpointStore, StreamCheckpoint
from drsn_stream.sources.wire import encode
from drsn_stream.view import Header, Snapshot, StreamRow

ROOT = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------------------------ ring
def test_ring_moves_about_one_nth_when_a_host_joins_or_leaves() -> None:
    streams = [f"plant/line{i // 50}/ch{i}" for i in range(3000)]
    three = HashRing(["a", "b", "c"]).assign(streams)
    assert sorted(s for ss in three.values() for s in ss) == sorted(streams)  # each stream exactly once
    shares = [len(ss) / len(streams) for ss in three.values()]
    assert max(shares) < 1 / 3 * 1.25 and min(shares) > 1 / 3 * 0.75

    before = {s: h for h, ss in three.items() for s in ss}
    four = HashRing(["c", "a", "d", "b"])  # the order hosts were added does not matter
    moved = [s for s in streams if four.owner(s) != before[s]]
    assert all(four.owner(s) == "d" for s in moved)  # only to the new host
    assert 0.15 < len(moved) / len(streams) < 0.25 * 1.3

    two = HashRing(["a", "c"])
    moved = [s for s in streams if two.owner(s) != before[s]]
    assert {before[s] for s in moved} == {"b"}  # only the leaving host's streams move
    assert HashRing().owner("x") is None


def test_no_host_is_given_more_than_it_can_hold_while_another_has_room() -> None:
    """The ring spreads few ids unevenly (the coordinator's 6 ids on 3 hosts of --max-streams 2
    came out 4/1/1, and the host given 4 refused 2 while the others had room): with a cap each host
    holds at most its share, streams already placed stay where they are when new ones come or a
    host joins, and where every host is full the ring owner takes the rest (and refuses it)."""
    ring = HashRing(["a", "b", "c"])
    ids = [f"sim/m{i}" for i in range(6, 12)]
    plain = Counter(ring.owner(s) for s in ids)
    assert max(plain.values()) > 2, plain  # the uneven spread this is about
    placed = ring.place(ids, cap=2)
    assert sorted(placed) == sorted(ids) and Counter(placed.values()) == {"a": 2, "b": 2, "c": 2}
    assert ring.place(ids, cap=2) == placed == HashRing(["c", "b", "a"]).place(list(reversed(ids)), cap=2)
    assert ring.place(ids) == {s: ring.owner(s) for s in ids}  # no cap: the ring alone

    streams = [f"plant/line{i // 50}/ch{i}" for i in range(3000)]
    now = ring.place(streams, cap=1050)
    assert max(Counter(now.values()).values()) <= 1050
    more = ring.place([*streams, "plant/new/0", "plant/new/1"], cap=1050, keep=now)
    assert all(more[s] == now[s] for s in streams)  # new streams move no other
    ring4 = HashRing(["a", "b", "c", "d"])
    four = ring4.place(streams, cap=1050, keep=now)
    moved = [s for s in streams if four[s] != now[s]]
    away = [s for s in streams if now[s] != ring.owner(s)]  # beyond their owner's cap on three hosts
    assert away and max(Counter(four.values()).values()) <= 1050
    # to the new host, or back to their own host, which has room now; nothing else moves
    assert moved and all(four[s] == "d" or s in away and four[s] == ring4.owner(s) for s in moved)
    assert len(moved) < len(streams) * 0.25 * 1.3 + len(away)

    full = ring.place([*ids, "sim/m99"], cap=2)  # seven streams, six places: one host is given three
    assert sorted(Counter(full.values()).values()) == [2, 2, 3]


# ------------------------------------------------------------------------------------ shard source
def test_shard_source_receives_only_its_streams_and_follows_changes() -> None:
    port = _free_port()
    ctx = zmq.Context.instance()
    pub = ctx.socket(zmq.PUB)
    pub.setsockopt(zmq.LINGER, 0)
    pub.bind(f"tcp://127.0.0.1:{port}")
    src = ShardSource(f"127.0.0.1:{port}")
    src.set_streams(["m1"])
    got: list[str] = []
    firsts: list[str] = []
    src.on_first_frame = lambda sid, frame: firsts.append(sid)
    import threading

    def read() -> None:
        for frame in src:
            got.append(frame.stream_id)

    t = threading.Thread(target=read, daemon=True)
    t.start()
    x = np.zeros((64, 1), np.float32)

    def burst(seq: int) -> None:
        for sid in ("m1", "m10", "m2"):  # "m1" is a prefix of "m10": ZeroMQ lets it through
            pub.send_multipart(encode(sid, seq, time.time(), 12000.0, x))

    try:
        deadline = time.time() + 10
        seq = 0
        while "m1" not in got and time.time() < deadline:
            burst(seq)
            seq += 1
            time.sleep(0.05)
        assert set(got) == {"m1"} and src.foreign > 0
        assert src.streams == ["m1"]  # "m10" took no place in this host's --max-streams table
        src.set_streams(["m2"])
        n = len(got)
        while "m2" not in got[n:] and time.time() < deadline:
            burst(seq)
            seq += 1
            time.sleep(0.05)
        later = got[n + 1:]
        assert "m2" in got[n:] and "m10" not in got
        assert src.subscribed == frozenset({"m2"})
        assert firsts == ["m1", "m2"]
        assert set(later) <= {"m2"}
    finally:
        src.close()
        t.join(5)
        pub.close(0)


def test_discovery_takes_new_stream_ids_only_up_to_what_the_hosts_can_hold() -> None:
    """A peer on the feed sending endless new stream ids (each message valid) must not grow the
    cluster's stream list, and so every host's subscriptions, for ever: discovery takes new ids
    up to the room left, in the order heard, counts the rest, skips what is not the wire format;
    the aggregator shows the coordinator's note once."""
    port = _free_port()
    ctx = zmq.Context.instance()
    pub = ctx.socket(zmq.PUB)
    pub.setsockopt(zmq.LINGER, 0)
    pub.bind(f"tcp://127.0.0.1:{port}")
    x = np.zeros((8, 1), np.float32)

    def listen(known: set[str], room: int, heard: dict[str, float] | None = None) -> tuple[set[str], int]:
        sub = ctx.socket(zmq.SUB)
        sub.setsockopt(zmq.LINGER, 0)
        sub.setsockopt(zmq.SUBSCRIBE, b"")
        sub.connect(f"tcp://127.0.0.1:{port}")
        stop = threading.Event()

        def send() -> None:  # the known streams, a garbage message and 40 new ids, over and over
            seq = 0
            while not stop.is_set():
                for sid in ("known-1", "known-2", *(f"new-{k:02d}" for k in range(40))):
                    pub.send_multipart(encode(sid, seq, time.time(), 12000.0, x))
                pub.send_multipart([b"junk", b"{not json", b""])
                seq += 1
                time.sleep(0.01)

        t = threading.Thread(target=send, daemon=True)
        t.start()
        try:
            return listen_for_streams(sub, 1.0, known, room, heard)
        finally:
            stop.set()
            t.join(5)
            sub.close(0)

    try:
        new, refused = listen({"known-1", "known-2"}, 10)
        assert len(new) == 10 and refused == 30 and all(s.startswith("new-") for s in new)
        new, refused = listen({"known-1", "known-2"}, 100)
        assert new == {f"new-{k:02d}" for k in range(40)} and refused == 0
        assert listen({"known-1"}, 0) == (set(), 41)
        # when each stream was last heard: the known ones and those taken, nothing of the rest
        heard = {"known-1": 0.0, "gone": 0.0}
        t0 = time.monotonic()
        new, _ = listen({"known-1", "gone"}, 5, heard)
        assert set(heard) == {"known-1", "gone"} | new and heard["gone"] == 0.0
        assert all(heard[sid] >= t0 for sid in {"known-1"} | new)
    finally:
        pub.close(0)
    agg = Aggregator()
    for _ in range(3):
        agg.note("new stream ids are not monitored: the hosts hold 10 streams")
    notes = [e for e in agg.snapshot().events if e.type == "note"]
    assert [e.data["message"] for e in notes] == ["new stream ids are not monitored: the hosts hold 10 streams"]


# ------------------------------------------------------------------------------------ checkpoints
def test_checkpoint_store_round_trip_and_unreadable_files(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path / "ck")
    store.save(StreamCheckpoint("zmq/plant a/ch:1", "h1", 0.0, last_time=12.5, counters={"alarm": 3}))
    assert store.streams() == ["zmq/plant a/ch:1"]
    back = store.load("zmq/plant a/ch:1")
    assert back is not None and back.counters == {"alarm": 3} and back.last_time == 12.5
    (tmp_path / "ck" / "broken.ckpt").write_bytes(b"not a pickle")
    assert store.load("broken") is None and store.load("never-saved") is None
    store.delete("zmq/plant a/ch:1")  # a retired stream leaves nothing behind
    store.delete("never-saved")
    assert store.load("zmq/plant a/ch:1") is None and "zmq/plant a/ch:1" not in store.streams()


def test_a_planted_checkpoint_cannot_run_code_on_a_host(tmp_path: Path) -> None:
    """The checkpoint directory is shared by every host: a file someone put there is read back
    only as our state records, never as an object that runs code when it is loaded."""
    import pickle

    class Hostile:
        def __reduce__(self):
            return (Path.touch, (tmp_path / "pwned",))

    store = CheckpointStore(tmp_path / "ck")
    (tmp_path / "ck" / "m1.ckpt").write_bytes(pickle.dumps(Hostile()))
    assert store.load("m1") is None
    assert not (tmp_path / "pwned").exists()
    (tmp_path / "ck" / "m2.ckpt").write_bytes(pickle.dumps(StreamCheckpoint("m2", "h", 0.0, events=[{"x": os.sep}])))
    assert store.load("m2") is not None  # the records it writes itself still come back


# ------------------------------------------------------------------------------------ hand-over
@pytest.mark.slow
def test_a_lost_host_streams_continue_elsewhere_with_latches_acks_and_no_duplicate_events(tmp_path: Path) -> None:
    """Two real host pipelines on one gateway; host a stops dead (no hand-over), b takes its streams
    from the checkpoints: ALERT and acknowledgements carry over, the gap is reported, the events
    a re-sends are dropped by id, every stream raised its alarm exactly once."""
    from drsn_stream.app.pipeline import RunConfig
    from drsn_stream.cluster.host import HostWorker
    from drsn_stream.sinks.dashboard import render_once
    from drsn_stream.sinks.jsonl import JsonlSink

    port = _free_port()
    pub = subprocess.Popen([sys.executable, "-m", "drsn_stream", "publish", "--quiet", "--source",
                            "sim:bearing?machines=6&fault=inner_014", "--to", f"tcp://127.0.0.1:{port}",
                            "--duration", "60"], cwd=ROOT)
    agg = Aggregator(sinks=[JsonlSink(tmp_path / "out.jsonl")], source=f"zmq+shard://127.0.0.1:{port}")

    def send_for(name: str):
        return lambda kind, payload: agg.push(name, payload) if kind == "results" else agg.summary(payload)

    cfg = RunConfig(engine_process=False, threads=1, decision={"latching": True, "danger_after_s": None})
    hosts = {n: HostWorker(n, cfg, gateway=f"127.0.0.1:{port}", checkpoint_dir=str(tmp_path / "ck"),
                           send=send_for(n)).start() for n in ("a", "b")}
    streams = [f"sim/m{i}" for i in range(6)]
    plan = HashRing(["a", "b"]).assign(streams)
    if not plan["a"]:  # the test needs a stream on each host
        plan = {"a": streams[:3], "b": streams[3:]}
    for name, ss in plan.items():
        hosts[name].assign(ss)
    try:
        _until(lambda: {r.level for r in agg.snapshot().rows} == {"ALERT"} and len(agg.snapshot().rows) == 6, 60)
        acked = {plan["a"][0], plan["b"][0]}
        for sid in acked:
            hosts["a" if sid in plan["a"] else "b"].acknowledge(sid)
        time.sleep(1.5)
        a = hosts.pop("a")
        a.source.set_streams([])  # host a goes silent: no release, no final checkpoint
        a._stop.set()
        agg.host_down("a", {s: "b" for s in plan["a"]})
        hosts["b"].assign(plan["a"], previous={s: "a" for s in plan["a"]})

        def carried_over() -> bool:
            rows = {r.stream_id: r for r in agg.snapshot().rows}
            return all(s in rows and rows[s].host == "b" and rows[s].level == "ALERT"
                       and rows[s].unacknowledged == (s not in acked) for s in streams)

        _until(carried_over, 30)
        screen = render_once(agg.snapshot(), width=120)
        held = hosts["b"].unacknowledged(streams)  # what cluster discovery never retires
    finally:
        for h in hosts.values():
            h.stop()
        a.pipe.stop()
        pub.kill()
        pub.wait()
        agg.close()
    assert " host " in screen and "GAP" in screen and "host a lost" in screen
    assert held == sorted(set(streams) - acked), held
    objs = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    alarms = [o for o in objs if o["type"] == "alarm"]
    assert Counter(o["id"] for o in alarms).most_common(1)[0][1] == 1
    per = defaultdict(list)
    for o in alarms:
        per[o["stream"]].append((o["from"], o["to"], bool(o.get("acknowledged"))))
    for sid in streams:
        assert per[sid].count(("NORMAL", "ALERT", False)) == 1, (sid, per[sid])
    gaps = {o["stream"]: o for o in objs if o["type"] == "gap"}
    assert set(gaps) == set(plan["a"]) and all(g["seconds"] > 0 and g["previous_host"] == "a" for g in gaps.values())
    assert agg.duplicates > 0  # b re-sent a's recent events; the copies went nowhere


def test_a_released_stream_keeps_its_saved_alarm_when_a_late_checkpoint_comes_after_the_hand_over(tmp_path: Path) -> None:
    """The host's periodic checkpoint lists the streams it owns, then saves them one by one: a
    stream released in between must not have its last state overwritten by an empty one, or the
    next host raises its alarm afresh and its acknowledgement is lost."""
    from drsn_stream.app.pipeline import RunConfig
    from drsn_stream.cluster.host import HostWorker
    from drsn_stream.types import Prediction

    cfg = RunConfig(engine_process=False, threads=1, decision={"latching": True, "danger_after_s": None})
    old = HostWorker("a", cfg, gateway=f"127.0.0.1:{_free_port()}", checkpoint_dir=str(tmp_path / "ck"),
                     send=lambda kind, payload: None)
    labels = old.pipe.decisions.labels
    fault = next(i for i, name in enumerate(labels) if name != "normal")
    probs = np.full(len(labels), 0.001, dtype=np.float32)
    probs[fault] = 1.0 - 0.001 * (len(labels) - 1)
    sid = "plant/m1"
    old.assign([sid])
    for i in range(20):
        for ev in old.pipe.decisions.update(Prediction(sid, i, 100.0 + i, probs, labels[fault], float(probs[fault]), 0.3, 5.0)):
            old.sink.write(ev.to_json())
    assert old.pipe.decisions.state(sid).level.name == "ALERT"
    old.acknowledge(sid)

    # handed back while its release drains: it stays on this host with its live state
    release = threading.Thread(target=old.release, args=([sid],))
    release.start()
    _until(lambda: sid in old._draining, 5)
    assert old.assign([sid]) == []  # nothing restored: the state never left
    release.join()
    state = old.pipe.decisions.state(sid)
    assert sid in old.owned and sid not in old._draining
    assert state.level.name == "ALERT" and not state.unacknowledged, state

    forget = old.pipe.health.forget

    def late_checkpoint_then_forget(stream: str) -> None:
        old._checkpoint(stream)  # the periodic save, with its list from before the release
        forget(stream)

    old.pipe.health.forget = late_checkpoint_then_forget
    assert old.release([sid]) == [sid]
    old._checkpoint(sid)  # a late save after the hand-over saves nothing either
    straggler = {"type": "alarm", "stream": sid, "time": 200.0, "from": "ALERT", "to": "NORMAL"}
    old.sink.write(straggler)  # a window in flight past the hand-over: counted, not sent, nothing kept
    assert old.sink.stragglers == 1 and sid not in old._counters
    assert all(o.get("time") != 200.0 for o in old.sink.take())
    old.pipe.stop()

    new = HostWorker("b", cfg, gateway=f"127.0.0.1:{_free_port()}", checkpoint_dir=str(tmp_path / "ck"),
                     send=lambda kind, payload: None)
    try:
        assert new.assign([sid], previous={sid: "a"}) == [sid]
        state = new.pipe.decisions.state(sid)
        assert state.level.name == "ALERT" and not state.unacknowledged, state  # carried over, still acknowledged
    finally:
        new.pipe.stop()


def test_a_damaged_checkpoint_is_said_and_its_stream_starts_afresh(tmp_path: Path) -> None:
    """A checkpoint whose decision state holds numbers the engine never writes, or whose health
    state is damaged (a damaged or planted file in the shared directory), is not restored: the
    host says so, owns the stream and judges it afresh; a sound checkpoint beside them is
    restored as before."""
    import dataclasses
    from collections import deque

    from drsn_stream.app.pipeline import RunConfig
    from drsn_stream.cluster.host import HostWorker
    from drsn_stream.monitor.decision import DecisionEngine
    from drsn_stream.monitor.health import HealthMonitor
    from drsn_stream.types import Frame, Prediction

    cfg = RunConfig(engine_process=False, threads=1)
    host = HostWorker("b", cfg, gateway=f"127.0.0.1:{_free_port()}", checkpoint_dir=str(tmp_path / "ck"),
                      send=lambda kind, payload: None)
    try:
        labels = host.pipe.decisions.labels
        saved = DecisionEngine(labels)
        probs = np.full(len(labels), 0.1 / (len(labels) - 1), dtype=np.float32)
        probs[1] = 0.9
        for i in range(4):
            saved.update(Prediction("plant/m1", i, 100.0 + i, probs, labels[1], 0.9, 0.3, 5.0))
        good = saved.export_state("plant/m1")
        store = CheckpointStore(tmp_path / "ck")
        store.save(StreamCheckpoint("plant/m1", "a", 0.0, last_time=103.0, decision=good))
        store.save(StreamCheckpoint("plant/m2", "a", 0.0, last_time=103.0,
                                    decision=dataclasses.replace(good, best=10**6)))
        health = HealthMonitor()
        for i in range(8):
            health.push(Frame("plant/m3", i, 100.0 + i * 512 / 12000, 12000.0,
                              np.random.default_rng(i).normal(size=(512, 1)).astype(np.float32)), now=100.0 + i * 0.05)
        damaged = dataclasses.replace(health.export_state("plant/m3"), chunks=deque([("x",)]))
        store.save(StreamCheckpoint("plant/m3", "a", 0.0, last_time=103.0, decision=good, health=damaged))
        streams = ["plant/m1", "plant/m2", "plant/m3"]
        assert host.assign(streams, previous=dict.fromkeys(streams, "a")) == ["plant/m1"]
        assert host.owned == set(streams)
        assert any("plant/m2" in line and "not one this engine writes" in line for line in host.pipe.errors)
        assert any("health of plant/m3" in line and "damaged" in line for line in host.pipe.errors)
        assert host.pipe.decisions.state("plant/m3").windows == 0  # its sound decision state not kept either
        assert host.pipe.decisions.state("plant/m1").windows == 4 and host.pipe.decisions.state("plant/m1").label == labels[1]
        fresh = host.pipe.decisions.state("plant/m2")
        assert fresh.windows == 0 and fresh.label == "?"
        host.pipe.decisions.update(Prediction("plant/m2", 0, 200.0, probs, labels[1], 0.9, 0.3, 5.0))
        assert host.pipe.decisions.state("plant/m2").windows == 1
    finally:
        host.pipe.stop()


def test_a_checkpoint_directory_that_is_gone_loses_no_alarm_and_says_so(tmp_path: Path) -> None:
    """A save that fails (the shared directory full, unmounted, replaced) raised out of the sink:
    the alarm that asked for it was never sent, and the host's periodic loop died with a
    traceback, its results and summaries with it."""
    from drsn_stream.app.pipeline import RunConfig
    from drsn_stream.cluster.host import HostWorker
    from drsn_stream.types import Prediction

    cfg = RunConfig(engine_process=False, threads=1, decision={"latching": True, "danger_after_s": None})
    ck = tmp_path / "ck"
    host = HostWorker("a", cfg, gateway=f"127.0.0.1:{_free_port()}", checkpoint_dir=str(ck),
                      send=lambda kind, payload: None)
    try:
        labels = host.pipe.decisions.labels
        fault = next(i for i, name in enumerate(labels) if name != "normal")
        probs = np.full(len(labels), 0.001, dtype=np.float32)
        probs[fault] = 1.0 - 0.001 * (len(labels) - 1)
        host.assign(["plant/m1"])
        shutil.rmtree(ck)
        ck.write_text("not a directory any more")
        for i in range(20):
            for ev in host.pipe.decisions.update(Prediction("plant/m1", i, 100.0 + i, probs, labels[fault],
                                                            float(probs[fault]), 0.3, 5.0)):
                host.sink.write(ev.to_json())
        host.checkpoint_all()  # the periodic save, as the host's loop makes it
        sent = host.sink.take()
        alarms = [o for o in sent if o["type"] == "alarm"]
        assert alarms and alarms[-1]["to"] == "ALERT" and all(o.get("id") for o in alarms), sent
        assert [line for line in host.pipe.errors if "cannot save stream checkpoints in" in line
                and "Not a directory" in line] == host.pipe.errors[:1], host.pipe.errors
        summary = host.summary()
        assert summary["checkpoint_failures"] >= len(alarms) + 1 and summary["checkpoints"] == 0
    finally:
        host.pipe.stop()


def test_a_host_whose_sends_fail_for_a_while_sends_everything_after(tmp_path: Path) -> None:
    """An exception out of one send (the aggregator's call failing) ended the host's loop: no
    result, event or summary left that host again, without a word on its dashboard."""
    from drsn_stream.app.pipeline import RunConfig
    from drsn_stream.cluster.host import HostWorker

    got: list[tuple[str, object]] = []
    failures = {"left": 3}

    def send(kind: str, payload: object) -> None:
        if kind == "results" and failures["left"] > 0:
            failures["left"] -= 1
            raise ConnectionError("aggregator unreachable")
        got.append((kind, payload))

    host = HostWorker("a", RunConfig(engine_process=False, threads=1), gateway=f"127.0.0.1:{_free_port()}",
                      checkpoint_dir=str(tmp_path / "ck"), send=send, checkpoint_every_s=0.2,
                      summary_every_s=0.2).start()
    try:
        host.sink.put({"type": "note", "stream": "*", "time": 1.0, "message": "first"})
        _until(lambda: failures["left"] == 0, 10)
        host.sink.put({"type": "note", "stream": "*", "time": 2.0, "message": "second"})
        _until(lambda: "second" in str(got), 10)
        notes = [o.get("message") for k, batch in got if k == "results" for o in batch]  # type: ignore[union-attr]
        assert [m for m in notes if m in ("first", "second")] == ["first", "second"], notes
        n = len(got)
        _until(lambda: any(k == "summary" for k, _ in got[n:]), 10)  # the loop goes on
        assert host.round_failures == 3
        assert [e for e in host.pipe.errors if "a round of results failed (ConnectionError: aggregator unreachable)" in e]
    finally:
        host.stop()


def _learning_hosts(tmp_path: Path, *, learn_s: float, machines: int = 1) -> tuple[subprocess.Popen, list[Any]]:
    """A publisher of ``machines`` healthy simulated machines (60 s) and two started cluster hosts,
    "a" and "b", that learn each stream's baseline for ``learn_s`` (``--learn``), sharing a
    checkpoint folder."""
    from drsn_stream.app.pipeline import RunConfig
    from drsn_stream.cluster.host import HostWorker

    port = _free_port()
    pub = subprocess.Popen([sys.executable, "-m", "drsn_stream", "publish", "--quiet", "--source",
                            f"sim:bearing?machines={machines}&fault=none", "--to", f"tcp://127.0.0.1:{port}",
                            "--duration", "60"], cwd=ROOT)
    cfg = RunConfig(engine_process=False, threads=1, learn_s=learn_s)
    return pub, [HostWorker(n, cfg, gateway=f"127.0.0.1:{port}", checkpoint_dir=str(tmp_path / "ck"),
                            send=lambda kind, payload: None).start() for n in ("a", "b")]


def _learned_on(b: Any, sid: str) -> tuple[Any, list[str]]:
    """Host b takes ``sid`` over from host a and learns its baseline: (the baseline, b's notes on it)."""
    b.assign([sid], previous={sid: "a"})
    _until(lambda: b.pipe.baseline.state.get(sid) == "monitoring", 45)
    notes = [e.data["message"] for e in b.pipe.events.recent() if e.type == "note" and e.stream_id == sid]
    return b.pipe.baseline.profile.streams[sid], notes


def _stop(pub: subprocess.Popen, hosts: list[Any]) -> None:
    for h in hosts:
        h.stop()
    pub.kill()
    pub.wait()


def test_a_baseline_learned_on_one_host_goes_with_its_stream_to_the_next(tmp_path: Path) -> None:
    """--learn on two real hosts: host a learns a healthy machine's baseline, then hands the stream
    to host b (a host joining, say). b monitors it on a's baseline from its first window instead of
    learning it again (before, every move and every failover started the learning over)."""
    pub, hosts = _learning_hosts(tmp_path, learn_s=2.0)
    a, b = hosts
    sid = "sim/m0"
    try:
        a.assign([sid])
        _until(lambda: a.pipe.baseline.state.get(sid) == "monitoring", 45)
        learned = a.pipe.baseline.profile.streams[sid]
        a.release([sid])
        b.assign([sid], previous={sid: "a"})
        _until(lambda: len(b.pipe.baseline.history.get(sid, ())) >= 5, 30)
        state, learning = b.pipe.baseline.state.get(sid), sid in b.pipe.baseline._learning
        kept = b.pipe.baseline.profile.streams.get(sid)
        # the host that handed it over keeps nothing of it (its output thread forgets it, with
        # no results coming any more, within a second or so)
        _until(lambda: sid not in a.pipe.baseline.profile.streams, 10)
    finally:
        for h in hosts:
            h.stop()
        pub.kill()
        pub.wait()
    assert state == "monitoring" and not learning
    assert kept is not None and kept.windows == learned.windows
    assert np.allclose(kept.gaussian.mean, learned.gaussian.mean, rtol=1e-6) and kept.threshold == pytest.approx(learned.threshold)


def test_a_baseline_still_being_learned_goes_with_its_stream_to_the_next_host(tmp_path: Path) -> None:
    """--learn on two real hosts: host a hands the stream to host b a few seconds into its
    learning. b learns on from a's windows (the baseline it fits starts at a's first learning
    window and holds a's windows too) rather than over (before, a host joining or leaving during
    commissioning set every stream it moved back to the start of its learning)."""
    pub, hosts = _learning_hosts(tmp_path, learn_s=6.0)
    a, b = hosts
    sid = "sim/m0"
    try:
        a.assign([sid])
        _until(lambda: getattr(a.pipe.baseline._learning.get(sid), "seen", 0) >= 40, 45)
        a.release([sid])
        carried = a.store.load(sid).baseline["learning"]
        learned, notes = _learned_on(b, sid)
    finally:
        _stop(pub, hosts)
    n = carried["features"].shape[0]
    assert n >= 40 and carried["features"].shape[1] == b.pipe.meta.features
    assert learned.learned_from == pytest.approx(float(carried["times"][0]))
    assert learned.windows >= n, (learned.windows, n)
    assert any(f"on from {n} windows" in msg for msg in notes), notes


def test_a_baseline_still_being_learned_survives_the_loss_of_its_host(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """Host a is lost a few seconds into learning a stream's baseline (no hand-over, no last
    checkpoint): host b learns on from the learnings a saved in its own file in the checkpoint
    folder (here every second; every minute by default), not over (before, a host lost during
    commissioning set each of its streams back to the start of its learning)."""
    from drsn_stream.monitor import baseline as bl

    monkeypatch.setattr(bl, "LEARNING_SAVE_S", 1.0)
    pub, hosts = _learning_hosts(tmp_path, learn_s=6.0)
    a, b = hosts
    sid = "sim/m0"
    try:
        a.assign([sid])

        def saved() -> int:
            try:
                return int(bl.read_learnings(a.store.learning_path("a"), {sid})[1][sid]["seen"])
            except (FileNotFoundError, KeyError):
                return 0

        _until(lambda: saved() >= 40, 45)
        with a._lock:  # lost: it hears the stream no more and hands nothing over
            a.owned.clear()
            a.source.set_streams(set())
        time.sleep(1.5)
        head, kept = bl.read_learnings(a.store.learning_path("a"), {sid})
        assert a.store.load(sid).baseline is None  # its periodic checkpoints carry no learning
        learned, notes = _learned_on(b, sid)
    finally:
        _stop(pub, hosts)
    n = kept[sid]["seen"]
    assert any(f"learning the baseline on from {n} windows learned on another host" in msg for msg in notes), notes
    assert learned.learned_from == pytest.approx(float(kept[sid]["times"][0]))
    assert learned.windows >= n, (learned.windows, n)


def test_a_host_restarted_under_its_name_keeps_the_learnings_its_last_run_left(tmp_path: Path,
                                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """Host a is lost while learning sim/m0 and comes back under its name at once, given sim/m1.
    Its learning file still holds m0's windows when host b takes m0 over, and b learns on from
    them (before, a's first save of m1 wrote over the file, and b learned m0 anew)."""
    from drsn_stream.cluster.host import HostWorker
    from drsn_stream.monitor import baseline as bl

    monkeypatch.setattr(bl, "LEARNING_SAVE_S", 1.0)
    pub, hosts = _learning_hosts(tmp_path, learn_s=8.0, machines=2)
    a, b = hosts
    path = a.store.learning_path("a")

    def saved(sid: str) -> int:
        try:
            return int(bl.read_learnings(path, {sid})[1][sid]["seen"])
        except (FileNotFoundError, KeyError):
            return 0

    try:
        a.assign(["sim/m0"])
        _until(lambda: saved("sim/m0") >= 40, 45)
        with a._lock:  # lost: it hears the stream no more and hands nothing over
            a.owned.clear()
            a.source.set_streams(set())
        a.stop()
        n = saved("sim/m0")
        a2 = HostWorker("a", a.pipe.config, gateway=a.source.target, checkpoint_dir=str(a.store.root),
                        send=lambda kind, payload: None).start()
        hosts.append(a2)
        a2.assign(["sim/m1"])
        _until(lambda: saved("sim/m1") >= 20, 45)  # a2 has written its own learnings there
        assert saved("sim/m0") == n
        learned, notes = _learned_on(b, "sim/m0")
    finally:
        _stop(pub, hosts)
    assert any(f"learning the baseline on from {n} windows learned on another host" in msg for msg in notes), notes
    assert learned.windows >= n


def test_a_stream_of_multi_channel_frames_moves_between_hosts_with_each_channels_alarm(tmp_path: Path) -> None:
    """A gateway module of 2-channel frames on a cluster host: each channel is a stream of its own,
    with its own alarm. Host a acknowledges one channel's alarm and hands the module to host b: both
    channels' alarms, the acknowledgement and the sensor health go with it (before, a checkpoint
    held only the frame stream's own state, which a module of channels has none of: b raised the
    alarms afresh, the acknowledgement lost), and b says the module holds an alarm nobody
    acknowledged (cluster discovery never retires it)."""
    from drsn_stream.app.pipeline import RunConfig
    from drsn_stream.cluster.host import HostWorker
    from drsn_stream.monitor.decision import Level

    port = _free_port()
    pub = subprocess.Popen([sys.executable, "-m", "drsn_stream", "publish", "--quiet", "--source",
                            "sim:bearing?machines=1&channels=2&fault=inner_014", "--to", f"tcp://127.0.0.1:{port}",
                            "--duration", "60"], cwd=ROOT)
    cfg = RunConfig(engine_process=False, threads=1, decision={"latching": True, "danger_after_s": None})
    hosts = [HostWorker(n, cfg, gateway=f"127.0.0.1:{port}", checkpoint_dir=str(tmp_path / "ck"),
                        send=lambda kind, payload: None).start() for n in ("a", "b")]
    a, b = hosts
    sid, ch0, ch1 = "sim/m0", "sim/m0/ch0", "sim/m0/ch1"
    try:
        a.assign([sid])
        _until(lambda: {a.pipe.decisions.state(ch).level for ch in (ch0, ch1)} == {Level.ALERT}, 60)
        assert a.acknowledge(ch0) >= 0 and a.unacknowledged([sid]) == [sid]
        before = {ch: a.pipe.decisions.state(ch) for ch in (ch0, ch1)}
        a.release([sid])
        b.assign([sid], previous={sid: "a"})
        after = {ch: b.pipe.decisions.state(ch) for ch in (ch0, ch1)}  # restored, before any frame
        held = b.unacknowledged([sid])
        _until(lambda: b.pipe.decisions.state(ch1).windows > after[ch1].windows, 30)  # and it goes on
        later = {ch: b.pipe.decisions.state(ch) for ch in (ch0, ch1)}
        b.acknowledge(sid)  # the module: both channels
        acked = b.unacknowledged([sid])
    finally:
        for h in hosts:
            h.stop()
        pub.kill()
        pub.wait()
    assert not before[ch0].unacknowledged and before[ch1].unacknowledged
    for ch in (ch0, ch1):  # (windows in flight when a released it went into its last checkpoint too)
        assert after[ch].level == Level.ALERT and after[ch].windows >= before[ch].windows > 0, (ch, after[ch])
        assert after[ch].unacknowledged == before[ch].unacknowledged
        assert later[ch].level == Level.ALERT
    assert held == [sid] and acked == []


def _until(cond, timeout: float) -> None:
    end = time.time() + timeout
    while time.time() < end:
        if cond():
            return
        time.sleep(0.2)
    raise AssertionError(f"condition not met within {timeout:g} s")


# ------------------------------------------------------------------------------------ aggregator
def _host_snapshot(host: str, rows: list[StreamRow]) -> dict:
    snap = Snapshot(time=time.time(), header=Header(model="bearing-cwru", labels=("normal", "inner_014"),
                                                    device="cpu", ready=True), rows=tuple(rows))
    return {"host": host, "time": time.time(), "snapshot": snap}


def test_aggregator_one_view_with_hosts_and_host_labelled_metrics() -> None:
    from prometheus_client import generate_latest

    from drsn_stream.sinks.dashboard import render_once
    from drsn_stream.sinks.metrics import make_registry

    agg = Aggregator(source="zmq+shard://gw:5555")
    agg.summary(_host_snapshot("gpu-1", [StreamRow("s1", label="normal"), StreamRow("s3", label="normal")]))
    agg.summary(_host_snapshot("gpu-2", [StreamRow("s2", label="inner_014", level="ALERT")]))
    ev = {"type": "alarm", "stream": "s2", "time": 1.0, "from": "NORMAL", "to": "ALERT", "id": "s2|alarm|0|x"}
    agg.push("gpu-2", [ev, {"type": "prediction", "stream": "s2", "time": 1.0, "label": "inner_014"}])
    agg.push("gpu-1", [dict(ev)])  # the copy a failover re-sends
    snap = agg.snapshot()
    assert [(r.stream_id, r.host) for r in snap.rows] == [("s1", "gpu-1"), ("s2", "gpu-2"), ("s3", "gpu-1")]
    assert len([e for e in snap.events if e.type == "alarm"]) == 1 and agg.duplicates == 1
    screen = render_once(snap, width=120)
    assert "host" in screen and "gpu-2" in screen and "2 hosts" in screen

    collector = ClusterCollector(lambda: (agg.host_snapshots(), {"drsn_cluster_duplicate_events": agg.duplicates}))
    text = generate_latest(make_registry(collector, process=False)).decode()
    assert 'drsn_stream_alarm_level{host="gpu-2",stream="s2"} 1.0' in text
    assert 'drsn_streams{host="gpu-1"} 2.0' in text
    assert "drsn_cluster_hosts 2.0" in text and "drsn_cluster_duplicate_events_total 1.0" in text


def test_the_clusters_webhook_gets_its_alarms_and_one_that_is_down_stops_no_other_output(tmp_path: Path) -> None:
    """``cluster --webhook URL``: the aggregator posts the hosts' alarms. A webhook that cannot be
    reached is said once as a note and the JSONL log goes on (before, a sink's error left the
    hosts' push and every output after it)."""
    import json
    import socket

    from drsn_stream.sinks.jsonl import JsonlSink
    from drsn_stream.sinks.webhook import WebhookSink

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{sock.getsockname()[1]}/hook"  # nothing listens there once closed
    log = tmp_path / "cluster.jsonl"
    hook = WebhookSink(dead)
    agg = Aggregator(sinks=[hook, JsonlSink(log)], source="zmq+shard://gw:5555")
    for i in range(3):
        agg.push("gpu-1", [{"type": "alarm", "stream": f"s{i}", "time": 1.0 + i, "from": "NORMAL", "to": "ALERT",
                            "id": f"s{i}|alarm|{i}"}])
        if i == 0:
            assert wait_until(lambda: hook.failed >= 1, 30)  # three tries, 1 s and 2 s apart
    agg.close()
    assert [json.loads(line)["stream"] for line in log.read_text().splitlines()] == ["s0", "s1", "s2"]
    notes = [e.data["message"] for e in agg.snapshot().events if e.type == "note"]
    assert notes == [f"output WebhookSink: WriteError: webhook {dead.removesuffix('/hook')}: cannot reach it "
                     "(Connection refused); alarms and health changes are not delivered"], notes
    assert agg.outputs.failures["WebhookSink"] >= 1


# ------------------------------------------------------------------------------------ no Ray needed
@pytest.mark.slow
def test_the_aggregators_record_of_hosts_per_stream_stays_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    """Stream ids come and go (gateways restarted under new names): the aggregator's record of which
    host gave each stream's results keeps the latest streams, and each stream's latest changes."""
    from drsn_stream.cluster import aggregator

    monkeypatch.setattr(aggregator, "HANDOVERS_KEEP", 3)
    agg = Aggregator()
    for i in range(5):
        agg.push("gpu-1", [{"type": "prediction", "stream": f"s{i}", "time": 1.0, "label": "normal"}])
    assert list(agg.handovers) == ["s2", "s3", "s4"]
    for k in range(40):
        agg.push(f"gpu-{k % 2}", [{"type": "prediction", "stream": "s4", "time": 1.0, "label": "normal"}])
    hosts = [h for h, _ in agg.handovers["s4"]]
    assert len(hosts) == aggregator.HANDOVER_CHANGES_KEEP and hosts[-1] == "gpu-1"
    assert agg.results == 45


def test_single_machine_monitor_never_imports_ray() -> None:
    code = ("import sys, drsn_stream.cli as c, drsn_stream.app.pipeline, drsn_stream.cluster.host, "
            "drsn_stream.cluster.aggregator, drsn_stream.cluster.ray_app, drsn_stream.cluster.deploy\n"
            "c.build_parser(); c.build_parser('run'); c.build_parser('cluster')\n"
            "assert 'ray' not in sys.modules, 'ray imported'\nprint('ok')")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "ok" in r.stdout, r.stderr


@pytest.mark.slow
def test_cluster_command_needs_one_zmq_gateway() -> None:
    r = subprocess.run([sys.executable, "-m", "drsn_stream", "cluster", "--source", "sim"], cwd=ROOT,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2
    assert "give exactly one --source zmq://HOST:PORT" in r.stderr
    r = subprocess.run([sys.executable, "-m", "drsn_stream", "cluster", "--source", "zmq://127.0.0.1:5999",
                        "--jsonl", "-"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "give a file path" in r.stderr and "Traceback" not in r.stderr
    # a wrong number of host actors is refused before Ray is started or joined
    r = subprocess.run([sys.executable, "-m", "drsn_stream", "cluster", "--source", "zmq://127.0.0.1:5999",
                        "--host-actors", "0"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "host actors per GPU" in r.stderr and "Traceback" not in r.stderr


def test_the_gateway_sources_options_reach_the_hosts_or_are_refused_before_ray_starts(tmp_path: Path) -> None:
    # ?hwm= and the like were dropped in cluster mode: every host now gets them (quoted: a path
    # may hold & or =); a wrong value, and options that cannot apply to a cluster, stop the command
    from drsn_stream.cluster.cli import check_here, gateway_of
    from drsn_stream.cluster.ray_app import ClusterConfig
    from drsn_stream.errors import ConfigError
    from drsn_stream.sources import make_source

    gateway, options = gateway_of(("zmq://gw:5555?hwm=500&max_skew_s=5",))
    cluster = ClusterConfig(gateway=gateway, checkpoint_dir=str(tmp_path), gateway_options=options)
    check_here(cluster)
    src = make_source(cluster.gateway_spec)
    assert (src.kind, src.target, src.options["hwm"], src.options["max_skew_s"]) == ("zmq+shard", "gw:5555", 500, 5.0)
    with pytest.raises(ConfigError, match="hwm"):
        check_here(ClusterConfig(gateway=gateway, checkpoint_dir=str(tmp_path), gateway_options=(("hwm", "0"),)))
    for spec, said in [("zmq://gw:5555?topic=pump", "topic= does not apply"),
                       ("zmq://gw:5555?until_eos=1", "until_eos= does not apply")]:
        with pytest.raises(ConfigError, match=said):
            gateway_of((spec,))


def test_host_actors_share_a_gpu_or_a_nodes_cores() -> None:
    # N host actors per GPU reserve 1/N of it each; on a node without GPUs each takes 1/N of
    # the cores for inference, less one for its ingest thread, and never none
    from drsn_stream.cluster.ray_app import ClusterConfig, inference_threads

    shares = [ClusterConfig(gateway="gw:1", checkpoint_dir="/tmp", host_actors=n).gpu_share for n in (1, 2, 3, 8)]
    assert shares == [1.0, 0.5, 0.3333, 0.125] and all(s * n <= 1.0 for s, n in zip(shares, (1, 2, 3, 8)))
    assert [inference_threads(16, n) for n in (1, 2, 4, 8, 16)] == [15, 7, 3, 1, 1]
    assert inference_threads(2, 1) == 1 and inference_threads(2, 2) == 1
