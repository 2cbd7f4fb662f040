"""``drsn-stream cluster``: the live monitor on a Ray cluster, host actors per GPU / CPU node.

    drsn-stream cluster --address HEAD:6379 --source zmq://gateway:5555 --checkpoint-dir /shared/drsn \\
        --jsonl results.jsonl --metrics-address 0.0.0.0:9464

Takes the monitor's options (``drsn-stream run --help``; its ``--config`` TOML included); the one
source must be the gateways' ZeroMQ PUB address. Without ``--address`` a one-node Ray is started
here (to try it out). See docs/cluster.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import sys
import time
from typing import Any

from drsn_stream.app.cli import UNATTENDED_EVERY_S, config_from_args, print_config
from drsn_stream.app.cli import add_arguments as add_run_arguments
from drsn_stream.app.runconfig import RunConfig
from drsn_stream.config import arg_number
from drsn_stream.errors import ConfigError
from drsn_stream.sources.base import parse_spec
from drsn_stream.types import Event


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_run_arguments(parser)
    g = parser.add_argument_group("cluster")
    g.add_argument("--address", metavar="HOST:PORT|auto",
                   help="the Ray cluster to join (default: start a one-node Ray here)")
    g.add_argument("--checkpoint-dir", metavar="DIR", default="drsn-checkpoints",
                   help="per-stream state, a directory every node can read and write (default ./drsn-checkpoints)")
    g.add_argument("--stream", action="append", metavar="ID",
                   help="a stream id to assign from the start (repeatable; others are discovered)")
    g.add_argument("--no-discover", action="store_true", help="only the --stream ids, never listen for new ones")
    g.add_argument("--dead-after", type=arg_number(float, above=0, most=3600), default=3.0, metavar="S",
                   help="a host silent this long is taken for lost and its streams move (default 3 s)")
    g.add_argument("--host-actors", type=int, default=1, metavar="N",
                   help="host actors per GPU (per node without GPUs), each a process with its share of the "
                        "streams: on a GPU host one process's ingest and decisions, not the GPU, are the "
                        "limit (default 1; docs/cluster.md)")


def gateway_of(sources: tuple[str, ...]) -> tuple[str, tuple[tuple[str, str], ...]]:
    """The one ``zmq://HOST:PORT[?K=V...]`` source as (``HOST:PORT``, its options), key files'
    paths made absolute (the hosts read them on their own nodes, from their own directories);
    anything else is an error saying what to give."""
    if len(sources) != 1 or parse_spec(sources[0]).kind != "zmq":
        raise ConfigError("cluster mode reads the sensor gateways' ZeroMQ PUB socket: give exactly one "
                          "--source zmq://HOST:PORT (publish other sources with `drsn-stream publish`)")
    spec = parse_spec(sources[0])
    if "topic" in spec.options:
        raise ConfigError("cluster mode subscribes each host to the streams it owns: topic= does not apply to "
                          "its --source (leave it out, or run one monitor on the streams of that topic)")
    if "until_eos" in spec.options:
        raise ConfigError("until_eos= does not apply to cluster mode: a host's streams move between hosts, and the "
                          "hosts run until the command stops (--duration, or q / Ctrl-C)")
    if "curve_allow" in spec.options:
        raise ConfigError("curve_allow= is for a reader that binds (zmq+bind://); the cluster's hosts connect to "
                          "the gateways: give curve_server=NAME.key (and curve_key=NAME.key_secret where the "
                          "gateways keep an allow list)")
    options = {k: (os.path.abspath(v) if k.startswith("curve_") and v else v) for k, v in spec.options.items()}
    return spec.target, tuple(sorted(options.items()))


def check_here(cluster: Any) -> None:
    """The gateway source's options and every key file, checked on this node before Ray starts:
    a wrong option or a missing key is a ConfigError here, not a host that never starts."""
    from drsn_stream.sources import make_source
    from drsn_stream.sources.curve import Curve

    make_source(cluster.gateway_spec)  # makes no socket: options and CURVE files only
    if cluster.publish_curve_key or cluster.publish_curve_allow:
        Curve(key=cluster.publish_curve_key, allow=cluster.publish_curve_allow, what="--publish-curve-key")


def run(args: argparse.Namespace) -> int:
    cfg = config_from_args(args)
    if args.print_config:
        print_config(cfg)
        return 0
    gateway, gateway_options = gateway_of(cfg.sources)
    out = cfg.sinks  # written on the head node (the aggregator), not by the hosts
    if out.jsonl == "-":
        raise ConfigError("cluster mode writes --jsonl on the head node (the aggregator): give a file path, "
                          "or --publish tcp://HOST:PORT for a live feed")
    if cfg.engine_process is None:  # a host actor is already a process of its own per node
        cfg = dataclasses.replace(cfg, engine_process=False)
    from drsn_stream.cluster.deploy import start_cluster
    from drsn_stream.cluster.ray_app import ClusterConfig

    cluster = ClusterConfig(
        gateway=gateway,
        checkpoint_dir=os.path.abspath(args.checkpoint_dir),
        streams=tuple(args.stream or ()),
        discover=not args.no_discover,
        dead_after_s=args.dead_after,
        host_actors=args.host_actors,
        jsonl=os.path.abspath(out.jsonl) if out.jsonl else None,
        publish=out.publish,
        metrics_address=out.metrics_address,
        webhook=out.webhook,
        webhook_digest=out.webhook_digest,
        gateway_options=gateway_options,
        publish_curve_key=os.path.abspath(out.publish_curve_key) if out.publish_curve_key else None,
        publish_curve_allow=os.path.abspath(out.publish_curve_allow) if out.publish_curve_allow else None,
    )
    check_here(cluster)
    from drsn_stream.app.service import Notifier

    service = Notifier.from_env()  # under systemd (Type=notify); taken before Ray starts its processes
    try:
        handle = start_cluster(cfg, cluster, address=args.address)
        hosts = handle.hosts()
        up = (f"{len(hosts)} host(s) up: {', '.join(sorted(hosts))}" if hosts else
              "0 host(s) up (the dashboard's notes say why a host could not start; they are tried again)")
        print(f"drsn-stream cluster: {up}; gateway {gateway}",
              file=sys.stderr, flush=True)
        try:
            if args.once:
                time.sleep(cfg.duration or 6.0)
                from drsn_stream.sinks.dashboard import render_once

                print(render_once(handle.snapshot(), width=120))
                return 0
            if service is not None:
                service.ready(f"ready: {len(hosts)} host(s) up; gateway {gateway}")
                service.watch(*_service_views(handle))
            _watch(handle, args, cfg)
        finally:
            if service is not None:
                service.stopping()
            _print_failovers(handle)
            handle.stop()
            handle.ray.shutdown()
    finally:
        if service is not None:
            service.close()
    return 0


def _service_views(handle: Any) -> tuple[Any, Any]:
    """(alive, status) for the notifier: the status line of the aggregator's snapshot with its
    hosts, and alive while that snapshot came within the watchdog's interval (an aggregator or a
    head node that stopped answering is restarted by systemd)."""
    from drsn_stream.app.service import status_line

    answered = [time.monotonic()]

    def status() -> str:
        snap = handle.snapshot()  # raises after Ray's timeout: no status, no watchdog ping
        answered[0] = time.monotonic()
        hosts = len({row.host for row in snap.rows if row.host})
        return f"{hosts} host(s) reporting; {status_line(snap)}"

    def alive(interval_s: float) -> bool:
        return time.monotonic() - answered[0] < interval_s

    return alive, status


def _watch(handle: Any, args: argparse.Namespace, cfg: RunConfig) -> None:
    import threading

    from drsn_stream.sinks.lines import format_line, row_line

    quit_event = threading.Event()
    end = None if cfg.duration is None else time.monotonic() + cfg.duration
    headless = cfg.sinks.headless
    every = cfg.sinks.every
    if not headless and not sys.stdout.isatty():  # as the monitor: no dashboard where it cannot refresh
        headless, every = True, UNATTENDED_EVERY_S
    next_rows = time.monotonic() + every if every is not None else math.inf
    dashboard = None
    if not headless and sys.stdout.isatty():
        from drsn_stream.sinks.dashboard import Dashboard

        dashboard = Dashboard(handle.snapshot, refresh_per_second=args.refresh or 1.0, on_ack=handle.acknowledge,
                              quit_event=quit_event, keys=sys.stdin.isatty(), screen=False).start()
    last: tuple[Any, ...] | None = None
    try:
        while not quit_event.is_set() and (end is None or time.monotonic() < end):
            time.sleep(1.0)
            if dashboard is None and headless:
                snap = handle.snapshot()
                fresh, last = unseen(snap.events, last)
                lines = [line for e in fresh if (line := format_line(e.to_json())) is not None]
                if time.monotonic() >= next_rows:  # --every: each stream's state now, from the hosts' rows
                    lines += [row_line(row, snap.time) for row in snap.rows]
                    next_rows = time.monotonic() + (every or math.inf)
                if lines:
                    print("\n".join(lines), flush=True)
    except KeyboardInterrupt:
        pass
    finally:
        if dashboard is not None:
            dashboard.stop()


def unseen(events: tuple[Event, ...], last: tuple[Any, ...] | None) -> tuple[list[Event], tuple[Any, ...] | None]:
    """The events of a snapshot's bounded log after the one last printed (``last``: its key), and
    the key of the newest. All of them where that one has left the log (counting them stopped the
    lines once the log was full: its length stays at its bound)."""
    keys = [(e.time, e.type, e.stream_id, repr(e.data)) for e in events]
    start = 0
    if last is not None:
        for i in range(len(keys) - 1, -1, -1):
            if keys[i] == last:
                start = i + 1
                break
    return list(events[start:]), (keys[-1] if keys else last)


def _print_failovers(handle: Any) -> None:
    try:
        for f in handle.failovers():
            print(f"drsn-stream cluster: host {f['host']} lost ({f['why']}); {f['streams']} streams moved in "
                  f"{f['reassigned'] - f['detected']:.2f} s", file=sys.stderr)
    except Exception:  # noqa: BLE001 - the summary must not hide the run's own outcome
        pass
