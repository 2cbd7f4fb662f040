"""Cluster mode on a real Ray cluster: 3 nodes on this machine, inside a loopback-only namespace.

``test_cluster_in_loopback_namespace`` re-runs this file under ``unshare -n`` (only ``lo``, brought
up) with Ray's telemetry off, so nothing Ray starts can reach any address but loopback; the tests
below run only there. The cluster is small (1 CPU, 100 MB object store per node): the machine is
shared. Figures (failover seconds) are printed, never asserted.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections import Counter, defaultdict
from pathlib import Path

import pytest

from tests.helpers import CWRU, NotifyManager, curve_reader, require_cwru
from tests.helpers import free_port as _free_port

pytestmark = pytest.mark.slow

IN_NETNS = os.environ.get("DRSN_TEST_NETNS") == "1"
ROOT = Path(__file__).resolve().parents[1]
NODE = {"num_cpus": 1, "node_ip_address": "127.0.0.1", "resources": {"drsn_host": 1}, "object_store_memory": 100 * 2**20}
RECORDINGS = ("12k_Drive_End_IR014_0_169.mat", "12k_Drive_End_B007_0_118.mat", "12k_Drive_End_IR007_0_105.mat",
              "12k_Drive_End_B014_0_185.mat", "12k_Drive_End_IR014_1_170.mat", "12k_Drive_End_B021_0_222.mat",
              "12k_Drive_End_IR007_1_106.mat", "12k_Drive_End_B007_1_119.mat")
inside = pytest.mark.skipif(not IN_NETNS, reason="runs inside a loopback-only network namespace, started by "
                                                 "test_cluster_in_loopback_namespace")


def test_cluster_in_loopback_namespace() -> None:
    if IN_NETNS:
        pytest.skip("already inside the namespace")
    pytest.importorskip("ray", reason="cluster mode needs Ray: pip install -e '.[cluster]'")
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        pytest.skip("needs unshare and ip (util-linux, iproute2) for a loopback-only network namespace")
    probe = subprocess.run(["unshare", "-n", "true"], capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip(f"unshare -n is not permitted here ({probe.stderr.strip()}); run as root or allow user namespaces")
    from drsn_stream.cluster.ray_app import TELEMETRY_OFF

    env = {**os.environ, **TELEMETRY_OFF, "DRSN_TEST_NETNS": "1"}
    cmd = ["unshare", "-n", "sh", "-c", 'ip link set lo up && exec "$@"', "sh",
           sys.executable, "-m", "pytest", "-q", "-x", "-s", "-p", "no:cacheprovider", "-p", "no:xdist",
           str(Path(__file__))]  # one process: the three tests share one Ray cluster
    r = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=1500)
    print(r.stdout[-8000:], r.stderr[-4000:])
    assert r.returncode == 0, f"the cluster tests failed inside the namespace:\n{r.stdout[-8000:]}\n{r.stderr[-3000:]}"
    # every test inside ran; without the real data the labels test skips, with the reason, inside too
    want = "7 passed" if CWRU.is_dir() else "6 passed"
    assert want in r.stdout, r.stdout[-2000:]


# ---------------------------------------------------------------------------------------- inside


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory):
    if not IN_NETNS:
        pytest.skip("outside the namespace")
    assert [n for _, n in socket.if_nameindex()] == ["lo"], "not a loopback-only namespace"
    from drsn_stream.cluster.ray_app import telemetry_off

    telemetry_off()
    import ray
    from ray.cluster_utils import Cluster

    # A raylet that a loaded 2-core machine keeps from answering Ray's health check within 10 s,
    # 5 times running, is declared dead (it happened while other tests ran beside these); a
    # killed raylet is still found at once (its port refuses), so the failover test is unchanged.
    c = Cluster(initialize_head=True, head_node_args={**NODE, "include_dashboard": False,
                                                      "_system_config": {"health_check_timeout_ms": 60_000}})
    workers = [c.add_node(wait=False, **NODE) for _ in range(2)]  # the two start side by side
    c.wait_for_nodes()
    yield c, workers
    ray.shutdown()
    c.shutdown()


def _publisher(port: int, specs: list[str], seconds: float, *extra: str) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "drsn_stream", "publish", "--to", f"tcp://127.0.0.1:{port}",
           "--duration", str(seconds), "--quiet", *extra]
    for s in specs:
        cmd += ["--source", s]
    return subprocess.Popen(cmd, cwd=ROOT)


def _read(path: Path) -> list[dict]:
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # the last line while it is being written
    return out


def _settle(*paths: Path, quiet_s: float = 3.0, timeout: float = 120.0) -> None:
    """Waits until the JSON lines files stop growing for ``quiet_s``: everything sent has been scored."""
    sizes, still, end = None, time.monotonic(), time.monotonic() + timeout
    while time.monotonic() < end:
        now = [p.stat().st_size if p.exists() else 0 for p in paths]
        if now != sizes:
            sizes, still = now, time.monotonic()
        elif time.monotonic() - still >= quiet_s:
            return
        time.sleep(0.5)


def _run_config(hop: int | None = None, **decision: object):
    from drsn_stream.app.pipeline import RunConfig

    return RunConfig(engine_process=False, threads=1, hop=hop, decision=dict(decision))


@inside
def test_multinode_labels_match_single_machine(cluster, tmp_path: Path) -> None:
    """3 nodes, 24 simulated + 8 replayed CWRU streams: each stream has exactly one host, all 3 hosts
    work, and every window gets the same label as the ordinary monitor gives it in the same run."""
    require_cwru()
    from drsn_stream.app.pipeline import Pipeline
    from drsn_stream.cluster.deploy import start_cluster
    from drsn_stream.cluster.ray_app import ClusterConfig
    from drsn_stream.models.artifact import read_meta
    from drsn_stream.sinks.dashboard import render_once
    from drsn_stream.sinks.jsonl import JsonlSink

    c, _ = cluster
    port = _free_port()
    sims = [f"sim/m{i}" for i in range(24)]
    recs = [f"rec/{Path(name).stem}" for name in RECORDINGS]
    specs = ["sim:bearing?machines=24&seed=5&chunk=512"] + [
        f"file:{CWRU / name}?chunk=512&loop=1&stream=rec/{Path(name).stem}" for name in RECORDINGS]
    cfg = ClusterConfig(gateway=f"127.0.0.1:{port}", checkpoint_dir=str(tmp_path / "ckpt"), streams=(*sims, *recs),
                        discover=False, jsonl=str(tmp_path / "cluster.jsonl"),
                        metrics_address=f"127.0.0.1:{_free_port()}")
    # late windows are still scored on both sides: on a loaded machine the 1-CPU nodes fall behind
    # the single monitor, and the test compares labels, not who keeps up
    run = dataclasses_replace(_run_config(), stale_ms=600_000.0)
    handle = start_cluster(run, cfg, address=c.address)
    single = Pipeline(dataclasses_replace(run, sources=(f"zmq://127.0.0.1:{port}",)),
                      sinks=[JsonlSink(tmp_path / "single.jsonl", flush_every=64)])
    single.start()
    try:
        assignment = handle.assignment()
        handle.wait_subscribed(len(sims) + len(recs))
        time.sleep(1.0)  # ZeroMQ subscriptions reach the publisher as it binds; let them settle
        pub = _publisher(port, specs, 6.0)
        assert pub.wait(timeout=120) == 0
        _settle(tmp_path / "cluster.jsonl", tmp_path / "single.jsonl")
        hosts = handle.hosts()
        url = handle.ray.get(handle.aggregator.metrics_url.remote())
        with urllib.request.urlopen(url, timeout=30) as resp:
            metrics = resp.read().decode()
        screen = render_once(handle.snapshot(), width=120)
    finally:
        handle.stop()
        single.stop()
    assert sorted(assignment) == sorted(sims + recs)  # every stream assigned, each to one host
    assert len(set(assignment.values())) == 3 and set(assignment.values()) == set(hosts)
    nodes = {info["node"] for info in hosts.values()}
    assert len(nodes) == 3, f"host actors share nodes: {hosts}"

    # one Prometheus endpoint and one dashboard for the cluster, every host in them
    labelled = {line.split('host="')[1].split('"')[0] for line in metrics.splitlines()
                if line.startswith("drsn_stream_windows_total{")}
    assert labelled == set(hosts), labelled
    assert "drsn_cluster_hosts 3.0" in metrics
    assert "streams (32)" in screen and all(h in screen for h in hosts)

    clus = [o for o in _read(tmp_path / "cluster.jsonl") if o.get("type") == "prediction"]
    ones = [o for o in _read(tmp_path / "single.jsonl") if o.get("type") == "prediction"]
    by_stream_host: dict[str, set[str]] = defaultdict(set)
    for o in clus:
        by_stream_host[o["stream"]].add(o["host"])
    assert sorted(by_stream_host) == sorted(sims + recs)
    assert all(hs == {assignment[s]} for s, hs in by_stream_host.items()), "a stream was classified on two hosts"
    # a window is known by its stream and its place on the stream's hop grid: its time is the
    # same float on both sides only when both received the stream from the same first frame
    start: dict[str, float] = {}
    for o in clus + ones:
        start[o["stream"]] = min(o["time"], start.get(o["stream"], o["time"]))
    meta = read_meta("bearing-cwru")
    hop_s = meta.hop / meta.sample_rate

    def key(o: dict) -> tuple[str, int]:
        return o["stream"], round((o["time"] - start[o["stream"]]) / hop_s)

    a = {key(o): o["label"] for o in clus}
    b = {key(o): o["label"] for o in ones}
    common = set(a) & set(b)
    print(f"\nlabels: {len(a)} windows in cluster mode, {len(b)} on one machine, {len(common)} in both")
    assert len(common) >= 0.9 * len(b) > 0
    differ = [(k, a[k], b[k]) for k in sorted(common) if a[k] != b[k]]
    assert not differ, f"{len(differ)} windows labelled differently, e.g. {differ[:5]}"


@inside
def test_stream_ids_replaced_at_the_gateways_give_their_places_to_the_new_ones(cluster, tmp_path: Path) -> None:
    """--max-streams 2 on 3 hosts: 6 streams fill the cluster; the gateway then sends 6 new ids
    instead (restarted under new names). Discovery retires the old ones once they have not been
    heard for --reclaim-after, deletes their checkpoints and takes the new ids, which are
    monitored; before, the new ids were refused for the rest of the run."""
    from drsn_stream.cluster.deploy import start_cluster
    from drsn_stream.cluster.ray_app import ClusterConfig
    from drsn_stream.cluster.state import CheckpointStore

    c, _ = cluster
    port = _free_port()
    old, new = [f"sim/m{i}" for i in range(6)], [f"sim/m{i}" for i in range(6, 12)]
    cfg = ClusterConfig(gateway=f"127.0.0.1:{port}", checkpoint_dir=str(tmp_path / "ckpt"),
                        jsonl=str(tmp_path / "cluster.jsonl"))
    run = dataclasses_replace(_run_config(), stale_ms=600_000.0, max_streams=2, reclaim_after_s=2.0)
    handle = start_cluster(run, cfg, address=c.address)
    pub = None

    def scored() -> set[str]:
        return {o["stream"] for o in _read(tmp_path / "cluster.jsonl") if o.get("type") == "prediction"
                and o["stream"] in new}

    why: dict = {}
    try:
        # healthy machines: a stream silent in an alarm nobody acknowledged keeps its place
        pub = _publisher(port, ["sim:bearing?machines=6&seed=3&fault=none"], 5.0)
        assert pub.wait(timeout=120) == 0
        before = handle.assignment()
        pub = _publisher(port, ["sim:bearing?machines=6&first=6&seed=4"], 120.0)
        # the ring spreads 6 ids unevenly, but no host is given more than its --max-streams while
        # another has room: every new id has a host that takes it and has results
        deadline, after, want = time.monotonic() + 100, {}, None
        while time.monotonic() < deadline:
            after = handle.assignment()
            if sorted(after) == sorted(new):
                want = len(new)
                if len(scored()) >= want:
                    break
            time.sleep(0.5)
        else:  # what a failure needs: each host's streams, subscriptions and errors
            why = {h: {k: v for k, v in d.items() if k in ("owned", "subscribed", "errors", "foreign_frames")}
                   for h, d in handle.summaries().items()}
    finally:
        if pub is not None:
            pub.kill()
            pub.wait()
        handle.stop()
    assert sorted(before) == old, before
    assert sorted(after) == sorted(new), after
    assert max(Counter(after.values()).values()) <= 2, after
    assert not set(old) & set(CheckpointStore(tmp_path / "ckpt").streams())
    objs = _read(tmp_path / "cluster.jsonl")
    assert [o for o in objs if o.get("type") == "note" and "--reclaim-after" in o.get("message", "")]
    assert want is not None and len(scored()) >= want, (scored(), after, why)


def dataclasses_replace(obj, **kw):
    import dataclasses

    return dataclasses.replace(obj, **kw)


def _alarm_checks(events: list[dict], streams: list[str], acked: set[str]) -> None:
    """Per stream: one raise to ALERT, the chain of changes unbroken (each 'from' is the previous
    'to'), one acknowledgement where one was given, every id once."""
    ids = Counter(e["id"] for e in events)
    assert all(n == 1 for n in ids.values()), [i for i, n in ids.items() if n > 1]
    per: dict[str, list[dict]] = defaultdict(list)
    for e in events:
        per[e["stream"]].append(e)
    for sid in streams:
        chain = sorted(per[sid], key=lambda e: int(e["id"].split("|")[2]))
        raises = [e for e in chain if e["from"] == "NORMAL" and e["to"] != "NORMAL"]
        assert len(raises) == 1, (sid, chain)
        for prev, nxt in zip(chain, chain[1:]):
            assert nxt["from"] == prev["to"], (sid, chain)
        assert [int(e["id"].split("|")[2]) for e in chain] == list(range(len(chain))), (sid, chain)


@inside
def test_failover_actor_then_node(cluster, tmp_path: Path) -> None:
    """kill -9 a host actor, then remove a whole worker node: the streams resume on the survivors,
    latched alarms and acknowledgements survive, no alarm event is lost or duplicated, gaps show."""
    from drsn_stream.cluster.deploy import start_cluster
    from drsn_stream.cluster.ray_app import ClusterConfig

    c, workers = cluster
    port = _free_port()
    n = 32
    streams = [f"sim/m{i}" for i in range(n)]
    pub = _publisher(port, [f"sim:bearing?machines={n}&fault=inner_014&chunk=2048"], 240.0)
    jsonl = tmp_path / "cluster.jsonl"
    cfg = ClusterConfig(gateway=f"127.0.0.1:{port}", checkpoint_dir=str(tmp_path / "ckpt"), discover=True,
                        jsonl=str(jsonl), checkpoint_every_s=2.0, dead_after_s=3.0)
    # a window (and a frame) every 2048 samples, not 512: the hosts' model and ingest run a quarter
    # as often on the shared 1-CPU nodes, and hand-over, latches and gaps do not depend on it
    handle = start_cluster(_run_config(hop=2048, latching=True, danger_after_s=None), cfg, address=c.address)
    report = []
    try:
        _until(lambda: len(handle.assignment()) == n, 60, "all 32 streams discovered and assigned")
        _until(lambda: _levels(handle, streams) == {"ALERT"}, 90, "every stream in ALERT")
        acked = set(streams[::2])
        for sid in sorted(acked):
            handle.acknowledge(sid)
        _until(lambda: all(not r.unacknowledged for r in handle.snapshot().rows if r.stream_id in acked), 30,
               "acknowledgements shown")

        # 1. kill -9 one host actor (the one on the head node)
        hosts = handle.hosts()
        head = c.head_node.node_id
        victim = next(h for h, i in hosts.items() if i["node"] == head)
        moved = sorted(s for s, h in handle.assignment().items() if h == victim)
        t_kill = time.time()
        os.kill(hosts[victim]["pid"], signal.SIGKILL)
        resumed = _wait_resumed(handle, moved, victim, t_kill)
        report.append(f"actor kill -9: {len(moved)} streams resumed on survivors in {resumed:.2f} s")
        _check_state(handle, streams, acked)

        # the node is alive: a replacement host starts there and takes its share back
        _until(lambda: len(handle.hosts()) == 3, 180, "a replacement host on the head node")
        time.sleep(3.0)

        # 2. a whole worker node goes away
        hosts = handle.hosts()
        dead_node = workers[0]
        victim = next(h for h, i in hosts.items() if i["node"] == dead_node.node_id)
        moved = sorted(s for s, h in handle.assignment().items() if h == victim)
        t_kill = time.time()
        c.remove_node(dead_node, allow_graceful=False)
        resumed = _wait_resumed(handle, moved, victim, t_kill)
        report.append(f"node lost: {len(moved)} streams resumed on survivors in {resumed:.2f} s")
        time.sleep(2.0)
        _check_state(handle, streams, acked)
        assignment = handle.assignment()
        assert sorted(assignment) == sorted(streams) and victim not in assignment.values()
        failovers = handle.failovers()
    finally:
        handle.stop()
        pub.kill()
        pub.wait()
    print("\n" + "\n".join(report))
    for f in failovers:
        print(f"failover {f['host']}: {f['why']}; detected +reassigned in {f['reassigned'] - f['detected']:.2f} s")
    objs = _read(jsonl)
    _alarm_checks([o for o in objs if o.get("type") == "alarm"], streams, acked)
    gaps = [o for o in objs if o.get("type") == "gap"]
    assert {g["stream"] for g in gaps} >= set(moved), "a moved stream's gap is not in the results"
    assert all(g["seconds"] > 0 for g in gaps)
    assert any(o.get("type") == "note" and "lost" in o.get("message", "") for o in objs)


def _until(cond, timeout: float, what: str) -> None:
    end = time.time() + timeout
    while time.time() < end:
        try:
            if cond():
                return
        except Exception:  # noqa: BLE001 - actors restarting: ask again
            pass
        time.sleep(0.25)
    raise AssertionError(f"not within {timeout:g} s: {what}")


def _levels(handle, streams: list[str]) -> set[str]:
    rows = {r.stream_id: r for r in handle.snapshot().rows}
    return {rows[s].level if s in rows else "missing" for s in streams}


def _wait_resumed(handle, moved: list[str], victim: str, t_kill: float) -> float:
    """Seconds from the kill until every moved stream had a result from another host."""
    def resumed_at(sid: str, seen: dict) -> float | None:
        return next((t for h, t in seen.get(sid, ()) if h != victim and t >= t_kill), None)

    def done() -> bool:
        seen = handle.ray.get(handle.aggregator.handovers.remote())
        return all(resumed_at(sid, seen) is not None for sid in moved)

    _until(done, 120, f"the streams of {victim} resume elsewhere")
    seen = handle.ray.get(handle.aggregator.handovers.remote())
    return max(resumed_at(sid, seen) for sid in moved) - t_kill


def _check_state(handle, streams: list[str], acked: set[str]) -> None:
    """Every stream shown (summaries come every second), still ALERT, acknowledged as before."""
    def bad() -> list:
        rows = {r.stream_id: r for r in handle.snapshot().rows}
        return [(s, rows.get(s)) for s in streams if s not in rows or rows[s].level != "ALERT"
                or rows[s].unacknowledged != (s not in acked)]

    end = time.time() + 15.0
    while bad() and time.time() < end:
        time.sleep(0.25)
    assert not bad(), bad()[:3]


@inside
def test_cluster_command_shows_every_stream_with_its_host(cluster, tmp_path: Path) -> None:
    """`drsn-stream cluster --address ... --once --host-actors 2`: joins the running cluster, starts
    two host actors on every node, discovers the gateway's streams, prints one dashboard with a
    host column."""
    from drsn_stream.cluster.ray_app import init_ray

    c, _ = cluster
    nodes = [n["NodeID"] for n in init_ray(c.address).nodes() if n.get("Alive")]
    port = _free_port()
    pub = _publisher(port, ["sim:bearing?machines=6&seed=2"], 240.0)
    try:
        r = subprocess.run([sys.executable, "-m", "drsn_stream", "cluster", "--address", c.address, "--source",
                            f"zmq://127.0.0.1:{port}", "--checkpoint-dir", str(tmp_path / "ck"), "--once",
                            "--duration", "6", "--host-actors", "2"], cwd=ROOT, capture_output=True, text=True,
                           timeout=600)
    finally:
        pub.kill()
        pub.wait()
    assert r.returncode == 0, r.stderr[-3000:]
    assert "streams (6)" in r.stdout and " host " in r.stdout, r.stdout
    hosts = r.stderr.split("host(s) up: ")[1].split(";")[0].split(", ")
    # host names are h<node>-<slot>: two slots on every node that got hosts (the worker removed by
    # the failover test above may still be listed alive for a while), each a process of its own
    slots: dict[str, set[str]] = defaultdict(set)
    for h in hosts:
        node, slot = h.split(".")[0].split("-")
        slots[node].add(slot)
    assert len(slots) >= 2 and all(v == {"0", "1"} for v in slots.values()), hosts
    assert set(slots) <= {f"h{n[:6]}" for n in nodes}, (hosts, nodes)
    assert any(h[:8] in r.stdout for h in hosts), (hosts, r.stdout)


@inside
def test_the_cluster_command_under_systemd_says_ready_status_watchdog_and_stopping(cluster, tmp_path: Path) -> None:
    """`drsn-stream cluster` in a `Type=notify` unit with `WatchdogSec=`: READY=1 once its hosts
    are up, STATUS lines with the hosts reporting and the streams' alarms, WATCHDOG=1 while the
    aggregator answers, STOPPING=1 at the end; all from the command's own process, none from
    the processes Ray starts."""
    c, _ = cluster
    port = _free_port()
    manager = NotifyManager()
    env = dict(os.environ, NOTIFY_SOCKET=manager.name, WATCHDOG_USEC="4000000")
    env.pop("DRSN_STREAM_DURATION", None)
    pub = _publisher(port, ["sim:bearing?machines=3&seed=4"], 240.0)
    try:
        proc = subprocess.Popen([sys.executable, "-m", "drsn_stream", "cluster", "--address", c.address, "--source",
                                 f"zmq://127.0.0.1:{port}", "--checkpoint-dir", str(tmp_path / "ck"), "--every", "2s",
                                 "--duration", "10"], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        out, err = proc.communicate(timeout=600)
        time.sleep(0.3)
    finally:
        pub.kill()
        pub.wait()
        manager.close()
    assert proc.returncode == 0, err[-3000:]
    keys = [next(iter(m[2])) for m in manager.messages]
    assert keys[0] == "READY" and manager.messages[0][2]["STATUS"].startswith("ready: "), manager.messages[:2]
    assert keys[-1] == "STOPPING" and keys.count("READY") == 1, keys
    assert {pid for _, pid, _ in manager.messages} == {proc.pid}  # Ray's processes never got the socket
    statuses = [m[2]["STATUS"] for m in manager.messages[1:-1] if "STATUS" in m[2]]
    assert any("host(s) reporting" in s and " streams: " in s and "windows/s" in s for s in statuses), statuses
    assert manager.with_key("WATCHDOG"), manager.messages
    assert ", host " in out  # the --every rows, each with its host, reached stdout as well


@inside
def test_the_cluster_reads_an_encrypted_gateway_and_encrypts_its_feed(cluster, tmp_path: Path) -> None:
    """A gateway with CURVE and an allow list, read by `drsn-stream cluster` whose source holds its
    public key and an allowed key pair; the cluster's --publish feed encrypted with --publish-curve-key:
    a reader with the feed's public key gets every stream's results, one without gets nothing."""
    from drsn_stream.sources.curve import available, make_keys

    if not available():
        pytest.skip("this libzmq has no CURVE")
    c, _ = cluster
    keys, allowed = tmp_path / "keys", tmp_path / "allowed"
    make_keys(str(keys), ["gw", "mon", "feed"])
    allowed.mkdir()
    shutil.copy(keys / "mon.key", allowed / "mon.key")
    port, feed = _free_port(), _free_port()
    pub = _publisher(port, ["sim:bearing?machines=3&seed=5"], 240.0, "--curve-key", str(keys / "gw.key_secret"),
                     "--curve-allow", str(allowed))
    # readers of the feed: with its public key; in plain text
    readers = [curve_reader(feed, key, b"prediction/") for key in (keys / "feed.key", None)]
    got: list[list[str]] = [[], []]  # the streams of the results each reader received
    try:
        proc = subprocess.Popen([sys.executable, "-m", "drsn_stream", "cluster", "--address", c.address, "--source",
                                 f"zmq://127.0.0.1:{port}?curve_server={keys / 'gw.key'}&curve_key={keys / 'mon.key_secret'}",
                                 "--checkpoint-dir", str(tmp_path / "ck"), "--publish", f"tcp://127.0.0.1:{feed}",
                                 "--publish-curve-key", str(keys / "feed.key_secret"), "--once", "--duration", "8"],
                                cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        while proc.poll() is None:
            for sock, seen in zip(readers, got, strict=True):
                while sock.poll(0):
                    seen.append(sock.recv_multipart()[0].decode().split("/", 1)[1])
            time.sleep(0.05)
        out, err = proc.communicate(timeout=60)
    finally:
        pub.kill()
        pub.wait()
        for sock in readers:
            sock.close(0)
    assert proc.returncode == 0, err[-3000:]
    assert "streams (3)" in out, out
    assert set(got[0]) == {"sim/m0", "sim/m1", "sim/m2"}, Counter(got[0])
    assert got[1] == [], "a reader without the feed's key received results"


@inside
def test_a_host_that_cannot_start_is_said_with_its_reason(cluster, tmp_path: Path) -> None:
    """A model file the hosts cannot load (here on every node; in life, say, one node without the
    file): no host starts, and the dashboard and the results say why, once per node, instead of
    a cluster that waits with idle nodes and no word."""
    c, _ = cluster
    bad = tmp_path / "m.pt"
    bad.write_bytes(b"not a model")
    r = subprocess.run([sys.executable, "-m", "drsn_stream", "cluster", "--address", c.address, "--source",
                        f"zmq://127.0.0.1:{_free_port()}", "--checkpoint-dir", str(tmp_path / "ck"), "--model", str(bad),
                        "--jsonl", str(tmp_path / "out.jsonl"), "--once", "--duration", "3"], cwd=ROOT,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "0 host(s) up" in r.stderr and "could not start on node" in r.stdout, r.stdout
    notes = [o["message"] for o in _read(tmp_path / "out.jsonl") if o.get("type") == "note"]
    said = [m for m in notes if "could not start on node" in m]
    assert said and all(f"{bad}: not a TorchScript archive" in m for m in said), notes
    nodes = [m.split("on node ")[1].split(":")[0] for m in said]
    assert len(nodes) == len(set(nodes)), said  # once per node, however often it is tried again
