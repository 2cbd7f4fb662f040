"""Contracts every registered part keeps, checked over the registries rather than one kind at a time.

A new source kind is one entry in ``SOURCE_KINDS``; these tests make sure it behaves like the others
for the monitor: an iterable of float32 Frames, ``close()`` from another thread ends iteration, and a
bad option is refused with a line that names the valid ones. The ZeroMQ result feed (``--publish``)
is checked end to end against the JSON-lines log of the same run.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import scipy.io.wavfile
import zmq

from drsn_stream.errors import ConfigError, DrsnStreamError
from drsn_stream.sources import SOURCE_KINDS, make_source
from drsn_stream.sources.wire import encode
from drsn_stream.types import Frame

ZMQ_KINDS = ("zmq", "zmq+bind", "zmq+pull", "zmq+pull+bind", "zmq+shard")


def test_every_registered_kind_is_covered_here() -> None:
    # A kind added to the registry without a contract below fails here, not in a user's plant.
    assert set(SOURCE_KINDS) == {"sim", "file", "mic", *ZMQ_KINDS}


class _Feeder:
    """Sends wire-format frames for two streams to a ZeroMQ source, as a sensor gateway would."""

    def __init__(self, kind: str, port: int) -> None:
        self.ctx = zmq.Context.instance()
        pull = "pull" in kind
        self.sock = self.ctx.socket(zmq.PUSH if pull else zmq.PUB)
        self.sock.setsockopt(zmq.LINGER, 0)
        address = f"tcp://127.0.0.1:{port}"
        if kind.endswith("bind"):
            self.sock.connect(address)  # the source binds
        else:
            self.sock.bind(address)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        seq = 0
        rng = np.random.default_rng(0)
        while not self.stop.is_set():
            for sid in ("gw/a", "gw/b"):
                samples = (0.1 * rng.standard_normal(512)).astype(np.float32)
                try:
                    self.sock.send_multipart(encode(sid, seq, time.time(), 12000.0, samples), flags=zmq.NOBLOCK)
                except zmq.Again:
                    pass
            seq += 1
            time.sleep(0.01)

    def __enter__(self) -> _Feeder:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(timeout=5)
        self.sock.close(0)


def _spec(kind: str, tmp_path: Path, port: int) -> str:
    if kind == "sim":
        return "sim:bearing?machines=2&duration=1"
    if kind == "file":
        wav = tmp_path / "rec.wav"
        t = np.arange(24000) / 12000.0
        scipy.io.wavfile.write(wav, 12000, (0.3 * np.sin(2 * np.pi * 97 * t)).astype(np.float32))
        return f"file:{wav}"
    if kind == "zmq+shard":  # a cluster host's source: only the streams it is given
        return f"{kind}://127.0.0.1:{port}?streams=gw/a,gw/b"
    return f"{kind}://127.0.0.1:{port}"


@pytest.mark.parametrize("kind", ["sim", "file", *ZMQ_KINDS])
def test_a_source_yields_float_frames_and_stops_when_closed_from_another_thread(
        kind: str, tmp_path: Path, free_tcp_port: int) -> None:
    src = make_source(_spec(kind, tmp_path, free_tcp_port))
    frames: list[Frame] = []
    got_some = threading.Event()
    finished = threading.Event()

    def consume() -> None:
        for f in src:
            frames.append(f)
            if len(frames) >= 8:
                got_some.set()
        finished.set()

    feeder = _Feeder(kind, free_tcp_port) if kind in ZMQ_KINDS else None
    if feeder is not None and kind.endswith("bind"):
        src.open()  # the source binds first, then the gateway connects
    t = threading.Thread(target=consume, daemon=True)
    t.start()
    try:
        if feeder is not None:
            feeder.__enter__()
        assert got_some.wait(30), f"{kind}: fewer than 8 frames in 30 s ({len(frames)})"
    finally:
        src.close()
        assert finished.wait(5), f"{kind}: iteration did not end within 5 s of close()"
        if feeder is not None:
            feeder.__exit__()
    for f in frames:
        assert isinstance(f, Frame) and isinstance(f.stream_id, str) and f.stream_id
        assert f.samples.dtype == np.float32 and f.samples.ndim in (1, 2) and f.n > 0
        assert f.sample_rate > 0 and np.isfinite(f.t_capture)
    # Per stream, sequence numbers only go up.
    by_stream: dict[str, list[int]] = {}
    for f in frames:
        by_stream.setdefault(f.stream_id, []).append(f.seq)
    assert all(seqs == sorted(seqs) for seqs in by_stream.values())
    assert set(src.streams) >= set(by_stream)


@pytest.mark.parametrize("kind", sorted(SOURCE_KINDS))
def test_a_bad_option_is_refused_with_the_valid_ones(kind: str) -> None:
    target = {"sim": "sim:bearing", "file": "file:x.wav", "mic": "mic"}.get(kind, f"{kind}://127.0.0.1:5999")
    with pytest.raises(ConfigError) as err:
        make_source(f"{target}?no_such_option=1")
    assert "no_such_option" in str(err.value) and "valid" in str(err.value)


@pytest.mark.parametrize("spec", ["file:/no/such/recording.wav", "zmq://127.0.0.1:notaport",
                                  "sim:no_such_scenario"])
def test_a_bad_target_is_one_clear_error(spec: str) -> None:
    with pytest.raises(DrsnStreamError) as err:
        src = make_source(spec)
        with src:
            next(iter(src))
    assert str(err.value) and "Traceback" not in str(err.value)


@pytest.mark.slow
def test_the_result_feed_publishes_what_the_log_writes(tmp_path: Path, free_tcp_port: int,
                                                       child_env: dict[str, str]) -> None:
    """``--publish`` sends the same objects as ``--jsonl``, with topics a subscriber can filter on."""
    address = f"tcp://127.0.0.1:{free_tcp_port}"
    log = tmp_path / "run.jsonl"
    ctx = zmq.Context.instance()
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.LINGER, 0)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    sub.connect(address)
    proc = subprocess.Popen(
        [sys.executable, "-m", "drsn_stream", "--source", "sim:bearing?machines=2&fault=inner_014",
         "--headless", "--duration", "4", "--jsonl", str(log), "--publish", address, "--device", "cpu",
         "--engine-process", "off"],  # an engine child (torch import) would add nothing the feed is tested for
        env=child_env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    received: list[tuple[str, dict, dict]] = []
    try:
        deadline = time.time() + 120
        while proc.poll() is None and time.time() < deadline:
            if sub.poll(200):
                topic, header, payload = sub.recv_multipart()
                received.append((topic.decode(), json.loads(header), json.loads(payload)))
        while sub.poll(500):
            topic, header, payload = sub.recv_multipart()
            received.append((topic.decode(), json.loads(header), json.loads(payload)))
    finally:
        if proc.poll() is None:
            proc.kill()
        _, err = proc.communicate(timeout=30)
        sub.close(0)
    assert proc.returncode == 0, err
    preds = [(t, h, p) for t, h, p in received if p.get("type") == "prediction"]
    assert len(preds) > 20, f"only {len(preds)} predictions on the feed"
    for topic, header, payload in preds:
        assert topic == f"prediction/{payload['stream']}"
        assert header == {"v": 1, "type": "prediction", "stream": payload["stream"], "encoding": "json"}
    logged = [json.loads(line) for line in log.read_text().splitlines()]
    logged_preds = {(o["stream"], o["index"]): o for o in logged if o.get("type") == "prediction"}
    # A late subscriber misses the first messages (PUB drops before the connection); every one it
    # got is in the log, unchanged.
    for p in (p for _, _, p in preds):
        assert p == logged_preds[(p["stream"], p["index"])]
    assert {p["stream"] for _, _, p in preds} == {"sim/m0", "sim/m1"}


# ---------------------------------------------------------------------------- sinks

_OBJECTS = [
    {"type": "prediction", "stream": "m0", "time": 1.7e9, "index": 3, "label": "inner_014", "confidence": 0.97,
     "probs": [0.01, 0.97, 0.02], "noise_index": 0.1, "latency_ms": 12.5, "batch_size": 4,
     "smoothed": "inner_014", "level": "ALERT"},
    {"type": "alarm", "stream": "m0", "time": 1.7e9, "from": "NORMAL", "to": "ALERT", "label": "inner_014",
     "confidence": 0.97},
    {"type": "health", "stream": "m1", "time": 1.7e9, "from": "OK", "to": "CHECK_SENSOR", "reasons": ["flat"]},
    {"type": "note", "stream": "*", "time": 1.7e9, "message": "no envelope evidence"},
    {"type": "stats", "time": 1.7e9, "latency_ms": {"p99": float("nan")}},
]


def _sink_target(kind: str, tmp_path: Path, port: int, hook: str = "") -> str:
    return {"jsonl": str(tmp_path / "out.jsonl"), "zmq": f"tcp://127.0.0.1:{port}", "lines": "-", "webhook": hook}[kind]


def test_every_registered_sink_kind_is_covered_here() -> None:
    from drsn_stream.sinks import SINK_KINDS

    assert set(SINK_KINDS) == {"jsonl", "zmq", "lines", "webhook"}


@pytest.mark.parametrize("kind", ["jsonl", "zmq", "lines", "webhook"])
def test_a_sink_takes_every_result_object_and_closes_twice(kind: str, tmp_path: Path, free_tcp_port: int,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    from helpers import WebhookEndpoint

    from drsn_stream.sinks import Sink, make_sink

    hook = WebhookEndpoint() if kind == "webhook" else None
    sink = make_sink(kind, _sink_target(kind, tmp_path, free_tcp_port, hook.url if hook else ""))
    assert isinstance(sink, Sink)
    sub = None
    if kind == "zmq":
        sub = zmq.Context.instance().socket(zmq.SUB)
        sub.setsockopt(zmq.LINGER, 0)
        sub.setsockopt(zmq.SUBSCRIBE, b"")
        sub.connect(f"tcp://127.0.0.1:{free_tcp_port}")
        time.sleep(0.5)  # a PUB drops what it sends before the subscription arrives
    for obj in _OBJECTS:
        sink.write(obj)
    sink.close()
    sink.close()
    if kind == "jsonl":
        back = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
        assert [o["type"] for o in back] == [o["type"] for o in _OBJECTS]
        assert back[0] == _OBJECTS[0] and back[-1]["latency_ms"] == {"p99": None}
    elif kind == "zmq":
        got = []
        while sub.poll(1000):
            got.append(json.loads(sub.recv_multipart()[2]))
        sub.close(0)
        assert [o["type"] for o in got] == [o["type"] for o in _OBJECTS]
    elif kind == "webhook":  # the events people act on, each posted once by the time close() returned
        hook.close()
        posted = [body for _, _, body in hook.posts]
        assert [{k: v for k, v in b.items() if k not in ("host", "text")} for b in posted] == _OBJECTS[1:3]
        assert "ALARM" in posted[0]["text"] and "HEALTH" in posted[1]["text"]
    else:
        out = capsys.readouterr().out.splitlines()
        assert len(out) == 4  # stats have no readable line
        assert "inner_014" in out[0] and "ALERT" in out[0]
        assert "ALARM" in out[1] and "NORMAL → ALERT" in out[1]
        assert "HEALTH" in out[2] and "flat" in out[2]
        assert "no envelope evidence" in out[3]


def test_unknown_sink_kinds_are_one_clear_error() -> None:
    from drsn_stream.sinks import make_sink

    with pytest.raises(ConfigError, match="valid kinds: jsonl, zmq, lines, webhook"):
        make_sink("kafka", "x")


def test_a_broken_sink_is_counted_and_the_others_still_get_everything(tmp_path: Path) -> None:
    from drsn_stream.sinks import Outputs, make_sink

    class Broken:
        def write(self, obj: dict) -> None:
            raise OSError("disk full")

        def close(self) -> None:
            raise OSError("disk full")

    outputs = Outputs([Broken(), make_sink("jsonl", str(tmp_path / "ok.jsonl"))])
    for obj in _OBJECTS:
        outputs.write(obj)
    outputs.close()
    assert outputs.failures["Broken"] == len(_OBJECTS) + 1 and "disk full" in (outputs.last_error or "")
    assert len((tmp_path / "ok.jsonl").read_text().splitlines()) == len(_OBJECTS)
