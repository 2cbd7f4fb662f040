#!/usr/bin/env python3
"""Fault probe: the long version of tests/test_faults.py against a live monitor.

Starts `drsn-stream --source zmq+pull+bind://127.0.0.1:PORT --jsonl FILE` as a child process and
sends it, kind by kind, thousands of malformed or hostile messages (10,000 per kind by default;
the heavy ones, such as 17 MB payloads, a hundredth of that), while a canary stream sends good
frames at real-time pace throughout. After each kind it waits until the monitor's stats (written
every second) have counted every message, then prints one row: how many were sent, how many the
monitor counted under the kind's reason, source crashes, silent stops (the monitor took no
frame for 5 s or more while the canary sent, or it ended) and the largest RSS (monitor plus
engine process) during the kind. ``--soak S`` then sends a mix of every kind for S seconds with
RSS sampled every 10 s. ``--quick`` sends 500 per kind.

    python tools/fault_probe.py --quick
    python tools/fault_probe.py --soak 600 --json docs/hardening-probe.json
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import zmq

from drsn_stream.errors import run_tool
from drsn_stream.sources.sim import load_excerpts
from drsn_stream.sources.wire import MAX_PAYLOAD_BYTES, encode, encode_eos

RATE, TICK = 12000, 1200
SPEC = "zmq+pull+bind://127.0.0.1:{port}"


def _raw(header: dict | bytes, payload: bytes = b"\0" * 16, topic: bytes = b"s") -> list[bytes]:
    return [topic, header if isinstance(header, bytes) else json.dumps(header).encode(), payload]


def _h(**kw: object) -> dict:
    h = {"v": 1, "stream": "s", "seq": 0, "t": time.time(), "rate": 12000.0, "dtype": "float32", "channels": 1, "n": 4}
    h.update(kw)
    return h


def _text(body: str) -> list[bytes]:
    return _raw(body.replace("NOW", repr(time.time())).encode())


BIG = b"\0" * (MAX_PAYLOAD_BYTES + 4)
# kind -> (reason counted, share of --count sent, message maker taking the message number)
KINDS: dict[str, tuple[str, float, Callable[[int], list[bytes]]]] = {
    "nested 2,000 deep": ("bad_header", 1.0, lambda i: _raw(b"[" * 2000 + b"]" * 2000)),
    "nested 100,000 deep": ("bad_header", 0.1, lambda i: _raw(b"[" * 100_000 + b"]" * 100_000)),
    "header not JSON": ("bad_json", 1.0, lambda i: _raw(b"\xff{not json")),
    "dtype [1]": ("unknown_dtype", 1.0, lambda i: _raw(_h(dtype=[1]))),
    "rate 1e400 (integer)": ("absurd_rate", 1.0, lambda i: _text(
        '{"v":1,"stream":"s","seq":0,"t":NOW,"rate":1' + "0" * 400 + ',"dtype":"float32","channels":1,"n":4}')),
    "rate 5e9": ("absurd_rate", 1.0, lambda i: _raw(_h(rate=5e9))),
    "seq 3,900 digits": ("bad_seq", 1.0, lambda i: _text(
        '{"v":1,"stream":"s","seq":' + "9" * 3900 + ',"t":NOW,"rate":12000,"dtype":"float32","channels":1,"n":4}')),
    "seq 4,300 digits": ("bad_header", 1.0, lambda i: _text(
        '{"v":1,"stream":"s","seq":' + "9" * 4300 + ',"t":NOW,"rate":12000,"dtype":"float32","channels":1,"n":4}')),
    "seq -1": ("bad_seq", 1.0, lambda i: _raw(_h(seq=-1))),
    "t 7e16": ("bad_time", 1.0, lambda i: _raw(_h(t=7e16))),
    "t NaN": ("bad_time", 1.0, lambda i: _text(
        '{"v":1,"stream":"s","seq":0,"t":NaN,"rate":12000,"dtype":"float32","channels":1,"n":4}')),
    "scale 1e400 (integer)": ("bad_field", 1.0, lambda i: _text(
        '{"v":1,"stream":"s","seq":0,"t":NOW,"rate":12000,"dtype":"float32","channels":1,"n":4,"scale":1'
        + "0" * 400 + "}")),
    "channels 100000": ("bad_field", 1.0, lambda i: _raw(_h(channels=100000))),
    "wrong payload size": ("bad_size", 1.0, lambda i: _raw(_h(), b"\0" * 15)),
    "payload 16 MiB + 4": ("too_large", 0.01, lambda i: _raw(_h(n=len(BIG) // 4), BIG)),
    "topic mismatch": ("topic_mismatch", 1.0, lambda i: _raw(_h(), topic=b"other")),
    "4 frames": ("wrong_parts", 1.0, lambda i: [b"s", b"{}", b"", b""]),
    "rate 1.001 Hz": ("unsupported_rate", 1.0, lambda i: encode("odd-rate", i, time.time(), 1.001, np.zeros(4))),
    "duplicate seq": ("duplicates", 1.0, lambda i: encode("dup", 0, time.time(), RATE, np.zeros(4))),
    "late (out of order)": ("late", 1.0, None),  # pairs, see _send_kind
    "new ids beyond --max-streams": ("too_many_streams", 1.0, lambda i: encode(
        f"id-{i}", 0, time.time(), RATE, np.zeros(4))),
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rss_mb(pid: int) -> float:
    """Resident memory of ``pid`` and its children (the engine process), MB."""
    total = 0
    pids = [pid]
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            pids += [int(c) for c in Path(f"/proc/{pid}/task/{task}/children").read_text().split()]
    except OSError:
        pass
    for p in pids:
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total / 1024.0


class Monitor:
    """The monitor child process and the stats it writes every second."""

    def __init__(self, port: int, workdir: Path, max_streams: int, reclaim_after: float | None = None) -> None:
        cfg = workdir / "probe.toml"
        reclaim = f"reclaim_after_s = {reclaim_after!r}\n" if reclaim_after is not None else ""
        cfg.write_text(f"[run]\nstats_every_s = 1.0\nmax_streams = {max_streams}\n{reclaim}")
        self.out = workdir / "out.jsonl"
        self.spec = SPEC.format(port=port)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "drsn_stream", "--config", str(cfg), "--source", self.spec,
             "--jsonl", str(self.out), "--stale-ms", "60000"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        line = self.proc.stderr.readline()
        if "ready" not in line:
            raise SystemExit(f"the monitor did not start: {line}{self.proc.stderr.read()}")
        self._pos = 0
        self.last: dict = {}
        self.frames_at = (0, time.time())  # (frames, when they last grew)
        self.longest_still = 0.0

    def poll(self) -> dict:
        """The newest stats object (also tracks how long the source took no frame)."""
        with open(self.out, encoding="utf-8") as fh:
            fh.seek(self._pos)
            chunk = fh.read()
        cut = chunk.rfind("\n") + 1
        self._pos += len(chunk[:cut].encode("utf-8"))
        for line in chunk[:cut].splitlines():
            if '"type": "stats"' in line or '"type":"stats"' in line:
                self.last = json.loads(line)
        src = self.source()
        now = time.time()
        if src.get("frames", 0) > self.frames_at[0]:
            self.frames_at = (src["frames"], now)
        self.longest_still = max(self.longest_still, now - self.frames_at[1])
        return self.last

    def source(self) -> dict:
        return next(iter(self.last.get("sources", {}).values()), {})

    def counted(self, reason: str) -> int:
        src = self.source()
        if reason in ("duplicates", "late"):
            return sum(src.get(reason, {}).values())
        return int(src.get("malformed", {}).get(reason, 0))

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None


class Canary(threading.Thread):
    """Good frames of one real healthy signal at real-time pace, on their own socket."""

    def __init__(self, port: int) -> None:
        super().__init__(daemon=True)
        self.port = port
        self.halt = threading.Event()
        x = load_excerpts()["normal"]
        self.x = np.tile(x, 2)

    def run(self) -> None:
        sock = zmq.Context.instance().socket(zmq.PUSH)
        sock.connect(f"tcp://127.0.0.1:{self.port}")
        t0, i = time.time(), 0
        while not self.halt.is_set():
            k = (i * TICK) % (self.x.size - TICK)
            sock.send_multipart(encode("canary", i, t0 + 0.1 * i, RATE, self.x[k : k + TICK]))
            i += 1
            self.halt.wait(max(0.0, t0 + 0.1 * i - time.time()))
        sock.send_multipart(encode_eos("canary"))
        sock.close(2000)


def _send_kind(sock: zmq.Socket, kind: str, n: int, base: int) -> None:
    _, _, make = KINDS[kind]
    if make is None:  # late: after seq 0, seq 2k+2 goes out before 2k+1
        sock.send_multipart(encode("late", 0, time.time(), RATE, np.zeros(4)))
        for k in range(n):
            t = time.time()
            sock.send_multipart(encode("late", 2 * k + 2, t, RATE, np.zeros(4)))
            sock.send_multipart(encode("late", 2 * k + 1, t, RATE, np.zeros(4)))
        return
    for i in range(n):
        sock.send_multipart(make(base + i))


def run_kinds(mon: Monitor, sock: zmq.Socket, count: int, settle_s: float) -> list[dict]:
    rows = []
    base = 1
    for kind, (reason, share, _) in KINDS.items():
        n = max(1, int(round(count * share)))
        before, crashes0, still0 = mon.counted(reason), mon.source().get("crashes", 0), mon.longest_still
        mon.longest_still = 0.0
        peak = rss_mb(mon.proc.pid)
        t0 = time.time()
        if kind == "duplicate seq":
            sock.send_multipart(encode("dup", 0, time.time(), RATE, np.zeros(4)))  # the original
        _send_kind(sock, kind, n, base)
        base += 2 * n + 1
        want = n if reason != "too_many_streams" else None
        deadline = time.time() + settle_s
        while time.time() < deadline and mon.alive:
            mon.poll()
            peak = max(peak, rss_mb(mon.proc.pid))
            got = mon.counted(reason) - before
            if want is not None and got >= want:
                break
            if want is None and got > 0 and mon.longest_still < 1.5 and time.time() - t0 > 3:
                break
            time.sleep(0.25)
        mon.poll()
        got = mon.counted(reason) - before
        rows.append({
            "kind": kind, "reason": reason, "sent": n, "counted": got,
            "crashes": mon.source().get("crashes", 0) - crashes0,
            "silent_stops": int(not mon.alive or mon.longest_still >= 5.0),
            "rss_mb": round(peak, 1), "seconds": round(time.time() - t0, 1),
        })
        mon.longest_still = max(mon.longest_still, still0)
        print(_row(rows[-1]), flush=True)
        if not mon.alive:
            break
    return rows


def soak(mon: Monitor, sock: zmq.Socket, seconds: float, rate: float) -> dict:
    """A mix of every light kind at ``rate`` messages/s for ``seconds``; RSS every 10 s."""
    light = [k for k, (_, share, make) in KINDS.items() if share >= 1.0 and make is not None
             and KINDS[k][0] not in ("too_many_streams", "duplicates")]
    t0, sent, samples = time.time(), 0, []
    next_rss = t0
    malformed0 = sum(mon.source().get("malformed", {}).values())
    crashes0 = mon.source().get("crashes", 0)
    mon.longest_still = 0.0
    while time.time() - t0 < seconds and mon.alive:
        kind = light[sent % len(light)]
        sock.send_multipart(KINDS[kind][2](sent))
        sent += 1
        if time.time() >= next_rss:
            samples.append((round(time.time() - t0), round(rss_mb(mon.proc.pid), 1)))
            next_rss += 10.0
            mon.poll()
        time.sleep(max(0.0, t0 + sent / rate - time.time()))
    time.sleep(3.0)
    mon.poll()
    return {
        "kind": f"soak {seconds:.0f} s", "reason": "(all)", "sent": sent,
        "counted": sum(mon.source().get("malformed", {}).values()) - malformed0,
        "crashes": mon.source().get("crashes", 0) - crashes0,
        "silent_stops": int(not mon.alive or mon.longest_still >= 5.0),
        "rss_mb": max(r for _, r in samples) if samples else 0.0,
        "rss_first_last_mb": [samples[0][1], samples[-1][1]] if samples else [],
        "rss_samples": samples, "seconds": round(time.time() - t0, 1),
    }


def _row(r: dict) -> str:
    return (f"{r['kind']:<30} {r['reason']:<17} {r['sent']:>8} {r['counted']:>8} {r['crashes']:>7} "
            f"{r['silent_stops']:>6} {r['rss_mb']:>8.1f}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--count", type=int, default=10_000, help="messages per kind (default 10,000)")
    ap.add_argument("--quick", action="store_true", help="500 per kind, no soak")
    ap.add_argument("--soak", type=float, default=0.0, metavar="S", help="then a mixed soak of S seconds")
    ap.add_argument("--soak-rate", type=float, default=500.0, help="soak messages per second (default 500)")
    ap.add_argument("--max-streams", type=int, default=None,
                    help="the monitor's --max-streams (default 4096; 256 with --quick, so that ids beyond it are sent)")
    ap.add_argument("--reclaim-after", type=float, default=None, metavar="S",
                    help="the monitor's --reclaim-after (default its own, 600 s): with a short one, the new ids "
                         "take the places of those silent that long, and the row counts only those refused")
    ap.add_argument("--json", type=Path, help="also write the rows as JSON here")
    args = ap.parse_args(argv)
    count = 500 if args.quick else args.count
    max_streams = args.max_streams or (256 if args.quick else 4096)
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="fault-probe-") as tmp:
        mon = Monitor(port, Path(tmp), max_streams, args.reclaim_after)
        canary = Canary(port)
        canary.start()
        sock = zmq.Context.instance().socket(zmq.PUSH)
        sock.setsockopt(zmq.SNDHWM, 1000)
        sock.connect(f"tcp://127.0.0.1:{port}")
        print(f"{'kind':<30} {'reason':<17} {'sent':>8} {'counted':>8} {'crashes':>7} {'silent':>6} {'RSS MB':>8}")
        rows = run_kinds(mon, sock, count, settle_s=120.0)
        if args.soak and not args.quick and mon.alive:
            rows.append(soak(mon, sock, args.soak, args.soak_rate))
            print(_row(rows[-1]), "RSS first/last", rows[-1]["rss_first_last_mb"], flush=True)
        canary.halt.set()
        canary.join(timeout=10)
        sock.close(5000)
        time.sleep(2.0)
        mon.poll()
        rss_end = rss_mb(mon.proc.pid)
        t_end = time.time()
        mon.proc.send_signal(signal.SIGTERM)  # a clean stop: how long does it take?
        try:
            _, err = mon.proc.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            mon.proc.kill()
            _, err = mon.proc.communicate()
        mon.poll()
        final = mon.last
        summary = {
            "count": count, "max_streams": max_streams, "reclaim_after_s": args.reclaim_after, "rows": rows, "monitor_rc": mon.proc.returncode, "exit_s": round(time.time() - t_end, 2),
            "rss_end_mb": round(rss_end, 1),
            "traceback": "Traceback" in err, "errors": final.get("errors", []),
            "canary_windows": final.get("engine", {}).get("windows"),
            "retired": sum(int(src.get("retired", 0)) for src in final.get("sources", {}).values()),
            "total_sent": sum(r["sent"] for r in rows), "total_crashes": sum(r["crashes"] for r in rows),
            "total_silent_stops": sum(r["silent_stops"] for r in rows),
        }
    print(f"monitor exit code {summary['monitor_rc']} {summary['exit_s']} s after SIGTERM, traceback: "
          f"{summary['traceback']}; RSS at the end {summary['rss_end_mb']} MB; "
          f"{summary['total_sent']} messages, {summary['total_crashes']} crashes, "
          f"{summary['total_silent_stops']} silent stops; {summary['retired']} streams retired for new ids")
    if args.json:
        args.json.write_text(json.dumps(summary, indent=1) + "\n")
    ok = summary["monitor_rc"] == 0 and not summary["traceback"] and summary["total_crashes"] == 0 \
        and summary["total_silent_stops"] == 0
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(run_tool(main, "tools/fault_probe.py"))
