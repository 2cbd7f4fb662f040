"""The policy that picks a run's defaults from its config and the machine: a pure function, so it
can be read and tested on its own (the supervisor in ``app.pipeline`` only applies the result)."""

from __future__ import annotations

from dataclasses import dataclass

from drsn_stream.engine.contract import (
    CPU_CATCH_UP_BATCH,
    CPU_EAGER_BATCH,
    CPU_LIVE_MAX_BATCH,
    MAX_BATCH,
    cuda_catch_up_batch,
)

BIG_HOST_CORES = 8  # from here on ZeroMQ SUB sources are read by several ingest processes
MAX_INGEST_PROCS = 8


@dataclass(frozen=True)
class Machine:
    """What the policy needs to know of the machine."""

    cores: int  # cores this process may use
    device: str  # "cpu" or "cuda": where the model will run


@dataclass(frozen=True)
class Resolved:
    engine_process: bool  # run the model in a child process (CPU only)
    pin_cpus: bool  # give that process a core of its own
    max_batch: int
    eager_batch: int  # 0: off
    stale_ms: float  # 0: windows never go stale (replays)
    block_when_full: bool  # a full queue makes the source wait (replays) instead of dropping (live)
    ingest_procs: int = 1  # processes that read each ZeroMQ SUB source (1: its ingest thread alone)
    catch_up_batch: int = 0  # most windows in a batch while a backlog drains (0: max_batch)

    @property
    def capacity(self) -> int:
        """The largest batch the runner is given: what it must be built to take."""
        return max(self.max_batch, self.catch_up_batch)


def resolve_defaults(
    *,
    device: str,
    cores: int,
    fast: bool = False,
    engine_process: bool | None = None,
    pin_cpus: bool | None = None,
    threads: int | None = None,
    max_batch: int | None = None,
    eager_batch: int | None = None,
    stale_ms: float = 2000.0,
    ingest_procs: int | None = None,
    window: int = 2048,
) -> Resolved:
    """Fills what the config left unset (None).

    - The engine process is on for the CPU with 2 or more cores: the model's compute then never
      waits behind the ingest thread for the interpreter lock. On CUDA the model runs in-process.
    - Pinning is on where that process runs one torch thread: its core is then its own.
    - Live CPU runs take micro-batches of at most CPU_LIVE_MAX_BATCH and send one early once
      CPU_EAGER_BATCH windows wait while the engine idles (latency over throughput); CUDA and
      replays (``fast``) take MAX_BATCH and wait for full batches (throughput). When the live
      CPU engine falls behind, a batch takes up to CPU_CATCH_UP_BATCH of the windows waiting, on
      CUDA up to ``cuda_catch_up_batch(window)`` (the model's windows of ``window`` samples; 1,024
      of 2,048) (unless the config set ``max_batch``: then no batch is larger).
    - Replays never drop: windows do not go stale and a full queue makes the source wait.
    - ZeroMQ SUB sources are read by one ingest thread below BIG_HOST_CORES cores (a second
      process would take a core the engine or the parent needs); from there on by half the
      cores, at most MAX_INGEST_PROCS: each ingest process keeps one core busy, and the other half
      is left to the parent (batcher, output, the engine thread or process) and to a gateway or
      publisher on the same host.
    """
    on_cpu = device == "cpu"
    live_cpu = on_cpu and not fast
    use_process = (cores >= 2 if engine_process is None else engine_process) and on_cpu
    pin = use_process and (pin_cpus if pin_cpus is not None else (threads or 1) == 1) and cores >= 2
    batch = max_batch if max_batch is not None else CPU_LIVE_MAX_BATCH if live_cpu else MAX_BATCH
    eager = eager_batch if eager_batch is not None else CPU_EAGER_BATCH if live_cpu else 0
    if max_batch is not None:  # a batch size set is the largest batch, backlog or not
        catch_up = 0
    elif on_cpu:  # a replay's batches are full already
        catch_up = CPU_CATCH_UP_BATCH if live_cpu else 0
    else:
        catch_up = cuda_catch_up_batch(window)
    procs = ingest_procs if ingest_procs is not None else (
        min(MAX_INGEST_PROCS, cores // 2) if cores >= BIG_HOST_CORES else 1)
    return Resolved(engine_process=use_process, pin_cpus=pin, max_batch=batch, eager_batch=min(eager, batch),
                    stale_ms=0.0 if fast else stale_ms, block_when_full=fast, ingest_procs=max(1, procs),
                    catch_up_batch=catch_up)
