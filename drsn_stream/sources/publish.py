"""``drsn-stream publish``: send any sources' frames out over ZeroMQ in the wire format.

A sensor-gateway emulator and a way to feed remote monitors:

    drsn-stream publish --source sim:bearing?machines=8 --to tcp://127.0.0.1:5555
    drsn-stream run --source zmq://127.0.0.1:5555          # elsewhere

PUB binds by default (monitors connect with ``zmq://``); ``--pull`` uses PUSH for PULL receivers
(``zmq+pull://``, load-balanced), ``--connect`` connects instead of binding (for ``zmq+bind://``
and ``zmq+pull+bind://`` receivers). Each source is read in its own thread at its own pace; one
thread owns the socket. At the end every stream gets an end-of-stream message.
"""

from __future__ import annotations

import argparse
import queue
import signal
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import zmq

from drsn_stream.config import arg_duration, arg_number
from drsn_stream.errors import ConfigError, DrsnStreamError
from drsn_stream.runtime import freeze_start_up_objects, stop_signals, thaw
from drsn_stream.sources import make_source
from drsn_stream.sources.curve import Curve
from drsn_stream.sources.curve import close as close_curve
from drsn_stream.sources.wire import DTYPES, encode, encode_eos
from drsn_stream.sources.zmq_source import Connections, bind_socket, connect_socket, socket_hint, tcp_address
from drsn_stream.types import Frame

DEFAULT_TO = "tcp://127.0.0.1:5555"
_DONE = object()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--source", action="append", metavar="SPEC",
                        help="source to send (repeatable; default: sim:bearing)")
    parser.add_argument("--to", default=DEFAULT_TO, metavar="ADDR",
                        help=f"ZeroMQ address to bind (or connect with --connect); default {DEFAULT_TO}")
    parser.add_argument("--duration", type=arg_duration, default=None,
                        help="stop after DURATION (e.g. 90, 30s, 10m, 1h30m; default: when every source ends, "
                             "or Ctrl-C)")
    parser.add_argument("--pull", action="store_true",
                        help="send to PULL receivers over a PUSH socket instead of PUB")
    parser.add_argument("--connect", action="store_true", help="connect to ADDR instead of binding it")
    parser.add_argument("--dtype", default="float32", choices=sorted(DTYPES),
                        help="sample type on the wire (default float32; int16/int32: each message scaled to its "
                             "own peak, and a source with NaN/Inf samples stops with an error: integers cannot carry them)")
    parser.add_argument("--wait-subscriber", type=arg_number(float, 0), default=0.0, metavar="S",
                        help="PUB: wait up to S seconds for the first subscriber before sending")
    parser.add_argument("--curve-key", metavar="FILE",
                        help="CURVE encryption: this gateway's key pair (NAME.key_secret from `drsn-stream keys NAME`); "
                             "readers then need its public NAME.key (zmq://...?curve_server=NAME.key)")
    parser.add_argument("--curve-allow", metavar="DIR",
                        help="CURVE: only readers whose public key (NAME.key) is in DIR may connect")
    parser.add_argument("--curve-server", metavar="FILE",
                        help="CURVE with --connect: the binding reader's public key (NAME.key)")
    parser.add_argument("--quiet", action="store_true", help="print nothing but errors")


def _int_scale(x: Any, dtype: str) -> float | None:
    """Integers on the wire: scale each message to its own peak, so vibration in g (often well
    above 1.0) neither clips at full scale nor wastes resolution."""
    if DTYPES[dtype].kind != "i":
        return None
    peak = float(np.max(np.abs(x))) if x.size else 0.0
    scale = peak / float(np.iinfo(DTYPES[dtype]).max)
    # a peak below float32's normal numbers (or none): the default scale, which sends zeros
    return scale if np.isfinite(peak) and scale >= float(np.finfo(np.float32).tiny) else None


def _pump(source: Any, handle: Callable[[Frame], None], errors: list[str], finish: Callable[[], None]) -> None:
    """Hands every frame of ``source`` to ``handle`` (on a reader thread); ``finish()`` at the end.
    A frame goes with the shaft speed its source knows (``file:...?rpm=``, or the RPM a CWRU .mat
    file records) where it carries none: the wire format's ``rpm``, which receivers analyse at."""
    try:
        with source:
            for frame in source:
                if frame.rpm is None and (rpm := getattr(source, "rpm", None)):
                    frame.rpm = float(rpm)
                handle(frame)
    except DrsnStreamError as exc:
        errors.append(str(exc))
    finally:
        finish()


# A subscriber may still be reading what was sent (its kernel holds it) when the last message
# leaves, and change its subscriptions meanwhile (the monitor's ingest processes do). Its message
# to a socket already closed is answered with a TCP reset, which throws away everything it had not
# read yet: the end of every stream. So the socket stays open this long after the end.
CLOSE_GRACE_S = 1.0


def _stay_open(sock: zmq.Socket, seconds: float, stop: threading.Event) -> None:
    """Keeps ``sock`` open ``seconds`` (or until ``stop``), taking the subscriptions an XPUB hears."""
    end = time.monotonic() + seconds
    while not stop.is_set() and (left := end - time.monotonic()) > 0:
        if sock.type == zmq.XPUB:
            if sock.poll(int(min(left, 0.1) * 1000) + 1):
                sock.recv()
        else:
            stop.wait(min(left, 0.1))


def publish(
    specs: list[str],
    to: str = DEFAULT_TO,
    *,
    duration: float | None = None,
    pull: bool = False,
    connect: bool = False,
    dtype: str = "float32",
    wait_subscriber: float = 0.0,
    stop: threading.Event | None = None,
    progress: Callable[[dict[str, Any]], None] | None = None,
    ready: Callable[[], None] | None = None,
    curve: Curve | None = None,
) -> dict[str, Any]:
    """Send the frames of ``specs`` to ``to`` until they end, ``duration`` passes or ``stop`` is set.

    ``progress`` (optional) is called about once a second with ``{"elapsed_s", "streams",
    "messages", "messages_per_s", "mb_per_s", "dropped"}``; ``ready`` once the socket is bound or
    connected, before the first frame. ``curve``: the socket's CURVE settings (encrypted; a
    binding socket is CURVE's server).

    Returns a summary ``{"streams": {id: {"frames", "samples", "seconds"}}, "messages", "bytes",
    "elapsed_s", "errors", "dropped", "sent_as_float32", "receivers", "handshake_failures"}`` (frames
    with NaN or Inf samples, which an integer ``dtype`` cannot carry, go as float32; receivers: the
    most connected at once; handshake_failures: connections that failed ZeroMQ's handshake, e.g. a
    reader with a wrong CURVE key).
    """
    if dtype not in DTYPES:
        raise DrsnStreamError(f"unknown dtype {dtype!r}; use one of {', '.join(DTYPES)}")
    sources = [make_source(s) for s in specs]  # spec errors surface before any socket exists
    for src in sources:
        src.check()  # so do a missing file and an absent sound card, as in the monitor
    if curve is not None and curve.is_server == connect:
        raise ConfigError("CURVE: " + ("--curve-server is for --connect; a binding publisher is CURVE's server "
                                         "(--curve-key alone)" if not connect else
                                         "with --connect the reader binds and is CURVE's server: give its public "
                                         "key with --curve-server NAME.key"))
    ctx = curve.context() if curve is not None else zmq.Context.instance()
    # XPUB (a PUB that also hears subscriptions) only when asked to wait for the first subscriber.
    sock = ctx.socket(zmq.PUSH if pull else (zmq.XPUB if wait_subscriber > 0 else zmq.PUB))
    sock.setsockopt(zmq.LINGER, 2000)
    sock.setsockopt(zmq.SNDHWM, 10000)
    if pull:
        sock.setsockopt(zmq.SNDTIMEO, 1000)  # PUSH blocks without a receiver; count, don't hang
    guard = curve.apply(sock) if curve is not None else None
    try:
        addr = tcp_address(to, bind=not connect)
    except DrsnStreamError:
        close_curve(sock, guard)
        raise
    try:
        peers = Connections(sock)  # before the first connection, to count it
        connect_socket(sock, addr) if connect else bind_socket(sock, addr)
    except zmq.ZMQError as exc:
        peers.close()
        close_curve(sock, guard)
        raise DrsnStreamError(f"cannot {'connect to' if connect else 'bind'} {addr}: {exc.strerror}; "
                              f"{socket_hint(exc, bind=not connect)}") from exc
    if ready is not None:
        ready()
    stop = stop or threading.Event()
    summary: dict[str, Any] = {"streams": {}, "messages": 0, "bytes": 0, "errors": [], "dropped": 0,
                               "sent_as_float32": 0}
    integers = DTYPES[dtype].kind == "i"
    thresholds = freeze_start_up_objects()  # a full collection would stall the send loop: do it now, not mid-stream
    try:
        if not pull and wait_subscriber > 0:
            poller = zmq.Poller()
            poller.register(sock, zmq.POLLIN)
            if poller.poll(int(wait_subscriber * 1000)):
                sock.recv()  # the subscription message itself
        more = int(zmq.SNDMORE)  # an int: pyzmq's flag enums cost an enum operation per part
        streams = summary["streams"]

        def send(frame: Frame) -> None:
            as_dtype, scale = dtype, _int_scale(frame.samples, dtype)
            # _int_scale finds no scale for a NaN or Inf peak (or a near-silent frame): only then is
            # there a second pass over the samples. No integer means NaN: such a frame goes as
            # float32 (each message names its dtype), so the monitor sees the sensor fault instead
            # of the gateway ending on it
            if integers and scale is None and not np.isfinite(frame.samples).all():
                as_dtype = "float32"
                summary["sent_as_float32"] += 1
            topic, header, payload = encode(frame.stream_id, frame.seq, frame.t_capture, frame.sample_rate,
                                            frame.samples, dtype=as_dtype, scale=scale, names=frame.names,
                                            rpm=frame.rpm)
            try:
                # part by part as send_multipart does (ZeroMQ delivers a message whole or not at
                # all), without its flag arithmetic per part
                sock.send(topic, more)
                sock.send(header, more)
                sock.send(payload)
            except zmq.Again:
                summary["dropped"] += 1
                return
            st = streams.get(frame.stream_id)
            if st is None:
                st = streams[frame.stream_id] = {"frames": 0, "samples": 0, "seconds": 0.0}
            st["frames"] += 1
            st["samples"] += frame.n
            st["seconds"] += frame.duration
            summary["messages"] += 1
            summary["bytes"] += len(topic) + len(header) + len(payload)

        t_start = time.monotonic()  # durations and rates: the wall clock can step
        report = _Progress(summary, t_start, progress, peers)
        if len(sources) == 1:
            # One source: its reader thread sends too (no queue hand-off per frame; the socket is
            # used by that thread alone until it is joined).
            done = threading.Event()
            reader = threading.Thread(target=_pump, args=(sources[0], send, summary["errors"], done.set), daemon=True)
            reader.start()
            while not done.wait(0.1) and not stop.is_set():
                report.tick()
                if duration is not None and time.monotonic() - t_start >= duration:
                    break
            sources[0].close()
            reader.join(timeout=5.0)
            threads = []
        else:
            frames: queue.Queue = queue.Queue(maxsize=1000)
            threads = [threading.Thread(target=_pump, args=(s, frames.put, summary["errors"], lambda: frames.put(_DONE)),
                                        daemon=True) for s in sources]
            for t in threads:
                t.start()
            running = len(threads)
            while running and not stop.is_set():
                report.tick()
                if duration is not None and time.monotonic() - t_start >= duration:
                    break
                try:
                    item = frames.get(timeout=0.1)
                except queue.Empty:
                    continue
                if item is _DONE:
                    running -= 1
                    continue
                send(item)
        for s in sources:
            s.close()
        for stream in summary["streams"]:
            try:
                sock.send_multipart(encode_eos(stream))
            except zmq.Again:
                summary["dropped"] += 1
        summary["elapsed_s"] = time.monotonic() - t_start
        summary["receivers"] = None if peers.count() is None else peers.most  # the most connected at once
        summary["handshake_failures"] = peers.failed
        for t in threads:
            t.join(timeout=2.0)
        if not pull:
            _stay_open(sock, CLOSE_GRACE_S, stop)
    finally:
        for s in sources:
            s.close()
        peers.close()
        close_curve(sock, guard)
        thaw(thresholds)
    return summary


class _Progress:
    """Calls ``progress`` about once a second with the rates since the previous call."""

    def __init__(self, summary: dict[str, Any], t_start: float,
                 progress: Callable[[dict[str, Any]], None] | None, peers: Connections | None = None) -> None:
        self.summary, self.progress, self.peers = summary, progress, peers
        self.t_start = self.t_last = t_start
        self.messages = self.bytes = 0

    def tick(self) -> None:
        now = time.monotonic()
        if self.progress is None or now - self.t_last < 1.0:
            return
        s, dt = self.summary, now - self.t_last
        messages, size = s["messages"], s["bytes"]  # counted by a reader thread: a moment's view
        self.progress({"elapsed_s": now - self.t_start, "streams": len(s["streams"]), "messages": messages,
                       "messages_per_s": (messages - self.messages) / dt, "mb_per_s": (size - self.bytes) / dt / 1e6,
                       "dropped": s["dropped"], "receivers": None if self.peers is None else self.peers.count(),
                       "handshake_failures": 0 if self.peers is None else self.peers.failed})
        self.t_last, self.messages, self.bytes = now, messages, size


def _print_progress(p: dict[str, Any]) -> None:
    n = p.get("receivers")
    # a PUB sends into nothing while no subscriber is connected: said, rather than a rate that
    # looks like data flowing
    who = "" if n is None else f"  {n} receiver{'s' if n != 1 else ''}" if n else "  no receiver connected"
    failed = p.get("handshake_failures") or 0
    who += f", {failed} failed the handshake" if failed else ""
    print(f"{p['elapsed_s']:6.1f} s  {p['streams']} streams  {p['messages_per_s']:8.1f} msg/s  "
          f"{p['mb_per_s']:6.2f} MB/s  {p['messages']} messages" + (f", {p['dropped']} dropped" if p["dropped"] else "")
          + who, flush=True)


def run(args: argparse.Namespace) -> int:
    specs = args.source or ["sim:bearing"]
    how = "PUSH" if args.pull else "PUB"
    where = tcp_address(args.to, bind=not args.connect)  # an error: one line from ``cli.main``, exit 2

    def ready() -> None:  # said once the socket is there: not before an address it cannot bind
        print(f"publishing {', '.join(specs)} as {how} {'to' if args.connect else 'at'} {where} "
              f"({args.dtype}); Ctrl-C stops", flush=True)

    curve = None
    key, server, allow = (getattr(args, f"curve_{k}", None) for k in ("key", "server", "allow"))
    if key or server or allow:
        # an allow list loaded again (readers' keys added or removed) is said even with --quiet: rare, and
        # who may read the gateway changed
        curve = Curve(key=key, server=server, allow=allow, what="CURVE",
                      on_change=lambda message: print(f"publish: {message}", file=sys.stderr, flush=True))
        how += ", CURVE-encrypted"
    stop = threading.Event()
    saved = _stop_on_signals(stop)
    try:
        summary = publish(specs, args.to, duration=args.duration, pull=args.pull, connect=args.connect,
                          dtype=args.dtype, wait_subscriber=args.wait_subscriber, stop=stop,
                          progress=None if args.quiet else _print_progress, ready=None if args.quiet else ready,
                          curve=curve)
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)
    if not args.quiet:
        print(f"published {summary['messages']} messages ({summary['bytes'] / 1e6:.2f} MB) over {how} "
              f"{'to' if args.connect else 'at'} {where} in {summary['elapsed_s']:.1f} s")
        for stream, st in sorted(summary["streams"].items()):
            print(f"  {stream:24s} {st['frames']:7d} frames {st['samples']:10d} samples {st['seconds']:8.1f} s")
        if summary["dropped"]:
            print(f"  dropped {summary['dropped']} messages (no receiver took them)")
        if summary.get("handshake_failures"):
            n = summary["handshake_failures"]
            why = ("a reader without this gateway's public key (curve_server=), or not in --curve-allow"
                   if curve is not None else "a reader of another socket kind, or one expecting CURVE encryption")
            print(f"  {n} connection{'s' if n != 1 else ''} failed the ZeroMQ handshake: {why}")
        if summary.get("receivers") == 0 and summary["messages"]:
            print("  no receiver was connected: every message went nowhere (a PUB drops what no subscriber "
                  "takes); start the monitor first, or give --wait-subscriber S")
        if summary["sent_as_float32"]:
            n = summary["sent_as_float32"]
            print(f"  {n} frame{'s' if n != 1 else ''} held NaN or Inf samples, which {args.dtype} cannot carry: "
                  "sent as float32")
    for err in summary["errors"]:
        print(f"drsn-stream publish: error: {err}", file=sys.stderr)
    return 1 if summary["errors"] else 0


def _stop_on_signals(stop: threading.Event) -> dict[int, Any]:
    """Ctrl-C, SIGTERM and SIGHUP (``runtime.stop_signals``) end the run with its summary and every
    stream's end-of-stream. Returns the handlers they replace (``run`` puts them back: a caller in
    the same process keeps its own)."""
    if threading.current_thread() is not threading.main_thread():
        return {}
    saved = {sig: signal.getsignal(sig) for sig in stop_signals()}
    for sig in saved:
        # the main thread never waits on ``stop`` (only is_set, which takes no lock), so the
        # handler's set() cannot wait for a lock that thread holds
        signal.signal(sig, lambda signum, frame: stop.set())
    return saved


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="drsn-stream publish", description=__doc__.splitlines()[0])
    add_arguments(parser)
    try:
        return run(parser.parse_args(argv))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
