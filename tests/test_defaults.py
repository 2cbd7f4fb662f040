"""The defaults policy (app.defaults.resolve_defaults), on its own: no model, no threads."""

from __future__ import annotations

import pytest

from drsn_stream.app.defaults import resolve_defaults
from drsn_stream.engine.contract import (
    CPU_CATCH_UP_BATCH,
    CPU_EAGER_BATCH,
    CPU_LIVE_MAX_BATCH,
    CUDA_CATCH_UP_BATCH,
    MAX_BATCH,
    cuda_catch_up_batch,
)


def test_a_live_cpu_run_on_two_cores_gets_a_pinned_engine_process_and_small_eager_batches() -> None:
    r = resolve_defaults(device="cpu", cores=2)
    assert r.engine_process and r.pin_cpus
    assert (r.max_batch, r.eager_batch) == (CPU_LIVE_MAX_BATCH, CPU_EAGER_BATCH)
    assert r.stale_ms == 2000.0 and not r.block_when_full
    # a backlog drains in bigger batches, which the engine must then take
    assert r.catch_up_batch == r.capacity == CPU_CATCH_UP_BATCH > r.max_batch


def test_one_core_keeps_the_model_in_process() -> None:
    r = resolve_defaults(device="cpu", cores=1)
    assert not r.engine_process and not r.pin_cpus


def test_cuda_runs_in_process_with_big_batches_and_no_eager_flush() -> None:
    r = resolve_defaults(device="cuda", cores=16)
    assert not r.engine_process and not r.pin_cpus
    assert (r.max_batch, r.eager_batch) == (MAX_BATCH, 0)
    # a backlog leaves in bigger batches there too (live or replayed), which the runner must take
    for fast in (False, True):
        r = resolve_defaults(device="cuda", cores=16, fast=fast, window=2048)
        assert r.catch_up_batch == r.capacity == CUDA_CATCH_UP_BATCH > r.max_batch
    assert resolve_defaults(device="cuda", cores=16, max_batch=128).capacity == 128
    # no more samples in a backlog's batch than 1,024 windows of 2,048: the speech model's windows
    # of 8,000 get none (its runner captures no CUDA graph for batches its streams never make)
    assert resolve_defaults(device="cuda", cores=16, window=8000).capacity == MAX_BATCH
    assert [cuda_catch_up_batch(w) for w in (256, 2048, 3000, 4096, 8000)] == [1024, 1024, 512, 512, 0]


def test_a_replay_never_drops_and_takes_full_batches() -> None:
    r = resolve_defaults(device="cpu", cores=2, fast=True)
    assert r.stale_ms == 0.0 and r.block_when_full
    assert (r.max_batch, r.eager_batch) == (MAX_BATCH, 0)
    assert r.capacity == MAX_BATCH  # on the CPU every replayed batch is already full


@pytest.mark.parametrize("threads, pinned", [(None, True), (1, True), (2, False)])
def test_pinning_follows_the_engine_threads(threads: int | None, pinned: bool) -> None:
    assert resolve_defaults(device="cpu", cores=4, threads=threads).pin_cpus is pinned


def test_what_the_config_sets_wins() -> None:
    r = resolve_defaults(device="cpu", cores=8, engine_process=False, pin_cpus=True, max_batch=16,
                         eager_batch=32, stale_ms=500.0)
    assert not r.engine_process and not r.pin_cpus  # no process, nothing to pin
    assert (r.max_batch, r.eager_batch, r.stale_ms) == (16, 16, 500.0)  # eager never above the batch
    assert r.capacity == 16  # a batch size set is the largest batch, backlog or not
    assert resolve_defaults(device="cuda", cores=8, engine_process=True).engine_process is False


@pytest.mark.parametrize("cores, procs", [(1, 1), (2, 1), (7, 1), (8, 4), (16, 8), (64, 8)])
def test_zeromq_ingest_stays_one_thread_on_small_hosts_and_takes_half_the_cores_on_big_ones(cores: int,
                                                                                             procs: int) -> None:
    assert resolve_defaults(device="cpu", cores=cores).ingest_procs == procs
    assert resolve_defaults(device="cuda", cores=cores).ingest_procs == procs


def test_ingest_processes_asked_for_are_what_you_get() -> None:
    assert resolve_defaults(device="cpu", cores=2, ingest_procs=2).ingest_procs == 2
    assert resolve_defaults(device="cuda", cores=16, ingest_procs=1).ingest_procs == 1
