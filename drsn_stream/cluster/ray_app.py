"""The Ray side of cluster mode: host actors, the coordinator, the aggregator, and how to start them.

Ray supervises; it never carries windows. Each ``HostActor`` wraps a ``HostWorker`` (the ordinary
pipeline reading its share of the streams straight from the gateways' ZeroMQ PUB sockets); only
results (small JSON objects, batched per tenth of a second) and 1 Hz summaries travel through
Ray, to the ``AggregatorActor``. The ``CoordinatorActor`` (named ``drsn-coordinator``):

- keeps one host actor per GPU (or per CPU node) on every node that offers the ``drsn_host``
  resource (every node, where none does), starting one when a node joins;
- assigns streams by consistent hashing (``HashRing``): a host joining or leaving moves ~1/N of
  them; a moving stream is released (drained, checkpointed) before its new host restores it;
- finds streams that appear later by listening to the gateways for ``discover_window_s`` every
  ``discover_every_s`` (a small duty cycle of the full feed, on the coordinator's node only);
- pings every host every ``PING_EVERY_S``; a host whose actor died (seen at once) or that did not
  answer for ``dead_after_s`` (a lost node) is killed for good and its streams go to the others,
  restored from their last checkpoints.

Telemetry: whatever starts or joins Ray here does it through ``init_ray``, which switches Ray's
usage statistics off (``RAY_USAGE_STATS_ENABLED=0``, also for every worker) and starts no dashboard.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from drsn_stream.cluster.ring import HashRing
from drsn_stream.errors import ConfigError, DrsnStreamError

NAMESPACE = "drsn-stream"
COORDINATOR = "drsn-coordinator"
AGGREGATOR = "drsn-aggregator"
HOST_RESOURCE = "drsn_host"
PING_EVERY_S = 0.25
START_TIMEOUT_S = 300.0  # a host actor not up by then (importing torch, loading the model) is given up
# Ray's own settings for a cluster this project starts: no usage statistics, no dashboard.
TELEMETRY_OFF = {"RAY_USAGE_STATS_ENABLED": "0", "RAY_USAGE_STATS_PROMPT_ENABLED": "0"}


def telemetry_off() -> None:
    """Switch Ray's usage statistics (and with them its cloud-metadata probes) off in this process
    and in every process it starts (raylets, workers inherit the environment)."""
    os.environ.update(TELEMETRY_OFF)


def _ray() -> Any:
    telemetry_off()  # before ray is imported: its usage library reads the variable at start
    try:
        import ray
    except ImportError as exc:
        raise ConfigError("cluster mode needs Ray: pip install 'drsn-stream[cluster]'") from exc
    return ray


def init_ray(address: str | None = None, **kwargs: Any) -> Any:
    """Join the Ray cluster at ``address`` ("auto", "HOST:PORT"), or start a local one when None.

    Telemetry off, no dashboard, workers get the same environment switches. Returns the module."""
    ray = _ray()
    if ray.is_initialized():
        return ray
    env = {"env_vars": dict(TELEMETRY_OFF)}
    try:
        ray.init(address=address, namespace=NAMESPACE, include_dashboard=False if address is None else None,
                 runtime_env=env, log_to_driver=False, configure_logging=False, **kwargs)
    except ConnectionError as exc:
        raise ConfigError(f"cannot join the Ray cluster at {address}: {exc}; start one with "
                          "`RAY_USAGE_STATS_ENABLED=0 ray start --head --disable-usage-stats "
                          "--include-dashboard=false` (docs/cluster.md)") from exc
    return ray


@dataclass(frozen=True)
class ClusterConfig:
    """How the cluster runs (the monitor's own settings stay in ``RunConfig``).

    Attributes:
        gateway: ``HOST:PORT`` of the gateways' ZeroMQ PUB socket.
        checkpoint_dir: a directory every host can read and write.
        streams: stream ids known from the start (more are discovered when ``discover``).
        discover: listen for new streams every ``discover_every_s`` for ``discover_window_s``.
        checkpoint_every_s: period of the full checkpoints (changes are saved at once).
        dead_after_s: a host silent this long is taken for lost (its node gone).
        host_cpus: CPUs each host actor reserves.
        jsonl / publish / metrics_address: the aggregator's outputs (paths absolute or from the
            aggregator's working directory).
    """

    gateway: str
    checkpoint_dir: str
    streams: tuple[str, ...] = ()
    discover: bool = True
    discover_every_s: float = 2.0
    discover_window_s: float = 0.3
    checkpoint_every_s: float = 2.0
    dead_after_s: float = 3.0
    host_cpus: float = 0.0
    jsonl: str | None = None
    publish: str | None = None
    metrics_address: str | None = None


def _host_nodes(ray: Any) -> list[tuple[str, int]]:
    """(node id, host actors it gets): one per GPU, else one, on nodes offering ``drsn_host``."""
    alive = [n for n in ray.nodes() if n.get("Alive")]
    marked = [n for n in alive if n.get("Resources", {}).get(HOST_RESOURCE)]
    return [(n["NodeID"], max(1, int(n.get("Resources", {}).get("GPU", 0)))) for n in (marked or alive)]


def make_actors(ray: Any) -> tuple[Any, Any, Any]:
    """The three actor classes, built on first use so that importing this module needs no Ray."""

    @ray.remote(num_cpus=0, max_restarts=0, max_concurrency=8)
    class HostActor:
        def __init__(self, name: str, config: Any, cluster: ClusterConfig, gpu: bool) -> None:
            import dataclasses

            from drsn_stream.cluster.host import HostWorker

            agg = ray.get_actor(AGGREGATOR, namespace=NAMESPACE)

            def send(kind: str, payload: Any) -> None:
                (agg.push.remote(name, payload) if kind == "results" else agg.summary.remote(payload))

            if gpu:
                config = dataclasses.replace(config, device="cuda")
            self.name = name
            self.worker = HostWorker(name, config, gateway=cluster.gateway, checkpoint_dir=cluster.checkpoint_dir,
                                     send=send, checkpoint_every_s=cluster.checkpoint_every_s,
                                     send_results=bool(cluster.jsonl or cluster.publish)).start()

        def ping(self) -> dict[str, Any]:
            return {"host": self.name, "pid": os.getpid(), "node": ray.get_runtime_context().get_node_id(),
                    "owned": len(self.worker.owned), "subscribed": len(self.worker.source.subscribed)}

        def assign(self, streams: list[str], previous: dict[str, str]) -> list[str]:
            return self.worker.assign(streams, previous=previous)

        def release(self, streams: list[str]) -> list[str]:
            return self.worker.release(streams)

        def acknowledge(self, stream: str | None) -> int:
            return self.worker.acknowledge(stream)

        def latencies(self, start: bool) -> list[float]:
            """start=True: begin recording every latency; False: stop and return them (ms)."""
            stats = self.worker.pipe.stats
            if start:
                stats.start_recording()
                return []
            return list(stats.stop_recording()[0]) if stats.recording else []

        def stop(self) -> None:
            self.worker.stop()

    @ray.remote(num_cpus=0, max_concurrency=8)
    class AggregatorActor:
        def __init__(self, cluster: ClusterConfig) -> None:
            from drsn_stream.cluster.aggregator import Aggregator, ClusterCollector

            sinks: list[Any] = []
            if cluster.jsonl:
                from drsn_stream.sinks.jsonl import JsonlSink

                sinks.append(JsonlSink(cluster.jsonl, flush_every=64))
            if cluster.publish:
                from drsn_stream.sinks.jsonl import ZmqResultSink

                sinks.append(ZmqResultSink(cluster.publish))
            self.agg = Aggregator(sinks=sinks, source=f"zmq+shard://{cluster.gateway}")
            self.metrics = None
            if cluster.metrics_address:
                from drsn_stream.sinks.metrics import MetricsServer

                collector = ClusterCollector(lambda: (self.agg.host_snapshots(), self.figures()))
                self.metrics = MetricsServer(self.agg.snapshot, address=cluster.metrics_address,
                                             collector=collector).start()

        def push(self, host: str, objects: list[dict[str, Any]]) -> None:
            self.agg.push(host, objects)

        def summary(self, summary: dict[str, Any]) -> None:
            self.agg.summary(summary)

        def host_down(self, host: str, moved: dict[str, str]) -> None:
            self.agg.host_down(host, moved)

        def snapshot(self) -> Any:
            return self.agg.snapshot()

        def summaries(self) -> dict[str, dict[str, Any]]:
            return self.agg.summaries()

        def handovers(self) -> dict[str, list[tuple[str, float]]]:
            return {s: list(v) for s, v in self.agg.handovers.items()}

        def figures(self) -> dict[str, float]:
            return {"drsn_cluster_duplicate_events": self.agg.duplicates,
                    "drsn_cluster_failovers": self.agg.failovers, "results": self.agg.results}

        def metrics_url(self) -> str | None:
            return self.metrics.url if self.metrics is not None else None

        def close(self) -> None:
            if self.metrics is not None:
                self.metrics.stop()
            self.agg.close()

    @ray.remote(num_cpus=0, max_concurrency=8)
    class CoordinatorActor:
        def __init__(self, config: Any, cluster: ClusterConfig) -> None:
            self.config, self.cluster = config, cluster
            self.ring = HashRing()
            self.hosts: dict[str, Any] = {}  # name -> actor handle
            self.host_node: dict[str, str] = {}
            self.last_ok: dict[str, float] = {}
            self.pings: dict[str, Any] = {}
            self.owner: dict[str, str] = {}  # stream -> host
            self.streams: set[str] = set(cluster.streams)
            self.failovers: list[dict[str, Any]] = []
            self.starting: dict[str, tuple[str, Any, Any, float]] = {}  # name -> (node, handle, ping, t0)
            self._lock = threading.RLock()
            self._stop = threading.Event()
            self._agg = ray.get_actor(AGGREGATOR, namespace=NAMESPACE)
            self._sync_hosts()
            end = time.time() + START_TIMEOUT_S
            while self.starting and time.time() < end:  # the first hosts: deployed before this returns
                self._check_starting(block=1.0)
            self._thread = threading.Thread(target=self._loop, name="drsn-coordinator", daemon=True)
            self._thread.start()

        # -------------------------------------------------------------- hosts
        def _sync_hosts(self) -> None:
            """Start a host actor for every GPU / CPU slot that has none (a node that joined, or
            a host that died on a node still alive); never waits for it (see ``_check_starting``)."""
            from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

            nodes = {n["NodeID"]: n for n in ray.nodes()}
            for node, count in _host_nodes(ray):
                gpu = bool(nodes.get(node, {}).get("Resources", {}).get("GPU", 0))
                for i in range(count):
                    slot = f"h{node[:6]}-{i}"
                    with self._lock:
                        taken = any(n.split(".")[0] == slot for n in (*self.hosts, *self.starting))
                        restarts = sum(1 for f in self.failovers if f["host"].split(".")[0] == slot)
                    if taken:
                        continue
                    name = slot if restarts == 0 else f"{slot}.{restarts}"
                    opts: dict[str, Any] = {"scheduling_strategy": NodeAffinitySchedulingStrategy(node, soft=False),
                                            "num_cpus": self.cluster.host_cpus}
                    if gpu:
                        opts["num_gpus"] = 1
                    handle = HostActor.options(**opts).remote(name, self.config, self.cluster, gpu)
                    with self._lock:
                        self.starting[name] = (node, handle, handle.ping.remote(), time.time())

        def _check_starting(self, *, block: float = 0.0) -> None:
            """Hosts that finished starting join the ring (their share of streams moves to them)."""
            with self._lock:
                starting = dict(self.starting)
            if not starting:
                return
            ready, _ = ray.wait([v[2] for v in starting.values()], num_returns=len(starting), timeout=block)
            joined = False
            for name, (node, handle, ref, t0) in starting.items():
                if ref in ready:
                    with self._lock:
                        self.starting.pop(name, None)
                    try:
                        ray.get(ref)
                    except Exception:  # noqa: BLE001 - a host that cannot start is left out, tried again later
                        continue
                    with self._lock:
                        self.hosts[name] = handle
                        self.host_node[name] = node
                        self.last_ok[name] = time.time()
                        self.ring.add(name)
                    joined = True
                elif time.time() - t0 > START_TIMEOUT_S:  # its node is likely gone
                    with self._lock:
                        self.starting.pop(name, None)
                    try:
                        ray.kill(handle, no_restart=True)
                    except Exception:  # noqa: BLE001
                        pass
            if joined:
                self._rebalance()

        def _rebalance(self, previous: Mapping[str, str] | None = None) -> None:
            """Move every stream whose ring owner changed: release first, then assign."""
            with self._lock:
                target = {s: self.ring.owner(s) for s in self.streams}
                moves = {s: h for s, h in target.items() if h is not None and self.owner.get(s) != h}
                by_old: dict[str, list[str]] = {}
                for s in moves:
                    old = self.owner.get(s)
                    if old is not None and old in self.hosts:
                        by_old.setdefault(old, []).append(s)
                releases = [self.hosts[h].release.remote(ss) for h, ss in by_old.items()]
            if releases:
                ray.get(releases, timeout=60)
            by_new: dict[str, list[str]] = {}
            for s, h in moves.items():
                by_new.setdefault(h, []).append(s)
            prev = dict(previous or {})
            prev.update({s: self.owner[s] for s in moves if s in self.owner})
            calls = []
            with self._lock:
                for h, ss in by_new.items():
                    calls.append(self.hosts[h].assign.remote(sorted(ss), {s: prev[s] for s in ss if s in prev}))
                    for s in ss:
                        self.owner[s] = h
            if calls:
                ray.get(calls, timeout=60)

        def _fail(self, host: str, why: str, t_seen: float) -> None:
            with self._lock:
                handle = self.hosts.pop(host, None)
                if handle is None:
                    return
                self.ring.remove(host)
                self.pings.pop(host, None)
                lost = sorted(s for s, h in self.owner.items() if h == host)
                for s in lost:
                    del self.owner[s]
            try:
                ray.kill(handle, no_restart=True)  # a host only slow, not dead, must stop publishing
            except Exception:  # noqa: BLE001 - already gone
                pass
            self._rebalance(previous={s: host for s in lost})
            moved = {s: self.owner.get(s, "") for s in lost}
            self._agg.host_down.remote(host, moved)
            self.failovers.append({"host": host, "why": why, "detected": t_seen, "reassigned": time.time(),
                                   "streams": len(lost)})

        # -------------------------------------------------------------- the loop
        def _loop(self) -> None:
            next_nodes = next_discover = time.time()
            while not self._stop.wait(PING_EVERY_S):
                now = time.time()
                self._check_hosts(now)
                self._check_starting()
                if now >= next_nodes:
                    next_nodes = now + 2.0
                    try:
                        self._sync_hosts()
                    except Exception:  # noqa: BLE001 - the node table is retried next round
                        pass
                if self.cluster.discover and now >= next_discover:
                    next_discover = now + self.cluster.discover_every_s
                    self._discover()

        def _check_hosts(self, now: float) -> None:
            with self._lock:
                hosts = dict(self.hosts)
            for name, handle in hosts.items():
                ref = self.pings.get(name)
                if ref is None:
                    self.pings[name] = handle.ping.remote()
                    continue
                ready, _ = ray.wait([ref], timeout=0)
                if ready:
                    self.pings.pop(name, None)
                    try:
                        ray.get(ref)
                        self.last_ok[name] = now
                    except Exception as exc:  # noqa: BLE001 - RayActorError: the actor process died
                        self._fail(name, f"actor died ({type(exc).__name__})", now)
                        continue
                if now - self.last_ok.get(name, now) > self.cluster.dead_after_s:
                    self._fail(name, f"no answer for {self.cluster.dead_after_s:g} s (node lost?)", now)

        def _discover(self) -> None:
            import zmq

            from drsn_stream.sources.wire import WireError, decode
            from drsn_stream.sources.zmq_source import tcp_address

            ctx = zmq.Context.instance()
            sock = ctx.socket(zmq.SUB)
            sock.setsockopt(zmq.LINGER, 0)
            sock.setsockopt(zmq.SUBSCRIBE, b"")
            found: set[str] = set()
            try:
                sock.connect(tcp_address(self.cluster.gateway, bind=False))
                end = time.time() + self.cluster.discover_window_s
                while time.time() < end:
                    if not sock.poll(20):
                        continue
                    try:
                        msg = decode(sock.recv_multipart(zmq.NOBLOCK))
                    except (WireError, zmq.Again):
                        continue
                    found.add(msg.stream_id)
            finally:
                sock.close(0)
            with self._lock:
                new = found - self.streams
                self.streams |= new
            if new:
                self._rebalance()

        # -------------------------------------------------------------- calls
        def add_streams(self, streams: list[str]) -> None:
            with self._lock:
                self.streams |= set(streams)
            self._rebalance()

        def assignment(self) -> dict[str, str]:
            with self._lock:
                return dict(self.owner)

        def host_info(self) -> dict[str, dict[str, Any]]:
            with self._lock:
                hosts = dict(self.hosts)
            out = {}
            for name, handle in hosts.items():
                try:
                    out[name] = ray.get(handle.ping.remote(), timeout=10)
                except Exception:  # noqa: BLE001 - a dying host is reported as missing
                    continue
            return out

        def failover_log(self) -> list[dict[str, Any]]:
            return list(self.failovers)

        def acknowledge(self, stream: str | None = None) -> int:
            with self._lock:
                hosts = dict(self.hosts)
                owner = self.owner.get(stream) if stream is not None else None
            targets = [hosts[owner]] if owner in hosts else list(hosts.values()) if stream is None else []
            return sum(ray.get([h.acknowledge.remote(stream) for h in targets], timeout=30))

        def latencies(self, start: bool) -> list[float]:
            with self._lock:
                hosts = list(self.hosts.values())
            parts = ray.get([h.latencies.remote(start) for h in hosts], timeout=60)
            return [x for p in parts for x in p]

        def stop(self) -> None:
            self._stop.set()
            self._thread.join(timeout=5.0)
            with self._lock:
                hosts = list(self.hosts.values())
            for h in hosts:
                try:
                    ray.get(h.stop.remote(), timeout=30)
                except Exception:  # noqa: BLE001 - stopping what is left
                    pass

    return HostActor, AggregatorActor, CoordinatorActor


class Cluster:
    """The driver's handle on a running cluster monitor (``start_cluster`` builds it)."""

    def __init__(self, ray: Any, coordinator: Any, aggregator: Any) -> None:
        self.ray, self.coordinator, self.aggregator = ray, coordinator, aggregator

    def snapshot(self) -> Any:
        return self.ray.get(self.aggregator.snapshot.remote(), timeout=30)

    def acknowledge(self, stream: str | None = None) -> int:
        return int(self.ray.get(self.coordinator.acknowledge.remote(stream), timeout=60))

    def assignment(self) -> dict[str, str]:
        return dict(self.ray.get(self.coordinator.assignment.remote(), timeout=30))

    def hosts(self) -> dict[str, dict[str, Any]]:
        return dict(self.ray.get(self.coordinator.host_info.remote(), timeout=60))

    def failovers(self) -> list[dict[str, Any]]:
        return list(self.ray.get(self.coordinator.failover_log.remote(), timeout=30))

    def summaries(self) -> dict[str, dict[str, Any]]:
        return dict(self.ray.get(self.aggregator.summaries.remote(), timeout=30))

    def wait_subscribed(self, streams: int, timeout: float = 120.0) -> None:
        """Block until the hosts together subscribe to ``streams`` streams (ZeroMQ subscriptions
        are applied by each host's reading thread a moment after ``assign``)."""
        end = time.time() + timeout
        while time.time() < end:
            info = self.hosts()
            if sum(i["subscribed"] for i in info.values()) >= streams:
                return
            time.sleep(0.1)
        raise DrsnStreamError(f"the hosts did not subscribe to {streams} streams within {timeout:g} s")

    def stop(self) -> None:
        ray = self.ray
        for call in (lambda: self.coordinator.stop.remote(), lambda: self.aggregator.close.remote()):
            try:
                ray.get(call(), timeout=60)
            except Exception:  # noqa: BLE001 - stopping what is left
                pass
        for actor in (self.coordinator, self.aggregator):
            try:
                ray.kill(actor)
            except Exception:  # noqa: BLE001
                pass


def start_cluster(config: Any, cluster: ClusterConfig, *, address: str | None = None) -> Cluster:
    """Deploy the monitor on the Ray cluster at ``address`` (joined via ``init_ray``)."""
    ray = init_ray(address)
    HostActor, AggregatorActor, CoordinatorActor = make_actors(ray)
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
    agg = AggregatorActor.options(name=AGGREGATOR, namespace=NAMESPACE, scheduling_strategy=here).remote(cluster)
    ray.get(agg.summaries.remote(), timeout=120)
    coord = CoordinatorActor.options(name=COORDINATOR, namespace=NAMESPACE, scheduling_strategy=here).remote(
        config, cluster)
    ray.get(coord.assignment.remote(), timeout=600)  # returns once the first hosts are up and assigned
    return Cluster(ray, coord, agg)


__all__ = ["COORDINATOR", "AGGREGATOR", "Cluster", "ClusterConfig", "HOST_RESOURCE", "init_ray",
           "make_actors", "start_cluster", "telemetry_off"]
