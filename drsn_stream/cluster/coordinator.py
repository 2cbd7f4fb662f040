"""The coordinator: which host owns which stream, and what happens when hosts come and go.

``Coordinator`` runs as the named Ray actor ``drsn-coordinator`` on the head node
(``deploy.start_cluster``). It

- keeps one host actor per GPU (or per CPU node) on every node that offers the ``drsn_host``
  resource (every node, where none does), starting one when a node joins or a host died on a node
  that is still there; a host that has started joins the ring;
- assigns streams by consistent hashing (``HashRing``): a host joining or leaving moves ~1/N of
  them, and no host gets more than its ``--max-streams`` while another has room (``HashRing.place``);
  a moving stream is released (drained, checkpointed) before its new host restores it;
- finds streams that appear later by listening to the gateways for ``discover_window_s`` every
  ``discover_every_s``;
- pings every host every ``PING_EVERY_S``; a host whose actor died (seen at once) or that did not
  answer for ``dead_after_s`` (a lost node) is killed for good and its streams go to the others,
  restored from their checkpoints; the aggregator is told (``host_down``).

One supervision thread does all of it; a step that fails (a host dying mid-move) is noted in
``errors`` and repaired by the next round, which moves whatever is still not where the ring says.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from typing import Any

from drsn_stream import errors
from drsn_stream.cluster.ray_app import AGGREGATOR, NAMESPACE, ClusterConfig, host_actor_class, host_nodes
from drsn_stream.cluster.ring import HashRing
from drsn_stream.cluster.state import CheckpointStore
from drsn_stream.errors import DrsnStreamError

PING_EVERY_S = 0.25
# the errors whose message says what to fix, as Ray's text of an actor's failure names them
OWN_ERRORS = frozenset(c.__name__ for c in vars(errors).values() if isinstance(c, type) and issubclass(c, DrsnStreamError))
START_TIMEOUT_S = 300.0  # a host actor not up by then (importing torch, loading the model) is given up


class Coordinator:
    def __init__(self, config: Any, cluster: ClusterConfig) -> None:
        """
        Args:
            config: the ``RunConfig`` every host runs.
            cluster: where the gateways are, the checkpoint directory, discovery and timing.
        """
        import ray

        self.ray = ray
        self.host_actor = host_actor_class(ray)
        self.config, self.cluster = config, cluster
        self.ring = HashRing()
        self.hosts: dict[str, Any] = {}  # name -> actor handle
        self.host_node: dict[str, str] = {}
        self.last_ok: dict[str, float] = {}
        self.pings: dict[str, Any] = {}
        self.owner: dict[str, str] = {}  # stream -> host
        self.streams: set[str] = set(cluster.streams)
        # when each stream was last heard on the feed (monotonic; discovery windows): the ones
        # silent --reclaim-after give their places to new ids once the hosts are full
        self._heard: dict[str, float] = dict.fromkeys(self.streams, time.monotonic())
        self.retired = 0
        self.failovers: list[dict[str, Any]] = []
        self.errors: list[str] = []  # the supervision loop's recent failures (it carries on)
        self.starting: dict[str, tuple[str, Any, Any, float]] = {}  # name -> (node, handle, ping, t0)
        self._lock = threading.RLock()
        # one move of streams at a time: the supervision loop and calls such as add_streams (this
        # actor serves several at once) would otherwise both move a stream, to two hosts
        self._moving = threading.RLock()
        self._stop = threading.Event()
        self._agg = self.ray.get_actor(AGGREGATOR, namespace=NAMESPACE)
        self._curve = cluster.gateway_curve()  # the discovery socket's, when the gateways encrypt
        self._start_failures: set[tuple[str, str]] = set()  # (node, reason) of hosts that could not start, said once each
        self._sync_hosts()
        end = time.monotonic() + START_TIMEOUT_S
        while self.starting and time.monotonic() < end:  # the first hosts: deployed before this returns
            self._check_starting(block=1.0)
        self._thread = threading.Thread(target=self._loop, name="drsn-coordinator", daemon=True)
        self._thread.start()

    # -------------------------------------------------------------- hosts
    def _sync_hosts(self) -> None:
        """Start a host actor for every GPU / CPU slot that has none (a node that joined, or
        a host that died on a node still alive); never waits for it (see ``_check_starting``)."""
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        nodes = {n["NodeID"]: n for n in self.ray.nodes()}
        for node, count in host_nodes(self.ray, self.cluster.host_actors):
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
                    opts["num_gpus"] = self.cluster.gpu_share
                handle = self.host_actor.options(**opts).remote(name, self.config, self.cluster, gpu)
                with self._lock:
                    self.starting[name] = (node, handle, handle.ping.remote(), time.monotonic())

    def _check_starting(self, *, block: float = 0.0) -> None:
        """Hosts that finished starting join the ring (their share of streams moves to them)."""
        with self._lock:
            starting = dict(self.starting)
        if not starting:
            return
        ready, _ = self.ray.wait([v[2] for v in starting.values()], num_returns=len(starting), timeout=block)
        joined = False
        for name, (node, handle, ref, t0) in starting.items():
            if ref in ready:
                with self._lock:
                    self.starting.pop(name, None)
                try:
                    self.ray.get(ref)
                except Exception as exc:  # noqa: BLE001 - a host that cannot start is left out, tried again later
                    self._start_failed(name, node, start_failure(exc))
                    continue
                with self._lock:
                    self.hosts[name] = handle
                    self.host_node[name] = node
                    self.last_ok[name] = time.monotonic()
                    self.ring.add(name)
                joined = True
            elif time.monotonic() - t0 > START_TIMEOUT_S:  # its node is likely gone
                with self._lock:
                    self.starting.pop(name, None)
                self._start_failed(name, node, f"not up within {START_TIMEOUT_S:g} s (its node lost, or too "
                                               "busy to import torch and load the model?)")
                try:
                    self.ray.kill(handle, no_restart=True)
                except Exception:  # noqa: BLE001
                    pass
        if joined:
            self._rebalance()

    def _start_failed(self, name: str, node: str, reason: str) -> None:
        """A host that could not start (a key file or model missing on its node, say) is said on
        the dashboard and in the results once per node and reason: before, its node stayed without a host
        and nobody was told why."""
        if (node, reason) in self._start_failures:
            return
        self._start_failures.add((node, reason))
        message = (f"host {name} could not start on node {node[:8]}: {reason}; its streams go to the other "
                   "hosts, and it is started again from time to time")
        self.errors.append(message)
        del self.errors[:-20]
        try:
            self._agg.note.remote(message)
        except Exception:  # noqa: BLE001 - the aggregator gone too: the errors list keeps it
            pass

    def _rebalance(self, previous: Mapping[str, str] | None = None) -> None:
        """Move every stream whose ring owner changed: release first, then assign."""
        with self._moving:
            self._move(previous)

    def _move(self, previous: Mapping[str, str] | None) -> None:
        with self._lock:
            # no host beyond its --max-streams while another has room (the ring's spread is uneven)
            target = self.ring.place(self.streams, cap=self.config.max_streams or None, keep=self.owner)
            moves = {s: h for s, h in target.items() if h is not None and self.owner.get(s) != h}
            by_old: dict[str, list[str]] = {}
            for s in moves:
                old = self.owner.get(s)
                if old is not None and old in self.hosts:
                    by_old.setdefault(old, []).append(s)
            releases = [self.hosts[h].release.remote(ss) for h, ss in by_old.items()]
        for ref in releases:
            try:
                self.ray.get(ref, timeout=60)
            except Exception:  # noqa: BLE001 - a host that died while releasing: its streams restore from checkpoints
                pass
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
            self.ray.get(calls, timeout=60)

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
            self.ray.kill(handle, no_restart=True)  # a host only slow, not dead, must stop publishing
        except Exception:  # noqa: BLE001 - already gone
            pass
        self._rebalance(previous={s: host for s in lost})
        moved = {s: self.owner.get(s, "") for s in lost}
        self._agg.host_down.remote(host, moved)
        self.failovers.append({"host": host, "why": why, "detected": t_seen, "reassigned": time.monotonic(),
                               "streams": len(lost)})

    # -------------------------------------------------------------- the loop
    def _loop(self) -> None:
        next_nodes = next_discover = time.monotonic()
        while not self._stop.wait(PING_EVERY_S):
            now = time.monotonic()
            steps = [self._check_hosts, lambda _: self._check_starting()]
            if now >= next_nodes:
                next_nodes = now + 2.0
                steps.append(lambda _: self._sync_hosts())
            if self.cluster.discover and now >= next_discover:
                next_discover = now + self.cluster.discover_every_s
                steps.append(lambda _: self._discover())
            for step in steps:
                try:
                    step(now)
                except Exception as exc:  # noqa: BLE001 - e.g. a host died mid-move: the next round repairs it
                    self.errors.append(f"{time.strftime('%H:%M:%S')} {exc!r}"[:300])
                    del self.errors[:-20]

    def _check_hosts(self, now: float) -> None:
        with self._lock:
            hosts = dict(self.hosts)
        for name, handle in hosts.items():
            ref = self.pings.get(name)
            if ref is None:
                self.pings[name] = handle.ping.remote()
                continue
            ready, _ = self.ray.wait([ref], timeout=0)
            if ready:
                self.pings.pop(name, None)
                try:
                    self.ray.get(ref)
                    self.last_ok[name] = now
                except Exception as exc:  # noqa: BLE001 - RayActorError: the actor process died
                    self._fail(name, f"actor died ({type(exc).__name__})", now)
                    continue
            if now - self.last_ok.get(name, now) > self.cluster.dead_after_s:
                self._fail(name, f"no answer for {self.cluster.dead_after_s:g} s (node lost?)", now)

    def _discover(self) -> None:
        with self._lock:
            known = set(self.streams)
            # what the hosts can hold: each refuses stream ids beyond its --max-streams anyway
            room = max(0, self.config.max_streams * max(1, len(self.hosts)) - len(known))
        if self._curve is not None:
            self._curve.refresh()  # key files replaced since (a gateway's new key): the next socket takes them
        sock = gateway_socket(self.cluster.gateway, self._curve)
        try:
            new, refused = listen_for_streams(sock, self.cluster.discover_window_s, known, room, self._heard)
        finally:
            sock.close(0)
        if refused and self._reclaim(refused):
            refused = 0  # places made: the next window takes the new ids
        if refused:
            # one note on the dashboard and in the results, however often it happens
            self._agg.note.remote(f"new stream ids are not monitored: the hosts hold "
                                  f"{len(known) + len(new)} streams, --max-streams {self.config.max_streams} "
                                  "each; add hosts or raise --max-streams")
        with self._lock:
            self.streams |= new
        if new:
            self._rebalance()

    def _reclaim(self, wanted: int) -> bool:
        """Up to ``wanted`` streams not heard for --reclaim-after seconds or more (the stalest
        first) retired: released by their hosts, their checkpoints deleted, their places free
        for new ids. False when none was silent that long."""
        after = float(getattr(self.config, "reclaim_after_s", 0.0))
        if after <= 0:
            return False
        now = time.monotonic()
        with self._lock:
            stale = sorted((t, sid) for sid, t in self._heard.items() if sid in self.streams and now - t >= after)
            asks: dict[str, list[str]] = {}
            for _, sid in stale:
                host = self.owner.get(sid)
                if host is not None and host in self.hosts:
                    asks.setdefault(host, []).append(sid)
            refs = [self.hosts[h].unacknowledged.remote(ss) for h, ss in asks.items()]
        held: set[str] = set()  # an alarm nobody acknowledged would vanish unseen with its stream
        for ref in refs:
            try:
                held.update(self.ray.get(ref, timeout=60))
            except Exception:  # noqa: BLE001 - a host that died meanwhile holds no alarm here
                pass
        with self._lock:
            victims = [sid for _, sid in stale if sid not in held and sid in self.streams][:wanted]
            if not victims:
                return False
            self.streams.difference_update(victims)
            by_host: dict[str, list[str]] = {}
            for sid in victims:
                self._heard.pop(sid, None)
                host = self.owner.pop(sid, None)
                if host is not None and host in self.hosts:
                    by_host.setdefault(host, []).append(sid)
            calls = [self.hosts[h].release.remote(ss) for h, ss in by_host.items()]
            self.retired += len(victims)
        for ref in calls:
            try:
                self.ray.get(ref, timeout=60)
            except Exception:  # noqa: BLE001 - a host that died meanwhile: nothing of these streams is left there
                pass
        store = CheckpointStore(self.cluster.checkpoint_dir)
        for sid in victims:
            store.delete(sid)  # after the release's own save: a retired stream leaves nothing behind
        self._agg.note.remote(f"stream ids not heard for {after:g} s or more give their places to new ones once the "
                              f"hosts hold --max-streams {self.config.max_streams} each (--reclaim-after)")
        return True

    # -------------------------------------------------------------- calls
    def add_streams(self, streams: list[str]) -> None:
        with self._lock:
            self.streams |= set(streams)
            now = time.monotonic()
            for sid in streams:
                self._heard.setdefault(sid, now)
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
                out[name] = self.ray.get(handle.ping.remote(), timeout=10)
            except Exception:  # noqa: BLE001 - a dying host is reported as missing
                continue
        return out

    def failover_log(self) -> list[dict[str, Any]]:
        return list(self.failovers)

    def recent_errors(self) -> list[str]:
        return list(self.errors)

    def acknowledge(self, stream: str | None = None) -> int:
        with self._lock:
            hosts = dict(self.hosts)
            owner = self.owner.get(stream) if stream is not None else None
        targets = [hosts[owner]] if owner in hosts else list(hosts.values()) if stream is None else []
        return sum(self.ray.get([h.acknowledge.remote(stream) for h in targets], timeout=30))

    def latencies(self, start: bool) -> list[float]:
        with self._lock:
            hosts = list(self.hosts.values())
        parts = self.ray.get([h.latencies.remote(start) for h in hosts], timeout=60)
        return [x for p in parts for x in p]

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5.0)
        with self._lock:
            hosts = list(self.hosts.values())
        for h in hosts:
            try:
                self.ray.get(h.stop.remote(), timeout=30)
            except Exception:  # noqa: BLE001 - stopping what is left
                pass


__all__ = ["Coordinator", "PING_EVERY_S", "START_TIMEOUT_S"]


def gateway_socket(gateway: str, curve: Any = None) -> Any:
    """A SUB socket connected to the gateways at ``HOST:PORT``, subscribed to every stream, with
    ``curve`` (a client's ``curve.Curve``) where they encrypt: the discovery's listener."""
    import zmq

    from drsn_stream.sources.zmq_source import connect_socket, tcp_address

    sock = zmq.Context.instance().socket(zmq.SUB)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.SUBSCRIBE, b"")
    if curve is not None:  # a client's: nothing to stop with the socket
        curve.apply(sock)
    try:
        connect_socket(sock, tcp_address(gateway, bind=False))
    except BaseException:
        sock.close(0)
        raise
    return sock


def start_failure(exc: BaseException) -> str:
    """The line that says why an actor could not start, out of Ray's error (which wraps the
    exception its ``__init__`` raised, traceback and all): the last ``SomeError: message`` line of
    the project's own errors where there is one, else the error's first line."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    ours = [ln for ln in lines if ln.split(":", 1)[0].rsplit(".", 1)[-1] in OWN_ERRORS]
    line = ours[-1].split(":", 1)[1].strip() if ours else (lines[0] if lines else type(exc).__name__)
    return line[:400]


def listen_for_streams(sock: Any, window_s: float, known: set[str], room: int,
                       heard: dict[str, float] | None = None) -> tuple[set[str], int]:
    """The stream ids first heard on ``sock`` (a SUB socket on the gateways) within ``window_s``
    seconds, beyond ``known``: at most ``room`` of them, in the order heard, and how many more
    new ids were heard and left out. A peer on the feed that sends endless new ids (each message
    valid) would otherwise grow every host's subscriptions and the coordinator's memory for ever.
    Messages that are not the wire format are skipped. ``heard`` (optional): set to the
    monotonic time each id of ``known`` or taken was last heard."""
    import zmq

    from drsn_stream.sources.wire import WireError, decode

    new: dict[str, None] = {}
    left: set[str] = set()
    end = time.monotonic() + window_s
    while time.monotonic() < end:
        if not sock.poll(20):
            continue
        try:
            sid = decode(sock.recv_multipart(zmq.NOBLOCK)).stream_id
        except (WireError, zmq.Again):
            continue
        if heard is not None and (sid in known or sid in new):
            heard[sid] = time.monotonic()
        if sid in known or sid in new:
            continue
        if len(new) < room:
            new[sid] = None
            if heard is not None:
                heard[sid] = time.monotonic()
        elif len(left) < 1 << 16:  # counted up to a bound: a flood cannot grow this set either
            left.add(sid)
    return set(new), len(left)
