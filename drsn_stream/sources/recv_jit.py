"""A ZeroMQ socket's waiting messages taken many at a time by one compiled loop (numba calling
libzmq), instead of three pyzmq calls per message from Python.

A monitor's receiving thread takes tens of thousands of small messages a second; through pyzmq
each part of each message is a Python call and a ``zmq.Frame`` object, a good part of the
ingest's cost per frame. Here one call receives up
to ``most`` whole messages with libzmq's own ``zmq_msg_recv`` (the library pyzmq itself calls, found
through pyzmq's extension module): each message's topic and header are copied into one small
buffer, turned into ``bytes`` once per call, and its payload into a payload buffer that the
frames are made from. What a message is, is said the same way as the pyzmq path says it (the
``take_py`` function below): ``(parts, topic, header, payload)``; parts after the third are
counted, not kept (the wire format has no use for them: such a message is ``wrong_parts`` on
their count alone).

A part too big for the room left in its buffer stays in libzmq's message and is copied out from
Python (``PENDING``), the rest of its message received through pyzmq: slow, but any size a peer
sends (up to the socket's ``MAXMSGSIZE``) arrives whole. A payload buffer whose bytes frames may
view (payloads of ``VIEW_BYTES`` and more are not copied by ``to_frames``) is never written again:
the next poll gets a fresh one. (The ZeroMQ sources take polls of such payloads through pyzmq
anyway: copying them costs more than the calls it saves.)

Used where numba imports and pyzmq's libzmq is found (Linux and macOS builds link it
dynamically); elsewhere, or with ``DRSN_STREAM_JIT=0``, the pyzmq path runs. Tests run both on the
same messages.
"""

from __future__ import annotations

import ctypes
import errno
import types
from collections.abc import Callable
from typing import Any

import numpy as np
import zmq

from drsn_stream import jit
from drsn_stream.sources.wire import VIEW_BYTES

_NOBLOCK = int(zmq.NOBLOCK)
_EINTR = errno.EINTR
PENDING = -1  # a part that did not fit its buffer is held in ``msg``; the message is unfinished
FULL = -2  # a buffer has too little room to start another message
# room a message must find to be started: a wire topic and header are at most a few hundred bytes
# (headers at most MAX_HEADER_BYTES), a payload at most 64 KB at the sizes gateways send; anything
# bigger is PENDING, copied out from Python
HEAD_ROOM = 16 << 10
PAYLOAD_ROOM = 64 << 10
HEAD_BYTES = 512 << 10
PAYLOAD_BYTES = 4 << 20
ALIGN = 64  # payloads start on cache lines: the frames' arrays are aligned views of them
_COLUMNS = 9  # per message: parts, topic start/end, header start/end, payload start/end, pending more, pending size
_MSG_WORDS = 16  # zmq_msg_t is 64 bytes (libzmq >= 4.1); 128 bytes of 8-byte words, to spare


def _c_caller(ret_bits: int, *arg_bits: int) -> Any:
    """The C function at an address called with integer arguments (of ``arg_bits`` bits; its
    result of ``ret_bits``): a numba intrinsic. Passing ctypes functions to a compiled function
    instead costs numba hundreds of microseconds per call to type them; an address is an integer."""
    from llvmlite import ir
    from numba.core import types as nbtypes
    from numba.extending import intrinsic

    def typed(address: Any, *args: Any) -> Any:
        if not all(isinstance(t, nbtypes.Integer) for t in (address, *args)):
            return None
        sig = (nbtypes.int32 if ret_bits == 32 else nbtypes.int64)(address, *args)

        def codegen(context: Any, builder: Any, signature: Any, values: Any) -> Any:
            fnty = ir.FunctionType(ir.IntType(ret_bits), [ir.IntType(b) for b in arg_bits])
            fn = builder.inttoptr(values[0], fnty.as_pointer())
            cast = []
            for v, bits, t in zip(values[1:], arg_bits, signature.args[1:]):
                width = v.type.width
                if width > bits:
                    v = builder.trunc(v, ir.IntType(bits))
                elif width < bits:
                    v = (builder.sext if t.signed else builder.zext)(v, ir.IntType(bits))
                cast.append(v)
            return builder.call(fn, cast)

        return sig, codegen

    if len(arg_bits) == 0:
        return intrinsic(lambda typingctx, address: typed(address))
    if len(arg_bits) == 1:
        return intrinsic(lambda typingctx, address, a: typed(address, a))
    return intrinsic(lambda typingctx, address, a, b, c: typed(address, a, b, c))


def _py_caller(ret: Any, *args: Any) -> Callable[..., int]:
    """``_c_caller``'s call from plain Python (ctypes), for ``_burst_py`` run uncompiled."""
    proto = ctypes.CFUNCTYPE(ret, *args)
    made: dict[int, Any] = {}

    def call(address: int, *values: int) -> int:
        fn = made.get(address)
        if fn is None:
            fn = made[address] = proto(int(address))
        return fn(*values)

    return call


_c0_32 = _py_caller(ctypes.c_int)
_c1_32 = _py_caller(ctypes.c_int, ctypes.c_size_t)
_c1_64 = _py_caller(ctypes.c_size_t, ctypes.c_size_t)
_c3_32 = _py_caller(ctypes.c_int, ctypes.c_size_t, ctypes.c_size_t, ctypes.c_int)
_c3_64 = _py_caller(ctypes.c_size_t, ctypes.c_size_t, ctypes.c_size_t, ctypes.c_size_t)


def _burst_py(fns, sock, msg, hbuf, pbuf, ppos, rows, most):
    """Up to ``most`` whole messages from libzmq socket ``sock`` (an address), without waiting.

    Row ``i`` of ``rows`` says message ``i``: its number of parts, where its topic and header are
    in ``hbuf`` (start, end; from 0 at each call) and its payload in ``pbuf`` (from ``ppos``, each
    aligned to ``ALIGN``); 0, 0 for a part it does not have. Returns (messages, status, end of
    ``hbuf`` used, end of ``pbuf`` used, the largest payload): status 0 after ``most`` messages, ``FULL`` when a buffer
    has not the room to start another, ``PENDING`` when a part of message ``messages`` (row
    ``messages``: the parts before it, and that part's more flag and size) did not fit and is held
    in ``msg`` for the caller to copy and close, else libzmq's errno (EAGAIN: nothing more waits).
    ``fns``: the addresses of libzmq's ``zmq_msg_init``, ``zmq_msg_recv``, ``zmq_msg_data``,
    ``zmq_msg_more``, ``zmq_msg_close``, ``zmq_errno`` and C's ``memcpy`` (``_Lib.addresses``).
    (Compiled by numba; as plain Python it runs too, slowly: the tests run both.)"""
    init, recv, data, more, close, errno, copy = fns[0], fns[1], fns[2], fns[3], fns[4], fns[5], fns[6]
    m = msg.ctypes.data
    hb = hbuf.ctypes.data
    pb = pbuf.ctypes.data
    hcap = hbuf.shape[0]
    pcap = pbuf.shape[0]
    hpos = 0
    count = 0
    largest = 0
    while count < most:
        if hcap - hpos < HEAD_ROOM or pcap - ppos < PAYLOAD_ROOM:
            return count, FULL, hpos, ppos, largest
        for c in range(1, 7):
            rows[count, c] = 0
        parts = 0
        go = 1
        while go:
            _c1_32(init, m)
            size = _c3_32(recv, m, sock, _NOBLOCK)
            if size < 0:
                e = _c0_32(errno)
                _c1_32(close, m)
                if e == _EINTR:  # a signal delivered to this thread: the part is still there (pyzmq retries too)
                    continue
                rows[count, 0] = parts
                return count, e, hpos, ppos, largest
            if parts < 3:  # topic and header into hbuf, the payload into pbuf on a cache line
                if parts < 2:
                    at, room, base = hpos, hcap - hpos, hb
                else:
                    at = (ppos + ALIGN - 1) // ALIGN * ALIGN
                    room, base = pcap - at, pb
                if size > room:
                    rows[count, 0] = parts
                    rows[count, 7] = _c1_32(more, m)
                    rows[count, 8] = size
                    return count, PENDING, hpos, ppos, largest
                _c3_64(copy, base + at, _c1_64(data, m), size)
                rows[count, 1 + 2 * parts] = at
                rows[count, 2 + 2 * parts] = at + size
                if parts < 2:
                    hpos = at + size
                else:
                    ppos = at + size
                    largest = max(largest, size)
            go = _c1_32(more, m)
            _c1_32(close, m)
            parts += 1
        rows[count, 0] = parts
        count += 1
    return count, 0, hpos, ppos, largest


Message = tuple[int, bytes, bytes, Any]  # parts, topic, header, payload (empty where the message has not the part)
AT_COLUMNS = 7  # per message, from _locate: seq's match start and end, seq, t's start and end, rpm's start and end


def _number(h, i, end):
    """Where a number of the wire's grammar (``wire._NUMBER``: JSON's, at most 21 digits before
    the point, 20 after, 3 in the exponent) that starts at ``h[i]`` ends (``end``: the header's
    end), or -1 where none does. Deterministic, as the regular expression is where a ``,`` must
    follow: a shorter reading would end before a digit, a point or an ``e``."""
    if i >= end:
        return -1
    c = h[i]
    if c == 48:  # 0
        i += 1
    elif 49 <= c <= 57:
        j = i + 1
        while j < end and 48 <= h[j] <= 57:
            j += 1
        if j - i > 21:
            return -1
        i = j
    else:
        return -1
    if i < end and h[i] == 46:  # .
        j = i + 1
        while j < end and 48 <= h[j] <= 57:
            j += 1
        if j - i - 1 < 1 or j - i - 1 > 20:
            return -1
        i = j
    if i < end and (h[i] == 101 or h[i] == 69):  # e E
        j = i + 1
        if j < end and (h[j] == 43 or h[j] == 45):  # + -
            j += 1
        k = j
        while k < end and 48 <= h[k] <= 57:
            k += 1
        if k - j < 1 or k - j > 3:
            return -1
        i = k
    return i


def _locate_py(hbuf, rows, count, out):
    """For each of ``count`` messages (``rows`` as ``_burst_py`` wrote them), where its header has
    ``,"seq":<seq>,"t":<t>[,"rpm":<rpm>],`` (``wire._SEQ_T``) at the header's first ``,"seq":``:
    row ``out[i]``: that match's start and end, seq, t's start and end, and rpm's (-1, -1: none),
    offsets in the header; a start of -1 where the match is not there (or seq has more than 18
    digits): ``Decoder.head`` then reads the header as it would without. (Compiled by numba; as
    plain Python it runs too, slowly: the tests run both.)"""
    for i in range(count):
        out[i, 0] = -1
        h0 = rows[i, 3]
        end = rows[i, 4]
        ms = -1
        for j in range(h0, end - 6):
            if (hbuf[j] == 44 and hbuf[j + 1] == 34 and hbuf[j + 2] == 115 and hbuf[j + 3] == 101
                    and hbuf[j + 4] == 113 and hbuf[j + 5] == 34 and hbuf[j + 6] == 58):  # ,"seq":
                ms = j
                break
        if ms < 0:
            continue
        k = ms + 7
        if k >= end:
            continue
        seq = 0
        if hbuf[k] == 48:
            k += 1
        elif 49 <= hbuf[k] <= 57:
            j = k
            while k < end and 48 <= hbuf[k] <= 57 and k - j < 19:
                seq = seq * 10 + (int(hbuf[k]) - 48)
                k += 1
            if k - j > 18:  # beyond int64's reach here: read by the regular expression
                continue
        else:
            continue
        if not (k + 5 <= end and hbuf[k] == 44 and hbuf[k + 1] == 34 and hbuf[k + 2] == 116 and hbuf[k + 3] == 34
                and hbuf[k + 4] == 58):  # ,"t":
            continue
        t0 = k + 5
        k = t0 + 1 if t0 < end and hbuf[t0] == 45 else t0  # -
        t1 = _number(hbuf, k, end)
        if t1 < 0 or t1 >= end or hbuf[t1] != 44:
            continue
        r0 = -1
        r1 = -1
        me = t1 + 1
        if (t1 + 7 <= end and hbuf[t1 + 1] == 34 and hbuf[t1 + 2] == 114 and hbuf[t1 + 3] == 112
                and hbuf[t1 + 4] == 109 and hbuf[t1 + 5] == 34 and hbuf[t1 + 6] == 58):  # "rpm":
            e = _number(hbuf, t1 + 7, end)
            if e > 0 and e < end and hbuf[e] == 44:
                r0 = t1 + 7 - h0
                r1 = e - h0
                me = e + 1
        out[i, 0] = ms - h0
        out[i, 1] = me - h0
        out[i, 2] = seq
        out[i, 3] = t0 - h0
        out[i, 4] = t1 - h0
        out[i, 5] = r0
        out[i, 6] = r1


def take_py(sock: zmq.Socket, most: int) -> tuple[list[Message], bool]:
    """Up to ``most`` whole messages from ``sock`` through pyzmq, without waiting: each as (parts,
    topic bytes, header bytes, payload ``zmq.Frame``; empty bytes for a part the message has not),
    and whether the socket had no more. Parts after the third are received and dropped."""
    recv = sock.recv
    out: list[Message] = []
    for _ in range(most):
        try:
            part = recv(_NOBLOCK, copy=False)
        except zmq.Again:
            return out, True
        # copy=False: a zmq.Frame says whether more parts follow (``more``); asking the socket
        # (RCVMORE) costs a Python-level enum lookup per part
        topic = part.bytes
        header = payload = b""
        parts = 1
        while part.more:  # the rest of a message is there once its first part is
            part = recv(_NOBLOCK, copy=False)
            parts += 1
            if parts == 2:
                header = part.bytes
            elif parts == 3:
                payload = part
        out.append((parts, topic, header, payload))
    return out, False


def message_parts(message: Message) -> list[bytes]:
    """A message as the list of its parts' bytes that ``decode`` reads (parts after the third as
    empty bytes: ``decode`` refuses such a message on their count alone)."""
    parts, topic, header, payload = message
    return [topic, header, bytes(payload)][: min(parts, 3)] + [b""] * (parts - 3)


class _Lib:
    """libzmq's and C's functions the loop calls, as ctypes functions."""

    def __init__(self) -> None:
        from zmq.backend.cython import _zmq  # the extension module linked to the libzmq in use

        # dlsym on the extension's handle looks in its own dependencies first: the very libzmq
        # whose sockets pyzmq makes, not another copy on the system
        lib = ctypes.CDLL(_zmq.__file__)
        version = [ctypes.c_int() for _ in range(3)]
        lib.zmq_version(*[ctypes.byref(v) for v in version])
        if tuple(v.value for v in version) != zmq.zmq_version_info() or zmq.zmq_version_info() < (4, 1):
            raise RuntimeError(f"libzmq found ({'.'.join(str(v.value) for v in version)}) is not pyzmq's "
                               f"{zmq.zmq_version()} (or older than 4.1)")
        address, num = ctypes.c_size_t, ctypes.c_int

        def fn(owner: Any, name: str, restype: Any, *argtypes: Any) -> Any:
            f = getattr(owner, name)
            f.restype, f.argtypes = restype, list(argtypes)
            return f

        self.init = fn(lib, "zmq_msg_init", num, address)
        self.recv = fn(lib, "zmq_msg_recv", num, address, address, num)
        self.data = fn(lib, "zmq_msg_data", address, address)
        self.more = fn(lib, "zmq_msg_more", num, address)
        self.close = fn(lib, "zmq_msg_close", num, address)
        self.errno = fn(lib, "zmq_errno", num)
        self.copy = fn(ctypes.CDLL(None), "memcpy", address, address, address, address)
        # the loop's functions by address, in the order ``_burst_py`` takes them
        self.addresses = np.array([ctypes.cast(f, ctypes.c_void_p).value for f in (
            self.init, self.recv, self.data, self.more, self.close, self.errno, self.copy)], dtype=np.int64)


def _build() -> tuple[Callable[..., Any], _Lib, Callable[..., Any]]:
    lib = _Lib()
    # the same code with the C calls as intrinsics (its plain-Python globals call them by ctypes)
    callers = {"_c0_32": _c_caller(32), "_c1_32": _c_caller(32, 64), "_c1_64": _c_caller(64, 64),
               "_c3_32": _c_caller(32, 64, 64, 32), "_c3_64": _c_caller(64, 64, 64, 64)}
    fn = types.FunctionType(_burst_py.__code__, {**_burst_py.__globals__, **callers}, "_burst")
    fn.__qualname__ = "_burst"
    kernel = jit.compile_kernel(fn)
    _run_tiny(kernel, lib)
    locate = types.FunctionType(_locate_py.__code__, {**_locate_py.__globals__, "_number": jit.compile_kernel(_number)},
                                "_locate")
    locate.__qualname__ = "_locate"
    locate = jit.compile_kernel(locate)
    header = b'{"stream":"a","seq":1,"t":2.5,"rpm":3,"n":1}'
    rows = np.array([[3, 0, 1, 1, 1 + len(header), 0, 0, 0, 0]], dtype=np.int64)
    out = np.empty((1, AT_COLUMNS), dtype=np.int64)
    locate(np.frombuffer(b"a" + header, dtype=np.uint8).copy(), rows, 1, out)  # compiled (or loaded) now
    return kernel, lib, locate


def _run_tiny(kernel: Any, lib: _Lib) -> None:
    """One call, on a socket with nothing to receive, with the types of every real call."""
    sock = zmq.Context.instance().socket(zmq.PULL)
    try:
        _call(kernel, lib, sock, np.zeros(_MSG_WORDS, dtype=np.int64), np.empty(HEAD_ROOM, dtype=np.uint8),
              np.empty(PAYLOAD_ROOM, dtype=np.uint8), 0, np.empty((1, _COLUMNS), dtype=np.int64), 1)
    finally:
        sock.close(0)


def _call(kernel: Any, lib: _Lib, sock: zmq.Socket, msg: np.ndarray, hbuf: np.ndarray, pbuf: np.ndarray,
          ppos: int, rows: np.ndarray, most: int) -> tuple[int, int, int, int, int]:
    return kernel(lib.addresses, sock.underlying, msg, hbuf, pbuf, ppos, rows, most)


_compiled = jit.Kernels(_build)


def warm() -> bool:
    """Compile (or load from the cache) now; False when the compiled receive is not available."""
    return _compiled.get() is not None


def why_not() -> str:
    """Why the compiled receive is not available ("" when it is)."""
    return _compiled.why_not()


class Receiver:
    """``take_py``'s messages, from one compiled call per ``take``, for the thread that owns
    ``sock``. ``new_poll()`` between polls lets the payload buffer be written again when no frame
    can be viewing it. ``compiled=False`` runs the same loop as plain Python (tests)."""

    def __init__(self, sock: zmq.Socket, *, compiled: bool = True) -> None:
        built = _compiled.get() if compiled else (_burst_py, _Lib(), _locate_py)
        if built is None:
            raise RuntimeError(f"the compiled receive is not available: {why_not()}")
        self._kernel, self._lib, self._locate = built
        self._at = np.empty((1024, AT_COLUMNS), dtype=np.int64)
        # per message of the latest ``take``: where its header has its seq, t and rpm (``_locate``)
        self.at: list[list[int]] = []
        self._sock = sock
        self._msg = np.zeros(_MSG_WORDS, dtype=np.int64)
        self._hbuf = np.empty(HEAD_BYTES, dtype=np.uint8)
        self._rows = np.empty((1024, _COLUMNS), dtype=np.int64)
        self._pbuf = np.empty(PAYLOAD_BYTES, dtype=np.uint8)
        self._pview = memoryview(self._pbuf)
        self._ppos = 0
        self._viewed = False  # a payload of this buffer may be viewed by a frame: never write it again

    def new_poll(self) -> None:
        """The payloads taken so far are converted (``to_frames``) or dropped: their buffer is
        written again from its start, unless a frame may be a view of it."""
        if self._viewed:
            self._fresh()
        else:
            self._ppos = 0

    def _fresh(self) -> None:
        self._pbuf = np.empty(PAYLOAD_BYTES, dtype=np.uint8)
        self._pview = memoryview(self._pbuf)
        self._ppos = 0
        self._viewed = False

    def take(self, most: int) -> tuple[list[Message], bool]:
        """As ``take_py(sock, most)``; payloads are memoryviews of the payload buffer."""
        most = min(most, self._rows.shape[0])
        count, status, hend, pend, largest = _call(self._kernel, self._lib, self._sock, self._msg, self._hbuf,
                                                   self._pbuf, self._ppos, self._rows, most)
        hb = self._hbuf[:hend].tobytes()
        pv = self._pview
        rows = self._rows[: count + 1].tolist()
        out = [(parts, hb[t0:t1], hb[h0:h1], pv[p0:p1]) for parts, t0, t1, h0, h1, p0, p1, _, _ in rows[:count]]
        if count:
            self._locate(self._hbuf, self._rows, count, self._at)
            self.at = self._at[:count].tolist()
        else:
            self.at = []
        if largest >= VIEW_BYTES:
            self._viewed = True
        self._ppos = pend
        if status == FULL:
            if pend > self._pbuf.shape[0] - PAYLOAD_ROOM:  # the payload buffer's taken payloads stay as they are
                self._fresh()
            return out, False
        if status == PENDING:
            out.append(self._finish(rows[count], hb))
            self.at.append([-1] * AT_COLUMNS)
            return out, False
        if status == 0:
            return out, False
        if status == zmq.EAGAIN and rows[count][0] == 0:
            return out, True
        # a part missing from a message libzmq had started to give (not a case: its messages are
        # whole), or the context terminated: as pyzmq's recv says it
        raise zmq.ZMQError(status)

    def _finish(self, row: list[int], hb: bytes) -> Message:
        """The message whose part ``row[0]`` is held in the message struct: that part copied out,
        the parts after it received through pyzmq."""
        parts, t0, t1, h0, h1, _, _, more, size = row
        m = self._msg.ctypes.data
        try:
            held = ctypes.string_at(self._lib.data(m), size)
        finally:
            self._lib.close(m)
        kept = [hb[t0:t1], hb[h0:h1]][:parts] + [held]
        parts += 1
        while more:
            frame = self._sock.recv(_NOBLOCK, copy=False)
            parts += 1
            if parts <= 3:
                kept.append(frame.bytes)
            more = frame.more
        kept += [b""] * (3 - len(kept))
        return (parts, kept[0], kept[1], kept[2])
