"""``drsn-stream [run]``: the live monitor's command line."""

from __future__ import annotations

import argparse
import dataclasses
import gc
import os
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NamedTuple

from drsn_stream.app.runconfig import TABLES, RunConfig, from_doc, to_doc
from drsn_stream.config import arg_duration, arg_number, check_sections, dump_toml, parse_duration, read_toml
from drsn_stream.errors import ConfigError, DrsnStreamError
from drsn_stream.runtime import raise_if_signalled, stop_signals
from drsn_stream.sinks import make_sinks

if TYPE_CHECKING:  # the pipeline imports torch: help and config errors answer without it
    from drsn_stream.app.pipeline import Pipeline

DURATION_ENV = "DRSN_STREAM_DURATION"  # lets a script end a command it runs as written (CI)


def _env_duration() -> float | None:
    text = os.environ.get(DURATION_ENV, "").strip()
    if not text:
        return None
    try:
        return parse_duration(text)
    except ConfigError as exc:
        raise ConfigError(f"{DURATION_ENV}={text!r}: {exc}") from None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    a = parser.add_argument
    a("--source", "-s", action="append", metavar="SPEC",
      help="KIND[:TARGET][?key=value&...]: sim (default), sim:bearing?machines=8&noise=pink&snr=0, sim:speech, "
           "file:PATH, zmq://HOST:PORT (several: zmq://gw1:5555,gw2:5555), zmq+bind://HOST:PORT, zmq+pull://HOST:PORT, "
           "mic, mic:DEVICE?rate=48000. "
           "Repeat for several sources at once.")
    a("--model", "-m", help="built-in model name or path of an exported .pt (default: bearing-cwru, or digits-fsdd "
                            "for mic and sim:speech)")
    a("--config", "-c", help="TOML run configuration (see configs/); flags override it")
    a("--print-config", action="store_true",
      help="print the effective run config (the file, the flags and the defaults) as TOML and exit")
    a("--duration", type=arg_duration, default=_env_duration(),
      help=f"stop after DURATION (e.g. 90, 30s, 10m, 1h30m; default: ${DURATION_ENV}, else run until stopped)")
    a("--device", choices=["auto", "cpu", "cuda"], help="where the model runs (default auto)")
    a("--headless", action="store_true", help="no dashboard: one readable line per decision on stdout")
    a("--every", metavar="DURATION", type=arg_duration,
      help="headless, summed up: one line per stream every DURATION (e.g. 10s, 1m: its labels' shares, alarm level, "
           "latency) instead of one per decision; events still as they happen")
    a("--jsonl", metavar="FILE|-", help="write JSON lines (predictions, alarms, health, detections, stats)")
    a("--publish", metavar="tcp://HOST:PORT", help="publish the same objects on a ZeroMQ PUB socket")
    a("--publish-curve-key", metavar="FILE", help="encrypt the --publish feed (CURVE) with this key pair "
                                                  "(NAME.key_secret from `drsn-stream keys NAME`)")
    a("--publish-curve-allow", metavar="DIR", help="let only the feed's readers whose public key (NAME.key) is in DIR in")
    a("--webhook", metavar="URL", help="POST each alarm and sensor-health change as JSON to this http(s) URL "
                                      "(with a `text` line that Slack-style incoming webhooks show)")
    a("--webhook-digest", metavar="DURATION", type=arg_duration,
      help="at most one webhook POST per DURATION (e.g. 1m), the events since the last one gathered into it: "
           "for chat rooms, when many streams alarm at once")
    a("--once", action="store_true", help="print one dashboard snapshot after a short warm-up and exit")
    a("--fast", action="store_true", help="replay files as fast as possible (no pacing, no stale drops)")
    a("--hop", type=int, help="override the model's hop (samples at the model's rate)")
    a("--phases", type=int, metavar="N",
      help="spread the streams' windows over N phases of the hop (default 1), so that streams whose frames "
           "arrive in step (a gateway's modules) do not all complete a window in the same frame; "
           "hop/N should be a whole number of frames")
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
    a("--reclaim-after", type=float, metavar="S",
      help="once --max-streams ids are taken, a stream that has sent nothing for S seconds gives its place to a "
           "new stream id, said in a note (default 600; 0: never, new ids are refused)")
    a("--fp16", choices=["auto", "on", "off"], help="half precision on CUDA where verified (default auto)")
    a("--threads", type=int, help="torch CPU threads (default: all cores but one)")
    a("--cpu-layout", choices=["auto", "script", "off"],
      help="CPU: run 1-D networks in their channels-last form, after checking it agrees with the model on its "
           "validation windows, on one torch thread with its elementwise steps compiled (numba) (default auto; "
           "script: that form all in TorchScript; off: exactly as stored)")
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
    a("--refresh", type=arg_number(float, above=0, most=60), default=None, help="dashboard refreshes per second (default 4)")
    a("--latch", action="store_true", help="alarms stay latched until acknowledged with `a`")
    a("--bearing", metavar="NAME|K=V,...", help="bearing geometry for the envelope evidence of every stream: a name "
                                              "(6205 = cwru-de, 6203 = cwru-fe, za-2115 = ims, uer204 = xjtu-sy, mfpt), "
                                              "its orders (bpfo=3.05,bpfi=4.95,bsf=1.99,ftf=0.38) or its dimensions "
                                              "(balls=9,ball_diameter=7.94,pitch_diameter=39.04[,contact_angle=0])")
    a("--rpm", type=arg_number(float, above=0, most=1e6), help="shaft speed (rpm) for the envelope evidence of every stream (a source's ?rpm= wins)")
    a("--baseline", metavar="PROFILE", help="score every window against the streams' learned normal (a profile from "
                                           "`drsn-stream baseline learn`): predictions gain `anomaly`, 1.0 = threshold; "
                                           "with --learn, the baselines learned live are saved in it too (made if missing)")
    a("--startup-hold", metavar="SECONDS", type=float,
      help="with a baseline: a machine at rest (under a tenth of its learned level) that runs again is judged "
           "this many seconds later, its run-up held (default 10; 0: at once)")
    a("--learn", metavar="DURATION", help="learn each stream without a baseline for DURATION (e.g. 10m, 1h30m, 2d) of its "
                                         "own data, then monitor it for deviations (with --baseline FILE the baselines and the learnings under way are kept over restarts)")


class Flag(NamedTuple):
    """The config field a command-line flag sets (``section``/``key``: ``[run] sources`` and so on)."""

    section: str
    key: str
    value: Callable[[Any], Any] = lambda given: given  # the field's value from the flag's; None: says nothing
    clears: tuple[str, ...] = ()  # keys of the section the flag replaces


_GEOMETRY = (  # dsp.envelope ORDERS and DIMENSIONS: a bearing given any way replaces them
    "bpfo", "bpfi", "bsf", "ftf", "balls", "ball_diameter", "pitch_diameter", "contact_angle")

# argparse dest -> the field it sets: the one mapping of flags onto a run config's TOML fields
FLAGS: dict[str, Flag] = {
    "source": Flag("run", "sources", tuple),
    "model": Flag("run", "model"),
    "duration": Flag("run", "duration"),
    "device": Flag("run", "device"),
    "fast": Flag("run", "fast"),
    "hop": Flag("run", "hop"),
    "phases": Flag("run", "phases"),
    "max_batch": Flag("run", "max_batch"),
    "max_wait_ms": Flag("run", "max_wait_ms"),
    "no_idle_flush": Flag("run", "idle_flush", lambda given: False),
    "eager_batch": Flag("run", "eager_batch"),
    "stale_ms": Flag("run", "stale_ms"),
    "max_streams": Flag("run", "max_streams"),
    "reclaim_after": Flag("run", "reclaim_after_s"),
    "fp16": Flag("run", "fp16"),
    "threads": Flag("run", "threads"),
    "cpu_layout": Flag("run", "cpu_layout"),
    "engine_process": Flag("run", "engine_process", {"on": True, "off": False}.get),  # auto: the default
    "ingest_procs": Flag("run", "ingest_procs"),
    "no_pin_cpus": Flag("run", "pin_cpus", lambda given: False),
    "pin_cpus": Flag("run", "pin_cpus"),  # after --no-pin-cpus: with both, pinning wins
    "baseline": Flag("run", "baseline"),
    "learn": Flag("run", "learn_s", parse_duration),
    "startup_hold": Flag("run", "startup_s"),
    "capture": Flag("capture", "dir"),
    "latch": Flag("decision", "latching"),
    "bearing": Flag("machine", "bearing", clears=_GEOMETRY),
    "rpm": Flag("machine", "rpm", clears=("shaft_hz",)),
    "jsonl": Flag("sinks", "jsonl"),
    "publish": Flag("sinks", "publish"),
    "publish_curve_key": Flag("sinks", "publish_curve_key"),
    "publish_curve_allow": Flag("sinks", "publish_curve_allow"),
    "webhook": Flag("sinks", "webhook"),
    "webhook_digest": Flag("sinks", "webhook_digest"),
    "headless": Flag("sinks", "headless"),
    "every": Flag("sinks", "every"),
    "metrics_address": Flag("sinks", "metrics_address"),
    "metrics_port": Flag("sinks", "metrics_address", lambda port: f"127.0.0.1:{port}"),
}


def config_from_args(args: argparse.Namespace) -> RunConfig:
    """The run config of ``--config`` (if given) with the flags written over it: the flags go into
    the same TOML document, so both are read and checked by one path (``runconfig.from_doc``)."""
    doc: dict[str, Any] = read_toml(args.config) if getattr(args, "config", None) else {}
    where = args.config if getattr(args, "config", None) else "command line"
    check_sections(doc, TABLES, where)  # a mistyped table is named even where a flag fills its neighbour
    if getattr(args, "metrics_address", None) is not None and getattr(args, "metrics_port", None) is not None:
        raise ConfigError("give --metrics-address HOST:PORT or --metrics-port PORT, not both")
    for dest, flag in FLAGS.items():
        given = getattr(args, dest, None)
        if given is None or given is False:  # not on the command line (store_true flags are False then)
            continue
        value = flag.value(given)
        table = doc.setdefault(flag.section, {})
        if value is None or not isinstance(table, dict):  # not a table: from_doc says so
            continue
        for key in flag.clears:
            table.pop(key, None)
        table[flag.key] = value
    cfg = from_doc(doc, where)
    if not cfg.sources:
        raise ConfigError("no source given; try --source sim")
    return cfg


def print_config(cfg: RunConfig) -> None:
    """``--print-config``: the effective config as TOML (every field; ``--config`` reads it back)."""
    from drsn_stream.app.pipeline import default_model
    from drsn_stream.models.meta import read_meta

    model = cfg.model or default_model(cfg.sources)
    try:
        labels: list[str] | None = list(read_meta(model).labels)
    except DrsnStreamError:  # a model that is not there yet: the table as given
        labels = None
    doc, notes = to_doc(cfg, labels)
    print(f"# drsn-stream run config (model {model})")
    print(dump_toml(doc, notes), end="")


def run(args: argparse.Namespace) -> int:
    cfg = config_from_args(args)
    if getattr(args, "print_config", False):
        print_config(cfg)
        return 0
    chosen = cfg.sinks.headless or cfg.sinks.jsonl or cfg.sinks.publish or getattr(args, "once", False)
    if not chosen and not _is_terminal(sys.stdout):
        # no output chosen and no terminal (a journal, `docker logs`, a file): the dashboard
        # cannot refresh there and would say nothing until the run ends (months, for a
        # service); its lines summed up every minute instead, and the events as they happen
        cfg = dataclasses.replace(cfg, sinks=dataclasses.replace(cfg.sinks, every=UNATTENDED_EVERY_S))
    out = cfg.sinks
    interactive = sys.stdout.isatty() and not out.headless and out.jsonl != "-"
    # with --jsonl - stdout carries JSON lines only; every line for people goes to stderr
    human = sys.stderr if out.human == "stderr" else sys.stdout
    address = out.metrics_address  # checked when the config was read, before the model loads
    from drsn_stream.app.pipeline import Pipeline
    from drsn_stream.app.service import Notifier, status_line

    service = Notifier.from_env()  # under systemd (Type=notify); taken before any child process starts
    pipe = Pipeline(cfg, sinks=make_sinks(out))
    metrics = None
    dashboard = None
    try:
        if address is not None:
            from drsn_stream.sinks.metrics import MetricsServer

            metrics = MetricsServer(pipe.snapshot, address=address,
                                    health=lambda: pipe.trouble(PROBE_QUIET_S)).start()
        if args.once:
            return _once(pipe, cfg)
        if interactive or (not out.headless and not out.jsonl and not out.publish):
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
        raise_if_signalled()
        _stop_on_signals(pipe)  # from now on Ctrl-C and SIGTERM end the run with its summary
        if dashboard is None or not sys.stdout.isatty():
            print(f"drsn-stream: ready: {pipe.meta.name} on {pipe.runner.device_name}, sources "
                  f"{', '.join(cfg.sources)}", file=sys.stderr, flush=True)
        if service is not None:
            service.ready(f"ready: {pipe.meta.name} on {pipe.runner.device_name}")
            service.watch(pipe.alive, lambda: status_line(pipe.snapshot()))
        pipe.wait()
    finally:
        _stop_on_signals(pipe)  # a second Ctrl-C must not cut the clean-up short
        if service is not None:
            service.stopping()
        if dashboard is not None:
            dashboard.stop()
        pipe.stop()
        if metrics is not None:
            metrics.stop()
        if service is not None:
            service.close()
    try:
        print(pipe.summary(), file=human, flush=True)
    except BrokenPipeError:
        raise  # the command's own manners: quiet
    except OSError:  # the terminal is gone (SIGHUP): the log, the feed and the metrics had it all
        pass
    # Nothing built so far needs collecting: a last collection at exit would walk torch's objects
    # for nothing and delay the exit a signal asked for (docs/hardening.md).
    gc.freeze()
    if pipe.engine.error is not None:  # the model stopped: the run did not do its job
        return 1
    if pipe.failed_sources:  # a source that stopped with an error: its streams went unwatched
        print(f"drsn-stream: error: {pipe.failed_sources[0]}", file=sys.stderr, flush=True)
        return 1
    return 1 if pipe.errors and pipe.stats.windows == 0 else 0


UNATTENDED_EVERY_S = 60.0
# /healthz fails once the engine loop has not turned for this long: longer than the engine
# process's own reply timeout (30 s + 2), so that the monitor replaces a hung engine process
# itself before a container's liveness probe restarts the whole monitor
PROBE_QUIET_S = 60.0


def _is_terminal(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError, OSError):  # replaced or closed: no terminal
        return False


def _stop_on_signals(pipe: Pipeline) -> None:
    """Ctrl-C (SIGINT), SIGTERM and SIGHUP (``runtime.stop_signals``) end the run cleanly: sources
    closed, queues drained, summary."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return

    def handler(signum: int, frame: object) -> None:
        pipe.ask_stop()  # no lock taken in a handler (Pipeline.ask_stop says why)

    for sig in stop_signals():
        signal.signal(sig, handler)


def _once(pipe: Pipeline, cfg: RunConfig) -> int:
    """Called inside ``run``'s try: its ``finally`` stops the pipeline."""
    from drsn_stream.sinks.dashboard import render_once

    pipe.start()
    raise_if_signalled()
    _stop_on_signals(pipe)
    pipe.wait(duration=cfg.duration if cfg.duration is not None else 4.0)
    print(render_once(pipe.snapshot(), width=_width()))
    return 0


def _width() -> int:
    import shutil

    return max(80, shutil.get_terminal_size((100, 40)).columns)


