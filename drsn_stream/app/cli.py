"""``drsn-stream [run]``: the live monitor's command line."""

from __future__ import annotations

import argparse
import gc
import os
import sys
from dataclasses import dataclass
from typing import Any

from drsn_stream.app.pipeline import Pipeline, RunConfig
from drsn_stream.config import check_keys, check_sections, from_table, read_toml
from drsn_stream.dsp.envelope import EnvelopeSettings, machine_for
from drsn_stream.errors import ConfigError
from drsn_stream.monitor.baseline import parse_duration
from drsn_stream.monitor.decision import DecisionConfig
from drsn_stream.monitor.health import HealthConfig
from drsn_stream.sinks import Sink, make_sink
from drsn_stream.speech.detector import DetectorConfig

DURATION_ENV = "DRSN_STREAM_DURATION"  # lets a script end a command it runs as written (CI)


def _env_duration() -> float | None:
    text = os.environ.get(DURATION_ENV, "").strip()
    if not text:
        return None
    try:
        return float(text)
    except ValueError:
        raise ConfigError(f"{DURATION_ENV}={text!r} is not a number of seconds") from None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    a = parser.add_argument
    a("--source", "-s", action="append", metavar="SPEC",
      help="KIND[:TARGET][?key=value&...]: sim (default), sim:bearing?machines=8&noise=pink&snr=0, sim:speech, "
           "file:PATH, zmq://HOST:PORT, zmq+bind://HOST:PORT, zmq+pull://HOST:PORT, mic, mic:DEVICE?rate=48000. "
           "Repeat for several sources at once.")
    a("--model", "-m", help="built-in model name or path of an exported .pt (default: bearing-cwru, or digits-fsdd "
                            "for mic and sim:speech)")
    a("--config", "-c", help="TOML run configuration (see configs/); flags override it")
    a("--duration", type=float, default=_env_duration(),
      help=f"stop after this many seconds (default: ${DURATION_ENV}, else run until stopped)")
    a("--device", choices=["auto", "cpu", "cuda"], help="where the model runs (default auto)")
    a("--headless", action="store_true", help="no dashboard: one readable line per decision on stdout")
    a("--jsonl", metavar="FILE|-", help="write JSON lines (predictions, alarms, health, detections, stats)")
    a("--publish", metavar="tcp://HOST:PORT", help="publish the same objects on a ZeroMQ PUB socket")
    a("--once", action="store_true", help="print one dashboard snapshot after a short warm-up and exit")
    a("--fast", action="store_true", help="replay files as fast as possible (no pacing, no stale drops)")
    a("--hop", type=int, help="override the model's hop (samples at the model's rate)")
    a("--max-batch", type=int, help="largest micro-batch (default: 64 on the CPU, 256 on CUDA and with --fast)")
    a("--max-wait-ms", type=float, help="longest a window waits for its batch (default 20 ms; a batch leaves "
                                        "earlier when the sources have nothing more ready)")
    a("--no-idle-flush", action="store_true",
      help="batches leave only when full or after --max-wait-ms, never early when the sources go quiet")
    a("--eager-batch", type=int, metavar="N",
      help="while the engine is idle, a batch leaves as soon as N windows wait (default: 64 on the CPU, "
           "off on CUDA and with --fast; 0: off)")
    a("--stale-ms", type=float, help="drop windows older than this (default 2000 ms)")
    a("--max-streams", type=int, metavar="N",
      help="most stream ids the monitor takes (default 4096); frames of new ids beyond are refused and counted")
    a("--fp16", choices=["auto", "on", "off"], help="half precision on CUDA where verified (default auto)")
    a("--threads", type=int, help="torch CPU threads (default: all cores but one)")
    a("--cpu-layout", choices=["auto", "off"],
      help="CPU: run 1-D networks in their channels-last form, after checking it agrees with the model on its "
           "validation windows (default auto; off: exactly as stored)")
    a("--engine-process", choices=["auto", "on", "off"],
      help="CPU: run the model in its own process, so it shares no interpreter lock with ingest (default auto: "
           "on with 2 or more cores)")
    a("--ingest-procs", type=int, metavar="N",
      help="read each zmq:// (SUB) source with N processes, each taking the streams whose id hashes to it "
           "and feeding the engine through shared memory (default: 1 below 8 cores, else half the cores, at "
           "most 8); sim, file, mic, zmq+bind and PULL sources keep their ingest thread")
    a("--pin-cpus", action="store_true",
      help="with the engine process: give it a core of its own and keep ingest on the others (the default "
           "when it runs one torch thread)")
    a("--no-pin-cpus", action="store_true", help="let the scheduler place the engine process and the monitor")
    a("--capture", metavar="DIR", help="write raw samples around each alarm (WAV + JSON) into DIR")
    a("--metrics-address", metavar="HOST:PORT",
      help="serve Prometheus metrics at http://HOST:PORT/metrics (e.g. 127.0.0.1:9464; 0.0.0.0:9464 lets "
           "other hosts scrape)")
    a("--metrics-port", type=int, metavar="PORT", help="shorthand for --metrics-address 127.0.0.1:PORT")
    a("--refresh", type=float, default=None, help="dashboard refreshes per second (default 4)")
    a("--latch", action="store_true", help="alarms stay latched until acknowledged with `a`")
    a("--bearing", metavar="NAME", help="bearing geometry for the envelope evidence of every stream: 6205 (= cwru-de); "
                                      "other bearings: [machine] bpfo/bpfi/bsf/ftf in --config")
    a("--rpm", type=float, help="shaft speed (rpm) for the envelope evidence of every stream (a source's ?rpm= wins)")
    a("--baseline", metavar="PROFILE", help="score every window against the streams' learned normal (a profile from "
                                           "`drsn-stream baseline learn`): predictions gain `anomaly`, 1.0 = threshold")
    a("--learn", metavar="DURATION", help="learn each stream without a baseline for DURATION (e.g. 10m, 90s) of its "
                                         "own data, then monitor it for deviations")


SECTIONS = ("run", "decision", "health", "detector", "capture", "machine", "envelope")


@dataclass(frozen=True)
class _CaptureTable:
    """The ``[capture]`` table: the same settings as ``--capture DIR`` and the RunConfig's capture_* fields."""

    dir: str | None = None
    pre_s: float = 5.0
    post_s: float = 5.0


def config_from_args(args: argparse.Namespace) -> RunConfig:
    table: dict[str, Any] = {}
    extra: dict[str, dict[str, Any]] = {}
    if args.config:
        doc = read_toml(args.config)
        where = args.config
        check_sections(doc, SECTIONS, where)
        table = check_keys(doc.get("run", {}), RunConfig, f"{where} [run]")
        for name, cls in (("decision", DecisionConfig), ("health", HealthConfig), ("detector", DetectorConfig),
                          ("envelope", EnvelopeSettings)):
            if name in doc:
                from_table(cls, doc[name], f"{where} [{name}]")  # refused here, not when the stage starts
                extra[name] = dict(doc[name])
        if "machine" in doc:
            extra["machine"] = dict(doc["machine"])
        if "capture" in doc:
            cap = check_keys(doc["capture"], _CaptureTable, f"{where} [capture]")
            table.update({f"capture_{k}" if k != "dir" else "capture_dir": v for k, v in cap.items()})
        if "sources" in table:
            table["sources"] = tuple(table["sources"])
    flags = {
        "sources": tuple(args.source) if args.source else None,
        "model": args.model,
        "duration": args.duration,
        "device": args.device,
        "fast": True if args.fast else None,
        "hop": args.hop,
        "max_batch": args.max_batch,
        "max_wait_ms": args.max_wait_ms,
        "stale_ms": args.stale_ms,
        "max_streams": getattr(args, "max_streams", None),
        "fp16": args.fp16,
        "threads": args.threads,
        "cpu_layout": args.cpu_layout,
        "engine_process": {"on": True, "off": False}.get(args.engine_process or "auto"),
        "ingest_procs": args.ingest_procs,
        "pin_cpus": True if args.pin_cpus else (False if args.no_pin_cpus else None),
        "capture_dir": args.capture,
        "idle_flush": False if args.no_idle_flush else None,
        "eager_batch": args.eager_batch,
        "baseline": getattr(args, "baseline", None),
        "learn_s": parse_duration(args.learn) if getattr(args, "learn", None) else None,
    }
    table.update({k: v for k, v in flags.items() if v is not None})
    if args.latch:
        extra.setdefault("decision", {})["latching"] = True
    if args.bearing:
        machine = extra.setdefault("machine", {})
        for key in ("bpfo", "bpfi", "bsf", "ftf"):
            machine.pop(key, None)
        machine["bearing"] = args.bearing
    if args.rpm is not None:
        machine = extra.setdefault("machine", {})
        machine.pop("shaft_hz", None)
        machine["rpm"] = args.rpm
    if "machine" in extra:  # a wrong [machine] table fails here, not per stream in the running monitor
        machine_for("", extra["machine"]).geometry()
        for entry in extra["machine"].get("streams", ()) or ():
            m = machine_for(str(entry.get("match", "")), extra["machine"])
            m.geometry()
            m.speed_hz()
    if "envelope" in extra:
        EnvelopeSettings(**extra["envelope"])
    cfg = RunConfig(**table, **extra)
    if not cfg.sources:
        raise ConfigError("no source given; try --source sim")
    return cfg


def run(args: argparse.Namespace) -> int:
    cfg = config_from_args(args)
    sinks: list[Sink] = []
    interactive = sys.stdout.isatty() and not args.headless and args.jsonl != "-"
    address = _metrics_address(args)  # a bad address fails before the model loads
    if args.jsonl:
        sinks.append(make_sink("jsonl", args.jsonl))
    if args.publish:
        sinks.append(make_sink("zmq", args.publish))
    # with --jsonl - stdout carries JSON lines only; every line for people goes to stderr
    human = sys.stderr if args.jsonl == "-" else sys.stdout
    if args.headless:
        # with --jsonl - stdout carries JSON only, so readable lines go to stderr
        sinks.append(make_sink("lines", "stderr" if args.jsonl == "-" else "-"))
    address = _metrics_address(args)  # a bad address fails before the model loads
    pipe = Pipeline(cfg, sinks=sinks)
    metrics = None
    dashboard = None
    try:
        if address is not None:
            from drsn_stream.sinks.metrics import MetricsServer

            metrics = MetricsServer(pipe.snapshot, address=address).start()
        if args.once:
            return _once(pipe, cfg)
        if interactive or (not args.headless and not args.jsonl and not args.publish):
            from drsn_stream.sinks.dashboard import Dashboard

            dashboard = Dashboard(
                pipe.snapshot,
                refresh_per_second=args.refresh or 4.0,
                on_ack=pipe.acknowledge,
                quit_event=pipe.quit,
                keys=sys.stdin.isatty(),
                screen=False,
            )
            dashboard.start()
        pipe.start()  # a Ctrl-C until here is a KeyboardInterrupt: cleaned up below, no summary
        _stop_on_signals(pipe)  # from now on Ctrl-C and SIGTERM end the run with its summary
        if dashboard is None or not sys.stdout.isatty():
            print(f"drsn-stream: ready: {pipe.meta.name} on {pipe.runner.device_name}, sources "
                  f"{', '.join(cfg.sources)}", file=sys.stderr, flush=True)
        pipe.wait()
    finally:
        _stop_on_signals(pipe)  # a second Ctrl-C must not cut the clean-up short
        if dashboard is not None:
            dashboard.stop()
        pipe.stop()
        if metrics is not None:
            metrics.stop()
    print(pipe.summary(), file=human, flush=True)
    # Nothing built so far needs collecting: a last collection at exit would walk torch's objects
    # for nothing and delay the exit a signal asked for (docs/hardening.md).
    gc.freeze()
    if pipe.engine.error is not None:  # the model stopped: the run did not do its job
        return 1
    if pipe.failed_sources:  # a source that stopped with an error: its streams went unwatched
        print(f"drsn-stream: error: {pipe.failed_sources[0]}", file=sys.stderr, flush=True)
        return 1
    return 1 if pipe.errors and pipe.stats.windows == 0 else 0


def _metrics_address(args: argparse.Namespace) -> str | None:
    address, port = getattr(args, "metrics_address", None), getattr(args, "metrics_port", None)
    if address is not None and port is not None:
        raise ConfigError("give --metrics-address HOST:PORT or --metrics-port PORT, not both")
    if address is None and port is None:
        return None
    from drsn_stream.sinks.metrics import parse_address

    text = address if address is not None else f"127.0.0.1:{port}"
    parse_address(text)
    return text


def _stop_on_signals(pipe: Pipeline) -> None:
    """Ctrl-C (SIGINT) and SIGTERM end the run cleanly: sources closed, queues drained, summary."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return

    def handler(signum: int, frame: object) -> None:
        pipe.quit.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, handler)


def _once(pipe: Pipeline, cfg: RunConfig) -> int:
    """Called inside ``run``'s try: its ``finally`` stops the pipeline."""
    from drsn_stream.sinks.dashboard import render_once

    pipe.start()
    _stop_on_signals(pipe)
    pipe.wait(duration=cfg.duration if cfg.duration is not None else 4.0)
    print(render_once(pipe.snapshot(), width=_width()))
    return 0


def _width() -> int:
    import shutil

    return max(80, shutil.get_terminal_size((100, 40)).columns)


