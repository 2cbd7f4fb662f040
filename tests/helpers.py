"""Small shared helpers for tests (real data access)."""

from __future__ import annotations

import array
import os
import random
import socket
import struct
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

DATA = Path(os.environ.get("DRSN_DATA", Path(__file__).resolve().parents[1].parent / "shared" / "data"))
CWRU = DATA / "cwru"
needs_cwru = pytest.mark.skipif(
    not CWRU.is_dir(), reason=f"CWRU data not found at {CWRU}; set DRSN_DATA to the folder that holds cwru/"
)


def require_cwru() -> Path:
    if not (CWRU / "12k_Drive_End_IR014_0_169.mat").is_file():
        pytest.skip(f"CWRU data not found at {CWRU} (set DRSN_DATA to the shared data folder)")
    return CWRU


def tool(name: str):
    """A script of tools/ as a module (``tool("eval_envelope").warp``)."""
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "tools" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"{name}_under_test", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def cwru_signal(name: str = "12k_Drive_End_IR014_0_169.mat", channel: str = "DE") -> np.ndarray:
    """The raw drive-end signal of one CWRU file, float64 (n,)."""
    from scipy.io import loadmat

    root = require_cwru()
    mat = loadmat(root / name)
    key = next(k for k in mat if k.endswith(f"_{channel}_time"))
    return np.asarray(mat[key], dtype=np.float64).ravel()


def cwru_windows(n: int, *, window: int = 2048, name: str = "12k_Drive_End_IR014_0_169.mat") -> torch.Tensor:
    """n z-scored real windows (n, window) from one CWRU recording."""
    x = cwru_signal(name)
    starts = np.linspace(0, len(x) - window, n).astype(int)
    w = np.stack([x[s : s + window] for s in starts])
    w = (w - w.mean(1, keepdims=True)) / (w.std(1, keepdims=True) + 1e-8)
    return torch.from_numpy(w.astype(np.float32))


def _ephemeral_range() -> tuple[int, int]:
    try:
        low, high = (int(v) for v in Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
        return low, high
    except (OSError, ValueError):
        return 32768, 60999


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago, from below the kernel's ephemeral range.

    A port the kernel hands out itself (``bind(0)``) lies in the range it also gives to outgoing
    connections, and the many loopback connections of this suite could take it before the test
    binds it ("Address already in use" in a CI run). Ports below that range are only ever taken
    by an explicit bind. Tests running side by side (pytest-xdist) draw at random, so they rarely
    meet; a port taken in between is found by the bind check.
    """
    low, _ = _ephemeral_range()
    rng = random.Random()
    for _ in range(200):
        port = rng.randrange(max(1024, low - 12000), low)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(cond, timeout: float, every: float = 0.1) -> bool:
    """Polls ``cond()`` until it holds (True) or ``timeout`` seconds have passed (False): a test
    waits for what it needs to see instead of sleeping a fixed time, and asserts afterwards."""
    end = time.monotonic() + timeout
    while True:
        if cond():
            return True
        if time.monotonic() >= end:
            return False
        time.sleep(every)


class FixedKernels:
    """Stands in for a module's ``jit.Kernels`` in a test: gives ``fn`` (None: the module's numpy
    path; the kernel's plain Python function: its code run uncompiled)."""

    def __init__(self, fn) -> None:
        self.fn = fn

    def get(self):
        return self.fn

    def why_not(self) -> str:
        return "" if self.fn is not None else "off in this test"


def damaged_wavs(folder: Path, rate: int, samples: int) -> dict[str, Path]:
    """A good 16-bit WAV of ``samples`` zeros at ``rate`` Hz in ``folder``, and three damaged
    copies: its header cut short (``cut``), saying 0 channels (``no-channels``: scipy divides by
    it) and saying 0 Hz (``zero-hz``: the rate and the byte rate 0). ``{name: path}``, ``good``
    among them."""
    from scipy.io import wavfile

    good = folder / "good.wav"
    wavfile.write(good, rate, np.zeros(samples, np.int16))
    raw = good.read_bytes()
    out = {"good": good}
    for name, data in {"cut": raw[:30], "no-channels": raw[:22] + b"\0\0" + raw[24:],
                       "zero-hz": raw[:24] + b"\0" * 8 + raw[32:]}.items():
        out[name] = folder / f"{name}.wav"
        out[name].write_bytes(data)
    return out


class NoteSink:
    """A sink that keeps the messages of the ``note`` events."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.by_stream: list[tuple[str, str]] = []  # (stream, message)

    def write(self, obj: dict) -> None:
        if obj.get("type") == "note":
            self.lines.append(obj.get("message", ""))
            self.by_stream.append((obj.get("stream", ""), obj.get("message", "")))

    def close(self) -> None:
        pass


class WebhookEndpoint:
    """A webhook receiver on loopback: records each POST (path, headers, JSON body), answers
    ``status`` (429 with a Retry-After of 1 s). Its URL's path holds ``SECRET``, as a chat hook's does."""

    SECRET = "T0001/B0002/very-secret-token"

    def __init__(self, status: int = 200) -> None:
        import json
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        self.status = status
        self.posts: list[tuple[str, dict[str, str], dict]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                outer.posts.append((self.path, dict(self.headers), json.loads(body)))
                self.send_response(outer.status)
                if outer.status == 429:
                    self.send_header("Retry-After", "1")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook/{self.SECRET}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class NotifyManager:
    """A service manager's end: an abstract-namespace datagram socket that records each
    message with the pid of its sender (SO_PASSCRED, as systemd checks NotifyAccess=main)."""

    def __init__(self) -> None:
        self.name = f"@drsn-test-{uuid.uuid4().hex[:12]}"
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        self.sock.bind("\0" + self.name[1:])
        self.sock.settimeout(0.2)
        self.messages: list[tuple[float, int, dict[str, str]]] = []  # (when, pid, fields)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        creds = struct.calcsize("3i")
        while not self._stop.is_set():
            try:
                data, anc, _, _ = self.sock.recvmsg(4096, socket.CMSG_SPACE(creds))
            except TimeoutError:
                continue
            pid = -1
            for level, kind, payload in anc:
                if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
                    pid = array.array("i", payload[:creds])[0]
            fields = dict(line.split("=", 1) for line in data.decode().splitlines())
            self.messages.append((time.monotonic(), pid, fields))

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        self.sock.close()

    def with_key(self, key: str) -> list[tuple[float, int, dict[str, str]]]:
        return [m for m in self.messages if key in m[2]]


def curve_reader(port: int, server_key: Path | None, topic: bytes = b"") -> Any:
    """A third party's ZeroMQ SUB on loopback ``port`` (topics starting with ``topic``): a CURVE
    client of the server whose public key file is ``server_key`` (with a key pair made for it), or
    plain text where None."""
    import zmq
    import zmq.auth

    sock = zmq.Context.instance().socket(zmq.SUB)
    sock.setsockopt(zmq.LINGER, 0)
    if server_key is not None:
        public, secret = zmq.curve_keypair()
        sock.curve_secretkey, sock.curve_publickey = secret, public
        sock.curve_serverkey = zmq.auth.load_certificate(str(server_key))[0]
    sock.setsockopt(zmq.SUBSCRIBE, topic)
    sock.connect(f"tcp://127.0.0.1:{port}")
    return sock


def save_mat73(path: Path, variables: dict[str, Any]) -> Path:
    """``variables`` in MATLAB's v7.3 layout, as ``save(path, '-v7.3')`` writes them (no MATLAB
    here: HDF5 written by h5py): a 512-byte MATLAB header, then each variable an HDF5 object with
    its ``MATLAB_class``; arrays transposed (MATLAB is column-major); a dict is a struct (a list
    of dicts a struct array, its fields references to the parts), a tuple a cell, a str a char
    array; the parts of cells and struct arrays in the ``#refs#`` group."""
    h5py = pytest.importorskip("h5py", reason="h5py not installed (pip install h5py, or the [mat73] extra)")

    with h5py.File(path, "w", userblock_size=512) as f:
        refs = f.create_group("#refs#")

        def put(group: Any, name: str, value: Any) -> Any:
            if isinstance(value, dict):
                g = group.create_group(name)
                g.attrs["MATLAB_class"] = np.bytes_("struct")
                for k, v in value.items():
                    put(g, k, v)
                return g
            if isinstance(value, list):  # a 1 x N struct array: each field one reference per element
                g = group.create_group(name)
                g.attrs["MATLAB_class"] = np.bytes_("struct")
                for k in value[0]:
                    ds = g.create_dataset(k, (len(value), 1), dtype=h5py.ref_dtype)
                    for i, element in enumerate(value):
                        ds[i, 0] = put(refs, f"{name}_{k}_{i}_{len(refs)}", element[k]).ref
                return g
            if isinstance(value, tuple):  # a 1 x N cell
                ds = group.create_dataset(name, (len(value), 1), dtype=h5py.ref_dtype)
                ds.attrs["MATLAB_class"] = np.bytes_("cell")
                for i, element in enumerate(value):
                    ds[i, 0] = put(refs, f"{name}_{i}_{len(refs)}", element).ref
                return ds
            if isinstance(value, str):
                ds = group.create_dataset(name, data=np.array([[ord(c)] for c in value], dtype=np.uint16))
                ds.attrs["MATLAB_class"] = np.bytes_("char")
                return ds
            a = np.atleast_2d(np.asarray(value))
            ds = group.create_dataset(name, data=a.T)
            ds.attrs["MATLAB_class"] = np.bytes_({"f8": "double", "f4": "single", "i2": "int16", "i4": "int32"}
                                                  [a.dtype.str[1:]])
            return ds

        for k, v in variables.items():
            put(f, k, v)
    header = b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: Tue Dec  8 06:00:00 2026 HDF5 schema 1.00 ."
    with open(path, "r+b") as fh:
        fh.write(header.ljust(116, b" ") + b"\0" * 8 + b"\x00\x02IM")
    return path
