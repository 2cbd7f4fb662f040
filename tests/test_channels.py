"""Multi-channel frames: every channel of a frame is a stream of its own (docs/wire-format.md), over
real CWRU recordings, the shipped model and ZeroMQ sockets on loopback. The monitors run their
engine in the test's process (``engine_process=False``): channels are the ingest's business, and an
engine child would only add its torch import."""

from __future__ import annotations

import argparse
import json
import signal
import threading
import time
from collections import Counter

import numpy as np
import pytest
import zmq
from helpers import cwru_signal, wait_until
from scipy.signal import resample_poly

from drsn_stream.app.pipeline import Pipeline, RunConfig
from drsn_stream.dsp import FrameDSP, StreamDSP
from drsn_stream.engine.runner import Runner
from drsn_stream.models import load_artifact
from drsn_stream.sources import make_source
from drsn_stream.sources import publish as publish_cmd
from drsn_stream.sources.wire import WireError, decode, encode
from drsn_stream.types import Frame, channel_ids

NORMAL = "normal_0_97.mat"  # 48 kHz, like every CWRU baseline
IR014 = "12k_Drive_End_IR014_1_170.mat"
OR021 = "12k_Drive_End_OR021@6_1_235.mat"

T0 = time.time()  # capture times near the receiver's clock (the decoder refuses others as bad_time)


def _module_12k(seconds: float, *names: str) -> np.ndarray:
    """(n, channels) float32 at 12 kHz: one real CWRU recording per channel (normal downsampled)."""
    n = int(seconds * 12000)
    cols = []
    for name in names:
        x = cwru_signal(name)
        if name.startswith("normal"):
            x = resample_poly(x, 1, 4)
        cols.append(x[:n])
    return np.stack(cols, axis=1).astype(np.float32)


def test_each_channel_gets_the_windows_and_labels_of_its_own_stream_at_any_chunk_size() -> None:
    # A 48 kHz two-channel module: the real normal baseline and a real inner-race recording (x4).
    n = 48000 * 2
    x = np.stack([cwru_signal(NORMAL)[:n], resample_poly(cwru_signal(IR014), 4, 1)[:n]], axis=1).astype(np.float32)
    x[7000:7100, 1] = np.nan  # a dropout on channel 1 only
    module, meta = load_artifact("bearing-cwru")
    runner = Runner(module, window=meta.window, device="cpu", max_batch=64)
    ids = channel_ids("gw", 2)
    assert ids == ("gw/ch0", "gw/ch1")
    per_chunk = []
    for chunk in (1, 333, 4096):
        dsp = FrameDSP(meta, ids)
        windows = []
        for seq, i in enumerate(range(0, n, chunk)):
            windows += dsp.push(Frame("gw", seq, 1e9 + i / 48000, 48000.0, x[i : i + chunk]))
        per_chunk.append((windows, dsp.nonfinite_by_stream()))
    for k, sid in enumerate(ids):
        alone = StreamDSP(meta, channel=k)
        ref = []
        for seq, i in enumerate(range(0, n, 1000)):
            ref += alone.push(Frame("gw", seq, 1e9 + i / 48000, 48000.0, x[i : i + 1000]))
        assert len(ref) == (n // 4 - 2048) // 512 + 1
        for windows, nonfinite in per_chunk:
            mine = [w for w in windows if w.stream_id == sid]
            assert [w.index for w in mine] == [w.index for w in ref]
            assert np.array_equal(np.stack([w.data for w in mine]), np.stack([w.data for w in ref]))
            assert nonfinite == {"gw/ch1": 100}
        probs, _ = runner.infer(np.stack([w.data for w in ref]))
        labels = Counter(meta.labels[j] for j in probs.argmax(1))
        want = ("normal", "inner_014")[k]
        assert labels[want] > 0.8 * len(ref), (sid, labels)


@pytest.mark.parametrize("names", [["a"], ["a", "a"], ["a", 3], ["a", ""], ["a", "b/c"], ["a", "x" * 33], "ab"])
def test_bad_names_are_rejected_as_bad_field(names) -> None:
    parts = encode("gw", 0, T0, 12000, np.zeros((4, 2), np.float32))
    header = json.loads(parts[1])
    header["names"] = names
    with pytest.raises(WireError) as err:
        decode([parts[0], json.dumps(header).encode(), parts[2]])
    assert err.value.reason == "bad_field" and "names" in str(err.value)


def test_names_round_trip_and_name_the_channel_streams() -> None:
    x = np.arange(8, dtype=np.float32).reshape(4, 2)
    frame = decode(encode("press-3", 5, T0, 12000, x, names=["DE", "FE"]))
    assert frame.names == ("DE", "FE") and np.array_equal(frame.samples, x)
    assert channel_ids(frame.stream_id, 2, frame.names) == ("press-3/DE", "press-3/FE")
    assert decode(encode("press-3", 5, T0, 12000, x)).names is None
    assert channel_ids("press-3", 1) == ("press-3",)  # a single-channel stream keeps its id


def _push_module(port: int, seconds: float, stop: threading.Event) -> None:
    """A DAQ gateway on a PUSH socket: stream "gw" (normal, inner race; no names) and stream
    "mod" (outer race, normal; names DE/FE) at 12 kHz, 512 samples per message, three times
    real time, plus one message whose names repeat (malformed)."""
    gw = _module_12k(seconds, NORMAL, IR014)
    mod = _module_12k(seconds, OR021, NORMAL)
    sock = zmq.Context.instance().socket(zmq.PUSH)
    sock.connect(f"tcp://127.0.0.1:{port}")
    try:
        bad = encode("mod", 0, time.time(), 12000, mod[:512])
        header = json.loads(bad[1])
        header["names"] = ["DE", "DE"]
        sock.send_multipart([bad[0], json.dumps(header).encode(), bad[2]])
        for seq, i in enumerate(range(0, len(gw) - 511, 512)):
            if stop.is_set():
                break
            t = time.time()
            sock.send_multipart(encode("gw", seq, t, 12000, gw[i : i + 512]))
            sock.send_multipart(encode("mod", seq, t, 12000, mod[i : i + 512], names=["DE", "FE"]))
            time.sleep(512 / 12000 / 3)
    finally:
        sock.close(linger=2000)


@pytest.mark.slow
def test_every_channel_of_multi_channel_frames_over_zmq_is_labelled(free_tcp_port: int) -> None:
    cwru_signal(IR014)  # skips without the real data
    pipe = Pipeline(RunConfig(sources=(f"zmq+pull+bind://127.0.0.1:{free_tcp_port}",), stale_ms=60000,
                              stats_every_s=3600, engine_process=False))
    pipe.start()
    stop = threading.Event()
    sender = threading.Thread(target=_push_module, args=(free_tcp_port, 4.5, stop))
    sender.start()
    try:
        sender.join(timeout=60)
        deadline = time.time() + 20
        while time.time() < deadline and min((sum(c.values()) for c in pipe.label_counts.values()), default=0) < 90:
            time.sleep(0.2)
    finally:
        stop.set()
        sender.join(timeout=10)
        pipe.stop()
    counts = pipe.label_counts
    assert set(counts) == {"gw/ch0", "gw/ch1", "mod/DE", "mod/FE"}, pipe.summary()
    for sid, want in (("gw/ch0", "normal"), ("gw/ch1", "inner_014"), ("mod/DE", "outer_021"), ("mod/FE", "normal")):
        c = counts[sid]
        assert c.most_common(1)[0][0] == want and c[want] > 0.8 * sum(c.values()), (sid, c)
    src = pipe.stats_json()["sources"]
    assert next(iter(src.values()))["malformed"] == {"bad_field": 1}
    assert "malformed 1" in pipe.summary()


def test_channel_option_selects_one_channel_and_counts_a_missing_one(free_tcp_port: int) -> None:
    x = _module_12k(0.5, NORMAL, IR014, OR021)
    got: dict[str, list[Frame]] = {}
    for k in (1, 3):
        src = make_source(f"zmq+pull+bind://127.0.0.1:{free_tcp_port}?channel={k}&until_eos=1")
        with src:
            reader = threading.Thread(target=lambda k=k, src=src: got.setdefault(str(k), []).extend(src))
            reader.start()
            sock = zmq.Context.instance().socket(zmq.PUSH)
            sock.connect(f"tcp://127.0.0.1:{free_tcp_port}")
            for seq, i in enumerate(range(0, len(x), 500)):
                sock.send_multipart(encode("gw", seq, T0 + i / 12000, 12000, x[i : i + 500]))
            sock.send_multipart(encode("mod", 0, T0, 12000, x[:500], names=["DE", "FE", "BA"]))
            sock.send_multipart([b"gw", json.dumps({"v": 1, "stream": "gw", "eos": True}).encode()])
            sock.send_multipart([b"mod", json.dumps({"v": 1, "stream": "mod", "eos": True}).encode()])
            sock.close(linger=2000)
            reader.join(timeout=20)
        if k == 3:
            assert got["3"] == [] and src.stats.snapshot()["malformed"] == {"no_channel": 13}
            assert "?channel=3" in src.last_error and "3 channel(s)" in src.last_error
    frames = got["1"]
    assert {channel_ids(f.stream_id, f.samples.shape[1], f.names) for f in frames} == {("gw/ch1",), ("mod/FE",)}
    gw = np.concatenate([f.samples[:, 0] for f in frames if f.stream_id == "gw"])
    assert np.array_equal(gw, x[:, 1])


@pytest.mark.slow
def test_simulated_modules_are_labelled_per_channel() -> None:
    # 2 machines of 3 channels: 6 streams, each channel an independent replay with its own faults
    cfg = RunConfig(sources=("sim:bearing?machines=2&channels=3&seed=3&speed=6",), stats_every_s=3600,
                    stale_ms=60000, engine_process=False)
    pipe = Pipeline(cfg)
    got: list[dict] = []
    pipe.outputs.add(type("S", (), {"write": lambda self, o: got.append(o), "close": lambda self: None})())
    sim = pipe.sources[0]
    win_s = 2048 / 12000 / 6

    def scored_windows() -> list[dict]:
        preds = [o for o in list(got) if o["type"] == "prediction"]
        return [o for o in preds if sim.truth(o["stream"], o["time"]) == sim.truth(o["stream"], o["time"] - win_s)]

    def mixed_windows(scored: list[dict]) -> list[dict[str, tuple[str, str]]]:
        """Moments when the channels of one module ran different conditions."""
        by_window: dict[tuple[str, int], dict[str, tuple[str, str]]] = {}
        for o in scored:
            machine = o["stream"].rsplit("/", 1)[0]
            by_window.setdefault((machine, o["index"]), {})[o["stream"]] = (o["label"],
                                                                             sim.truth(o["stream"], o["time"]))
        return [w for w in by_window.values() if len({truth for _, truth in w.values()}) >= 2]

    pipe.start()
    try:  # until enough windows and mixed moments are in (about 6 s at most on a quiet machine)
        wait_until(lambda: (lambda sc: len(sc) > 300 and len(mixed_windows(sc)) >= 10)(scored_windows()), 60, 0.5)
    finally:
        pipe.stop()
    preds = [o for o in got if o["type"] == "prediction"]
    assert {o["stream"] for o in preds} == {f"sim/m{m}/ch{k}" for m in range(2) for k in range(3)} == set(sim.streams)
    scored = scored_windows()
    agree = np.mean([o["label"] == sim.truth(o["stream"], o["time"]) for o in scored])
    assert len(scored) > 300 and agree >= 0.9, agree
    # moments when the channels of one module ran different conditions, and the monitor said so
    mixed = mixed_windows(scored)
    assert len(mixed) >= 10
    assert np.mean([len({label for label, _ in w.values()}) >= 2 for w in mixed]) >= 0.8


def test_publish_sends_every_channel_of_a_simulated_module(free_tcp_port: int) -> None:
    spec = "sim:bearing?machines=2&channels=4&fast=1&duration=1&fault=inner_014"
    with make_source(spec) as sim:
        ref = {(f.stream_id, f.seq): f.samples for f in sim}
    src = make_source(f"zmq+pull+bind://127.0.0.1:{free_tcp_port}?until_eos=1")
    frames: list[Frame] = []
    with src:
        reader = threading.Thread(target=lambda: frames.extend(src))
        reader.start()
        args = argparse.Namespace(source=[spec], to=f"tcp://127.0.0.1:{free_tcp_port}", duration=None, pull=True,
                                  connect=True, dtype="float32", wait_subscriber=0.0, quiet=True)
        before = signal.getsignal(signal.SIGINT)
        assert publish_cmd.run(args) == 0
        reader.join(timeout=30)
    # run() takes Ctrl-C over while it publishes, then gives the caller's handler back
    assert signal.getsignal(signal.SIGINT) is before
    assert len(frames) == len(ref) > 0
    for f in frames:
        assert f.samples.shape == (512, 4) or f.seq == max(s for _, s in ref)
        assert np.array_equal(f.samples, ref[(f.stream_id, f.seq)])
    ids = {sid for f in frames for sid in channel_ids(f.stream_id, f.samples.shape[1], f.names)}
    assert ids == {f"sim/m{m}/ch{k}" for m in range(2) for k in range(4)}


def test_a_multi_channel_recording_is_monitored_channel_by_channel(tmp_path) -> None:
    from scipy.io import wavfile

    path = tmp_path / "module.wav"
    wavfile.write(path, 12000, _module_12k(4.0, IR014, OR021))  # float32 stereo WAV
    pipe = Pipeline(RunConfig(sources=(f"file:{path}",), fast=True, stats_every_s=3600, engine_process=False))
    pipe.run()
    counts = pipe.label_counts
    assert set(counts) == {"module/ch0", "module/ch1"} == set(pipe.sources[0].streams)
    for sid, want in (("module/ch0", "inner_014"), ("module/ch1", "outer_021")):
        assert counts[sid][want] > 0.8 * sum(counts[sid].values()), (sid, counts[sid])


def test_channel_picks_one_column_of_a_recording_under_the_id_it_has_among_all(tmp_path) -> None:
    # ?channel=K picks one channel of a gateway's frames; of a recording it was refused ("must be
    # one of de, fe, ba": only a CWRU .mat file's channels were named)
    from scipy.io import wavfile

    from drsn_stream.errors import ConfigError

    path = tmp_path / "module.wav"
    wavfile.write(path, 12000, _module_12k(3.0, IR014, OR021))
    pipe = Pipeline(RunConfig(sources=(f"file:{path}?channel=1",), fast=True, stats_every_s=3600, engine_process=False))
    pipe.run()
    counts = pipe.label_counts
    assert set(counts) == {"module/ch1"} == set(pipe.sources[0].streams)
    assert counts["module/ch1"]["outer_021"] > 0.8 * sum(counts["module/ch1"].values()), counts
    for spec, said in (("?channel=2", "channel=2, but it has 2 column"),
                       ("?channel=FE", "names a .mat or TDMS file's channel")):
        with pytest.raises(ConfigError, match=said), make_source(f"file:{path}{spec}") as src:
            list(src)


def _window_ends(phases: int) -> tuple[dict[str, set[int]], dict[str, Counter]]:
    """A fast simulated gateway of 8 two-channel modules at hop 2048, whose frames leave in step:
    for each stream, where its windows end within the hop (samples), and its label counts."""
    cfg = RunConfig(sources=("sim:bearing?machines=8&channels=2&fast=1&duration=4&fault=inner_014&seed=2",),
                    fast=True, hop=2048, phases=phases, stats_every_s=3600, engine_process=False)
    pipe = Pipeline(cfg)
    got: list[dict] = []
    pipe.outputs.add(type("S", (), {"write": lambda self, o: got.append(o), "close": lambda self: None})())
    pipe.run()
    t0 = pipe.sources[0].t0
    ends: dict[str, set[int]] = {}
    for o in got:
        if o["type"] == "prediction":
            end = round((o["time"] - t0) * 12000) + 1  # one past the window's last sample
            ends.setdefault(o["stream"], set()).add(end % 2048)
    return ends, pipe.label_counts


def test_phases_spread_a_gateways_windows_over_the_hop_and_keep_every_label() -> None:
    """``--phases 4`` at hop 2048: the modules of a gateway that send in step no longer all complete
    a window in the same frame (all 16 windows of the gateway at once, one hop apart); each module's
    channels keep one phase, every stream still gets a window per hop and the same labels."""
    one, counts_one = _window_ends(1)
    four, counts_four = _window_ends(4)
    streams = {f"sim/m{m}/ch{k}" for m in range(8) for k in range(2)}
    assert set(one) == set(four) == streams
    assert all(v == {0} for v in one.values())  # every stream's windows end on the same frames
    for m in range(8):  # a module's channels share their phase; it is one of the 4 quarters of the hop
        assert four[f"sim/m{m}/ch0"] == four[f"sim/m{m}/ch1"] and len(four[f"sim/m{m}/ch0"]) == 1
        assert four[f"sim/m{m}/ch0"] <= {0, 512, 1024, 1536}
    per_phase = Counter(next(iter(four[f"sim/m{m}/ch0"])) for m in range(8))
    assert len(per_phase) >= 3 and max(per_phase.values()) <= 4, per_phase  # spread: at most half at once
    for sid in streams:
        n1, n4 = sum(counts_one[sid].values()), sum(counts_four[sid].values())
        assert n1 - 1 <= n4 <= n1  # a later start costs at most the first window
        assert counts_four[sid]["inner_014"] >= 0.8 * n4 and counts_one[sid]["inner_014"] >= 0.8 * n1
