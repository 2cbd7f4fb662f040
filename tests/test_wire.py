"""The ZeroMQ wire format and sources over real loopback sockets."""

from __future__ import annotations

import argparse
import json
import socket
import subprocess
import sys
import textwrap
import threading
import time
import warnings

import numpy as np
import pytest
import scipy.io
import zmq
from helpers import free_port

from drsn_stream.errors import ConfigError, DrsnStreamError, SourceError, WireFormatError
from drsn_stream.sources import make_source, recv_jit
from drsn_stream.sources import publish as publish_cmd
from drsn_stream.sources.wire import (
    MAX_PAYLOAD_BYTES,
    REASONS,
    Decoder,
    EndOfStream,
    WireError,
    decode,
    encode,
    encode_eos,
)

T0 = 1_800_000_000.0


@pytest.mark.parametrize("dtype", ["float32", "float64", "int16", "int32"])
def test_round_trip_every_dtype(dtype):
    rng = np.random.default_rng(0)
    x = (0.5 * rng.standard_normal((300, 3))).clip(-0.99, 0.99).astype(np.float32)
    frame = decode(encode("press-3/DE", 17, T0, 12000.0, x, dtype=dtype, units="g"))
    assert (frame.stream_id, frame.seq, frame.t_capture, frame.sample_rate) == ("press-3/DE", 17, T0, 12000.0)
    assert frame.samples.dtype == np.float32 and frame.samples.shape == (300, 3)
    tol = {"float32": 0, "float64": 0, "int16": 0.5 / 32768, "int32": 1e-7}[dtype]
    np.testing.assert_allclose(frame.samples, x, atol=tol, rtol=0)


def test_int16_with_explicit_scale_and_eos():
    x = np.array([0.0, 0.001, -0.0025, 0.01], np.float32)
    parts = encode("acc", 0, T0, 25600, x, dtype="int16", scale=1e-4)
    assert json.loads(parts[1])["scale"] == 1e-4
    assert np.frombuffer(parts[2], "<i2").tolist() == [0, 10, -25, 100]
    np.testing.assert_allclose(decode(parts).samples[:, 0], x, atol=1e-7)
    assert decode(encode_eos("acc")) == EndOfStream("acc")


def _good_header(**kw):
    h = {"v": 1, "stream": "s", "seq": 0, "t": T0, "rate": 12000.0, "dtype": "float32", "channels": 1, "n": 4}
    h.update(kw)
    return h


def _msg(header=None, payload=b"\0" * 16, topic=b"s", raw_header=None):
    hdr = raw_header if raw_header is not None else json.dumps(header or _good_header()).encode()
    return [topic, hdr, payload]


MALFORMED = {
    "wrong_parts": [b"s", json.dumps(_good_header()).encode()],
    "bad_json": _msg(raw_header=b"{not json"),
    "bad_version": _msg(_good_header(v=2)),
    "missing_field": _msg({k: v for k, v in _good_header().items() if k != "rate"}),
    "bad_header": _msg(raw_header=b"[" * 100_000 + b"]" * 100_000),
    "bad_field": _msg(_good_header(channels=0)),
    "bad_seq": _msg(_good_header(seq=-1)),
    "bad_time": _msg(_good_header(t=7e16)),
    "unknown_dtype": _msg(_good_header(dtype="float16")),
    "absurd_rate": _msg(_good_header(rate=5e9)),
    "too_large": _msg(payload=b"\0" * (MAX_PAYLOAD_BYTES + 4)),
    "bad_size": _msg(payload=b"\0" * 15),
    "topic_mismatch": _msg(topic=b"other"),
}


def test_every_reason_has_a_malformed_example():
    assert set(MALFORMED) == set(REASONS)


@pytest.mark.parametrize("reason", sorted(MALFORMED))
def test_decode_rejects_with_reason(reason):
    with pytest.raises(WireError) as info:
        decode(MALFORMED[reason])
    assert info.value.reason == reason
    assert isinstance(info.value, WireFormatError)


def test_a_scale_float32_cannot_hold_is_refused_and_huge_samples_become_inf_quietly():
    """A scale that would turn every sample into Inf (1e300) or 0 (0, 1e-300) is the header's
    fault, said as such; float64 samples beyond float32's range are the sensor's, and arrive as
    +-Inf (which the sensor health counts) without numpy printing a warning on the monitor's terminal."""
    now = time.time()
    payload = np.array([1, -2, 3, 0], dtype="<i2").tobytes()
    for scale in (1e300, -1e300, 0, 0.0, 1e-300, 3.5e38):
        hdr = json.dumps(_good_header(dtype="int16", n=4, scale=scale, t=now)).encode()
        for dec in (decode, Decoder().decode):
            with pytest.raises(WireError) as info:
                dec([b"s", hdr, payload], now=now)
            assert info.value.reason == "bad_field" and "scale" in str(info.value), scale
    hdr = json.dumps(_good_header(dtype="int16", n=4, scale=-2.5e-3, t=now)).encode()
    assert decode([b"s", hdr, payload], now=now).samples[:, 0].tolist() == pytest.approx([-2.5e-3, 5e-3, -7.5e-3, 0])
    big = np.array([1e300, -1e300, np.nan, 0.5])
    hdr = json.dumps(_good_header(dtype="float64", n=4, t=now)).encode()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for dec in (decode, Decoder().decode, Decoder().decode):
            x = dec([b"s", hdr, big.astype("<f8").tobytes()], now=now).samples[:, 0]
            assert x[0] == np.inf and x[1] == -np.inf and np.isnan(x[2]) and x[3] == 0.5


def test_a_stream_id_that_would_write_to_an_operators_terminal_is_refused():
    """Stream ids end up on terminals (the dashboard, --headless lines, error lines): one with an
    escape sequence, a bell, a line break, a bidirectional override or a C1 control is refused
    as bad_field, whether a Decoder has seen the stream's layout or not; printable ids (spaces,
    non-ASCII letters) pass."""
    x = np.zeros(8, np.float32)
    for bad in ("evil\x1b[2J\x1b[31mred", "ding\x07", "two\r\nlines", "abc\u202edcba", "nel\x85", "nul\x00"):
        for dec in (decode, Decoder().decode):
            with pytest.raises(WireError) as info:
                dec(encode(bad, 0, T0, 12000.0, x), now=T0)
            assert info.value.reason == "bad_field" and "printable" in str(info.value), repr(bad)
            assert "\x1b" not in str(info.value)  # the message itself shows it escaped
    # nor does a refusal's own line carry the sender's control characters (a names field as a string)
    hdr = json.dumps(_good_header(names="\x1b[2Jx", t=T0)).encode()
    with pytest.raises(WireError) as info:
        decode([b"s", hdr, np.zeros(4, np.float32).tobytes()], now=T0)
    assert info.value.reason == "bad_field" and "\x1b" not in str(info.value)
    decoder = Decoder()
    for good in ("press 3", "Pumpe-Süd/ch0", "馬達-1"):
        assert decoder.decode(encode(good, 0, T0, 12000.0, x), now=T0).stream_id == good
        assert decoder.decode(encode(good, 1, T0, 12000.0, x), now=T0).seq == 1  # its template's path too


def test_a_sender_is_told_what_it_cannot_send_and_publish_scales_a_near_silent_frame_acceptably():
    """encode refuses what a receiver would refuse or misread: NaN/Inf in an integer payload (no
    integer means NaN: it would arrive as full scale), a scale float32 cannot hold. ``publish``'s
    per-message scale of a frame whose peak is below float32's normal numbers falls back to the
    default, so the frame is received (as zeros), not refused."""
    x = np.array([0.1, np.nan, -0.2, 0.0])
    for dtype in ("int16", "int32"):
        with pytest.raises(WireFormatError, match="cannot carry NaN or Inf"):
            encode("s", 0, T0, 12000.0, x, dtype=dtype)
        with pytest.raises(WireFormatError, match="cannot carry NaN or Inf"):
            encode("s", 0, T0, 12000.0, np.where(np.isnan(x), np.inf, x), dtype=dtype)
    assert np.isnan(decode(encode("s", 0, T0, 12000.0, x), now=T0).samples[1, 0])  # float32 carries it
    for scale in (0.0, 1e300, 1e-300, float("nan")):
        with pytest.raises(WireFormatError, match="scale"):
            encode("s", 0, T0, 12000.0, x[[0, 2]], dtype="int16", scale=scale)
    quiet = np.array([3e-42, -1e-42, 0.0, 2e-42])
    for dtype in ("int16", "int32"):
        frame = decode(encode("s", 0, T0, 12000.0, quiet, dtype=dtype,
                              scale=publish_cmd._int_scale(quiet, dtype)), now=T0)
        assert frame.samples[:, 0].tolist() == [0.0] * 4
    loud = np.array([3.0, -1.5, 0.0, 0.75])  # vibration in g: scaled to its own peak, no clipping
    got = decode(encode("s", 0, T0, 12000.0, loud, dtype="int16", scale=publish_cmd._int_scale(loud, "int16")), now=T0)
    assert got.samples[:, 0] == pytest.approx(loud, abs=1e-4)



@pytest.mark.parametrize("dtype", ["int16", "int32"])
def test_float32_samples_sent_as_integers_keep_the_sign_of_their_peaks(dtype):
    # float32 samples (what every source gives) scaled to int32's full scale were rounded in
    # float32, where 2**31 - 1 is 2**31, and the cast wrapped to -2**31: publish --dtype int32 sent
    # every message's positive peak as its negative full scale
    x = np.array([9.77, -3.0, 1.0, 0.0], np.float32)
    got = decode(encode("s", 0, T0, 12000.0, x, dtype=dtype, scale=publish_cmd._int_scale(x, dtype)), now=T0)
    assert got.samples[:, 0] == pytest.approx(x, abs=1e-3 if dtype == "int16" else 1e-6)
    beyond = np.array([1.0, 2.0, -1.0, -3.0], np.float32)  # the default scale: clipped at full scale
    got = decode(encode("s", 0, T0, 12000.0, beyond, dtype=dtype), now=T0)
    assert np.sign(got.samples[:, 0]).tolist() == [1.0, 1.0, -1.0, -1.0]
    assert got.samples[:, 0] == pytest.approx([1.0, 1.0, -1.0, -1.0], abs=1e-4)

@pytest.mark.skipif(not hasattr(sys, "set_int_max_str_digits"), reason="needs Python's int digit limit (3.11+)")
def test_long_integer_literals_are_refused_by_their_field_without_being_converted():
    # int() of a long decimal string costs time quadratic in its length (a 3,900-digit seq cost
    # ~0.2 ms per message): with Python's own limit set low, a conversion would fail as bad_json
    now = time.time()
    head = '{"v":1,"stream":"s","seq":%s,"t":%r,"rate":%s,"dtype":"float32","channels":1,"n":4%s}'
    payload = np.zeros(4, np.float32).tobytes()
    cases = {"bad_seq": head % ("9" * 3900, now, "12000", ""), "absurd_rate": head % ("1", now, "1" + "0" * 400, ""),
             "bad_field": head % ("1", now, "12000", ',"scale":1' + "0" * 400)}
    old = sys.get_int_max_str_digits()
    sys.set_int_max_str_digits(640)
    try:
        for reason, text in cases.items():
            for dec in (decode, Decoder().decode):
                with pytest.raises(WireError) as info:
                    dec([b"s", text.encode(), payload], now=now)
                assert info.value.reason == reason, (reason, str(info.value))
                assert "digits" in str(info.value)
        # a long integer in a field the receiver does not read leaves the frame as it is
        extra = head % ("7", now, "12000", ',"serial":1' + "0" * 700)
        frame = decode([b"s", extra.encode(), payload], now=now)
        assert frame.seq == 7 and frame.samples.shape == (4, 1)
    finally:
        sys.set_int_max_str_digits(old)


RECEIVES = [pytest.param(False, id="pyzmq"),
            pytest.param(True, id="compiled", marks=pytest.mark.skipif(
                not recv_jit.warm(), reason=f"no compiled receive: {recv_jit.why_not()}"))]


@pytest.mark.parametrize("compiled", RECEIVES)
def test_malformed_messages_are_counted_while_the_stream_goes_on(free_tcp_port, compiled):
    """PUSH -> PULL(bind) on loopback: every bad message counted, every good frame delivered,
    whichever loop receives them."""
    src = make_source(f"zmq+pull+bind://127.0.0.1:{free_tcp_port}?until_eos=1")
    src.compiled_receive = compiled
    x = np.arange(4 * (len(MALFORMED) + 1), dtype=np.float32).reshape(-1, 4)
    with src:
        push = zmq.Context.instance().socket(zmq.PUSH)
        push.connect(f"tcp://127.0.0.1:{free_tcp_port}")
        push.send_multipart(encode("s", 0, T0, 100.0, x[0]))
        for seq, reason in enumerate(sorted(MALFORMED), start=1):
            push.send_multipart(MALFORMED[reason])
            push.send_multipart(encode("s", seq, T0 + seq * 0.04, 100.0, x[seq]))
        push.send_multipart(encode_eos("s"))
        frames = list(src)
        push.close(0)
    assert [f.seq for f in frames] == list(range(len(MALFORMED) + 1))
    assert np.array_equal(np.concatenate([f.samples[:, 0] for f in frames]), x[: len(frames)].reshape(-1))
    stats = src.stats.snapshot()
    assert stats["malformed"] == {reason: 1 for reason in REASONS}
    assert stats["gaps"] == {} and stats["ended"] == ["s"]


@pytest.mark.parametrize("compiled", RECEIVES)
def test_a_speed_that_is_no_speed_loses_the_speed_not_the_frame(free_tcp_port, compiled):
    """A tachometer that reads a standstill as 60 / 0 (Infinity), a glitch (-3), text: each frame is
    taken without a speed and the sender told once per stream; good speeds around them are read."""
    src = make_source(f"zmq+pull+bind://127.0.0.1:{free_tcp_port}?until_eos=1")
    src.compiled_receive = compiled
    x = np.ones((64, 2), dtype=np.float32)
    bad = [b"Infinity", b"-3", b'"fast"', b"1e7"]
    with src:
        push = zmq.Context.instance().socket(zmq.PUSH)
        push.connect(f"tcp://127.0.0.1:{free_tcp_port}")
        for seq in range(2 * len(bad)):
            topic, header, payload = encode("gw", seq, T0 + seq * 0.01, 12000.0, x, rpm=1500.0 + seq)
            if seq % 2:
                header = header.replace(b'"rpm":%d.0' % (1500 + seq), b'"rpm":' + bad[seq // 2])
            push.send_multipart([topic, header, payload])
        push.send_multipart(encode_eos("gw"))
        frames = list(src)
        push.close(0)
    assert [(f.seq, f.rpm) for f in frames] == [(k, None if k % 2 else 1500.0 + k) for k in range(2 * len(bad))]
    assert src.stats.snapshot()["malformed"] == {}
    said = [line for sid, line in src.notes if "no shaft speed" in line]
    assert len(said) == 1 and '"rpm":Infinity' in said[0], list(src.notes)


def _odd_messages() -> list[list[bytes]]:
    """Messages of every shape a peer can send: whole frames, an end of stream, 1 part, 7 parts,
    empty parts, parts bigger than the compiled receive's buffers (copied out from Python), and
    enough headers and payloads to fill its buffers several times over."""
    rng = np.random.default_rng(5)
    frame = encode("s", 1, T0, 12000.0, rng.standard_normal(512).astype(np.float32))
    wide = encode("w", 1, T0, 12000.0, rng.standard_normal((512, 16)).astype(np.float32))  # 32 KB
    out = [frame, encode_eos("s"), [b"s"], [b"a", b"b", b"c", b"d", b"e", b"f", b"g"], [b"", b"", b""], [b"", b""]]
    out += [[b"t%d" % i, b"h" * 3000, b"p%d" % i] for i in range(200)]  # 600 KB of headers
    out += [wide] * 140  # 4.5 MB of payloads
    out += [[rng.bytes(600_000)], [b"s", rng.bytes(600_000), b"x"], [b"s", b"{}", rng.bytes(5_000_000)],
            [b"s", b"{}", rng.bytes(5_000_000), b"after", b"more"], [rng.bytes(600_000), b"{}", b"p", b"q"]]
    out += [frame] * 50 + [encode_eos("s")]
    return out


def _take_all(take, count: int) -> list[tuple[int, bytes, bytes, bytes]]:
    """``count`` messages from a taking function (``take(most) -> (messages, empty)``), each with
    its payload as bytes; waits (at most 10 s) for the ones still on their way."""
    got: list[tuple[int, bytes, bytes, bytes]] = []
    deadline = time.monotonic() + 10
    while len(got) < count and time.monotonic() < deadline:
        messages, empty = take(7)  # an odd number: takes end in every kind of place
        got += [(n, topic, header, bytes(payload)) for n, topic, header, payload in messages]
        if empty:
            time.sleep(0.01)
    return got


def test_the_compiled_receive_takes_every_message_as_pyzmq_does():
    """The compiled loop (and the same loop as plain Python) give what pyzmq's calls give: every
    part count, every size, in order, none lost or cut, across calls that fill its buffers."""
    if not recv_jit.warm():
        pytest.skip(f"no compiled receive: {recv_jit.why_not()}")
    sent = _odd_messages()
    ctx = zmq.Context.instance()
    pulls, pushes = [], []
    for _ in range(3):
        pull = ctx.socket(zmq.PULL)
        pull.setsockopt(zmq.RCVHWM, 0)
        port = pull.bind_to_random_port("tcp://127.0.0.1")
        push = ctx.socket(zmq.PUSH)
        push.setsockopt(zmq.SNDHWM, 0)
        push.connect(f"tcp://127.0.0.1:{port}")
        pulls.append(pull)
        pushes.append(push)
    try:
        for msg in sent:
            for push in pushes:
                push.send_multipart(msg)
        compiled, plain = recv_jit.Receiver(pulls[1]), recv_jit.Receiver(pulls[2], compiled=False)
        by_pyzmq = _take_all(lambda most: recv_jit.take_py(pulls[0], most), len(sent))
        by_compiled = _take_all(compiled.take, len(sent))
        by_plain = _take_all(plain.take, len(sent))
    finally:
        for sock in pulls + pushes:
            sock.close(0)
    expected = [(len(m), *(m + [b"", b""])[:3]) for m in sent]
    assert by_pyzmq == expected
    assert by_compiled == expected
    assert by_plain == expected
    assert recv_jit.message_parts(by_compiled[3]) == [b"a", b"b", b"c", b"", b"", b"", b""]


@pytest.mark.parametrize("compiled", [True, None])
def test_frames_viewing_the_compiled_receives_payloads_keep_their_samples_over_later_polls(free_tcp_port, compiled):
    """A 16-channel frame's samples are a view of the bytes received (no copy): the buffer they
    view is never written again, however many polls follow (compiled: the compiled loop for
    every poll; None: as the monitor runs, which takes such frames through pyzmq after the first
    poll, and small ones through the compiled loop again)."""
    if not recv_jit.warm():
        pytest.skip(f"no compiled receive: {recv_jit.why_not()}")
    src = make_source(f"zmq+pull+bind://127.0.0.1:{free_tcp_port}?until_eos=1&hwm=100000")
    src.compiled_receive = compiled
    x = np.random.default_rng(2).standard_normal((400, 512, 16)).astype(np.float32)
    now = time.time()

    def send() -> None:
        push = zmq.Context.instance().socket(zmq.PUSH)
        push.connect(f"tcp://127.0.0.1:{free_tcp_port}")
        for seq in range(len(x)):
            push.send_multipart(encode("g", seq, now, 12000.0, x[seq]))
            if seq % 50 == 49:
                threading.Event().wait(0.05)  # polls apart
                push.send_multipart(encode("one", seq // 50, now, 12000.0, x[seq, :, 0]))  # small
                threading.Event().wait(0.05)
        push.send_multipart(encode_eos("g"))
        push.send_multipart(encode_eos("one"))
        push.close(2000)

    with src:
        sender = threading.Thread(target=send)
        sender.start()
        batches = list(src.batches())  # every frame kept while later polls are received
        sender.join()
    frames = [f for batch in batches for f in batch if f.stream_id == "g"]
    small = [f for batch in batches for f in batch if f.stream_id == "one"]
    assert len(batches) > 4
    assert [f.seq for f in frames] == list(range(len(x)))
    assert all(np.array_equal(f.samples, x[f.seq]) for f in frames)
    assert [f.seq for f in small] == list(range(len(x) // 50))
    assert all(np.array_equal(f.samples[:, 0], x[f.seq * 50 + 49, :, 0]) for f in small)


def test_a_flood_of_malformed_messages_does_not_hold_back_a_good_frame(free_tcp_port):
    """A peer that keeps sending garbage faster than it is refused must not keep the frames
    received before it from the monitor: a poll hands over what it has within its time bound,
    long before the flood behind it is read."""
    flood = 20_000
    src = make_source(f"zmq+pull+bind://127.0.0.1:{free_tcp_port}?hwm=100000")
    with src:
        push = zmq.Context.instance().socket(zmq.PUSH)
        push.setsockopt(zmq.SNDHWM, 0)  # everything queued before the monitor reads a message
        push.connect(f"tcp://127.0.0.1:{free_tcp_port}")
        push.send_multipart(encode("s", 0, time.time(), 100.0, np.zeros(4, np.float32)))
        for _ in range(flood):
            push.send_multipart([b"s", b"not json", b"1234"])
        batch = next(src.batches())
        refused = sum(src.stats.snapshot()["malformed"].values())
        push.close(0)
    assert [f.seq for f in batch] == [0]
    assert 0 < refused < flood // 2, f"the good frame waited for {refused} of {flood} bad messages"


def test_a_quiet_socket_tells_the_consumer_its_burst_is_over(free_tcp_port):
    """on_idle runs once everything received is handed over (the monitor then sends the batch
    instead of waiting max_wait_ms for windows that are not coming yet)."""
    src = make_source(f"zmq+pull+bind://127.0.0.1:{free_tcp_port}?until_eos=1")
    events: list[object] = []
    src.on_idle = lambda: events.append("idle")
    x = np.zeros((10, 64), np.float32)

    def send() -> None:
        push = zmq.Context.instance().socket(zmq.PUSH)
        push.connect(f"tcp://127.0.0.1:{free_tcp_port}")
        for burst in (range(0, 5), range(5, 10)):
            for seq in burst:
                push.send_multipart(encode("s", seq, T0 + seq * 0.04, 1600.0, x[seq]))
            threading.Event().wait(0.3)
        push.send_multipart(encode_eos("s"))
        push.close(1000)

    with src:
        sender = threading.Thread(target=send)
        sender.start()
        for frame in src:
            events.append(frame.seq)
        sender.join()
    seqs = [e for e in events if e != "idle"]
    assert seqs == list(range(10))
    between = events[events.index(4) + 1 : events.index(5)]
    assert between and set(between) == {"idle"}  # the 0.3 s pause after the first burst


@pytest.mark.parametrize("sleep_s", [0.02, 0.5])
def test_a_burst_that_trickles_in_is_handed_over_in_one_poll(free_tcp_port, monkeypatch, sleep_s):
    """Messages that come closer together than the quiet that ends a burst (IDLE_MS) are one poll's
    frames, also when each arrives after the receiver found the socket empty and slept
    (GATHER_WAIT_S); a pause longer than IDLE_MS ends the poll, also where the sleep is longer
    than IDLE_MS (no wait for the next burst). (The time constants are stretched so that a busy
    machine's scheduling cannot split or join the bursts.)"""
    from drsn_stream.sources import zmq_source

    monkeypatch.setattr(zmq_source, "IDLE_MS", 400)
    monkeypatch.setattr(zmq_source, "GATHER_MS", 4000.0)
    monkeypatch.setattr(zmq_source, "MAX_POLL_MS", 8000.0)
    monkeypatch.setattr(zmq_source, "GATHER_WAIT_S", sleep_s)
    src = make_source(f"zmq+pull+bind://127.0.0.1:{free_tcp_port}?until_eos=1")
    x = np.zeros((8, 64), np.float32)

    def send() -> None:
        push = zmq.Context.instance().socket(zmq.PUSH)
        push.connect(f"tcp://127.0.0.1:{free_tcp_port}")
        for seq in range(8):
            push.send_multipart(encode("s", seq, T0 + seq * 0.04, 1600.0, x[seq]))
            # 60 ms apart: past GATHER_WAIT_S, well within IDLE_MS; 1.5 s after the fourth
            threading.Event().wait(1.5 if seq == 3 else 0.06)
        push.send_multipart(encode_eos("s"))
        push.close(1000)

    with src:
        sender = threading.Thread(target=send)
        sender.start()
        polls = [[f.seq for f in batch] for batch in src.batches()]
        sender.join()
    assert polls == [[0, 1, 2, 3], [4, 5, 6, 7]]


PUBLISHER = textwrap.dedent(
    """
    import json, sys, zmq, numpy as np, scipy.io
    from drsn_stream.sources.wire import encode, encode_eos
    port, path, skip, restart = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4] == "1"
    mat = scipy.io.loadmat(path)
    x = mat[next(k for k in mat if k.endswith("_DE_time"))].astype(np.float32).ravel()[: 40 * 512]
    sock = zmq.Context.instance().socket(zmq.XPUB)
    sock.setsockopt(zmq.LINGER, 5000)
    sock.bind("tcp://127.0.0.1:" + port)
    sock.recv()  # wait for the monitor's subscription: no slow-joiner loss
    for seq in range(40):
        if seq == skip:
            continue  # a lost message: the monitor must count a gap
        if seq == 20:
            sock.send_multipart([b"cwru/ir007", b"\\xff not json", b"1234"])
        sock.send_multipart(encode("cwru/ir007", seq, 1.8e9 + seq * 512 / 12000, 12000, x[seq * 512 : (seq + 1) * 512]))
    if restart:
        sock.send_multipart(encode_eos("cwru/ir007"))
    sock.close()
    """
)


def test_pub_sub_loopback_with_gap_malformed_and_restart(data_dir, free_tcp_port, child_env):
    path = data_dir / "cwru" / "12k_Drive_End_IR007_0_105.mat"
    src = make_source(f"zmq://127.0.0.1:{free_tcp_port}?until_eos=1")
    frames = []

    def consume():
        with src:
            frames.extend(src)

    reader = threading.Thread(target=consume)
    reader.start()
    try:
        first = subprocess.run([sys.executable, "-c", PUBLISHER, str(free_tcp_port), str(path), "7", "0"],
                               env=child_env, timeout=60, capture_output=True, text=True)
        assert first.returncode == 0, first.stderr
        second = subprocess.run([sys.executable, "-c", PUBLISHER, str(free_tcp_port), str(path), "-1", "1"],
                                env=child_env, timeout=60, capture_output=True, text=True)
        assert second.returncode == 0, second.stderr
        reader.join(timeout=30)
    finally:
        src.close()
        reader.join(timeout=5)
    assert not reader.is_alive()
    stats = src.stats.snapshot()
    assert stats["gaps"] == {"cwru/ir007": 1} and stats["missing"] == {"cwru/ir007": 1}
    assert stats["malformed"] == {"bad_json": 2}
    assert stats["restarts"] == {"cwru/ir007": 1}
    assert [f.seq for f in frames] == [s for s in range(40) if s != 7] + list(range(40))
    mat = scipy.io.loadmat(path)
    x = mat[next(k for k in mat if k.endswith("_DE_time"))].astype(np.float32).ravel()
    second_run = np.concatenate([f.samples[:, 0] for f in frames[39:]])
    assert np.array_equal(second_run, x[: 40 * 512])  # the real recording, bit for bit


def test_close_from_another_thread_ends_iteration(free_tcp_port):
    src = make_source(f"zmq+bind://:{free_tcp_port}")
    done = threading.Event()

    def consume():
        with src:
            for _ in src:
                pass
        done.set()

    t = threading.Thread(target=consume)
    t.start()
    src.close()
    t.join(timeout=5)
    assert done.is_set()


def _publish_to_a_pull_receiver(port: int, spec: str, dtype: str, *, host: str = "127.0.0.1", receiver_binds: bool = True):
    """``drsn-stream publish --pull --connect`` of ``spec`` to a PULL source bound on ``port``
    (``receiver_binds=False``: ``publish --pull`` binds, the source connects): (the command's
    exit status, the receiver's source, the frames it got)."""
    kind = "zmq+pull+bind" if receiver_binds else "zmq+pull"
    src = make_source(f"{kind}://{host}:{port}?until_eos=1")
    frames = []
    with src:
        t = threading.Thread(target=lambda: frames.extend(src))
        t.start()
        args = argparse.Namespace(source=[spec], to=f"tcp://{host}:{port}", duration=None, pull=True,
                                  connect=receiver_binds, dtype=dtype, wait_subscriber=0.0, quiet=False)
        rc = publish_cmd.run(args)
        t.join(timeout=30)
    return rc, src, frames


def test_publish_command_feeds_a_pull_receiver(free_tcp_port, capsys):
    rc, src, frames = _publish_to_a_pull_receiver(free_tcp_port, "sim:bearing?machines=2&fast=1&duration=3&chunk=600",
                                                  "int16")
    assert rc == 0
    out = capsys.readouterr().out
    assert "published 120 messages" in out and "sim/m1" in out
    import gc

    assert gc.get_freeze_count() == 0  # frozen while it sent, handed back for the caller's process
    assert sorted({f.stream_id for f in frames}) == ["sim/m0", "sim/m1"]
    assert sum(f.n for f in frames) == 2 * 3 * 12000
    assert src.stats.snapshot()["ended"] == ["sim/m0", "sim/m1"]
    # int16 on the wire, scaled per message to its peak: the receiver sees the simulator's
    # vibration (several g during faults) to within half a count, never clipped at 1.0.
    with make_source("sim:bearing?machines=2&fast=1&duration=3&chunk=600&fault=outer_021") as sim:
        ref = {(f.stream_id, f.seq): f.samples for f in sim}
    assert max(float(np.abs(r).max()) for r in ref.values()) > 1.0
    rc, _, frames2 = _publish_to_a_pull_receiver(
        free_tcp_port, "sim:bearing?machines=2&fast=1&duration=3&chunk=600&fault=outer_021", "int16")
    assert rc == 0 and len(frames2) == len(ref)
    for f in frames2:
        r = ref[(f.stream_id, f.seq)]
        np.testing.assert_allclose(f.samples, r, atol=0.5 * float(np.abs(r).max()) / 32767 * 1.001)


class _DyingLink:
    """A TCP relay on loopback that can die as a powered-off gateway's link does: ``cut()`` and
    the connections made so far stop carrying bytes either way, without closing (no FIN, no
    RST: the peers are not told); connections made after that are relayed again."""

    def __init__(self, listen: int, target: int) -> None:
        self.target, self._cut = target, threading.Event()
        self._server = socket.create_server(("127.0.0.1", listen))
        self._held: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def cut(self) -> None:
        self._cut.set()

    def close(self) -> None:
        self._server.close()
        for s in self._held:
            s.close()

    def _accept(self) -> None:
        while True:
            try:
                near, _ = self._server.accept()
                far = socket.create_connection(("127.0.0.1", self.target))
            except OSError:
                return
            self._held += [near, far]
            dies = not self._cut.is_set()  # a connection made before the cut dies with it
            for a, b in ((near, far), (far, near)):
                threading.Thread(target=self._pump, args=(a, b, dies), daemon=True).start()

    def _pump(self, a: socket.socket, b: socket.socket, dies: bool) -> None:
        try:
            while data := a.recv(65536):
                if not (dies and self._cut.is_set()):
                    b.sendall(data)
        except OSError:
            pass


def test_a_gateway_back_from_a_power_cut_is_read_again(free_tcp_port):
    """A gateway that loses power leaves the monitor's connection open and silent (no FIN, no
    RST). Before, the source held that dead connection for ever and never read the gateway once
    it was back; with ZeroMQ heartbeats it drops the dead link within seconds and connects again."""
    gateway, relay = free_tcp_port, free_port()
    link = _DyingLink(relay, gateway)
    ctx = zmq.Context.instance()
    pub = ctx.socket(zmq.PUB)
    pub.setsockopt(zmq.LINGER, 0)
    pub.bind(f"tcp://127.0.0.1:{gateway}")
    src = make_source(f"zmq://127.0.0.1:{relay}")
    frames: list = []
    x = np.zeros(512, dtype=np.float32)

    def send_until(enough: int, seconds: float) -> None:
        deadline, seq = time.monotonic() + seconds, 0
        while len(frames) < enough and time.monotonic() < deadline:
            pub.send_multipart(encode("gw/pump", seq, time.time(), 12000.0, x))
            seq += 1
            time.sleep(0.02)

    try:
        with src:
            reader = threading.Thread(target=lambda: frames.extend(src), daemon=True)
            reader.start()
            send_until(10, 20)
            assert len(frames) >= 10, "no frame through the relay before the cut"
            link.cut()  # the gateway's power goes
            pub.close(0)
            time.sleep(0.5)
            pub = ctx.socket(zmq.PUB)  # and it boots again, at the same address
            pub.setsockopt(zmq.LINGER, 0)
            pub.bind(f"tcp://127.0.0.1:{gateway}")
            before = len(frames)
            send_until(before + 10, 30)
            after = len(frames) - before
            src.close()
            reader.join(timeout=5)
    finally:
        pub.close(0)
        link.close()
    assert after >= 10, "the rebooted gateway was never read"


def _ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.mark.skipif(not _ipv6_loopback(), reason="no IPv6 loopback (::1) here")
@pytest.mark.parametrize("receiver_binds", [True, False], ids=["receiver-binds", "publisher-binds"])
def test_ipv6_addresses_carry_frames_both_ways(free_tcp_port, receiver_binds, capsys):
    """Before: ``publish --to tcp://[::1]:PORT`` failed with "not an address of this machine"
    and ``zmq://[::1]:PORT`` waited for ever (a ZeroMQ socket speaks IPv4 unless told)."""
    assert make_source("zmq://::1:5555").addresses == ["tcp://[::1]:5555"]  # brackets added
    rc, src, frames = _publish_to_a_pull_receiver(free_tcp_port, "sim:bearing?machines=2&fast=1&duration=1&chunk=600",
                                                  "float32", host="[::1]", receiver_binds=receiver_binds)
    assert rc == 0, capsys.readouterr()
    assert sum(f.n for f in frames) == 2 * 12000
    assert src.stats.snapshot()["ended"] == ["sim/m0", "sim/m1"]


def test_a_bind_source_reopens_on_its_port_at_once(free_tcp_port):
    # libzmq releases a closed socket's port in its I/O thread, a moment after close(): a source
    # restarted in the same process on the same address must still bind, every time.
    for _ in range(300):
        with make_source(f"zmq+pull+bind://127.0.0.1:{free_tcp_port}") as src:
            assert src.waiting()


def test_one_source_subscribes_to_several_gateways(child_env):
    # Two publishers, each simulating half of four machines (first=0 and first=2), and one SUB
    # source connected to both: every machine arrives, bit for bit as one simulator of all four
    # sends it.
    ports = [free_port(), free_port()]
    src = make_source(f"zmq://127.0.0.1:{ports[0]},127.0.0.1:{ports[1]}")
    assert src.addresses == [f"tcp://127.0.0.1:{p}" for p in ports]
    frames: list = []
    sim = "sim:bearing?machines=2&fast=1&duration=2&noise=gaussian&seed=9"
    with make_source(sim.replace("machines=2", "machines=4")) as one:
        ref = {(f.stream_id, f.seq): f.samples for f in one}
    with src:
        reader = threading.Thread(target=lambda: frames.extend(src), daemon=True)
        reader.start()
        pubs = [subprocess.Popen([sys.executable, "-m", "drsn_stream", "publish", "--quiet", "--to",
                                  f"tcp://127.0.0.1:{port}", "--source", f"{sim}&first={first}",
                                  "--wait-subscriber", "20"], env=child_env)
                for port, first in zip(ports, (0, 2))]
        try:
            assert [p.wait(timeout=60) for p in pubs] == [0, 0]
            deadline = time.monotonic() + 20
            # an end of stream is counted as it arrives, the frames of its poll are handed over
            # after it: closing the source at once could drop a poll the reader has not taken
            while ((len(src.stats.snapshot()["ended"]) < 4 or len(frames) < len(ref))
                   and time.monotonic() < deadline):
                time.sleep(0.05)
        finally:
            for p in pubs:
                p.kill()
            src.close()
            reader.join(timeout=5)
    assert src.stats.snapshot()["ended"] == ["sim/m0", "sim/m1", "sim/m2", "sim/m3"]
    got = {(f.stream_id, f.seq): f.samples for f in frames}
    assert got.keys() == ref.keys()
    assert all(np.array_equal(got[k], ref[k]) for k in ref)


def test_a_list_of_addresses_is_checked_and_a_failure_names_its_address(free_tcp_port):
    with pytest.raises(ConfigError, match="empty entry"):
        make_source("zmq://127.0.0.1:5555,,127.0.0.1:5556")
    with pytest.raises(ConfigError, match="twice"):
        make_source("zmq://127.0.0.1:5555, 127.0.0.1:5555")
    with pytest.raises(ConfigError, match="needs HOST:PORT"):
        make_source("zmq://127.0.0.1:5555,gw")
    with zmq.Context.instance().socket(zmq.PULL) as taken:
        taken.bind(f"tcp://127.0.0.1:{free_tcp_port}")
        src = make_source(f"zmq+pull+bind://127.0.0.1:{free_port()},127.0.0.1:{free_tcp_port}")
        with pytest.raises(SourceError, match=f"cannot bind tcp://127.0.0.1:{free_tcp_port}: .*pick a free port"):
            src.open()


def test_a_bind_that_cannot_be_says_why_and_a_port_beyond_65535_is_refused(free_tcp_port):
    """Before: a bind to an address of another machine told the user to "pick another port or
    stop the program using it", and tcp://HOST:99999 was taken as port 34463 without a word.
    (A bind sends nothing: 10.255.1.1 is simply not an address of this machine or namespace.)"""
    from drsn_stream.sinks.jsonl import ZmqResultSink

    elsewhere = f"tcp://10.255.1.1:{free_tcp_port}"
    with pytest.raises(DrsnStreamError, match="cannot bind .*not an address of this machine: bind to 127.0.0.1"):
        publish_cmd.publish(["sim?machines=1"], elsewhere, duration=0.1)
    with pytest.raises(SourceError, match="not an address of this machine"):
        make_source(f"zmq+bind://10.255.1.1:{free_tcp_port}").open()
    with pytest.raises(ConfigError, match="not an address of this machine"):
        ZmqResultSink(elsewhere)
    for where in ("tcp://127.0.0.1:99999", "127.0.0.1:0"):
        with pytest.raises(ConfigError, match="a port from 1 to 65535"):
            publish_cmd.publish(["sim?machines=1"], where, duration=0.1)
        with pytest.raises(ConfigError, match="a port from 1 to 65535"):
            ZmqResultSink(where)
    with zmq.Context.instance().socket(zmq.PULL) as taken:  # a port in use: that advice stays
        taken.bind(f"tcp://127.0.0.1:{free_tcp_port}")
        with pytest.raises(DrsnStreamError, match="pick a free port or stop the program using it"):
            publish_cmd.publish(["sim?machines=1"], f"tcp://127.0.0.1:{free_tcp_port}", duration=0.1)


def test_a_subscriber_behind_that_changes_its_subscriptions_still_gets_the_end_of_what_publish_sent(
        free_tcp_port):
    # The monitor's ingest processes subscribe to new topics as they run. When one was behind (what
    # publish had sent still in its kernel) and subscribed after publish had closed its socket, the
    # TCP reset that answered threw away all it had not read: the end of every stream, and their
    # end-of-stream messages (the ingest-processes test lost 13-59 of a stream's 70 frames so).
    sub = zmq.Context.instance().socket(zmq.SUB)
    sub.setsockopt(zmq.RCVHWM, 50)  # behind: most of the burst waits in the kernel, not in ZeroMQ
    sub.setsockopt(zmq.LINGER, 0)
    sub.connect(f"tcp://127.0.0.1:{free_tcp_port}")
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    summary: dict = {}
    sender = threading.Thread(target=lambda: summary.update(publish_cmd.publish(
        ["sim:bearing?machines=2&fast=1&duration=6&chunk=512"], f"tcp://127.0.0.1:{free_tcp_port}",
        wait_subscriber=10.0)))
    sender.start()
    got, ended = 0, set()
    try:
        while sub.poll(3000):
            topic, header = sub.recv_multipart()[:2]
            if json.loads(header).get("eos"):
                ended.add(topic)
                if len(ended) == 2:
                    break
                continue
            got += 1
            time.sleep(0.002)  # a reader slower than the sender
            if got == 100:
                sub.setsockopt(zmq.SUBSCRIBE, b"sim/m1")  # as an ingest process told of its stream
    finally:
        sender.join(timeout=30)
        sub.close()
    assert summary["messages"] > 250 and not summary["errors"]
    assert (got, sorted(ended)) == (summary["messages"], [b"sim/m0", b"sim/m1"])


def test_publish_as_integers_sends_a_frame_with_nan_samples_as_float32_and_goes_on(free_tcp_port, capsys, tmp_path):
    # a sensor that drops out (NaN) ended a gateway publishing int16 at its first such frame, with
    # nothing after it sent: no integer means NaN. Such frames now go as float32 (every message
    # names its dtype), and the monitor's sensor health sees the NaNs
    x = np.random.default_rng(0).normal(0, 0.1, 12000).astype(np.float32)
    x[5000:5100] = np.nan
    np.save(tmp_path / "drop.npy", x)
    rc, _, frames = _publish_to_a_pull_receiver(free_tcp_port, f"file:{tmp_path / 'drop.npy'}?rate=12000&fast=1&chunk=1000",
                                                "int16")
    assert rc == 0
    out = capsys.readouterr()
    assert "1 frame held NaN or Inf samples, which int16 cannot carry: sent as float32" in out.out, out
    got = np.concatenate([f.samples[:, 0] for f in frames])
    assert got.size == x.size and np.array_equal(np.isnan(got), np.isnan(x))
    np.testing.assert_allclose(got[~np.isnan(x)], x[~np.isnan(x)], atol=1e-5)  # int16 to its peak elsewhere


def test_publish_refuses_a_dtype_the_wire_has_not_before_any_socket(free_tcp_port):
    # it was a KeyError traceback in the sending thread, at the first frame
    with pytest.raises(DrsnStreamError, match="unknown dtype 'int8'; use one of float32, float64, int16, int32"):
        publish_cmd.publish(["sim?machines=1&fast=1&duration=1"], f"tcp://127.0.0.1:{free_tcp_port}", dtype="int8")
