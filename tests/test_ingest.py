"""The vectorized ingest path gives what the frame-by-frame path gives: the same frames from the
wire, the same sensor health, the same windows bit for bit; hostile bytes lose only themselves."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import scipy.io.wavfile
import zmq

from drsn_stream import jit
from drsn_stream.app.ingest import INGEST_SLICE, INGEST_SLICE_MAX, slices
from drsn_stream.app.pipeline import Pipeline, RunConfig
from drsn_stream.monitor.health import HealthConfig, HealthMonitor
from drsn_stream.sources import make_source
from drsn_stream.sources.wire import Decoder, WireError, decode, encode, encode_eos
from drsn_stream.types import Frame

RATE = 12000.0


def _outcome(fn, parts):
    """What a decode gives, comparable: the frame's fields and bytes, or the rejection's reason."""
    try:
        f = fn(parts)
    except WireError as exc:
        return ("rejected", exc.reason)
    if not isinstance(f, Frame):
        return ("eos", f.stream_id)
    return (f.stream_id, f.seq, f.t_capture, f.sample_rate, f.samples.dtype, f.samples.shape, f.samples.tobytes(),
            f.names, f.rpm)


def _hostile(parts: list[bytes]) -> list[list[bytes]]:
    """Variants of a good message that keep its header's layout (so a Decoder knows its template)."""
    topic, header, payload = parts
    head = json.loads(header)
    seq, t = head["seq"], head["t"]
    swap = lambda old, new: [topic, header.replace(old, new, 1), payload]  # noqa: E731
    return [
        swap(f'"seq":{seq},'.encode(), b'"seq":9223372036854775808,'),  # 2**63
        swap(f'"seq":{seq},'.encode(), b'"seq":-1,'),
        swap(f'"t":{t!r},'.encode(), b'"t":1e400,'),
        swap(f'"t":{t!r},'.encode(), f'"t":{t + 4e7!r},'.encode()),  # a year and more ahead
        swap(f'"t":{t!r},'.encode(), b'"t":NaN,'),
        [b"someone-else", header, payload],
        [topic, header, payload[:-1]],
        [topic, header, payload + b"\0" * 4],
        [topic, header[:-1] + b',"\\u0073eq":5}', payload],  # seq again, escaped: the last one counts
        [topic, header[:-1] + b',"units":"' + b"x" * 5000 + b'"}', payload],
        [topic, header[:-1] + b',"names":[[[[[[[[[["a"]]]]]]]]]]}', payload],
        [topic, header.replace(b'"v":1', b'"v":2'), payload],
        [topic, header],
        [topic, b"\xff\xfe" + header, payload],
    ]


def test_a_decoder_gives_what_decode_gives_for_good_and_hostile_messages() -> None:
    rng = np.random.default_rng(3)
    now = time.time()
    good = []
    for k in range(6):
        good.append(encode("press-1", k, now + k * 0.04, RATE, rng.standard_normal(64).astype(np.float32)))
        good.append(encode("gw/7", k, now, 25600.0, rng.standard_normal((32, 3)), dtype="int16", scale=1e-3,
                           names=["x", "y", "z"], units="g"))
    decoder = Decoder()
    messages = good + [h for g in good for h in _hostile(g)] + good + [encode_eos("press-1")]
    for parts in messages:
        assert _outcome(decoder.decode, parts) == _outcome(decode, parts), parts[1][:120]
    # every variant is refused, but the one that is valid JSON with seq given twice: its last seq counts
    outcomes = [_outcome(decoder.decode, h) for h in _hostile(good[0])]
    accepted = [o for o in outcomes if o[0] != "rejected"]
    assert len(accepted) == 1 and accepted[0][1] == 5
    assert {o[1] for o in outcomes if o[0] == "rejected"} == {
        "bad_seq", "bad_time", "topic_mismatch", "bad_size", "bad_header", "bad_version", "wrong_parts", "bad_json"}


def test_a_decoder_reads_the_speed_a_frame_carries_as_decode_does() -> None:
    """A gateway's tachometer reading (``rpm``) changes from frame to frame: right after ``t``, as
    ``encode`` writes it, the Decoder reads it without parsing the header (one template for the
    stream, with or without it); anywhere else in the header, or not a speed, the Decoder gives
    what ``decode`` gives all the same; a value that is no speed is left out, the frame kept."""
    rng = np.random.default_rng(4)
    now = time.time()
    decoder = Decoder()
    x = rng.standard_normal((64, 2)).astype(np.float32)
    good = [encode("gw/1", k, now + k * 0.01, RATE, x, rpm=rpm, names=["DE", "FE"])
            for k, rpm in enumerate([1797.0, 1796.4, None, 0, 1e6, 2.5e-3, 1772])]
    assert b'"t":' + repr(now).encode() + b',"rpm":1797.0,"rate"' in good[0][1]
    hostile = []
    for bad in (b"-1", b"1e999", b"1000000.5", b'"1797"', b"true", b"null", b"[1]", b"NaN"):
        hostile.append([good[1][0], good[1][1].replace(b'"rpm":1796.4', b'"rpm":' + bad), good[1][2]])
    elsewhere = [good[0][0], good[0][1].replace(b'"rpm":1797.0,', b"").replace(b'"v":1', b'"v":1,"rpm":1500'),
                 good[0][2]]
    twice = [good[0][0], good[0][1].replace(b'"rpm":1797.0,', b'"rpm":1797.0,"rpm":10,'), good[0][2]]
    for parts in [*good, *hostile, elsewhere, twice, *good]:
        assert _outcome(decoder.decode, parts) == _outcome(decode, parts), parts[1][:120]
    assert [_outcome(decoder.decode, p)[-1] for p in good] == [1797.0, 1796.4, None, 0.0, 1e6, 2.5e-3, 1772.0]
    # an rpm that is no speed loses the speed, not the frame
    assert {_outcome(decode, p)[-1] for p in hostile} == {None}
    assert [_outcome(decode, p)[:-1] for p in hostile] == [_outcome(decode, good[1])[:-1]] * len(hostile)
    assert (decode(elsewhere).rpm, decode(twice).rpm) == (1500.0, 10.0)
    # the speed read where it lies: one template for the stream
    assert len(decoder._templates) == 1
    with pytest.raises(WireError, match="rpm=-5 must be a shaft speed of 0 .. 1000000 rpm"):
        encode("gw/1", 0, now, RATE, x, rpm=-5)


def _located(headers: list[bytes], compiled: bool) -> list[list[int]]:
    """``recv_jit``'s ``_locate`` of these headers, as the receiver runs it after a take."""
    from drsn_stream.sources import recv_jit

    locate = recv_jit._compiled.get()[2] if compiled else recv_jit._locate_py
    hbuf = np.frombuffer(b"".join(headers) or b"\0", dtype=np.uint8).copy()
    ends = np.cumsum([len(h) for h in headers])
    rows = np.zeros((len(headers), 9), dtype=np.int64)
    rows[:, 0], rows[:, 3], rows[:, 4] = 3, ends - [len(h) for h in headers], ends
    out = np.empty((len(headers), recv_jit.AT_COLUMNS), dtype=np.int64)
    locate(hbuf, rows, len(headers), out)
    return out.tolist()


def _header_variants(header: bytes) -> list[bytes]:
    """A header's seq, t and rpm written every way the wire's grammar allows and many it does not."""
    head = json.loads(header)
    seq, t = f'"seq":{head["seq"]},'.encode(), f'"t":{head["t"]!r},'.encode()
    seqs = [b"0", b"00", b"07", b"1" * 18, b"1" * 19, b"1" * 20, b"-1", b"1.0", b"1e3", b"", b" 1", b"1_0"]
    ts = [b"0", b"-0", b"0.5", b"-1.25", b"12.", b".5", b"1e5", b"1E+05", b"1e-3", b"1e1234", b"1.5e", b"01",
          b"1" * 21 + b".5", b"1" * 22, b"1." + b"2" * 20, b"1." + b"2" * 21, b"NaN", b"Infinity", b"1.5.5",
          b"--1", b"1,", b"+1"]
    rpms = [b"1797", b"0", b"1.5e3", b"-1", b"abc", b"1797.", b'"1797"', b"1e9999", b""]
    out = [header.replace(seq, b'"seq":' + v + b",", 1) for v in seqs]
    out += [header.replace(t, b'"t":' + v + b",", 1) for v in ts]
    out += [header.replace(t, t + b'"rpm":' + v + b",", 1) for v in rpms]
    out += [header.replace(t, t[:-1], 1), header.replace(seq, seq[:-1], 1), header.replace(seq, b"", 1),
            header.replace(b'"t"', b'"T"', 1), header[:-1] + b',"x":",\\"seq\\":1"}',
            header.replace(seq, b'"seq":5,"seq":6,', 1), b',"seq":1,"t":2,', b',"seq":1,"t":2', b"", b"{}"]
    return out


@pytest.mark.parametrize("compiled", [False, pytest.param(True, marks=pytest.mark.skipif(
    not jit.available(), reason="numba is not installed"))], ids=["python", "compiled"])
def test_the_compiled_receive_finds_seq_and_t_where_the_regular_expression_does(compiled: bool) -> None:
    """``_locate`` (the compiled receive's look at each header) says where seq, t and rpm are
    only where ``_SEQ_T`` matches there too, with the same values, and finds them in every header
    ``encode`` writes; a Decoder given what it found reads every message, good or hostile, as it
    does without it: the same frame or None."""
    from drsn_stream.sources.wire import _SEQ_T

    now = time.time()
    rng = np.random.default_rng(5)
    good = [encode("press-1", k, now + k * 0.04, RATE, rng.standard_normal(64).astype(np.float32)) for k in range(3)]
    good += [encode("gw/1", k, now, RATE, rng.standard_normal((8, 2)), rpm=rpm, names=["DE", "FE"])
             for k, rpm in enumerate([1797.0, 0, 2.5e-3])]
    headers = [p[1] for p in good] + [v for p in good for v in _header_variants(p[1])]
    found = 0
    for header, at in zip(headers, _located(headers, compiled)):
        m = _SEQ_T.search(header)
        first = header.find(b',"seq":')
        if at[0] < 0:  # not found: only where the first ,"seq": starts no match of at most 18 digits
            assert m is None or m.start() != first or len(m.group(1)) > 18, header
            continue
        found += 1
        assert m is not None and (m.start(), m.end()) == (at[0], at[1]), header
        assert int(m.group(1)) == at[2] and m.span(2) == (at[3], at[4]), header
        assert (m.span(3) if m.group(3) is not None else (-1, -1)) == (at[5], at[6]), header
    assert found > len(good) + 20
    assert all(at[0] > 0 for at in _located([p[1] for p in good], compiled))
    decoder = Decoder(max_skew_s=1e9)
    messages = good + [[p[0], v, p[2]] for p in good for v in _header_variants(p[1])] + \
        [h for g in good for h in _hostile(g)]
    for parts in good:
        decoder.decode(parts, now=now)  # the templates
    for parts, at in zip(messages, _located([p[1] for p in messages], compiled)):
        if len(parts) == 3:
            with_at = decoder.head(parts[0], parts[1], len(parts[2]), now, at)
            assert with_at == decoder.head(parts[0], parts[1], len(parts[2]), now), parts[1][:120]


def test_a_polls_payloads_converted_together_give_what_decode_gives_each() -> None:
    """``to_frames`` converts the payloads of many messages per layout in blocks (here several
    blocks of one layout, three layouts interleaved; big float32 payloads as views of
    themselves): every frame is the one ``decode`` gives alone."""
    from drsn_stream.sources.wire import CONVERT_BYTES, to_frames

    rng = np.random.default_rng(9)
    now = time.time()
    messages = []
    for k in range(12):
        messages.append(encode("big", k, now + k, RATE, rng.standard_normal((8192, 4)).astype(np.float32)))
        messages.append(encode("gw/2", k, now + k, 25600.0, rng.standard_normal((256, 3)), dtype="int16",
                               scale=1e-3, names=["x", "y", "z"]))
        messages.append(encode("f64", k, now + k, RATE, rng.standard_normal((8192, 2)), dtype="float64"))
    assert 12 * 8192 * 2 * 8 > 3 * CONVERT_BYTES  # "f64" takes several blocks
    decoder = Decoder()
    for parts in messages[:3]:
        decoder.decode(parts, now=now)  # learns the templates
    heads = [decoder.head(p[0], p[1], len(p[2]), now) for p in messages]
    assert None not in heads
    # big float32 payloads are used where they lie, one of them at an odd address (as bytes in
    # a socket's receive buffer may be): the same samples, aligned, and the views cannot be written to
    payloads = [p[2] for p in messages]
    payloads[3] = memoryview(b"\0" + payloads[3])[1:]
    got = to_frames(heads, payloads)
    assert [_outcome(lambda _, f=f: f, None) for f in got] == [_outcome(decode, p) for p in messages]
    assert all(f.samples.flags.aligned for f in got)  # the odd one copied
    assert not any(f.samples.flags.writeable for f in got[::3] if f.seq != 1)


def test_a_poll_of_good_and_hostile_messages_loses_only_the_hostile_ones(free_tcp_port: int) -> None:
    """PUSH -> PULL on loopback: everything is queued before the source reads, so polls hold many
    frames; each hostile message is counted by its reason and every good frame comes through."""
    rng = np.random.default_rng(5)
    now = time.time()
    src = make_source(f"zmq+pull+bind://127.0.0.1:{free_tcp_port}?until_eos=1")
    sent, hostile = [], 0
    with src:
        push = zmq.Context.instance().socket(zmq.PUSH)
        push.connect(f"tcp://127.0.0.1:{free_tcp_port}")
        for k in range(20):
            for sid in ("a", "b", "c"):
                parts = encode(sid, k, now + k * 0.04, RATE, rng.standard_normal(128).astype(np.float32))
                sent.append(parts)
                push.send_multipart(parts)
                if sid == "b":
                    for bad in _hostile(parts)[:4]:
                        push.send_multipart(bad)
                        hostile += 1
        for sid in ("a", "b", "c"):
            push.send_multipart(encode_eos(sid))
        time.sleep(0.5)
        polls = list(src.batches())
        push.close(0)
    frames = [f for poll in polls for f in poll]
    assert len(polls) < len(frames)  # frames came several to a poll
    assert [(f.stream_id, f.seq) for f in frames] == [(json.loads(p[1])["stream"], json.loads(p[1])["seq"]) for p in sent]
    assert all(np.array_equal(f.samples[:, 0], np.frombuffer(p[2], "<f4")) for f, p in zip(frames, sent))
    stats = src.stats.snapshot()
    assert sum(stats["malformed"].values()) == hostile
    assert stats["malformed"] == {"bad_seq": 40, "bad_time": 40}
    assert stats["frames"] == len(sent) and stats["ended"] == ["a", "b", "c"]


def _signals(seconds: float = 5.0) -> list[Frame]:
    """Frames of several streams as a gateway interleaves them, with what a real plant sends:
    NaN samples, a sensor that goes flat, one that clips, a step, a gap, a 24 kHz stream, a
    16-channel module, a stream that changes its rate, odd frame lengths; in a backlog (the
    last two come after the others) a poll holds many frames of one stream."""
    rng = np.random.default_rng(11)
    n_total = int(seconds * RATE)
    t0 = time.time() - seconds
    one = {f"s{k}": (rng.standard_normal(n_total) * 0.1).astype(np.float32) for k in range(6)}
    one["s1"][6000:7000] = np.nan
    one["s2"][9000:] = 0.25  # goes flat
    one["s3"] = np.clip(one["s3"] * 5, -0.2, 0.2)  # clips
    one["s4"][42000:] += 3.0  # a DC step, once its level is learned (learn_s)
    fast = (rng.standard_normal(2 * n_total) * 0.1).astype(np.float32)
    module = (rng.standard_normal((n_total, 16)) * 0.1).astype(np.float32)
    module[3000:4000, 5] = np.inf
    frames = []
    for k, i in enumerate(range(0, n_total, 512)):
        t = t0 + i / RATE
        for sid, x in one.items():
            if sid == "s5" and k == 7:
                continue  # a gap
            frames.append(Frame(sid, k, t, RATE, x[i : i + 512, None]))
        frames.append(Frame("fast", k, t, 2 * RATE, fast[2 * i : 2 * i + 1024, None]))
        frames.append(Frame("gw", k, t, RATE, module[i : i + 512]))
    # a stream that switches its rate (12 kHz, 11.025 kHz) every 10 frames
    frames += [Frame("sw", k, t0 + k * 0.04, 11025.0 if (k // 10) % 2 else RATE,
                     (rng.standard_normal((441 if (k // 10) % 2 else 480, 1)) * 0.1).astype(np.float32))
               for k in range(int(seconds / 0.04))]
    # odd lengths: a stream of 333-sample frames
    odd = (rng.standard_normal(n_total) * 0.1).astype(np.float32)
    frames += [Frame("odd", k, t0 + i / RATE, RATE, odd[i : i + 333, None]) for k, i in enumerate(range(0, n_total, 333))]
    return frames


def _ingesting(**config) -> Pipeline:
    """A monitor whose ingest the test drives frame by frame (``_ingest_frames``); its windows
    stay in the batcher's queue (nothing stale, nothing dropped)."""
    return Pipeline(RunConfig(sources=("sim",), device="cpu", engine_process=False, stale_ms=0.0,
                              queue_capacity=1 << 20, stats_every_s=3600, **config))


def _run(frames: list[Frame], poll: int, *, sliced: bool = False, **config) -> tuple[list, dict, list, dict]:
    pipe = _ingesting(**config)
    for i in range(0, len(frames), poll):
        for part in pipe.ingest.runs(frames[i : i + poll]) if sliced else (frames[i : i + poll],):  # as the monitor does
            pipe._ingest_frames(part)
    # streams are independent: their windows and events may interleave differently, each in its order
    windows = sorted(pipe.batcher._q, key=lambda w: w.stream_id)
    got = [(w.stream_id, w.index, w.t_last, w.data.tobytes(), w.healthy) for w in windows]
    events = sorted(((e.type, e.stream_id, json.dumps(e.data, sort_keys=True)) for e in pipe.events.recent()),
                    key=lambda e: e[1])
    health = {sid: (h.state, h.reasons, h.frames, h.gaps, h.non_finite, h.clipped, h.steps)
              for sid, h in pipe.health.states().items()}
    return got, health, events, pipe.stats_json()["nonfinite_samples"]


def test_a_big_poll_reaches_the_engine_first_in_a_short_run_then_in_longer_ones() -> None:
    """The first run of a burst is short (its windows start the idle engine), the later ones
    longer; every frame is in exactly one run, in the poll's order, whatever its channels."""
    n = 2 * INGEST_SLICE_MAX + 300  # a first run, two full later runs and a last one
    plain = [Frame(f"m{i}", 0, 0.0, 12000.0, np.zeros((512, 1), np.float32)) for i in range(n)]
    wide = [Frame(f"g{i}", 0, 0.0, 12000.0, np.zeros((512, 16), np.float32)) for i in range(n // 16)]
    for frames in (plain, wide, plain[:50], wide[:1]):
        runs = slices(frames)
        assert [f for run in runs for f in run] == frames
        width = [sum(f.samples.shape[1] for f in run) for run in runs]
        if sum(width) > INGEST_SLICE:
            assert INGEST_SLICE <= width[0] < INGEST_SLICE + 16
            assert len(width) >= 3 and all(INGEST_SLICE_MAX <= w < INGEST_SLICE_MAX + 16 for w in width[1:-1])
        else:
            assert len(runs) == 1


def test_with_phases_the_streams_whose_windows_are_due_go_first() -> None:
    """``--phases``: a gateway's modules complete their windows in turn. In a poll of all of them,
    the modules whose frames complete a window go through ingest first (their windows reach the
    engine while the rest is judged), each stream's frames in order, none lost or repeated."""
    pipe = _ingesting(hop=2048, phases=4)
    rng = np.random.default_rng(9)
    mods = [f"gw{m}" for m in range(40)]  # 640 channels: a poll is several runs
    for k in range(12):
        poll = [Frame(m, k, k * 512 / RATE, RATE, (rng.standard_normal((512, 16)) * 0.1).astype(np.float32))
                for m in mods]
        runs = pipe.ingest.runs(poll)
        order = [f for run in runs for f in run]
        assert sorted(order, key=lambda f: f.stream_id) == sorted(poll, key=lambda f: f.stream_id)
        done = []
        for run in runs:
            before = len(pipe.batcher._q)
            pipe._ingest_frames(run)
            done += [w.stream_id.split("/")[0] for w in list(pipe.batcher._q)[before:]]
        due = [f.stream_id in done for f in order]
        if k >= 4:  # every module has its first window behind it: about a quarter are due in each poll
            assert 0 < sum(due) < len(mods) and due == sorted(due, reverse=True), (k, due)


def test_a_stage_that_fails_on_a_frame_drops_that_frame_says_so_once_and_the_rest_goes_on() -> None:
    """A bug in a processing stage costs the frames it fails on, counted as ``ingest_error`` in
    their source's stats and said in one line; the other streams of the same polls, and the
    failing stream's later frames once the stage works again, go on."""
    pipe = _ingesting()
    src = pipe.sources[0]
    rng = np.random.default_rng(3)

    def poll(k: int) -> list[Frame]:  # "ok" at the model's rate (the window bank), "odd" at 11.025 kHz (its own DSP)
        return [Frame("ok", k, k * 512 / RATE, RATE, (rng.standard_normal((512, 1)) * 0.1).astype(np.float32)),
                Frame("odd", k, k * 441 / 11025.0, 11025.0, (rng.standard_normal((441, 1)) * 0.1).astype(np.float32))]

    for k in range(8):
        pipe._ingest_frames(poll(k), src)
    dsp = pipe.ingest.dsp["odd"]

    def boom(frame: Frame) -> list:
        raise RuntimeError("boom\nsecond line")

    dsp.push = boom  # type: ignore[method-assign]
    for k in range(8, 16):
        pipe._ingest_frames(poll(k), src)
    del dsp.push  # the stage works again
    for k in range(16, 24):
        pipe._ingest_frames(poll(k), src)
    windows = {sid: [w.index for w in pipe.batcher._q if w.stream_id == sid] for sid in ("ok", "odd")}
    assert windows["ok"] == list(range(24 - 3))  # every frame of "ok" windowed: one window per frame after the first 3
    assert windows["odd"] and windows["odd"] == list(range(len(windows["odd"])))
    assert src.stats.snapshot()["malformed"] == {"ingest_error": 8}
    lines = [e for e in pipe.errors if "frame dropped" in e]
    assert lines == ["stream odd: frame dropped: RuntimeError: boom"], pipe.errors  # one line, said once
    assert pipe.error_counts[lines[0]] == 8


@pytest.mark.slow
def test_a_poll_of_many_frames_gives_the_windows_and_health_of_one_frame_at_a_time() -> None:
    frames = _signals()
    one = _run(frames, 1)
    # a whole backlog in one poll: every stream has many frames in it
    for poll, sliced in ((len(frames), False), (97, False), (len(frames), True)):
        assert _run(frames, poll, sliced=sliced) == one
    # with phases (the streams whose windows are due first in a poll's runs) too
    assert _run(frames, len(frames), sliced=True, phases=4) == _run(frames, 1, phases=4)
    windows, health, events, nonfinite = one
    assert len({w[0] for w in windows}) == 6 + 1 + 16 + 1 + 1
    assert any(not w[4] for w in windows if w[0] == "s1")  # NaN: windows marked unhealthy
    assert {"flat line", "clipping", "DC offset jump"} <= {r for e in events for r in json.loads(e[2]).get("reasons", [])}
    assert nonfinite == {"s1": 1000, "gw/ch5": 1000}
    assert health["sw"][1] == ("rate change",) or "rate change" in {
        r for e in events if e[1] == "sw" for r in json.loads(e[2]).get("reasons", [])}


def _same_state(a, b) -> bool:
    """Two streams' health states (``HealthMonitor.export_state``) hold the same values: counters
    and learned levels alike (sums over a block may differ in the last bit, nothing more)."""
    for name in a.__dataclass_fields__:
        x, y = getattr(a, name), getattr(b, name)
        if name == "chunks":
            if len(x) != len(y) or any(p[0] != q[0] or not np.allclose(p[1:], q[1:], rtol=1e-12, atol=1e-300)
                                       for p, q in zip(x, y)):
                return False
        elif name == "pending":
            if len(x) != len(y) or not all(np.array_equal(p, q, equal_nan=True) for p, q in zip(x, y)):
                return False
        elif isinstance(x, np.ndarray) or isinstance(y, np.ndarray):
            if x is None or y is None or x.shape != y.shape or not np.allclose(x, y, rtol=1e-12, atol=1e-300):
                return False
        elif x != y:
            return False
    return True


# the array path with its compiled level tests and gather (where numba is there), and with numpy's
_PATHS = pytest.mark.parametrize("compiled", [None, False], ids=["default", "numpy"])


@_PATHS
def test_health_of_many_streams_at_once_is_that_of_each_alone(compiled: bool | None) -> None:
    frames = [f for f in _signals() if f.samples.shape[1] == 1]
    now = 1_800_000_000.0
    alone, together = HealthMonitor(), HealthMonitor(compiled=compiled)
    ev_alone, ev_together = [], []
    for i in range(0, len(frames), 64):
        poll = frames[i : i + 64]
        for f in poll:
            ev_alone += alone.push(f, now=now)
        ev_together += together.push_many(poll, now=now)
        ids = list(dict.fromkeys(f.stream_id for f in poll))
        for sid in ids:
            ev_alone += alone.flush(sid, now=now)
        ev_together += together.flush_many(ids, now=now)
        for sid in alone.streams:
            assert _same_state(together.export_state(sid), alone.export_state(sid)), (sid, i)
        now += 0.04
    key = lambda e: e.stream_id  # noqa: E731 - streams are independent; each one's events in order
    assert [(e.stream_id, e.time, e.data) for e in sorted(ev_together, key=key)] == \
        [(e.stream_id, e.time, e.data) for e in sorted(ev_alone, key=key)] != []
    assert together.states() == alone.states()


@_PATHS
def test_health_of_modules_judged_at_different_times_is_that_of_each_channel_alone(compiled: bool | None) -> None:
    """Multi-channel frames whose modules' windows end in different frames (``--phases``): each
    module's channels are judged (flushed) at their own times, so the samples gathered in the
    rows of one round differ from module to module. Every channel's health is still what it is
    alone: the same state, the same events, a flat line and clipping found where they are."""
    from drsn_stream.types import channel_ids, split_channels

    rng = np.random.default_rng(3)
    mods = [f"gw{m}" for m in range(12)]
    sig = {m: (rng.standard_normal((512 * 40, 4)) * 0.1).astype(np.float32) for m in mods}
    sig["gw3"][5000:9000, 2] = 0.0  # a flat line on one channel
    sig["gw5"][:, 1] = np.clip(sig["gw5"][:, 1], -0.05, 0.05)  # a clipping channel
    now = 1_800_000_000.0
    together, alone = HealthMonitor(compiled=compiled), HealthMonitor()
    ev_together, ev_alone = [], []
    for k in range(40):
        frames = [Frame(m, k, now, 12000.0, sig[m][k * 512 : (k + 1) * 512]) for m in mods]
        ev_together += together.push_channels(frames, now=now)
        for f in frames:
            for part in split_channels(f):
                ev_alone += alone.push(part, now=now)
        ids = [sid for i, m in enumerate(mods) if (k + i) % 4 == 0 for sid in channel_ids(m, 4)]
        ev_together += together.flush_many(ids, now=now)
        for sid in ids:
            ev_alone += alone.flush(sid, now=now)
        for sid in alone.streams:
            assert _same_state(together.export_state(sid), alone.export_state(sid)), (sid, k)
        now += 512 / 12000
    key = lambda e: e.stream_id  # noqa: E731 - streams are independent; each one's events in order
    assert [(e.stream_id, e.time, e.data) for e in sorted(ev_together, key=key)] == \
        [(e.stream_id, e.time, e.data) for e in sorted(ev_alone, key=key)]
    reasons = {(e.stream_id, r) for e in ev_together for r in e.data.get("reasons", [])}
    assert {("gw3/ch2", "flat line"), ("gw5/ch1", "clipping")} <= reasons


def _same_events_and_findings(ev_block: list, ev_alone: list, block: HealthMonitor) -> None:
    """A block's health events are those of one frame at a time, and they find what ``_signals``
    put in s1..s5: NaN, a flat line, clipping, a DC step and a gap."""
    key = lambda e: e.stream_id  # noqa: E731 - streams are independent; each one's events in order
    assert [(e.stream_id, e.time, e.data) for e in sorted(ev_block, key=key)] == \
        [(e.stream_id, e.time, e.data) for e in sorted(ev_alone, key=key)]
    reasons = {(e.stream_id, r) for e in ev_block for r in e.data.get("reasons", [])}
    assert {("s2", "flat line"), ("s3", "clipping"), ("s4", "DC offset jump")} <= reasons
    assert block.states()["s5"].gaps == 1 and block.states()["s1"].non_finite == 1000


@_PATHS
def test_health_of_a_block_of_frames_is_that_of_each_frame_alone(compiled: bool | None) -> None:
    """``push_block`` (the ingest's common case: a round of plain frames of one length, their
    samples one array) judges as ``push`` of each frame does: NaN, a flat line, clipping, a DC
    step and a sequence gap found where they are, the same states and events. Where it cannot
    take a round (streams not seen yet) it says so and does nothing, and the frames are pushed."""
    frames = [f for f in _signals() if f.stream_id in {f"s{k}" for k in range(6)}]
    now = 1_800_000_000.0
    alone, block = HealthMonitor(), HealthMonitor(compiled=compiled)
    ev_alone, ev_block, by_block = [], [], 0
    polls = [[f for f in frames if f.seq == k] for k in range(max(f.seq for f in frames) + 1)]  # distinct streams
    for poll in polls:
        for f in poll:
            ev_alone += alone.push(f, now=now)
        ids = [f.stream_id for f in poll]
        x = np.stack([f.samples[:, 0] for f in poll])
        seqs = np.array([f.seq for f in poll], dtype=np.int64)
        events = block.push_block(ids, x, seqs, RATE, now=now)
        if events is None:
            assert block.states().keys() <= set(ids)  # nothing done: the frames are pushed
            events = block.push_channels(poll, now=now)
        else:
            by_block += 1
        ev_block += events
        for sid in ids:
            ev_alone += alone.flush(sid, now=now)
        ev_block += block.flush_many(ids, now=now)
        for sid in alone.streams:
            assert _same_state(block.export_state(sid), alone.export_state(sid)), (sid, poll[0].seq)
        now += 512 / RATE
    assert by_block >= len(polls) - 2  # every round once the streams are known
    _same_events_and_findings(ev_block, ev_alone, block)


@_PATHS
@pytest.mark.parametrize("every_s", [0.1, 0.02], ids=["gathered", "each-frame"])
def test_health_of_a_block_judged_with_its_flush_is_that_of_each_frame_pushed_then_flushed(
        compiled: bool | None, every_s: float) -> None:
    """``push_judged`` (the block's health push and the flush of the streams that hand windows on,
    in one step) judges as ``push`` of each frame and then ``flush`` of those streams does, with
    samples gathered over frames (``check_every_s`` above a frame) or judged frame by frame, and
    streams flushed in some rounds and not others: the same states and events, NaN, a flat line,
    clipping, a DC step and a gap found where they are."""
    frames = [f for f in _signals() if f.stream_id in {f"s{k}" for k in range(6)}]
    now = 1_800_000_000.0
    cfg = HealthConfig(check_every_s=every_s)
    alone, block = HealthMonitor(cfg), HealthMonitor(cfg, compiled=compiled)
    ev_alone, ev_block, by_block = [], [], 0
    polls = [[f for f in frames if f.seq == k] for k in range(max(f.seq for f in frames) + 1)]
    for k, poll in enumerate(polls):
        ids = [f.stream_id for f in poll]
        judged = [j for j in range(len(poll)) if (j + k) % 3]  # rows whose windows go on; some twice
        judged = sorted(judged + judged[:1])
        for f in poll:
            ev_alone += alone.push(f, now=now)
        for j in dict.fromkeys(judged):
            ev_alone += alone.flush(ids[j], now=now)
        x = np.stack([f.samples[:, 0] for f in poll])
        got = block.push_judged(ids, x, np.array([f.seq for f in poll], dtype=np.int64), RATE, judged, now=now)
        if got is None:
            assert block.states().keys() <= set(ids)  # nothing done: the frames are pushed
            ev_block += block.push_channels(poll, now=now)
            ev_block += block.flush_many([ids[j] for j in dict.fromkeys(judged)], now=now)
        else:
            by_block += 1
            ev_block += got[0] + got[1]
        for sid in alone.streams:
            assert _same_state(block.export_state(sid), alone.export_state(sid)), (sid, k)
        now += 512 / RATE
    assert by_block >= len(polls) - 2  # every round once the streams are known
    _same_events_and_findings(ev_block, ev_alone, block)


@pytest.mark.slow
def test_polls_of_plain_streams_give_the_windows_and_health_of_one_frame_at_a_time() -> None:
    """A gateway of single-channel streams, the monitor's common case (a poll's frames go through
    the sensor health and the window bank as one array): whole polls, polls of many rounds and
    runs give the windows, health and events of one frame at a time, NaN and a gap included."""
    frames = [f for f in _signals() if f.stream_id in {f"s{k}" for k in range(6)}]
    one = _run(frames, 1)
    for poll in (6, 5, len(frames)):
        assert _run(frames, poll) == one
    assert _run(frames, len(frames), sliced=True, phases=4) == _run(frames, 1, phases=4)
    windows, health, events, nonfinite = one
    assert {w[0] for w in windows} == {f"s{k}" for k in range(6)}
    assert any(not w[4] for w in windows if w[0] == "s1") and nonfinite == {"s1": 1000}
    assert health["s5"][3] == 1  # the gap


def test_polls_of_plain_streams_with_sequence_numbers_past_64_bits_count_their_gaps_as_one_at_a_time() -> None:
    """Sequence numbers a source other than the wire may send (any Python int): past int64, and
    past what the health's arrays hold, a poll of plain streams gives the windows, health and
    gaps of one frame at a time (the array path steps aside for them)."""
    rng = np.random.default_rng(6)
    t0 = time.time() - 10
    seqs = [1, 2, 2**62 + 1, 2**62 + 2, 2**70, 2**70 + 1, 2**70 + 3, 5, 6, 7, 8, 9, 10, 11, 12, 13]
    frames = [Frame(f"p{m}", seq + m, t0 + k * 512 / RATE, RATE,
                    (rng.standard_normal((512, 1)) * 0.1).astype(np.float32))
              for k, seq in enumerate(seqs) for m in range(6)]
    one = _run(frames, 1)
    assert _run(frames, 6) == one and _run(frames, len(frames)) == one
    windows, health, _, _ = one
    assert len(windows) == 6 * (len(seqs) - 3)
    gaps = (2**62 - 2) + (2**70 - 2**62 - 3) + 1  # 2 -> 2**62 + 1, -> 2**70, + 1 -> + 3; 5 is a restart
    assert {sid: h[3] for sid, h in health.items()} == {f"p{m}": gaps for m in range(6)}


def test_batches_give_the_frames_iteration_gives_for_every_kind_that_replays(tmp_path: Path) -> None:
    wav = tmp_path / "rec.wav"
    scipy.io.wavfile.write(wav, 12000, (0.3 * np.sin(2 * np.pi * 97 * np.arange(30000) / 12000.0)).astype(np.float32))
    for spec in ("sim:bearing?machines=3&duration=1&fast=1", f"file:{wav}?fast=1"):
        frames = list(make_source(spec))
        batched = [f for b in make_source(spec).batches() for f in b]
        assert [(f.stream_id, f.seq, f.samples.tobytes()) for f in batched] == \
            [(f.stream_id, f.seq, f.samples.tobytes()) for f in frames] != [], spec


def bench_ingest(*args: str) -> list[dict]:
    """The rows ``tools/bench_ingest.py ARGS --json`` prints, run as a user runs it."""
    import subprocess
    import sys

    tool = Path(__file__).resolve().parents[1] / "tools" / "bench_ingest.py"
    out = subprocess.run([sys.executable, str(tool), *args, "--json"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


@pytest.mark.slow
@pytest.mark.parametrize("channels, hop", [(1, None), (16, 2048)])
def test_bench_ingest_prints_cpu_per_frame_and_channel(channels: int, hop: int | None) -> None:
    args = ["--streams", "32", "--channels", str(channels), "--seconds", "0.5"]
    if hop:  # and the later runs of a poll 64 and 256 channels wide, alternating
        args += ["--hop", str(hop), "--slice-max", "64,256"]
    else:  # and the messages received by pyzmq's calls, then as the monitor does (compiled, where numba is)
        args += ["--receive", "pyzmq,auto"]
    rows = bench_ingest(*args)
    assert [r["slice_max"] for r in rows] == ([64, 256] if hop else [INGEST_SLICE_MAX] * 2)
    assert [r["receive"] for r in rows] == (["auto", "auto"] if hop else ["pyzmq", "auto"])
    per_stream = int(0.5 * RATE / 512) * 512  # samples each stream sent
    for row in rows:
        assert row["frames"] == (32 // channels) * int(0.5 * RATE / 512) and row["malformed"] == 0 and not row["errors"]
        assert row["hop"] == (hop or 512)
        assert row["windows"] == 32 * ((per_stream - 2048) // row["hop"] + 1)
        assert row["ingest_us_per_frame"] > 0 and row["page_faults_per_frame"] >= 0


@pytest.mark.slow
def test_bench_ingest_warm_up_counts_only_the_frames_after_it() -> None:
    """--warm-up S: S more seconds of every stream are ingested first, untimed, and the figures
    are those of the frames after them (a monitor that has run a while)."""
    (row,) = bench_ingest("--streams", "64", "--channels", "16", "--hop", "2048", "--seconds", "2", "--warm-up", "1",
                          "--stages")
    machines, per_machine, warm = 4, int(3 * RATE / 512), int(1 * RATE / 512)  # frames sent, warm-up's
    # timed: the frames after the warm-up's, the clock started at the end of the run that passed
    # them (a run holds at most INGEST_SLICE_MAX channels)
    timed = machines * (per_machine - warm)
    assert timed - INGEST_SLICE_MAX // 16 <= row["frames"] <= timed
    assert row["malformed"] == 0 and not row["errors"] and row["warm_up_s"] == 1.0 and row["ingest_us_per_frame"] > 0
    # every window of the whole stream was still made, warm-up included
    assert row["windows"] == 64 * ((per_machine * 512 - 2048) // 2048 + 1)
    # --stages: the CPU inside each stage, of the timed frames too: within the ingest's whole, the
    # parts within their stage; the 16-channel frames' stages all ran, the 1-channel bank's not
    stages = row["stages_us_per_frame"]
    total = stages["Ingest.frames (all after the source)"]
    health = stages["  sensor health: push_channels (the others)"]
    assert stages["  sensor health: push_judged (1-channel rounds, their flush too)"] == 0  # no single-channel rounds here
    assert 0 < total <= row["ingest_us_per_frame"]
    assert 0 < health < total and stages["    its gather into the level rows (compiled)"] <= health
    assert stages["    its gather into the level rows (compiled)"] > 0 or not jit.available()
    assert 0 < stages["    the windower's copy (Windower._append)"] <= stages["  FrameDSP.push (multi-channel frames)"]
    assert stages["  WindowBank.push_flat (1-channel frames)"] == 0


@pytest.mark.slow
def test_bench_copies_times_every_arrangement_of_the_same_moves() -> None:
    """tools/bench_copies.py, run as a user runs it: a line per arrangement with its CPU per frame
    and its ratio to today's (A), and its word that every arrangement left the windower's rows and
    the level tests' results exactly as A did; asked for arrangements without A, it says so."""
    import subprocess
    import sys

    pytest.importorskip("numba")
    tool = Path(__file__).resolve().parents[1] / "tools" / "bench_copies.py"
    small = ["--modules", "4", "--channels", "4", "--samples", "128", "--every", "300", "--window", "512",
             "--rounds", "20", "--repeat", "1"]
    out = subprocess.run([sys.executable, str(tool), *small], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    lines = out.stdout.splitlines()
    rows = {ln.split(":")[0].strip(): ln for ln in lines if ln.startswith("  ") and " us per frame" in ln}
    assert sorted(rows) == ["A", "B", "C", "D"], out.stdout
    assert rows["A"].endswith(" 1.00x A")
    for ln in rows.values():
        assert float(ln.split(":")[1].split()[0].rstrip(",")) > 0, ln
    assert lines[-1].strip() == "every arrangement left the windower's rows and the level tests' results exactly as A did"
    bad = subprocess.run([sys.executable, str(tool), *small, "--variants", "B,C"], capture_output=True, text=True,
                         timeout=60)
    assert bad.returncode == 2 and "A among them" in bad.stderr and "Traceback" not in bad.stderr
    # C reads the windower's rows: level tests on more samples than they keep are refused, not misread
    bad = subprocess.run([sys.executable, str(tool), *small, "--every", "400"], capture_output=True, text=True,
                         timeout=60)
    assert bad.returncode == 2 and "--every 400" in bad.stderr and "Traceback" not in bad.stderr


@pytest.mark.parametrize("rate", [RATE, 11025.0], ids=["model-rate", "resampled"])
@_PATHS
def test_frames_with_plus_and_minus_inf_are_counted_without_a_numpy_warning(compiled, rate) -> None:
    """A sensor that sends +Inf and -Inf in one frame (inf - inf is NaN in a sum): its samples are
    counted as non-finite and replaced, in the health and the DSP alike, single-channel and
    16-channel frames, at the model's rate and resampled, and numpy prints nothing on the
    monitor's terminal (warnings are errors here)."""
    import warnings

    from drsn_stream.app.ingest import Ingest
    from drsn_stream.artifacts import __path__ as artifacts
    from drsn_stream.models.artifact import load_artifact

    _, meta = load_artifact(artifacts[0] + "/bearing-cwru.pt", map_location="cpu")
    errors: list[str] = []
    ingest = Ingest(meta, 512, HealthMonitor(compiled=compiled), 100, on_events=lambda e: None, on_error=errors.append)
    rng = np.random.default_rng(4)
    t0 = time.time() - 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for k in range(12):
            frames = []
            for m in range(6):
                x = (rng.standard_normal((512, 1)) * 0.1).astype(np.float32)
                if k == 8:
                    x[3], x[9] = np.inf, -np.inf
                frames.append(Frame(f"s{m}", k, t0 + k * 0.04, rate, x))
            gw = (rng.standard_normal((512, 16)) * 0.1).astype(np.float32)
            if k == 9:
                gw[5, 2], gw[6, 2] = np.inf, -np.inf
            frames.append(Frame("gw", k, t0 + k * 0.04, rate, gw))
            ingest.frames(frames)
    want = {**{f"s{m}": 2 for m in range(6)}, "gw/ch2": 2}
    assert not errors and ingest.nonfinite() == want
    assert {sid: h.non_finite for sid, h in ingest.health.states().items() if h.non_finite} == want


def test_the_samples_of_a_round_are_its_frames_in_order_joined_or_not() -> None:
    """``samples_of`` (one array of a round's samples, for the health and the bank): the frames in
    order, (n,) and (n, 1) alike, a writable copy; with ``float32`` (the caller checked the dtype)
    the bytes are joined, and a strided view among the frames takes the general way."""
    from drsn_stream.dsp.bank import samples_of

    rng = np.random.default_rng(2)
    block = rng.standard_normal((6, 64, 1)).astype(np.float32)
    frames = [Frame(f"s{k}", 1, 0.0, RATE, block[k] if k % 2 else block[k, :, 0]) for k in (3, 0, 5, 1, 4)]
    want = block[[3, 0, 5, 1, 4], :, 0]
    wide = rng.standard_normal((64, 3)).astype(np.float32)
    for fs, w in ((frames, want), (frames + [Frame("v", 1, 0.0, RATE, wide[:, 1:2])], np.vstack([want, wide[:, 1]]))):
        for float32 in (False, True):
            x = samples_of(fs, float32=float32)
            assert x.dtype == np.float32 and x.flags.writeable and np.array_equal(x, w)
            assert not np.shares_memory(x, block)


@pytest.mark.parametrize("compiled", [False, pytest.param(True, marks=pytest.mark.skipif(
    not jit.available(), reason="numba is not installed"))], ids=["python", "compiled"])
def test_the_compiled_bank_step_refuses_what_does_not_fit_instead_of_writing_past_it(compiled) -> None:
    """The compiled step writes without bounds checks: a frame past its row's room, or more
    windows than its list holds, are refused (-1, nothing changed; -2) rather than written."""
    from drsn_stream.dsp import bank_jit

    step = bank_jit.kernel() if compiled and bank_jit.warm() else bank_jit._step_py

    def run(width: int, room: int):
        state = [np.zeros(1, dtype=np.int64) for _ in range(6)]  # seen, shift, next, count, windows, nonfinite
        data, out = np.zeros((1, 64), dtype=np.float32), np.zeros((5, room), dtype=np.int64)
        total = step(data, np.zeros(1, dtype=np.int64), np.ones((1, 16), dtype=np.float32), np.zeros(1), *state,
                     width, 4, 2, RATE, out, np.zeros(room))
        return total, data, state

    total, data, state = run(8, 7)  # 16 samples into 8 columns
    assert total == -1 and not data.any() and not any(a.any() for a in state)
    assert run(64, 6)[0] == -2  # 16 samples, window 4, hop 2: 7 windows
    total, data, state = run(64, 7)
    assert total == 7 and data[0, :16].all() and not data[0, 16:].any() and state[0][0] == 16


@pytest.mark.parametrize("step", ["numpy", pytest.param("compiled", marks=pytest.mark.skipif(
    not jit.available(), reason="numba is not installed")), "python"])
def test_the_window_bank_gives_every_stream_the_windows_of_its_own_stream_dsp(step, monkeypatch) -> None:
    """Single-channel streams at the model's rate are windowed together in one array
    (dsp/bank.py); each stream's windows are bit for bit those of a StreamDSP of its own, through
    odd frame lengths that run rows out of room, NaN samples, a stream that leaves the bank (a
    frame at another rate, a frame longer than the bank takes) and carries on in a StreamDSP, and
    a stream that joins later on a row another one left. Windows are views of the bank: every one is
    compared after the last frame, so a window written over after it was handed out fails. The
    bank's step in numpy, compiled (dsp/bank_jit.py) and the compiled step's code as plain Python."""
    from types import SimpleNamespace

    from drsn_stream.dsp import bank_jit
    from drsn_stream.dsp.bank import BankDSP, WindowBank, bank_items
    from drsn_stream.dsp.stream import StreamDSP
    from drsn_stream.dsp.window import window_start

    if step == "python":
        monkeypatch.setattr(bank_jit, "kernel", lambda: bank_jit._step_py)
    rng = np.random.default_rng(7)
    for hop, phases in ((512, 1), (300, 1), (3000, 1), (2048, 4), (300, 3)):
        meta = SimpleNamespace(sample_rate=RATE, window=2048, hop=hop, normalization={"kind": "none"})
        bank = WindowBank(meta, hop, rows=2, compiled=step == "compiled")  # grows while streams join
        if step == "python":
            bank.compiled = True
        ids = [f"s{k}" for k in range(10)]  # s9 joins at frame 80
        start = {sid: window_start(sid, hop, phases) for sid in ids}  # --phases: windows start apart
        assert len(set(start.values())) == phases
        dsps = {sid: BankDSP(bank, sid, start[sid]) for sid in ids if sid != "s9"}
        alone = {sid: StreamDSP(meta, hop=hop, normalize=False, start=start[sid]) for sid in ids}
        signal = {sid: (rng.standard_normal(80000) * 0.1).astype(np.float32) for sid in ids}
        signal["s1"][5000:5600] = np.nan
        signal["s2"][7000:7002] = np.inf  # Inf is replaced as NaN is
        signal["s0"][9000] = -np.inf
        at = dict.fromkeys(ids, 0)
        got: dict[str, list] = {sid: [] for sid in ids}
        want: dict[str, list] = {sid: [] for sid in ids}
        for k in range(120):
            items = []
            if k == 80:
                dsps["s9"] = BankDSP(bank, "s9", start["s9"])
                assert dsps["s9"].row in {d.row for d in dsps.values() if d.own is not None}  # a row a stream left
            for sid in ids if k >= 80 else ids[:-1]:
                n = 512 if sid < "s4" else int(rng.integers(1, 2100))  # some longer than the bank takes
                rate = 11025.0 if sid == "s3" and 60 <= k < 70 else RATE  # leaves the bank at frame 60
                x = signal[sid][at[sid] : at[sid] + n]
                items.append((Frame(sid, k, 1.7e9 + at[sid] / RATE, rate, x[:, None]), dsps[sid]))
                at[sid] += n
            groups, rest = bank_items(items)
            for idx in groups.values():
                outs = bank.push_many([items[i][1] for i in idx], [items[i][0] for i in idx])
                for i, out in zip(idx, outs):
                    got[items[i][0].stream_id] += out
            for i in rest:
                got[items[i][0].stream_id] += items[i][1].push(items[i][0])
            for frame, _ in items:
                want[frame.stream_id] += alone[frame.stream_id].push(frame)
        for sid in ids:
            assert [(w.stream_id, w.index, w.t_last, w.data.tobytes()) for w in got[sid]] == \
                [(w.stream_id, w.index, w.t_last, w.data.tobytes()) for w in want[sid]] != [], (hop, sid)
            first = got[sid][0]  # window 0 is the stream's samples from its start on
            assert np.array_equal(first.data, np.nan_to_num(signal[sid][start[sid] : start[sid] + 2048], nan=0.0))
            assert (dsps[sid].nonfinite, dsps[sid].windows) == (alone[sid].nonfinite, alone[sid].windows)
        assert dsps["s1"].nonfinite == 600 and dsps["s3"].own is not None and dsps["s0"].own is None
        assert dsps["s3"].counters() == alone["s3"].counters() and alone["s3"].rate_changes == 2  # there and back


@pytest.mark.parametrize("step", ["numpy", pytest.param("compiled", marks=pytest.mark.skipif(
    not jit.available(), reason="numba is not installed"))])
def test_a_move_of_the_window_bank_reuses_an_array_only_once_no_window_refers_to_it(step) -> None:
    """The bank's rows move to the array the move before left when no window handed out refers to
    it any more (the engine drops most windows soon), never while one does (a consumer that
    holds some long): every window is checked against a StreamDSP's when it is made, and the
    held ones again after the last frame (a window written over after it was handed out fails)."""
    from types import SimpleNamespace

    from drsn_stream.dsp.bank import BankDSP, WindowBank
    from drsn_stream.dsp.stream import StreamDSP

    rng = np.random.default_rng(5)
    meta = SimpleNamespace(sample_rate=RATE, window=2048, hop=512, normalization={"kind": "none"})
    bank = WindowBank(meta, 512, rows=4, compiled=step == "compiled")
    ids = [f"s{k}" for k in range(4)]
    dsps = {sid: BankDSP(bank, sid, 0) for sid in ids}
    alone = {sid: StreamDSP(meta, hop=512, normalize=False) for sid in ids}
    signal = (rng.standard_normal((80000, 4)) * 0.1).astype(np.float32)
    recent: list[tuple[Any, Any]] = []  # (window, the StreamDSP's) of the last few frames, as the engine holds them
    held: list[tuple[Any, Any]] = []  # and some held long
    arrays: dict[int, np.ndarray] = {}  # the bank's arrays, held (their ids stay theirs; windows hold the view)
    moves = 0
    for k in range(150):
        frames = [Frame(sid, k, 1.7e9 + k * 512 / RATE, RATE, signal[k * 512 : (k + 1) * 512, i, None])
                  for i, sid in enumerate(ids)]
        before = bank.data
        got = bank.push_flat([dsps[sid] for sid in ids], frames)[0]
        moves += bank.data is not before
        arrays[id(bank.data)] = bank.data
        want = [w for f in frames for w in alone[f.stream_id].push(f)]
        assert [(w.stream_id, w.index, w.t_last, w.data.tobytes()) for w in got] == \
            [(w.stream_id, w.index, w.t_last, w.data.tobytes()) for w in want], k
        recent = recent[-8:] + list(zip(got, want))
        if k % 40 == 10:
            held += zip(got, want)
    assert all(np.array_equal(w.data, ref.data) for w, ref in recent + held) and len(held) == 4 * 4
    assert moves >= 10 and len(arrays) < moves  # rows moved, and mostly into an array a move before left


def test_a_speed_log_keeps_the_changes_and_answers_for_any_time() -> None:
    """A tachometer's jitter (0.1 %) adds nothing; a change of speed, a stop and frames that no
    longer carry one each start a run; a lookup gives the run that held the time, for the stream
    or a channel of it; an ingest process's changes are what it hands on."""
    from drsn_stream.app.ingest import SpeedLog

    log = SpeedLog()
    log.changes = []
    began: list[int] = []
    log.on_first = lambda: began.append(1)
    for k, rpm in enumerate([1797.0, 1798.5, 1796.2, 1700.0, 1701.0, 0.0, 0.0, None, None, 1500.0]):
        log.add("gw", 10.0 + k, rpm)
    assert began == [1]
    assert log.logs["gw"][:3] == [(10.0, 1797.0), (13.0, 1700.0), (15.0, 0.0)]
    assert [c[2] for c in log.changes] == [1797.0, 1700.0, 0.0, None, 1500.0]
    assert [log.at("gw/DE", t) for t in (5.0, 12.9, 13.0, 14.5, 16.0, 17.5, 19.0, 99.0)] == \
        [1797.0, 1797.0, 1700.0, 1700.0, 0.0, None, 1500.0, 1500.0]
    assert log.at("gw") == 1500.0 and log.at("other") is None
    # the runs over a time span (what the envelope follows a block's speed through): the one in
    # effect at its start, then those that began within it
    assert log.runs("gw/DE", 12.5, 15.5) == [(10.0, 1797.0), (13.0, 1700.0), (15.0, 0.0)]
    assert log.runs("gw", 17.2, 17.9) == [(17.0, None)]
    assert log.runs("gw", 1.0, 2.0) == [(10.0, 1797.0)]  # before the first frame: the first speed
    assert log.runs("other", 0.0, 99.0) == []
    log.add("quiet", 1.0, None)  # a stream that never carried a speed has no log
    assert "quiet" not in log.logs
