"""Deploying the cluster monitor from the driver: ``start_cluster`` and the ``Cluster`` handle.

    cluster = start_cluster(RunConfig(...), ClusterConfig(gateway="gw:5555", checkpoint_dir="/shared/drsn"),
                            address="HEAD:6379")
    cluster.snapshot()          # the whole cluster, for the one dashboard
    cluster.acknowledge()       # every stream's alarms, on whichever host has it
    cluster.stop()
"""

from __future__ import annotations

import time
from typing import Any

from drsn_stream.cluster.coordinator import Coordinator
from drsn_stream.cluster.ray_app import (
    AGGREGATOR,
    COORDINATOR,
    NAMESPACE,
    ClusterConfig,
    aggregator_actor_class,
    init_ray,
)
from drsn_stream.errors import DrsnStreamError


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
        end = time.monotonic() + timeout
        while time.monotonic() < end:
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
    AggregatorActor = aggregator_actor_class(ray)
    CoordinatorActor = ray.remote(num_cpus=0, max_concurrency=8)(Coordinator)
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
    agg = AggregatorActor.options(name=AGGREGATOR, namespace=NAMESPACE, scheduling_strategy=here).remote(cluster)
    ray.get(agg.summaries.remote(), timeout=120)
    coord = CoordinatorActor.options(name=COORDINATOR, namespace=NAMESPACE, scheduling_strategy=here).remote(
        config, cluster)
    ray.get(coord.assignment.remote(), timeout=600)  # returns once the first hosts are up and assigned
    return Cluster(ray, coord, agg)


__all__ = ["Cluster", "start_cluster"]
