"""The CPU model in its own process, behind the Runner's ``submit`` / ``collect`` interface.

In one Python process the ingest thread (ZeroMQ, decoding, health, DSP), the output thread and the
inference loop share one interpreter lock, and under load the inference loop waits for it. Here a child process owns the TorchScript
module (a plain CPU ``Runner``); batches travel through shared memory (one input and one output
buffer per lane) and a pipe carries only ``(lane, rows)``. The child has its own interpreter
lock, so the model runs on one core while ingest runs on the other, and with two lanes the next
batch is prepared while the current one runs. Same numbers as the in-process Runner (tested).
"""

from __future__ import annotations

import ctypes.util
import os
import select
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from multiprocessing import shared_memory

import numpy as np

try:
    import resource  # the engine process's per-batch context switches (POSIX)
except ImportError:  # Windows
    resource = None  # type: ignore[assignment]

from drsn_stream.engine.contract import Pending, check_windows, infer_in_slices, split_packed
from drsn_stream.errors import ArtifactError, EngineError
from drsn_stream.runtime import attach_shared_memory as _attach
from drsn_stream.runtime import (
    check_shared_memory,
    child_process,
    freeze_start_up_objects,
    start_resource_tracker,
)

READY_TIMEOUT_S = 120.0
# An engine process that keeps dying is a fault to show, not to hide: more than MAX_RESTARTS deaths
# within RESTART_WINDOW_S end the run. Counted per window, so a week-long run survives a death a day.
MAX_RESTARTS = 5
RESTART_WINDOW_S = 600.0
# A batch takes milliseconds (a batch of 256 on one slow core, well under a second); an engine
# process that has not answered one for REPLY_TIMEOUT_S is hung (a deadlock, a wedged GPU, a
# SIGSTOP) and is replaced as a dead one is, instead of leaving the monitor without a label. The
# second, short wait lets a monitor stopped and continued together with its engine process (Ctrl-Z,
# then fg) find the reply it missed instead of taking its own stop for the child's.
REPLY_TIMEOUT_S = 30.0
REPLY_GRACE_S = 2.0
# The engine process allocates with jemalloc where the system has it (Debian/Ubuntu libjemalloc2,
# which tools/setup.sh installs): every batch allocates and frees its activations and the
# convolutions' scratch, and glibc's malloc costs more per call and gives large blocks back to the
# kernel, to take them again with page faults (docs/performance.md). DRSN_STREAM_MALLOC=system
# keeps glibc's.
MALLOC_ENV = "DRSN_STREAM_MALLOC"


class EngineRestarted(EngineError):
    """The engine process died and a new one took over; the batches in flight are lost."""


def _preempted() -> int:
    """Involuntary context switches of the calling thread so far (0 where unknown)."""
    if resource is None:
        return 0
    try:
        return resource.getrusage(resource.RUSAGE_THREAD).ru_nivcsw
    except (AttributeError, OSError):  # no RUSAGE_THREAD off Linux
        return 0


def allocator_env(env: dict[str, str]) -> dict[str, str]:
    """``env`` for the engine process: jemalloc preloaded where it is installed, unless turned off
    (``DRSN_STREAM_MALLOC=system``) or another malloc is preloaded already (tcmalloc, mimalloc,
    jemalloc: the user's choice stands); else unchanged."""
    if env.get(MALLOC_ENV, "auto") == "system" or "malloc" in env.get("LD_PRELOAD", ""):
        return env
    name = ctypes.util.find_library("jemalloc")  # a name the dynamic loader finds, e.g. libjemalloc.so.2
    if name is None:
        return env
    return {**env, "LD_PRELOAD": " ".join(p for p in (name, env.get("LD_PRELOAD", "")) if p)}


def jemalloc_loaded() -> bool:
    """Whether this process runs with jemalloc (its library is mapped)."""
    try:
        with open("/proc/self/maps") as f:
            return "jemalloc" in f.read()
    except OSError:
        return False


def _error_line(exc: BaseException) -> str:
    """The reply that reports a failure to the parent: ``error TYPE: first line``."""
    return f"error {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}\n"


def _worker(argv: list[str]) -> int:
    """The child: load the artifact, then answer ``LANE ROWS`` lines on stdin until it closes.

    Replies on stdout: ``ready DEVICE[\tNOTE...]`` once, then ``ok LANE ROWS T_START T_END CPU_S SWITCHES``
    (wall-clock seconds when the batch started and finished running, the CPU seconds this thread
    spent on it, and how often the kernel took the core away meanwhile) or ``error TEXT`` per
    request.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    model, window, max_batch, threads, width = argv[0], int(argv[1]), int(argv[2]), int(argv[3]), int(argv[4])
    cpu, layout, features, names = int(argv[5]), argv[6], int(argv[7]), argv[8:]
    if cpu >= 0:
        os.sched_setaffinity(0, {cpu})
    # Replies go to a private copy of stdout; anything a library prints lands on stderr instead
    # of in the middle of the protocol.
    out = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    try:
        from drsn_stream.engine.runner import Runner
        from drsn_stream.models.artifact import load_artifact, load_validation

        module, meta = load_artifact(model)
        runner = Runner(module, window=window, device="cpu", max_batch=max_batch, threads=threads,
                        net_config=meta.model_config, cpu_layout=layout, scores=meta.scores, features=features,
                        validation=load_validation(model) if layout != "off" else None)
        runner.warmup()
        freeze_start_up_objects()  # torch and the model stay for good
        half = len(names) // 2
        shm = [_attach(n) for n in names]
        x_in = [np.ndarray((max_batch, window), np.float32, s.buf) for s in shm[:half]]
        y_out = [np.ndarray((max_batch, width), np.float32, s.buf) for s in shm[half:]]
        device = runner.device_name
        if jemalloc_loaded() and device.endswith(")"):
            device = device[:-1] + ", jemalloc)"
        out.write("\t".join([f"ready {device}", *(n.replace("\t", " ") for n in runner.notes)]) + "\n")
        out.flush()
    except BaseException as exc:  # noqa: BLE001 - reported to the parent, which raises it
        try:
            out.write(_error_line(exc))
            out.flush()
        except OSError:  # the parent is gone (its segments with it): no one to tell, nothing to print
            pass
        return 1
    try:
        for line in sys.stdin:
            try:
                lane, rows = (int(v) for v in line.split())
                switches = _preempted()
                t_start, cpu_start = time.time(), time.thread_time()
                handle = runner.submit(x_in[lane][:rows])  # rows <= max_batch: one call
                probs, noise = runner.collect(handle)
                c = probs.shape[1]
                y_out[lane][:rows, :c] = probs
                y_out[lane][:rows, c] = noise
                if features:
                    y_out[lane][:rows, c + 1 :] = handle.features
                out.write(f"ok {lane} {rows} {t_start:.6f} {time.time():.6f} {time.thread_time() - cpu_start:.6f} "
                          f"{_preempted() - switches}\n")
            except Exception as exc:  # noqa: BLE001
                out.write(_error_line(exc))
            out.flush()
    except BrokenPipeError:  # the parent is gone: nothing to answer, no traceback on its terminal
        return 0
    del x_in, y_out
    for s in shm:
        s.close()
    return 0


class ProcessRunner:
    """``Runner``'s interface (``submit``, ``collect``, ``infer``, ``warmup``, ``lanes``,
    ``device_name``) with the model in a child process on the CPU.

    Args:
        model: the artifact's built-in name or path (the child loads it itself).
        window: samples per window; classes: the artifact's label count.
        max_batch: the largest batch ``submit`` takes.
        threads: torch threads in the child (default 1: the other core is ingest's).
        lanes: batches in flight (2: one runs while the next is copied in).
        cpu: pin the child to this core (None: the scheduler decides).
        cpu_layout: "auto" (1-D networks run in their verified channels-last form), "script" (that
            form without compiled tails) or "off".
        features: width of the pooled features to return (``Pending.features``); 0: none.
    """

    def __init__(self, model: str, *, window: int, classes: int, max_batch: int = 256, threads: int | None = None,
                 lanes: int = 2, cpu: int | None = None, cpu_layout: str = "auto", features: int = 0) -> None:
        self.window, self.max_batch, self.lanes = int(window), int(max_batch), max(1, int(lanes))
        self.threads = int(threads or 1)
        self.device = None
        self.fp16 = False
        self.fp16_agreement = None
        self.graphs = False
        self.notes: list[str] = []
        self.ready = threading.Event()
        self.features = int(features)
        self._width = int(classes) + 1 + self.features
        self._busy = [False] * self.lanes
        self._next = 0
        self._inflight: list[int] = []
        self._t_submit = [0.0] * self.lanes
        # (rows, s from submit to the child starting it, s running, s from its end to collect,
        # CPU s the child spent running it, times the kernel took its core away meanwhile) of
        # recent batches: where a batch's time goes, for benchmarks
        self.batch_times: deque[tuple[int, float, float, float, float, int]] = deque(maxlen=8192)
        self._closed = False
        self.restarts = 0
        self._restart_times: deque[float] = deque()
        self._model = str(model)
        self.cpu = cpu
        self.cpu_layout = cpu_layout
        self.device_name = "CPU (engine process)"
        self._in: list[shared_memory.SharedMemory] = []
        self._out: list[shared_memory.SharedMemory] = []
        self._x: list[np.ndarray] = []
        self._y: list[np.ndarray] = []
        self._proc: subprocess.Popen[str] | None = None
        try:
            check_shared_memory(self.lanes * self.max_batch * (self.window + self._width) * 4)
            start_resource_tracker()
            for _ in range(self.lanes):
                self._in.append(shared_memory.SharedMemory(create=True, size=self.max_batch * self.window * 4))
                self._out.append(shared_memory.SharedMemory(create=True, size=self.max_batch * self._width * 4))
            self._x = [np.ndarray((self.max_batch, self.window), np.float32, s.buf) for s in self._in]
            self._y = [np.ndarray((self.max_batch, self._width), np.float32, s.buf) for s in self._out]
            self._start_child()
        except BaseException:  # a signal during start-up too: no segment or child is left behind
            self._closed = True  # and __del__ has nothing left to do
            if self._proc is not None:
                self._stop_child(wait_s=0.0)  # not ready yet: killed, reaped, its pipes closed
            self._free_segments()
            raise

    def _start_child(self) -> None:
        # A plain child interpreter (not multiprocessing's spawn, which re-imports the caller's
        # __main__): it only needs the artifact, the shared-memory names and two pipes.
        args = [self._model, str(self.window), str(self.max_batch), str(self.threads), str(self._width)]
        args += [str(-1 if self.cpu is None else self.cpu), self.cpu_layout, str(self.features)]
        args += [s.name for s in self._in + self._out]
        argv, env = child_process("drsn_stream.engine.procrunner", args)
        self._proc = subprocess.Popen(
            argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1,  # replies: read raw
            # its own session: a terminal's Ctrl-C goes to the monitor alone, which ends the
            # child by closing its stdin (a child killed mid-start-up printed a traceback)
            start_new_session=True, env=allocator_env(env),
        )
        self._rbuf = b""

    def _poll_line(self, timeout: float) -> bool:
        """True once a whole reply line is buffered (waits up to ``timeout`` s for one)."""
        fd = self._proc.stdout.fileno()
        while b"\n" not in self._rbuf:
            if not select.select([fd], [], [], timeout)[0]:
                return False
            chunk = os.read(fd, 65536)
            if not chunk:  # the child closed its end: a reply of "" says so
                return True
            self._rbuf += chunk
            timeout = 0.0
        return True

    def _readline(self, timeout: float | None = None) -> str:
        """The next reply line ("" when the child has ended or ``timeout`` passed)."""
        if not self._poll_line(READY_TIMEOUT_S * 10 if timeout is None else timeout):
            return ""
        line, sep, rest = self._rbuf.partition(b"\n")
        self._rbuf = rest
        return (line + sep).decode("utf-8", "replace")

    def done(self, pending: Pending) -> bool:
        """Whether ``collect(pending)`` would return at once (the oldest batch in flight is done)."""
        return bool(self._inflight) and self._inflight[0] == pending.slot and self._poll_line(0.0)

    def _restart(self, *, hung: bool = False) -> EngineRestarted:
        """Replaces a dead child, or a ``hung`` one (killed), whose batches in flight are lost;
        returns the exception to raise."""
        if hung:
            self._proc.kill()  # it answers nothing: it is not asked to finish (a stopped one cannot)
        code = self._proc.poll()
        self._stop_child()
        self._busy = [False] * self.lanes
        self._next = 0
        self._inflight.clear()
        self.restarts += 1
        now = time.monotonic()
        self._restart_times.append(now)
        while self._restart_times and now - self._restart_times[0] > RESTART_WINDOW_S:
            self._restart_times.popleft()
        what = (f"did not answer a batch for {REPLY_TIMEOUT_S + REPLY_GRACE_S:.0f} s (hung; stopped it)" if hung
                else f"ended (exit code {code})")
        if len(self._restart_times) > MAX_RESTARTS:
            raise EngineError(f"the engine process {what}: that makes {len(self._restart_times)} times "
                              f"within {RESTART_WINDOW_S:.0f} s; giving up")
        self.ready.clear()
        self._start_child()
        self.warmup()
        return EngineRestarted(f"the engine process {what}; started a new one "
                               f"(restart {self.restarts}), its batches in flight are lost")

    def warmup(self) -> None:
        """Waits until the child has loaded and warmed up the model."""
        if self.ready.is_set():
            return
        line = self._readline(READY_TIMEOUT_S)
        if not line.startswith("ready "):
            try:  # "" is the end of its output: it is ending (or it said nothing in time)
                code = self._proc.wait(timeout=2.0)
            except subprocess.TimeoutExpired:
                code = None
            self.close()
            if line.strip():
                why = line.strip()
            elif code is not None:
                why = f"it ended (exit code {code}) before it was ready; its error, if it printed one, is on stderr"
            else:
                why = f"no answer within {READY_TIMEOUT_S:.0f} s"
            raise ArtifactError(f"the engine process failed to start: {why}")
        device, *notes = line[6:].rstrip("\n").split("\t")
        self.device_name = f"{device.strip()}, engine process"
        self.notes.extend(n for n in notes if n and n not in self.notes)  # the child's runner notes
        self.ready.set()

    def submit(self, x: np.ndarray) -> Pending:
        check_windows(x, self.window, self.max_batch)
        rows = x.shape[0]
        self.warmup()
        lane = self._next
        if self._busy[lane]:
            raise RuntimeError(f"all {self.lanes} lanes are in flight; collect one first")
        self._next = (lane + 1) % self.lanes
        self._busy[lane] = True
        self._x[lane][:rows] = x
        self._t_submit[lane] = time.time()
        try:
            self._send(f"{lane} {rows}\n")
        except RuntimeError:
            raise self._restart() from None
        self._inflight.append(lane)
        return Pending(rows, slot=lane)

    def collect(self, pending: Pending) -> tuple[np.ndarray, np.ndarray]:
        lane = pending.slot
        if not self._inflight or self._inflight[0] != lane:
            raise RuntimeError("collect the batches in the order they were submitted")
        answered = self._poll_line(REPLY_TIMEOUT_S) or self._poll_line(REPLY_GRACE_S)
        reply = self._readline(0.0) if answered else ""
        self._inflight.pop(0)
        self._busy[lane] = False
        if not answered:
            raise self._restart(hung=True)
        if not reply:
            self._proc.wait(timeout=5.0)
            raise self._restart()
        if not reply.startswith("ok "):
            raise RuntimeError(f"the engine process failed: {reply.strip()}")
        res = self._y[lane][: pending.rows].copy()
        fields = reply.split()
        if len(fields) >= 7:
            t_start, t_end, cpu = float(fields[3]), float(fields[4]), float(fields[5])
            self.batch_times.append((pending.rows, t_start - self._t_submit[lane], t_end - t_start, time.time() - t_end,
                                     cpu, int(fields[6])))
        return split_packed(res, self.features, pending)

    def _stop_child(self, wait_s: float = 5.0) -> None:
        if not self.ready.is_set() and self._proc.poll() is None:
            self._proc.kill()  # still loading the model: nothing to finish, do not wait for it
        try:
            self._proc.stdin.close()
        except OSError:
            pass
        try:
            self._proc.wait(timeout=wait_s)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait(timeout=5.0)
        self._proc.stdout.close()

    @property
    def pid(self) -> int:
        return self._proc.pid

    def _send(self, line: str) -> None:
        try:
            self._proc.stdin.write(line)
            self._proc.stdin.flush()
        except (BrokenPipeError, OSError, ValueError) as exc:
            raise RuntimeError(f"the engine process ended (exit code {self._proc.poll()})") from exc

    def infer(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return infer_in_slices(self, x, self.max_batch)

    def begin_close(self) -> None:
        """No more batches: the child starts to exit now, ``close()`` later waits for it."""
        try:
            self._proc.stdin.close()
        except OSError:
            pass

    def close(self, *, wait_s: float = 5.0) -> None:
        """Ends the child (killed if it has not exited ``wait_s`` seconds after its input closed)
        and frees the shared memory. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._stop_child(wait_s)
        self._free_segments()

    def _free_segments(self) -> None:
        """Drops the views of this process's shared-memory segments, then closes and unlinks them."""
        self._x.clear()
        self._y.clear()
        for s in self._in + self._out:
            s.close()
            s.unlink()
        self._in.clear()
        self._out.clear()

    def __del__(self) -> None:  # a forgotten close() must not leave /dev/shm segments behind
        try:
            self.close()
        except Exception:  # noqa: BLE001
            pass


if __name__ == "__main__":
    code = _worker(sys.argv[1:])
    sys.stderr.flush()
    # The parent waits for this exit when it stops; torch's teardown in a normal interpreter exit
    # took most of a second on a loaded machine. The shared memory is the parent's to unlink.
    os._exit(code)
