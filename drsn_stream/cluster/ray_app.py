"""The Ray side of cluster mode: joining Ray with telemetry off, the host and aggregator actors.

Ray supervises; it never carries windows. Each ``HostActor`` wraps a ``HostWorker`` (the ordinary
pipeline reading its share of the streams straight from the gateways' ZeroMQ PUB sockets); only
events, 1 Hz summaries and (when a result feed is asked for) results, batched per tenth of a
second, travel through Ray to the ``AggregatorActor``. The coordinator is ``coordinator.py``,
deploying it all ``deploy.py``.

Telemetry: whatever starts or joins Ray here does it through ``init_ray``, which switches Ray's
usage statistics off (``RAY_USAGE_STATS_ENABLED=0``, also for every worker) and, for a Ray it
starts, the dashboard.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from drsn_stream.errors import ConfigError

NAMESPACE = "drsn-stream"
COORDINATOR = "drsn-coordinator"
AGGREGATOR = "drsn-aggregator"
HOST_RESOURCE = "drsn_host"
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
        if address is None:  # a one-node Ray here, to try it out: loopback, small, no dashboard
            kwargs = {"include_dashboard": False, "_node_ip_address": "127.0.0.1",
                      "object_store_memory": 200 * 2**20, **kwargs}
        ray.init(address=address, namespace=NAMESPACE, runtime_env=env, log_to_driver=False, **kwargs)
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
        host_actors: host actors per GPU (per node without GPUs), each a process of its own with
            its share of the streams: on a GPU host one process's ingest, batching and decisions
            are the limit long before the GPU's model is (docs/cluster.md, capacity plan). They
            share the GPU (``num_gpus`` 1/N each); on a node without GPUs each gets 1/N of its
            cores for inference, less one for its ingest.
        jsonl / publish / metrics_address / webhook / webhook_digest: the aggregator's outputs (paths absolute or
            from the aggregator's working directory).
        gateway_options: the gateway source's options (``zmq://HOST:PORT?K=V``: ``hwm``, ``channel``,
            ``curve_server`` ...) as (key, value) pairs, for every host's source and the discovery
            socket. Files they name (CURVE keys) are read by every host on its own node.
        publish_curve_key / publish_curve_allow: the aggregator's ``publish`` feed CURVE-encrypted
            (as ``--publish-curve-key`` / ``--publish-curve-allow`` on one machine).
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
    host_actors: int = 1
    jsonl: str | None = None
    publish: str | None = None
    metrics_address: str | None = None
    webhook: str | None = None
    webhook_digest: float | None = None
    gateway_options: tuple[tuple[str, str], ...] = ()
    publish_curve_key: str | None = None
    publish_curve_allow: str | None = None

    def __post_init__(self) -> None:
        if isinstance(self.host_actors, bool) or not isinstance(self.host_actors, int) or not 1 <= self.host_actors <= 64:
            raise ConfigError(f"host actors per GPU (or per node) must be a whole number from 1 to 64, not "
                              f"{self.host_actors!r}: one per GPU is the default, several where one process "
                              "is the limit (docs/cluster.md)")

    @property
    def gateway_spec(self) -> str:
        """The source spec of a host's share of the gateways (``zmq+shard://HOST:PORT?...``)."""
        from drsn_stream.cluster.shard_source import shard_spec

        return shard_spec(self.gateway, dict(self.gateway_options))

    def gateway_curve(self) -> Any:
        """The CURVE settings of a socket connecting to the gateways (``curve.Curve``), or None
        where they publish in plain text. Reads the key files: a ConfigError says which is wrong."""
        options = dict(self.gateway_options)
        if not options.get("curve_server"):
            return None
        from drsn_stream.sources.curve import Curve

        return Curve(key=options.get("curve_key") or None, server=options["curve_server"],
                     what="the cluster's gateway source (?curve_server=)")

    @property
    def gpu_share(self) -> float:
        """The GPU each host actor reserves on a GPU node (Ray's fractional ``num_gpus``)."""
        return 1.0 if self.host_actors == 1 else round(1.0 / self.host_actors, 4)


def host_nodes(ray: Any, per: int = 1) -> list[tuple[str, int]]:
    """(node id, host actors it gets): ``per`` per GPU, else ``per``, on nodes offering ``drsn_host``."""
    alive = [n for n in ray.nodes() if n.get("Alive")]
    marked = [n for n in alive if n.get("Resources", {}).get(HOST_RESOURCE)]
    return [(n["NodeID"], per * max(1, int(n.get("Resources", {}).get("GPU", 0)))) for n in (marked or alive)]


def inference_threads(cores: int, actors: int) -> int:
    """A CPU host actor's inference threads when ``actors`` of them share a node of ``cores``:
    its share of the cores less one for its ingest thread, at least one."""
    return max(1, cores // actors - 1)


_CLASSES: dict[str, Any] = {}


def host_actor_class(ray: Any) -> Any:
    """The ``HostActor`` class, built on first use so that importing this module needs no Ray."""
    if "host" not in _CLASSES:
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
                elif cluster.host_actors > 1 and config.threads is None:  # not every actor on every core
                    config = dataclasses.replace(config, threads=inference_threads(os.cpu_count() or 1, cluster.host_actors))
                self.name = name
                self.worker = HostWorker(name, config, gateway=cluster.gateway, checkpoint_dir=cluster.checkpoint_dir,
                                         gateway_options=dict(cluster.gateway_options),
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

            def unacknowledged(self, streams: list[str]) -> list[str]:
                return self.worker.unacknowledged(streams)

            def latencies(self, start: bool) -> list[float]:
                """start=True: begin recording every latency; False: stop and return them (ms)."""
                stats = self.worker.pipe.stats
                if start:
                    stats.start_recording()
                    return []
                return list(stats.stop_recording()[0]) if stats.recording else []

            def stop(self) -> None:
                self.worker.stop()

        _CLASSES["host"] = HostActor
    return _CLASSES["host"]


def aggregator_actor_class(ray: Any) -> Any:
    """The ``AggregatorActor`` class (the aggregator behind Ray calls, its sinks and metrics server)."""
    if "aggregator" not in _CLASSES:
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

                    sinks.append(ZmqResultSink(cluster.publish, curve_key=cluster.publish_curve_key,
                                               curve_allow=cluster.publish_curve_allow))
                if cluster.webhook:
                    from drsn_stream.sinks.webhook import WebhookSink

                    sinks.append(WebhookSink(cluster.webhook, digest_s=cluster.webhook_digest))
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

            def note(self, message: str) -> None:
                self.agg.note(message)

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

        _CLASSES["aggregator"] = AggregatorActor
    return _CLASSES["aggregator"]


__all__ = ["AGGREGATOR", "COORDINATOR", "ClusterConfig", "HOST_RESOURCE", "NAMESPACE", "aggregator_actor_class",
           "host_actor_class", "host_nodes", "inference_threads", "init_ray", "telemetry_off"]
