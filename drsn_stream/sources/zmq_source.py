"""ZeroMQ sensor sources: SUB or PULL sockets, connecting or binding, reading the wire format.

Malformed messages are counted by reason (``stats.malformed``) and skipped; sequence gaps are
counted per stream; a frame whose seq was already delivered is a duplicate, one that was counted
missing and arrives within ``REORDER_WINDOW`` frames is late (both dropped and counted); a
publisher that starts again from seq 0 or from far below (a restart) is accepted and counted in
``stats.restarts``. New stream ids beyond ``max_streams`` are refused (``too_many_streams``). The
socket is polled with a short timeout so ``close()`` from any thread ends iteration within about
0.1 s. A target of several comma-separated addresses (``zmq://gw1:5555,gw2:5555``) is one socket
connected to (or bound at) every one of them: one source, and one stream table, for several
gateways.
"""

from __future__ import annotations

import errno
import ipaddress
import math
import socket
import time
from collections.abc import Callable, Iterator
from functools import partial
from itertools import repeat
from typing import Any, ClassVar

import zmq
import zmq.utils.monitor

from drsn_stream.errors import ConfigError, SourceError
from drsn_stream.sources import recv_jit
from drsn_stream.sources.base import Source, opt_bool, opt_index, opt_positive
from drsn_stream.sources.curve import Curve
from drsn_stream.sources.curve import close as close_curve
from drsn_stream.sources.recv_jit import message_parts, take_py
from drsn_stream.sources.wire import (
    MAX_CLOCK_SKEW_S,
    MAX_HEADER_BYTES,
    MAX_PAYLOAD_BYTES,
    VIEW_BYTES,
    Decoder,
    EndOfStream,
    Head,
    WireError,
    to_frames,
)
from drsn_stream.types import Frame

POLL_MS = 100
IDLE_MS = 2
# A poll takes a publisher's burst whole: it goes on receiving until the socket has been quiet for
# IDLE_MS (a burst's messages are microseconds apart, but a publisher that shares a core with the
# monitor is preempted in the middle of one). Each poll's frames cost ingest a fixed number of
# array operations, so a burst in one poll costs less per frame than the same burst in pieces
# (docs/performance.md). A poll ends MAX_POLL_MS after its start however many messages keep
# coming, so that a flood (of refused messages, say) does not hold back the frames it has taken.
GATHER_MS = 5.0
# Within a burst, a socket found empty is looked at again after GATHER_WAIT_S asleep rather than
# at the next message's arrival: each wake-up costs the receiving thread ~20 us of CPU (a poll, a
# context switch, the interpreter lock back), and a burst that trickles in (a gateway's 32 KB
# frames, a publisher sharing the core) then wakes it once per many messages, not per message.
# It then waits for what is left of IDLE_MS, if anything, in whole milliseconds (ZeroMQ's poll):
# the quiet that ends a burst is the sleep itself. A sleep as long as IDLE_MS takes about twice
# the messages per wake-up of a 0.5 ms one, and costs ingest less per frame (docs/performance.md).
GATHER_WAIT_S = 0.002
MAX_POLL_MS = 20.0
# The connections' handshakes are looked at when the socket is quiet, at most this often: a look
# after each burst cost the receiving thread ~70-90 us (its caches cold after the burst), some
# 2 % of the ingest at 256 streams; a failed handshake is still said within a tenth of a second.
WATCH_EVERY_S = 0.1
# frames handed over in one list at most: a backlog is taken in slices this large, so that the
# first of its windows need not wait for the whole backlog to be decoded
MAX_POLL_FRAMES = 1024
# messages received in one go (``recv_jit.Receiver.take``) at most, between looks at the clock
TAKE_MESSAGES = 256
MAX_NO_SPEED = 64  # streams said (each once) to send an rpm that is no speed; then no more notes
REORDER_WINDOW = 64  # frames: a lower seq within this distance is late or a duplicate, not a restart
# ZeroMQ drops a message larger than this before it is allocated here (and the sender's
# connection); below it the decoder refuses payloads over MAX_PAYLOAD_BYTES as too_large.
MAX_MESSAGE_BYTES = 4 * MAX_PAYLOAD_BYTES + MAX_HEADER_BYTES


def bind_socket(sock: zmq.Socket, address: str, wait_s: float = 2.0) -> None:
    """``sock.bind(address)``, retried for up to ``wait_s`` while the address is still in use.

    libzmq closes a socket in its I/O thread, after ``close()`` returns: a source or sink that is
    closed and opened again on the same port (a restart in the same process) would otherwise fail
    with "Address already in use" for a few milliseconds. A port held by another program still
    fails, after ``wait_s``.
    """
    deadline = time.monotonic() + wait_s
    _prepare(sock, address)
    while True:
        try:
            sock.bind(address)
            return
        except zmq.ZMQError as exc:
            if exc.errno != zmq.EADDRINUSE or time.monotonic() >= deadline:
                raise
            time.sleep(0.02)


def connect_socket(sock: zmq.Socket, address: str) -> None:
    """``sock.connect(address)``, prepared as ``bind_socket`` prepares a bind (``_prepare``)."""
    _prepare(sock, address)
    sock.connect(address)


def _prepare(sock: zmq.Socket, address: str) -> None:
    """What every socket of ours sets before it binds or connects: IPv6 for an IPv6 address
    (``_ipv6_for``) and heartbeats (``_heartbeats``)."""
    _ipv6_for(sock, address)
    _heartbeats(sock)


def _heartbeats(sock: zmq.Socket) -> None:
    """ZeroMQ heartbeats on ``sock``'s connections (ZMTP 3.1 PING/PONG, answered by the peer's
    libzmq): a link that died without a word (a gateway that lost power, a cable pulled: no
    FIN, no RST) is closed after ``HEARTBEAT_TIMEOUT_MS``, and a connecting socket then connects
    again, reaching the gateway once it is back. Before, the monitor held the dead connection
    and never read the rebooted gateway (its streams "no data" for good); a PUSH or PUB kept
    queueing to a dead peer. ``HEARTBEAT_TTL`` asks the peer to drop this side likewise."""
    try:
        sock.setsockopt(zmq.HEARTBEAT_IVL, HEARTBEAT_IVL_MS)
        sock.setsockopt(zmq.HEARTBEAT_TIMEOUT, HEARTBEAT_TIMEOUT_MS)
        sock.setsockopt(zmq.HEARTBEAT_TTL, HEARTBEAT_TIMEOUT_MS)
    except (AttributeError, zmq.ZMQError):  # a libzmq before 4.2 (no ZMTP 3.1): no heartbeats, as before
        pass


def _ipv6_for(sock: zmq.Socket, address: str) -> None:
    """A ZeroMQ socket speaks IPv4 only unless told (``ZMQ_IPV6``): one given an IPv6 address
    (``tcp://[::1]:5555``) is told. Before, ``publish --to tcp://[::1]:5555`` failed with "not an
    address of this machine" and ``zmq://[::1]:5555`` waited for ever. Names and IPv4 addresses
    are left as they were (a name could resolve to an IPv6 address the publisher does not bind)."""
    if address.startswith("tcp://["):
        sock.setsockopt(zmq.IPV6, 1)


HEARTBEAT_IVL_MS = 1000
HEARTBEAT_TIMEOUT_MS = 5000  # a link silent this long after a PING is taken for dead
HANDSHAKE_RETRY_S = 1.0  # the first pause before connecting again after a failed handshake
HANDSHAKE_RETRY_MAX_S = 8.0
_HANDSHAKE_FAILED = tuple(getattr(zmq, name) for name in ("EVENT_HANDSHAKE_FAILED_NO_DETAIL", "EVENT_HANDSHAKE_FAILED_PROTOCOL",
                                                          "EVENT_HANDSHAKE_FAILED_AUTH") if hasattr(zmq, name))


def connection_events(sock: zmq.Socket) -> zmq.Socket | None:
    """A socket of ``sock``'s connection and handshake events (``Connections``); None where
    this libzmq reports no handshakes (before 4.3)."""
    if not hasattr(zmq, "EVENT_HANDSHAKE_SUCCEEDED"):
        return None
    mask = (zmq.EVENT_CONNECTED | zmq.EVENT_ACCEPTED | zmq.EVENT_DISCONNECTED | zmq.EVENT_HANDSHAKE_SUCCEEDED
            | zmq.EVENT_CONNECT_RETRIED)
    for kind in _HANDSHAKE_FAILED:
        mask |= kind
    try:
        return sock.get_monitor_socket(mask)
    except zmq.ZMQError:
        return None


class Connections:
    """A socket's connections, from its events (``connection_events``, attached before it binds
    or connects), per endpoint: those in their ZeroMQ handshake, those open after one (``peers``),
    the endpoints whose connection attempts are refused (``refused``: nothing listens), and the
    most open at once (``most``). Read by one thread (``update``, ``count``)."""

    def __init__(self, sock: zmq.Socket) -> None:
        self._sock, self._events = sock, connection_events(sock)
        self._shaking: dict[str, int] = {}
        self.peers: dict[str, int] = {}
        self.refused: set[str] = set()
        self.most = 0
        self.failed = 0  # handshakes that failed (a peer of another kind, a wrong CURVE key)

    def update(self) -> list[tuple[str, bool]]:
        """Takes the events so far: the handshakes that ended, in order, as (endpoint, whether it
        succeeded); one that failed was closed by the peer (a socket of another kind, not a
        ZeroMQ program)."""
        ended: list[tuple[str, bool]] = []
        events = self._events
        # most looks find no event: asked of the socket, not by a receive that raises zmq.Again
        while events is not None and events.get(zmq.EVENTS) & zmq.POLLIN:
            try:
                ev = zmq.utils.monitor.recv_monitor_message(events, zmq.NOBLOCK)
            except zmq.Again:
                break
            kind, endpoint = ev["event"], ev["endpoint"].decode("utf-8", "replace")
            shaking = self._shaking.get(endpoint, 0)
            if kind in (zmq.EVENT_CONNECTED, zmq.EVENT_ACCEPTED):
                self._shaking[endpoint] = shaking + 1
                self.refused.discard(endpoint)
            elif kind == zmq.EVENT_CONNECT_RETRIED:  # refused (nothing listens): libzmq tries again
                self.refused.add(endpoint)
            elif kind == zmq.EVENT_HANDSHAKE_SUCCEEDED:
                self._shaking[endpoint] = max(0, shaking - 1)
                self.peers[endpoint] = self.peers.get(endpoint, 0) + 1
                self.most = max(self.most, sum(self.peers.values()))
                ended.append((endpoint, True))
            elif kind in _HANDSHAKE_FAILED or (kind == zmq.EVENT_DISCONNECTED and shaking > 0):
                self._shaking[endpoint] = max(0, shaking - 1)
                self.failed += 1
                ended.append((endpoint, False))
            elif kind == zmq.EVENT_DISCONNECTED:
                self.peers[endpoint] = max(0, self.peers.get(endpoint, 0) - 1)
        return ended

    def count(self) -> int | None:
        """The connections open after a handshake now; None where libzmq reports no handshakes."""
        if self._events is None:
            return None
        self.update()
        return sum(self.peers.values())

    def close(self) -> None:
        if self._events is not None:
            try:
                self._sock.disable_monitor()
            except zmq.ZMQError:
                pass
            self._events.close(0)
            self._events = None


def refused_line(malformed: dict[str, int], last_error: str) -> str | None:
    """What a source that took no frame says of the messages it refused (None: it refused none):
    how many, by reason, and the latest one's detail (e.g. a sender's clock decades off)."""
    n = sum(malformed.values())
    if not n:
        return None
    reasons = ", ".join(f"{k} {v}" for k, v in sorted(malformed.items(), key=lambda kv: -kv[1])[:4])
    return (f"{n} message{'s' if n != 1 else ''} received, none accepted ({reasons})"
            + (f"; the latest: {last_error}" if last_error else ""))


def socket_hint(exc: zmq.ZMQError, *, bind: bool) -> str:
    """What to do about a bind or connect that failed, by its errno."""
    if bind and exc.errno == zmq.EADDRINUSE:
        return "pick a free port or stop the program using it"
    if bind and exc.errno in (errno.EADDRNOTAVAIL, errno.ENODEV):  # ENODEV: no interface of that name
        return ("that host is not an address of this machine: bind to 127.0.0.1 (this machine only), 0.0.0.0 "
                "(every interface) or one of its own addresses")
    if exc.errno == errno.EACCES:
        return "a port below 1024 needs privileges: pick one above 1024"
    return "check the address (tcp://HOST:PORT)"


def tcp_address(target: str, *, bind: bool) -> str:
    """``HOST:PORT`` -> ``tcp://HOST:PORT`` (bind: an empty host means 127.0.0.1, ``*`` all)."""
    given = target
    if target.startswith("tcp://"):  # given in full: its port checked too (libzmq takes 99999 as 34463)
        target = target[len("tcp://") :]
    elif "://" in target:  # ipc://, inproc://
        return target
    host, sep, port = target.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"ZeroMQ address {given!r} needs HOST:PORT with a port from 1 to 65535, e.g. 127.0.0.1:5555")
    if not host:
        if not bind:
            raise ConfigError(f"ZeroMQ address {given!r} needs a host to connect to, e.g. 127.0.0.1:{port}")
        host = "127.0.0.1"
    if ":" in host and not host.startswith("["):  # an IPv6 address in ZeroMQ's brackets: ::1 -> [::1]
        host = f"[{host}]"
    return f"tcp://{host}:{port}"


def tcp_addresses(target: str, *, bind: bool) -> list[str]:
    """``HOST:PORT[,HOST:PORT...]`` -> the ``tcp_address`` of each: one socket connected to (or
    bound at) all of them, as a monitor subscribing to several gateways."""
    if "," not in target:
        return [tcp_address(target, bind=bind)]
    parts = [p.strip() for p in target.split(",")]
    if not all(parts):
        raise ConfigError(f"ZeroMQ address list {target!r} has an empty entry; separate HOST:PORT entries with "
                          "single commas, e.g. zmq://gw1:5555,gw2:5555")
    addresses = [tcp_address(p, bind=bind) for p in parts]
    if len(set(addresses)) != len(addresses):
        raise ConfigError(f"ZeroMQ address list {target!r} names an address twice")
    return addresses


def unresolved_hosts(addresses: list[str]) -> list[str]:
    """The host names among ``tcp://HOST:PORT`` addresses that do not resolve now (IP addresses
    and ``*`` are not looked up)."""
    out = []
    for address in addresses:
        host, _, port = address[len("tcp://"):].rpartition(":")
        host = host.strip("[]")
        if host == "*" or _is_ip(host):
            continue
        try:
            socket.getaddrinfo(host, int(port), type=socket.SOCK_STREAM)
        except (OSError, UnicodeError, ValueError):
            out.append(host)
    return out


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


class _ZmqSource(Source):
    socket_type: ClassVar[int] = zmq.SUB
    bind: ClassVar[bool] = False
    OPTIONS = {
        "topic": (str, "", "SUB only: receive streams whose id starts with this"),
        "hwm": (opt_positive(int, 2**31 - 1), 10000, "receive high-water mark in messages"),
        "until_eos": (opt_bool, False, "1 = stop when every stream seen has sent end-of-stream"),
        "max_skew_s": (opt_positive(float), MAX_CLOCK_SKEW_S,
                       "largest |t - now| in seconds a frame's capture time may be from this clock (bad_time)"),
        "channel": (opt_index("channels"), None, "monitor only channel K of multi-channel frames (default: every channel)"),
        "curve_server": (str, "", "CURVE: the publisher's public key file (NAME.key) for an encrypted link (zmq://)"),
        "curve_key": (str, "", "CURVE: this monitor's key pair (NAME.key_secret): required with zmq+bind://, "
                               "and with zmq:// where the publisher keeps an allow list"),
        "curve_allow": (str, "", "CURVE, zmq+bind:// only: a folder of the senders' public keys (NAME.key) allowed in"),
    }
    restartable = True

    def __init__(self, target: str = "", **options: Any) -> None:
        super().__init__(target, **options)
        self.addresses = tcp_addresses(target, bind=self.bind)
        self.address = ", ".join(self.addresses)  # for messages to people
        if self.socket_type != zmq.SUB and self.options["topic"]:
            raise ConfigError(f"option topic= only applies to SUB sources (zmq://, zmq+bind://), not {self.kind}")
        self.curve = self._curve()
        self._curve_guard: Any = None  # what the CURVE allow list started for the socket
        self._last_seq: dict[str, int] = {}
        self._missing: dict[str, set[int]] = {}  # recent seqs skipped by a gap, per stream
        self._sock: zmq.Socket | None = None
        self.last_error = ""  # the most recent rejected message's reason and detail, for display
        self._said_reasons: set[str] = set()  # reasons of refused messages said in a note (once each)
        self._said_no_speed: set[str] = set()  # streams said to send an rpm that is no speed
        self._conns: Connections | None = None  # the data socket's connections (_watch_handshakes)
        self.handshake_failures: dict[str, int] = {}  # endpoint: connections its peer closed in the handshake
        self._said_failing: set[str] = set()  # endpoints whose failing handshakes were said (_handshake_failed)
        self._retry: dict[str, tuple[float, float]] = {}  # endpoint: (monotonic time to connect again, pause)
        # Set by an ingest process (app.shards): False for a topic (stream id, bytes) that is another
        # process's, which skips the message before it is decoded or counted.
        self.accept_topic: Callable[[bytes], bool] | None = None
        self.unresolved: list[str] = []  # host names of the addresses that did not resolve when opened
        # messages received by the compiled loop (recv_jit) where it is available and the payloads
        # are small (None), always (True: an error where it is not) or never (False: pyzmq's calls)
        self.compiled_receive: bool | None = None
        self._poll: tuple[list[Head], list[tuple[int, Frame]]] = ([], [])  # the frames of the poll under way
        self._waiting_ids: set[str] = set()  # new ids of the poll under way whose frames wait for a place

    def _curve(self) -> Curve | None:
        """The socket's CURVE settings from the curve_* options, or None (plain text)."""
        server, key, allow = (self.options[k] or None for k in ("curve_server", "curve_key", "curve_allow"))
        if server is None and key is None and allow is None:
            return None
        what = f"{self.kind} source"
        if self.bind and server is not None:
            raise ConfigError(f"{what}: curve_server= is for a reader that connects (zmq://); a binding reader "
                              "is CURVE's server: give its own key with curve_key=NAME.key_secret")
        if not self.bind and server is None:
            raise ConfigError(f"{what}: an encrypted zmq:// link needs the publisher's public key: "
                              "curve_server=NAME.key (the file `drsn-stream keys NAME` wrote for it)")
        return Curve(key=key, server=server, allow=allow, what=what, on_change=self._curve_changed)

    def _curve_changed(self, message: str) -> None:
        """An allow list loaded again (its own thread): a note on the dashboard and in the results."""
        self.notes.append(("*", message))

    def polling(self) -> set[str]:
        heads, others = self._poll
        return {h[0].stream for h in heads} | {f.stream_id for _, f in others}

    def _open(self) -> None:
        if self.compiled_receive is not False:
            recv_jit.warm()  # compiled (or loaded from numba's cache) before the socket takes messages
        ctx = self.curve.context() if self.curve is not None else zmq.Context.instance()
        sock = ctx.socket(self.socket_type)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.RCVHWM, self.options["hwm"])
        sock.setsockopt(zmq.MAXMSGSIZE, MAX_MESSAGE_BYTES)
        if self.socket_type == zmq.SUB:
            sock.setsockopt(zmq.SUBSCRIBE, self.options["topic"].encode("utf-8"))
        if self.curve is not None:
            self._curve_guard = self.curve.apply(sock)
        self._conns = Connections(sock)  # before the first connection, to see its handshake
        for address in self.addresses:
            try:
                bind_socket(sock, address) if self.bind else connect_socket(sock, address)
            except zmq.ZMQError as exc:
                self._conns.close()
                close_curve(sock, self._curve_guard)
                self._curve_guard = None
                verb = "bind" if self.bind else "connect to"
                raise SourceError(f"cannot {verb} {address}: {exc.strerror}; {socket_hint(exc, bind=self.bind)}") from exc
        self._sock = sock
        if not self.bind:  # after the connects: a slow name server delays no frame
            self.unresolved = unresolved_hosts(self.addresses)

    def subscribe(self, topic: bytes, *, on: bool = True) -> None:
        """SUB: also receive (``on=False``: no longer) messages whose topic starts with ``topic``.
        Call it from the reading thread (a ZeroMQ socket belongs to one thread), e.g. in
        ``on_idle`` or between frames; the publisher applies it a moment later."""
        if self._sock is not None and self.socket_type == zmq.SUB:
            self._sock.setsockopt(zmq.SUBSCRIBE if on else zmq.UNSUBSCRIBE, topic)

    def waiting(self) -> str | None:
        return self.waiting_with(self.stats.snapshot()["malformed"], self.last_error)

    def waiting_with(self, malformed: dict[str, int], last_error: str) -> str:
        """``waiting`` with these counts of refused messages (an ingest process's, summed)."""
        senders = "publishers" if self.socket_type == zmq.SUB else "senders"
        refused = refused_line(malformed, last_error)
        if refused:  # messages come, and every one is refused: why, rather than "no data yet"
            return f"waiting for {senders} on {self.address}: {refused}"
        if self.handshake_failures:
            ends = ", ".join(self.handshake_failures)
            return f"waiting for {senders} on {self.address} (no data yet; {ends}: {self._handshake_line()})"
        if self.unresolved:  # ZeroMQ retries a name that does not resolve for ever, without a word
            names = ", ".join(self.unresolved)
            return (f"waiting for {senders} on {self.address} (no data yet; {names} "
                    f"{'does' if len(self.unresolved) == 1 else 'do'} not resolve to an address: check the name)")
        # which of "nothing listens there" and "a sender is there but silent" it is (the
        # connections' events): a wrong port and an idle publisher looked the same
        topic = self.options["topic"] if self.socket_type == zmq.SUB else ""
        on = f" on streams whose id starts with {topic!r} (?topic=)" if topic else ""
        conns = self._conns
        peers = [a for a, n in conns.peers.items() if n > 0] if conns is not None else []
        if peers:
            n = sum(conns.peers.values())
            who = f"connected to {', '.join(peers)}" if not self.bind else f"{n} {senders[:-1] if n == 1 else senders} connected"
            return f"waiting for {senders} on {self.address} (no data yet; {who}, which sent nothing{on} so far)"
        refused = [a for a in self.addresses if conns is not None and a in conns.refused]
        if refused and not self.bind:
            kind = "publisher" if self.socket_type == zmq.SUB else "sender"
            return (f"waiting for {senders} on {self.address} (no data yet; nothing listens at {', '.join(refused)}: "
                    f"is the {kind} running, and on that port?)")
        return f"waiting for {senders} on {self.address} (no data yet)"

    def _close(self) -> None:
        if self._sock is not None:
            if self._conns is not None:
                self._conns.close()
            close_curve(self._sock, self._curve_guard)
            self._sock, self._curve_guard = None, None

    def _watch_handshakes(self, sock: zmq.Socket) -> None:
        """Connections whose peer closed them in the ZeroMQ handshake (a socket of another kind,
        e.g. ``publish --pull``'s PUSH for a SUB; not a ZeroMQ program): said once per endpoint,
        and a connecting socket connects again (1, 2, 4, 8 s apart), because libzmq does not after
        such a failure: the monitor waited "for publishers" for ever, even once the publisher
        was fixed. After a failed handshake, CURVE key files replaced since they were read are
        read again (``_curve_refresh``). Called by the reading thread while the socket is quiet."""
        if self._conns is None:
            return
        failed = []
        for endpoint, ok in self._conns.update():
            if ok:
                self._retry.pop(endpoint, None)
                if not self.bind:  # a publisher that works again and later fails (a new key) is said again
                    self._said_failing.discard(endpoint)
            else:
                self._handshake_failed(endpoint)
                failed.append(endpoint)
        # a key file replaced since it was read (a gateway given a new key pair): connect again at
        # once with the new key; libzmq's own reconnections (every 100 ms after a connection that
        # had worked) would keep the old one
        if failed and self._curve_refresh(sock):
            for endpoint in dict.fromkeys(e for e in failed if e in self.addresses):
                self._retry.pop(endpoint, None)
                self._reconnect(sock, endpoint)
        now = time.monotonic()
        for endpoint, (due, pause) in list(self._retry.items()):
            if now >= due:
                self._retry[endpoint] = (math.inf, pause)  # until this try fails too
                self._curve_refresh(sock)
                self._reconnect(sock, endpoint)

    @staticmethod
    def _reconnect(sock: zmq.Socket, endpoint: str) -> None:
        try:
            sock.disconnect(endpoint)
        except zmq.ZMQError:
            pass
        connect_socket(sock, endpoint)

    def _curve_refresh(self, sock: zmq.Socket) -> bool:
        """After a failed handshake: key files replaced since they were read (a gateway given a new
        key pair, its new public key copied over the curve_server= file) are read again and set for
        the socket's next connections, and said. True when a key changed."""
        if self.curve is None or self.bind:
            return False
        changed = self.curve.refresh()
        if not changed:
            return False
        self.curve.apply(sock)  # a client's: the socket options of its next connections
        files = " and ".join(f"{k}= ({self.options[k]})" for k in changed)
        self.notes.append(("*", f"{self.address}: {files} changed on disk: connecting with the new key"))
        return True

    def _handshake_failed(self, endpoint: str) -> None:
        self.handshake_failures[endpoint] = self.handshake_failures.get(endpoint, 0) + 1
        if endpoint not in self._said_failing:  # once, until a handshake there works again
            self._said_failing.add(endpoint)
            self.notes.append(("*", f"{endpoint}: {self._handshake_line()}"))
        if not self.bind and endpoint in self.addresses:
            pause = self._retry.get(endpoint, (0.0, HANDSHAKE_RETRY_S / 2))[1]
            pause = min(2 * pause, HANDSHAKE_RETRY_MAX_S)
            self._retry[endpoint] = (time.monotonic() + pause, pause)

    def _handshake_line(self) -> str:
        if self.curve is not None:
            if self.bind:
                side = ("the sender does not hold this reader's public key (the pair of curve_key=), or its own "
                        "key is not in curve_allow=")
            elif self.options["curve_key"]:
                side = ("curve_server= is not the publisher's public key, or the publisher does not allow the "
                        "key of curve_key=")
            else:
                side = ("curve_server= is not the publisher's public key, or the publisher keeps an allow list: "
                        "give curve_key=NAME.key_secret, a pair whose NAME.key it holds")
            return f"the CURVE handshake failed: {side}"
        want, hint = (("PUB", "`drsn-stream publish --pull` sends to zmq+pull:// readers") if self.socket_type == zmq.SUB
                      else ("PUSH", "`drsn-stream publish` without --pull sends to zmq:// readers"))
        again = "; connecting again every few seconds" if not self.bind else ""
        return (f"the peer closed the connection in the ZeroMQ handshake: it is not a {want} socket ({hint}), "
                f"an encrypted one (CURVE: give curve_server=NAME.key), or not a ZeroMQ program (a web or metrics "
                f"port){again}")

    def forget_stream(self, stream: str, *, retired: bool = True) -> None:
        super().forget_stream(stream, retired=retired)
        self._new_sequence(stream)  # if it comes back

    def _new_sequence(self, stream: str) -> None:
        """The stream's next frame starts its sequence afresh: no gap, duplicate or restart
        reckoned against the frames before."""
        self._last_seq.pop(stream, None)
        self._missing.pop(stream, None)

    def _accept(self, sid: str, seq: int) -> bool:
        """Sequence accounting; False for a frame to drop (duplicate, late, too many streams)."""
        last = self._last_seq.get(sid)
        if last is not None and seq == last + 1 and not self._missing.get(sid):
            self._last_seq[sid] = seq  # the common case: the next seq of a known stream, nothing missing
            return True
        if not self._known(sid):
            return False
        if last is not None:
            if seq > last + 1:
                self.stats.gap(sid, seq - last - 1)
                if seq - last - 1 <= REORDER_WINDOW:
                    self._missing.setdefault(sid, set()).update(range(last + 1, seq))
            elif seq == last:
                self.stats.duplicate(sid)
                return False
            elif seq < last and seq != 0 and last - seq <= REORDER_WINDOW:
                missing = self._missing.get(sid, set())
                if seq in missing:
                    missing.discard(seq)
                    self.stats.arrived_late(sid)
                else:
                    self.stats.duplicate(sid)
                return False
            elif seq < last:
                self.stats.restart(sid)
                self._missing.pop(sid, None)
        missing = self._missing.get(sid)
        if missing:
            # only the last REORDER_WINDOW seqs can still arrive late: the set stays small
            missing.difference_update([s for s in missing if s < seq - REORDER_WINDOW])
        self._last_seq[sid] = seq
        return True

    def _receiver(self, sock: zmq.Socket) -> recv_jit.Receiver | None:
        if self.compiled_receive is False or (self.compiled_receive is None and not recv_jit.warm()):
            return None
        return recv_jit.Receiver(sock)

    def _frames(self) -> Iterator[Frame]:
        for batch in self._batches():
            yield from batch

    def _batches(self) -> Iterator[list[Frame]]:
        """Every frame of one poll of the socket (a burst, ``GATHER_MS``; at most
        ``MAX_POLL_FRAMES`` and ``MAX_POLL_MS``), in one list.

        Per message only what must be: its parts received (many messages in one compiled call,
        ``recv_jit``, where numba and pyzmq's libzmq allow), its header checked against its
        stream's template (``Decoder.head``), its sequence accounted for; the payloads of the
        frames kept are converted together at the end of the poll (``to_frames``). Messages
        ``head`` does not know (a stream's first, an end of stream, anything malformed) go through
        ``Decoder.decode`` one by one, in their place.
        """
        sock = self._sock
        assert sock is not None
        poller = zmq.Poller()
        poller.register(sock, zmq.POLLIN)
        decoder = Decoder(max_skew_s=self.options["max_skew_s"])
        channel = self.options["channel"]
        until_eos = self.options["until_eos"]
        head = decoder.head
        receiver = self._receiver(sock)
        # big payloads (a gateway's 16-channel frames) come through pyzmq, whose frames are views
        # of libzmq's own message memory: the compiled loop copies every payload, which costs
        # more than it saves on a few messages per 100 KB (decided by each poll's first frame)
        compiled = receiver is not None
        by_pyzmq = partial(take_py, sock)
        closed = self._closed.is_set
        streams = self._stream_set  # changed in place only
        take_head = self._take_head
        # _accept's common case, inline: the next seq of a known stream, nothing missing, every
        # channel taken (its dicts are changed in place only)
        last_seq, next_seq, missing = self._last_seq, self._last_seq.get, self._missing
        watch_due = 0.0  # the next look at the connections' handshakes (_watch_handshakes)
        while not closed():
            # Quiet for IDLE_MS: a publisher's burst (many streams sent back to back, messages
            # tens of microseconds apart) is over and all of it is handed over.
            if not poller.poll(IDLE_MS):
                self._idle()
                if time.monotonic() >= watch_due:
                    self._watch_handshakes(sock)
                    watch_due = time.monotonic() + WATCH_EVERY_S
                if not poller.poll(POLL_MS):
                    continue
            now = time.time()  # the clock capture times are checked against, once per poll
            accept_topic = self.accept_topic
            heads: list[Head] = []  # known messages' (template, seq, t), their frames made at the end
            payloads: list[Any] = []
            others: list[tuple[int, Frame]] = []  # frames decoded in full, after how many of heads
            self._poll = (heads, others)
            ends: list[str] = []  # streams that announced their end in this poll (on_end, after the batch)
            # frames of new ids while every place is taken: their places are asked for once the
            # poll's messages are all in, so that a silent stream whose frame comes later in the
            # same poll is seen sending and keeps its place (_waits)
            waiting: list[tuple[Head | Frame, Any]] = []
            self._waiting_ids.clear()
            ended = False
            start = time.monotonic()
            gather_until, poll_until = start + GATHER_MS / 1000, start + MAX_POLL_MS / 1000
            if receiver is not None:
                receiver.new_poll()
            take = receiver.take if compiled else by_pyzmq
            while len(heads) + len(others) + len(waiting) < MAX_POLL_FRAMES and not closed():
                if time.monotonic() >= poll_until:
                    break  # a flood of messages refused does not hold back the frames taken so far
                most = min(TAKE_MESSAGES, MAX_POLL_FRAMES - len(heads) - len(others) - len(waiting))
                messages, empty = take(most)
                # where the compiled receive found each header's seq and t (Decoder.head's ``at``)
                ats = receiver.at if compiled and receiver is not None else repeat(None)
                for message, at in zip(messages, ats):
                    parts, topic, header, payload = message
                    if accept_topic is not None and not accept_topic(topic):
                        continue
                    known = head(topic, header, len(payload), now, at) if parts == 3 else None
                    if known is not None:
                        sid = known[0].stream
                        if sid in streams:
                            seq = known[1]
                            if seq - 1 == next_seq(sid) and channel is None and not (missing and missing.get(sid)):
                                last_seq[sid] = seq
                                heads.append(known)
                                payloads.append(payload)
                            else:
                                take_head(known, payload, heads, payloads)
                        elif self._waits(sid):
                            waiting.append((known, payload))
                        else:
                            take_head(known, payload, heads, payloads)
                        continue
                    try:
                        msg = decoder.decode(message_parts(message), now=now)
                        if type(msg) is Frame and msg.rpm is None and b'"rpm"' in header:
                            self._no_speed(msg.stream_id, header)
                    except WireError as exc:
                        self.stats.bad(exc.reason)
                        self.last_error = str(exc)[:300]
                        if exc.reason not in self._said_reasons:  # a fixed set of reasons: a few notes at most
                            self._said_reasons.add(exc.reason)
                            self.notes.append(("*", f"messages on {self.address} refused: {self.last_error} "
                                                    "(counted as malformed; said once per reason)"))
                        continue
                    if isinstance(msg, EndOfStream):
                        if msg.stream_id in self._waiting_ids:  # after its frames waiting for a place
                            waiting.append((msg, None))
                        elif self._take_end(msg.stream_id, ends) and until_eos and self._all_ended():
                            ended = True
                            break
                        continue
                    if msg.stream_id not in streams and self._waits(msg.stream_id):
                        waiting.append((msg, None))
                    else:
                        self._take_frame(msg, heads, others)
                if ended:
                    break
                if empty:
                    if time.monotonic() < gather_until:
                        time.sleep(GATHER_WAIT_S)
                        if poller.poll(max(0, int(IDLE_MS - 1000 * GATHER_WAIT_S))):  # -1 would wait for good
                            continue
                    break
            for item, payload in waiting:  # the poll's messages all in: polling() names every stream that sent
                if isinstance(item, Frame):
                    self._take_frame(item, heads, others)
                elif isinstance(item, EndOfStream):
                    ended |= self._take_end(item.stream_id, ends) and until_eos and self._all_ended()
                else:
                    self._take_head(item, payload, heads, payloads)
            if payloads and receiver is not None and self.compiled_receive is None:
                compiled = len(payloads[0]) < VIEW_BYTES
            batch = to_frames(heads, payloads)
            if channel is not None:
                batch = [self._select(f) if f.samples.shape[1] > 1 else f for f in batch]
            for j, (before, frame) in enumerate(others):  # in their places among the others
                batch.insert(before + j, frame)
            self._poll = ([], [])
            if batch:
                yield batch
            if ends and self.on_end is not None:
                self.on_end(ends)
            if ended:
                return

    def _no_speed(self, sid: str, header: bytes) -> None:
        """A frame whose ``rpm`` is no shaft speed: taken without one (``wire.decode``), said once per
        stream (for the first MAX_NO_SPEED streams)."""
        if sid in self._said_no_speed or len(self._said_no_speed) >= MAX_NO_SPEED:
            return
        self._said_no_speed.add(sid)
        at = header.find(b'"rpm"')
        shown = header[at : at + 40].decode("utf-8", "replace")
        self.notes.append((sid, f"frames of {sid} carry an rpm that is no shaft speed ({shown}...: not a number of "
                                "0 .. 1000000): taken without a speed, their envelope evidence at the configured one"))

    def _waits(self, sid: str) -> bool:
        """Whether a frame of ``sid`` (not a known stream) waits for the end of its poll: a new id
        while every place is taken and the consumer may make room (``make_room`` then sees every
        stream that sent in the poll, ``polling``), or one with a frame waiting already (its
        frames keep their order even if a place comes free meanwhile)."""
        if sid in self._waiting_ids:
            return True
        if len(self._stream_set) >= self.max_streams and self.make_room is not None:
            self._waiting_ids.add(sid)
            return True
        return False

    def _take_head(self, known: Head, payload: Any, heads: list[Head], payloads: list[Any]) -> None:
        """A message ``Decoder.head`` knows, into the poll (its frame made at the end), or dropped
        (sequence, too many streams, no such channel), counted."""
        tpl, seq = known[0], known[1]
        if not self._accept(tpl.stream, seq):
            return
        channel = self.options["channel"]
        if channel is not None and channel >= tpl.channels:
            self._no_channel(tpl.stream, tpl.channels)
            return
        heads.append(known)
        payloads.append(payload)

    def _take_end(self, sid: str, ends: list[str]) -> bool:
        """A stream's end of stream, into the poll's ``ends``; False for a stream not taken."""
        if not self._known(sid):
            return False
        self.stats.end(sid)
        ends.append(sid)
        self._new_sequence(sid)  # after its end
        return True

    def _all_ended(self) -> bool:
        return set(self.stats.snapshot()["ended"]) >= set(self._streams)

    def _take_frame(self, msg: Frame, heads: list[Head], others: list[tuple[int, Frame]]) -> None:
        """A frame decoded in full, into the poll after the ``heads`` so far (or dropped, counted)."""
        if not self._accept(msg.stream_id, msg.seq):
            return
        channel = self.options["channel"]
        c = msg.samples.shape[1]
        if channel is not None and channel >= c:  # no channel K (K > 0 of a single-channel frame too)
            self._no_channel(msg.stream_id, c)
            return
        if channel is not None and c > 1:
            msg = self._select(msg)
        others.append((len(heads), msg))

    def _select(self, frame: Frame) -> Frame:
        """Channel K (< the frame's channels) of ``frame`` alone, under the same stream id as
        without ``?channel``."""
        k = self.options["channel"]
        name = frame.names[k] if frame.names is not None else f"ch{k}"
        return Frame(frame.stream_id, frame.seq, frame.t_capture, frame.sample_rate, frame.samples[:, k : k + 1],
                     frame.overflow, names=(name,), rpm=frame.rpm)

    def _no_channel(self, stream_id: str, channels: int) -> None:  # said in waiting() and the summary
        self.stats.bad("no_channel")
        self.last_error = (f"no_channel: stream {stream_id!r} sends {channels} channel(s) but "
                           f"?channel={self.options['channel']} asks for channel {self.options['channel']} "
                           "(channels count from 0)")


class ZmqSubSource(_ZmqSource):
    """``zmq://HOST:PORT[,HOST:PORT...][?topic=PREFIX]``: SUB socket connecting to publishers' PUB."""

    kind = "zmq"


class ZmqSubBindSource(_ZmqSource):
    """``zmq+bind://[HOST]:PORT``: SUB socket that publishers connect their PUB sockets to."""

    kind = "zmq+bind"
    bind = True


class ZmqPullSource(_ZmqSource):
    """``zmq+pull://HOST:PORT``: PULL socket connecting to a PUSH (load-balanced fan-out)."""

    kind = "zmq+pull"
    socket_type = zmq.PULL


class ZmqPullBindSource(_ZmqSource):
    """``zmq+pull+bind://[HOST]:PORT``: PULL socket that PUSH senders connect to (fan-in)."""

    kind = "zmq+pull+bind"
    socket_type = zmq.PULL
    bind = True
