"""Process-wide settings for the long-running processes: the monitor, its engine process and the
publisher (``drsn-stream publish``)."""

from __future__ import annotations

import contextlib
import errno
import gc
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from multiprocessing import shared_memory
from pathlib import Path
from typing import Any


class Terminated(KeyboardInterrupt):
    """SIGTERM or SIGHUP during a command's start-up, unwound like Ctrl-C."""


_start_up_signal: int | None = None


def stop_signals() -> tuple[int, ...]:
    """The signals that end a command cleanly: Ctrl-C, SIGTERM, and SIGHUP (its terminal closed,
    an SSH session dropped), which killed a monitor on the spot: no summary, and its shared
    memory left in /dev/shm. Not SIGHUP where it is ignored (``nohup``): then the run goes on."""
    sigs = [signal.SIGINT, signal.SIGTERM]
    hup = getattr(signal, "SIGHUP", None)  # none on Windows
    if hup is not None and signal.getsignal(hup) is not signal.SIG_IGN:
        sigs.append(hup)
    return tuple(sigs)


def start_up_signal_handler(signum: int, frame: object) -> None:
    """The handler of ``stop_signals()`` while a command starts: remembers the signal, then
    unwinds (KeyboardInterrupt for Ctrl-C, ``Terminated`` for the others). The note outlives an
    exception that a library swallowed on its way (a finalizer, a broad ``except``):
    ``raise_if_signalled`` raises again."""
    global _start_up_signal
    _start_up_signal = signum
    raise Terminated() if signum != signal.SIGINT else KeyboardInterrupt()


def start_up_unraisable_hook(previous: Callable[[Any], None]) -> Callable[[Any], None]:
    """A ``sys.unraisablehook`` for start-up: the start-up handler's exception raised where Python
    cannot raise one (a weakref callback, such as importlib's module-lock one; a finalizer) is the
    signal, already remembered for ``raise_if_signalled``: not printed (Python printed it as
    "Exception ignored in ..." with a traceback). Anything else goes to ``previous``."""

    def hook(unraisable: Any) -> None:
        if _start_up_signal is not None and isinstance(unraisable.exc_value, KeyboardInterrupt):
            return
        previous(unraisable)

    return hook


def start_up_signal() -> int | None:
    """The stop signal that came while the command started, if one did."""
    return _start_up_signal


def forget_start_up_signal() -> None:
    global _start_up_signal
    _start_up_signal = None


def raise_if_signalled() -> None:
    """Unwinds now if a start-up signal came and its exception was lost on the way."""
    if _start_up_signal is not None:
        raise Terminated() if _start_up_signal != signal.SIGINT else KeyboardInterrupt()


# Container objects allocated between two collections of the youngest generation (Python's
# default: 700). A busy process makes and drops a few per window or frame (a Prediction, its
# result and event list; a frame, a window) and almost none of them in cycles: at the default, one
# monitor process taking 200,000 windows/s ran about a thousand young collections a second, and
# every tenth one also walked the older generation (the batches in flight between threads).
GC_YOUNG_THRESHOLD = 10_000


def freeze_start_up_objects() -> tuple[int, int, int]:
    """Runs one full garbage collection, freezes every object that exists now, and raises the
    youngest generation's threshold to ``GC_YOUNG_THRESHOLD``; returns the thresholds before
    (``thaw`` puts everything back).

    Call it once start-up is done (libraries imported, model loaded and warmed up). What a live
    process has built by then stays for good: torch and the model are hundreds of thousands of
    objects, and a full collection of the cyclic garbage collector walks them all with every
    thread stopped, a latency spike mid-run. Frozen, they are out of its way: later collections
    walk only what the run itself makes, and with the higher threshold less often (one monitor
    process after ingest took 2-11 % more windows/s; docs/performance.md).
    """
    before = gc.get_threshold()
    gc.collect()
    gc.freeze()
    gc.set_threshold(max(before[0], GC_YOUNG_THRESHOLD), *before[1:])
    return before


def thaw(thresholds: tuple[int, ...]) -> None:
    """Undoes ``freeze_start_up_objects``: the frozen objects back to the collector, its thresholds
    as they were."""
    gc.unfreeze()
    gc.set_threshold(*thresholds)


SHM_DIR = "/dev/shm"  # where Linux keeps POSIX shared memory (a tmpfs; a container's is 64 MiB by default)


def check_shared_memory(size: int) -> None:
    """An OSError that says why ``size`` bytes of new shared memory cannot be made here, raised
    before any is made; nothing when they can.

    Two limits are checked because they fail badly later: a tmpfs does not refuse a segment
    larger than its free space, the process is killed by SIGBUS when it touches the pages beyond
    (a monitor that dies without a word); and a segment over the file size limit (``ulimit -f``)
    makes CPython's failed creation print the resource tracker's traceback."""
    try:
        import resource

        limit = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
        if limit == resource.RLIM_INFINITY:
            limit = -1
    except (ImportError, OSError, ValueError):  # not a POSIX system
        limit = -1
    if 0 <= limit < size:
        raise OSError(errno.EFBIG, f"{_size(size)} of shared memory is over this process's file size "
                                   f"limit of {_size(limit)} (ulimit -f)")
    try:
        st = os.statvfs(SHM_DIR)
    except (AttributeError, OSError):  # no /dev/shm to ask: on Linux none can be made
        if sys.platform.startswith("linux"):
            raise OSError(errno.ENOENT, f"no {SHM_DIR} here, so no shared memory (in a container: mount one)") from None
        return  # macOS, Windows: shared memory lives elsewhere; creating it will say
    free = st.f_bavail * st.f_frsize
    if size > free:
        raise OSError(errno.ENOSPC, f"{_size(size)} of shared memory is needed and {SHM_DIR} has "
                                    f"{_size(free)} free (in a container: docker run --shm-size=...)")


_SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name))


@contextlib.contextmanager
def signals_held() -> Iterator[None]:
    """Ctrl-C, SIGTERM and SIGHUP that arrive inside the block are delivered right after it, to the
    handlers of before: for work that must not be unwound half done by a start-up handler's
    exception (numba compiling through llvmlite, whose half-made objects print a traceback from
    their finalizers; the resource tracker being spawned). Only the main thread can hold them,
    and only handlers set from Python are swapped; elsewhere the block runs as is."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    held: list[int] = []
    saved = {}
    for sig in _SIGNALS:
        handler = signal.getsignal(sig)
        if handler is not None:  # None: set outside Python, which cannot be put back
            saved[sig] = handler
            signal.signal(sig, lambda signum, frame: held.append(signum))
    try:
        yield
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)
        if held:
            signal.raise_signal(held[0])


def start_resource_tracker() -> None:
    """Starts multiprocessing's resource tracker (the process that unlinks this process's shared
    memory should it die) deaf to SIGHUP, before any segment is made. A terminal that hangs up
    sends SIGHUP to its whole process group, the tracker too, which ignores only SIGINT and
    SIGTERM: it died, and the monitor's clean stop then met a tracker started afresh that printed
    a traceback for every segment it had never heard of. The tracker inherits this thread's signal
    mask across fork and exec and unblocks only SIGINT and SIGTERM, so SIGHUP blocked while it
    starts stays blocked in it for good. Blocked, not ignored: a hang-up that reaches this process
    meanwhile is delivered when the block ends (set to ignore, it was lost, and a monitor whose
    terminal closed as it started ran on), and held, so its handler runs after the spawn, not
    inside it."""
    from multiprocessing import resource_tracker

    hup = getattr(signal, "SIGHUP", None)
    if hup is None or threading.current_thread() is not threading.main_thread() or not hasattr(signal, "pthread_sigmask"):
        resource_tracker.ensure_running()
        return
    with signals_held():
        before = signal.pthread_sigmask(signal.SIG_BLOCK, {hup})
        try:
            resource_tracker.ensure_running()
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, before)


# ``python -m`` puts the working directory first on sys.path (``-P``, which would not, is Python
# 3.11+). This ``-c`` program drops it, then runs the module as ``-m`` would, with the arguments
# after its name.
_RUN_MODULE = (
    "import runpy, sys\n"
    "if not getattr(sys.flags, 'safe_path', False):\n"
    "    del sys.path[0]\n"
    "runpy.run_module(sys.argv.pop(1), run_name='__main__', alter_sys=True)\n"
)


def child_process(module: str, args: list[str]) -> tuple[list[str], dict[str, str]]:
    """The command line and environment that run this package's ``module`` (``python -m``) in a
    child process, on this very copy of the package: its folder first on PYTHONPATH, and not the
    working directory, where another copy (a checkout of another version) would be found first
    and the two processes would speak different versions of their protocol."""
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    return [sys.executable, "-c", _RUN_MODULE, module, *args], env


def _size(n: int) -> str:
    return f"{n / 2**20:.1f} MiB" if n >= 2**20 else f"{n / 2**10:.0f} KiB"


def attach_shared_memory(name: str) -> shared_memory.SharedMemory:
    """Opens another process's shared-memory segment without letting this process's resource
    tracker unlink it at exit (the creator owns and unlinks it; Python < 3.13 has no
    ``track=False``). Used by the engine process and the ingest processes."""
    try:
        return shared_memory.SharedMemory(name=name, track=False)  # type: ignore[call-arg]
    except TypeError:
        from multiprocessing import resource_tracker

        shm = shared_memory.SharedMemory(name=name)
        resource_tracker.unregister(shm._name, "shared_memory")  # type: ignore[attr-defined]
        return shm


class ResourceMeter:
    """CPU and memory of this process, GPU use where torch sees CUDA; ``read()`` gives Footer fields.

    CPU comes from ``/proc/self/stat`` (user + system ticks between two reads; 100 = one core),
    memory from ``/proc/self/statm``; processes in ``extra_pids`` (the engine process) are added.
    GPU figures come from ``torch.cuda`` only if torch is already imported (reading them must not
    import it) and CUDA is up; else None.
    """

    def __init__(self) -> None:
        self._last: tuple[float, float] | None = None
        self._tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
        self._page = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
        self.extra_pids: list[int] | Callable[[], list[int]] = []  # a callable follows restarts
        self.cpu_s: float | None = None  # CPU seconds of all the processes at the last read

    def _procs(self) -> list[str]:
        extra = self.extra_pids() if callable(self.extra_pids) else self.extra_pids
        return ["self", *(str(p) for p in extra)]

    def read(self) -> dict[str, float | None]:
        """{"cpu_percent", "rss_mb", "gpu_percent", "gpu_mem_mb"}; None where not available."""
        return {
            "cpu_percent": self._cpu(),
            "rss_mb": self._rss(),
            **_gpu(),
        }

    def _cpu(self) -> float | None:
        cpu_s = 0.0
        rest: list[str] = []
        for proc in self._procs():
            try:
                with open(f"/proc/{proc}/stat", encoding="ascii") as f:
                    # The command name may hold spaces; the fields after its ")" are fixed.
                    fields = f.read().rsplit(")", 1)[1].split()
                cpu_s += (int(fields[11]) + int(fields[12])) / self._tick
            except (OSError, IndexError, ValueError):
                if proc == "self":
                    return None
                continue
            if proc == "self":
                rest = fields
        self.cpu_s = cpu_s
        now = time.monotonic()
        last, self._last = self._last, (now, cpu_s)
        if last is None:
            # First read: the average since the process started (field 22, ticks after boot).
            try:
                with open("/proc/uptime", encoding="ascii") as f:
                    alive = float(f.read().split()[0]) - int(rest[19]) / self._tick
            except (OSError, IndexError, ValueError):
                return None
            return 100.0 * cpu_s / alive if alive > 0 else None
        if now <= last[0]:
            return None
        return 100.0 * (cpu_s - last[1]) / (now - last[0])

    def _rss(self) -> float | None:
        pages = 0
        for proc in self._procs():
            try:
                with open(f"/proc/{proc}/statm", encoding="ascii") as f:
                    pages += int(f.read().split()[1])
            except (OSError, IndexError, ValueError):
                if proc == "self":
                    return None
        return pages * self._page / 2**20


def _gpu() -> dict[str, float | None]:
    out: dict[str, float | None] = {"gpu_percent": None, "gpu_mem_mb": None}
    torch = sys.modules.get("torch")
    if torch is None:
        return out
    try:
        if not torch.cuda.is_available() or not torch.cuda.is_initialized():
            return out
        out["gpu_mem_mb"] = torch.cuda.memory_reserved() / 2**20
        out["gpu_percent"] = float(torch.cuda.utilization())  # needs pynvml; absent: stays None
    except Exception:  # noqa: BLE001 - a missing NVML must never reach the dashboard
        pass
    return out
