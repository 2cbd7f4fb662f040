"""The live terminal dashboard (rich): pure views of a Snapshot, and a thread that shows them.

Integration::

    dash = Dashboard(snapshot_fn, refresh_per_second=4, screen=True,
                     on_ack=lambda: events.extend(decisions.acknowledge()))
    dash.start()                      # own thread; never blocks the pipeline
    while not dash.quit_event.is_set() and running:   # "q" sets quit_event
        ...
    dash.stop()                       # restores the terminal

    print(render_once(snapshot, width=100))           # --once: one frame as plain text

Views: ``render(snapshot, *, height, width, page, paused, show_help)`` builds the whole screen;
each part (header, table, events, footer) is its own pure function of the snapshot. With more
streams than fit ``height`` the table shows a summary of counts per level, the worst streams
first, and pages (``n``/``b``, PgDn/PgUp). Keys: ``q`` quit, ``p`` pause the view, ``a``
acknowledge latched alarms, ``?`` help.
"""

from __future__ import annotations

import io
import math
import threading
import time
from collections.abc import Callable, Sequence

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from drsn_stream.dsp.envelope import agreement
from drsn_stream.monitor.snapshot import LEVELS, Snapshot, StreamRow
from drsn_stream.sinks.keys import KeyReader
from drsn_stream.types import Event

LEVEL_STYLE = {"NORMAL": "green", "ALERT": "bold yellow", "DANGER": "bold white on red"}
LABEL_STYLE = {"NORMAL": "green", "ALERT": "yellow", "DANGER": "bold red"}
_SPARK = "▁▂▃▄▅▆▇█"
_BAR = " ▏▎▍▌▋▊▉█"
_WIDE = 130  # from this width on, every column shows in full
_NARROW = 90  # below it, the less important columns go
_EVENT_LINES = 6

HELP = (
    ("q", "quit"),
    ("p", "pause / resume the view (the monitor keeps running)"),
    ("a", "acknowledge latched alarms"),
    ("n, PgDn", "next page of streams"),
    ("b, PgUp", "previous page"),
    ("?", "show / hide this help"),
)
LEGEND = (
    "alarm: NORMAL / ALERT / DANGER and how long; * = latched, waiting for 'a'",
    "label ?: the sensor needs checking, so no condition is claimed",
    "noise: share of activations the DRSN shrinkage zeroed (higher = noisier input)",
    "input: recent input level (RMS); lat: capture-to-label latency p50/p99 in ms",
    "env: bearing fault type from the envelope spectrum, dB over noise; ✓ = agrees with the label",
)


# -- small formatters (pure) ------------------------------------------------------------------


def format_duration(seconds: float) -> str:
    """12s, 4m05s, 3h12m, 2d04h."""
    if not math.isfinite(seconds) or seconds < 0:
        return "-"
    s = int(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


def sparkline(values: Sequence[float], width: int = 8) -> str:
    """Unicode block sparkline of the last ``width`` values, scaled to their own range."""
    vals = [v for v in values[-width:] if math.isfinite(v)]
    if not vals:
        return ""
    lo, hi = min(vals), max(vals)
    if hi - lo <= 1e-12 * max(1.0, abs(hi)):
        return _SPARK[3] * len(vals)
    top = len(_SPARK) - 1
    return "".join(_SPARK[int(round((v - lo) / (hi - lo) * top))] for v in vals)


def bar(fraction: float, width: int = 5) -> str:
    """A horizontal bar of ``width`` cells, in eighths."""
    f = min(1.0, max(0.0, fraction if math.isfinite(fraction) else 0.0))
    eighths = int(round(f * width * 8))
    full, part = divmod(eighths, 8)
    return ("█" * full + (_BAR[part] if part else "")).ljust(width)


def _ms(x: float) -> str:
    if not math.isfinite(x):
        return "-"
    return f"{x:.0f}" if x >= 10 else f"{x:.1f}"


def _num(x: float | None, fmt: str, unit: str = "") -> str:
    return "n/a" if x is None or not math.isfinite(x) else f"{x:{fmt}}{unit}"


# -- widgets (pure functions of the snapshot) ------------------------------------------------


def header(snapshot: Snapshot, *, paused: bool = False) -> Text:
    """Two lines: model, device, readiness; sources and counts per level."""
    h = snapshot.header
    text = Text(no_wrap=True, overflow="ellipsis")
    text.append(" drsn-stream ", style="bold reverse")
    text.append(" ")
    # Readiness and pause come first: they must survive a narrow terminal.
    if h.ready:
        text.append(" READY ", style="bold black on green")
    else:
        text.append(" WARMING UP ", style="bold black on yellow")
    if paused:
        text.append(" ")
        text.append(" PAUSED (p resumes) ", style="bold black on cyan")
    if h.status:
        text.append(f" {h.status}", style="dim")
    text.append(f" {h.model or 'no model'}", style="bold")
    if h.labels:
        text.append(f" · {len(h.labels)} labels")
    if h.sample_rate:
        text.append(f" · {h.sample_rate:g} Hz · window/hop {h.window}/{h.hop}")
    if h.device:
        text.append(f" · {h.device}", style="cyan")
    text.append("\n")
    counts = snapshot.level_counts()
    text.append(f" {len(snapshot.rows)} stream{'s' if len(snapshot.rows) != 1 else ''}: ")
    for name in ("DANGER", "ALERT", "NORMAL"):
        style = LABEL_STYLE[name] if counts[name] else "dim"
        text.append(f"{counts[name]} {name}", style=style)
        text.append(" · ")
    text.append(
        f"{counts['CHECK_SENSOR']} CHECK SENSOR", style="magenta" if counts["CHECK_SENSOR"] else "dim"
    )
    if h.sources:
        text.append(f"   sources: {', '.join(h.sources)}", style="dim")
    return text


def _alarm_cell(row: StreamRow) -> Text:
    text = Text(row.level, style=LEVEL_STYLE[row.level])
    if row.latched and row.unacknowledged:
        text.append("*", style="bold")
    text.append(f" {format_duration(row.held_s)}", style="dim")
    return text


# Short forms of the health reasons for table cells (the events pane keeps the full words).
_SHORT_REASON = {
    "flat line": "flat",
    "clipping": "clip",
    "NaN/Inf samples": "NaN",
    "sequence gap": "gap",
    "input overflow": "overflow",
    "no data": "no data",
}


def _health_cell(row: StreamRow, *, full: bool) -> Text:
    if row.healthy:
        return Text("OK", style="green")
    reasons = row.health_reasons if full else [_SHORT_REASON.get(r, r) for r in row.health_reasons]
    return Text("CHECK " + ",".join(reasons), style="bold magenta")


_ENV_SHORT = {"outer_race": "outer", "inner_race": "inner", "ball": "ball", "none": "none"}


def _envelope_cell(row: StreamRow) -> Text:
    """``inner 9.1dB ✓``: the envelope fault type, its evidence, and whether the label agrees."""
    if row.envelope is None:
        return Text("-", style="dim")
    kind = _ENV_SHORT.get(row.envelope, row.envelope)
    text = Text(f"{kind} {row.envelope_db:.1f}dB", style="dim" if row.envelope == "none" else "bold")
    agree = agreement(row.label, row.envelope, getattr(row, "anomaly", None))
    if agree is True:
        text.append(" ✓", style="bold green")
    elif agree is False:
        text.append(" ≠", style="yellow")
    return text


def _top3_cell(row: StreamRow, *, full: bool) -> Text:
    items = row.top3 if full else row.top3[1:2]
    return Text(" ".join(f"{lab} {p * 100:.0f}%" for lab, p in items), style="dim")


def _fit(text: Text, width: int, *, right: bool = False) -> Text:
    """``text`` cut (with an ellipsis) or padded to exactly ``width`` cells."""
    if text.cell_len > width:
        text.truncate(width, overflow="ellipsis")
    pad = width - text.cell_len
    if pad > 0:
        if right:
            text.pad_left(pad)
        else:
            text.pad_right(pad)
    return text


def stream_table(rows: Sequence[StreamRow], *, width: int = 100, title: str | None = None) -> Group:
    """The stream table: a title, column heads and one line per row, fitted to ``width`` cells.

    Laid out by hand rather than with rich.Table: measuring a Table of a few dozen rows costs
    tens of milliseconds per refresh, taken from the pipeline's share of the GIL.
    """
    wide, narrow = width >= _WIDE, width < _NARROW
    with_env = any(row.envelope is not None for row in rows)
    with_host = any(row.host for row in rows)  # cluster mode: which host classifies the stream
    cells: list[dict[str, Text]] = []
    for row in rows:
        label_style = LABEL_STYLE[row.level] if row.label != "?" else "dim magenta"
        conf = Text(bar(row.confidence), style=LABEL_STYLE[row.level])
        conf.append(f"{row.confidence * 100:4.0f}%")
        c = {
            "stream": Text(row.stream_id),
            "label": Text(row.label, style=label_style),
            "conf": conf,
            "alarm": _alarm_cell(row),
            "health": _health_cell(row, full=wide),
            "drops": Text(str(row.drops), style="red" if row.drops else "dim"),
        }
        if with_env:
            c["env"] = _envelope_cell(row)
        if with_host:
            c["host"] = Text(row.host, style="dim")
        if not narrow:
            c["top"] = _top3_cell(row, full=wide)
            c["noise"] = Text(f"{row.noise_index:.2f}", style="dim")
            c["input"] = Text(sparkline(row.levels, 8 if wide else 6), style="cyan")
            c["lat"] = Text(f"{_ms(row.latency_p50_ms)}/{_ms(row.latency_p99_ms)}")
        cells.append(c)

    def need(key: str, head: str, cap: int = 1000) -> int:
        return min(cap, max([len(head)] + [c[key].cell_len for c in cells]))

    # (key, heading, width, right-aligned); the id, label and alarm always stay readable.
    cols = [
        ("stream", "stream", need("stream", "stream", 18 if wide else 12), False),
        ("label", "label", need("label", "label", 12 if wide else 10), False),
        ("conf", "conf", 10, False),
    ]
    if with_host:
        cols.insert(1, ("host", "host", need("host", "host", 12 if wide else 10), False))
    if not narrow:
        cols.append(("top", "top-3" if wide else "2nd", 0, False))  # width decided below
    cols.append(("alarm", "alarm", need("alarm", "alarm"), False))
    if with_env:
        cols.append(("env", "env", need("env", "env", 16), False))
    if not narrow:
        cols += [
            ("noise", "noise", 5, True),
            ("input", "input", 8 if wide else 6, False),
        ]
    cols.append(("health", "health", 0, False))
    if not narrow:
        cols.append(("lat", "lat ms", need("lat", "lat ms"), True))
    cols.append(("drops", "drops", need("drops", "drops"), True))
    spare = width - sum(w for _, _, w, _ in cols) - (len(cols) - 1)
    flexible = {
        "top": need("top", "top-3", 40 if wide else 13) if not narrow else 0,
        "health": need("health", "health", 24 if wide else 13),
    }
    for key in ("health", "top"):  # health reasons first, then the runner-up labels
        want = flexible[key]
        got = max(min(want, spare - (5 if key == "health" else 0)), 5)
        flexible[key] = got
        spare -= got
    cols = [
        (k, h, flexible.get(k, w), r) for k, h, w, r in cols if k not in flexible or flexible.get(k, 0) > 0
    ]

    lines: list[RenderableType] = []
    if title:
        lines.append(Text(title, style="bold"))
    head = Text(style="bold dim")
    for i, (_key, heading, w, right) in enumerate(cols):
        head.append_text(_fit(Text(heading), w, right=right))
        if i < len(cols) - 1:
            head.append(" ")
    lines.append(head)
    for c in cells:
        line = Text()
        for i, (key, _, w, right) in enumerate(cols):
            line.append_text(_fit(c[key], w, right=right))
            if i < len(cols) - 1:
                line.append(" ")
        line.rstrip()
        lines.append(line)
    return Group(*lines)


def event_line(event: Event) -> Text:
    """One line of the events pane."""
    text = Text(no_wrap=True, overflow="ellipsis")
    text.append(time.strftime("%H:%M:%S", time.localtime(event.time)) + " ", style="dim")
    d = event.data
    if event.type == "alarm":
        to = str(d.get("to", "?"))
        text.append("ALARM  ", style=LABEL_STYLE.get(to, "bold"))
        text.append(f"{event.stream_id}  {d.get('from', '?')} → ")
        text.append(to, style=LABEL_STYLE.get(to, "bold"))
        conf = d.get("confidence")
        text.append(f"  {d.get('label', '')}")
        if isinstance(conf, (int, float)):
            text.append(f" {conf * 100:.0f}%")
        if d.get("acknowledged"):
            text.append("  (acknowledged)", style="dim")
    elif event.type == "health":
        to = str(d.get("to", "?"))
        text.append("HEALTH ", style="magenta" if to != "OK" else "green")
        text.append(f"{event.stream_id}  {d.get('from', '?')} → {to}")
        reasons = d.get("reasons") or []
        if reasons:
            text.append(f"  ({', '.join(map(str, reasons))})")
    elif event.type == "detection":
        text.append("HEARD  ", style="bold cyan")
        text.append(f"{event.stream_id}  {d.get('label', d.get('text', '?'))}")
        conf = d.get("confidence")
        if isinstance(conf, (int, float)):
            text.append(f" {conf * 100:.0f}%")
    elif event.type == "gap":  # cluster mode: a failover or hand-over left the stream unclassified
        text.append("GAP    ", style="bold yellow")
        text.append(f"{event.stream_id}  {d.get('seconds', '?')} s not classified")
        if d.get("previous_host") or d.get("host"):
            text.append(f" ({d.get('previous_host', '?')} → {d.get('host', '?')})", style="dim")
    elif event.type == "note":
        text.append("NOTE   ", style="dim")
        text.append(f"{event.stream_id}  {d.get('message', '')}")
    else:
        text.append(f"{event.type.upper():<6} ", style="dim")
        text.append(f"{event.stream_id}  " + " ".join(f"{k}={v}" for k, v in d.items()))
    return text


def events_pane(events: Sequence[Event], *, lines: int = _EVENT_LINES) -> Group:
    """The last ``lines`` events, newest last."""
    shown = list(events)[-lines:] if lines > 0 else []
    body: list[RenderableType] = [Text("events", style="bold")]
    if not shown:
        body.append(Text(" none yet", style="dim"))
    body += [event_line(e) for e in shown]
    return Group(*body)


def transcript_line(transcript: Sequence[str], *, width: int = 100) -> Text:
    """Recent speech detections on one line, the newest at the right end."""
    text = Text(no_wrap=True, overflow="ellipsis")
    text.append("heard: ", style="bold cyan")
    words = " ".join(transcript)
    room = max(10, width - 8)
    if len(words) > room:
        words = "…" + words[-(room - 1) :]
    text.append(words)
    return text


def footer(snapshot: Snapshot, *, page: int = 0, pages: int = 1) -> Text:
    """Engine and process figures, then the keys."""
    f = snapshot.footer
    text = Text(" ", no_wrap=True, overflow="ellipsis")
    text.append(f"{f.windows_per_s:.1f} windows/s · batch {f.avg_batch:.1f} · queue {f.queue_depth} · ")
    text.append(f"dropped {f.dropped}", style="red" if f.dropped else "")
    text.append(" · ")
    text.append(f"malformed {f.malformed}", style="red" if f.malformed else "")
    text.append(f" · CPU {_num(f.cpu_percent, '.0f', '%')} · RSS {_num(f.rss_mb, '.0f', ' MB')}")
    if f.gpu_percent is not None or f.gpu_mem_mb is not None:
        text.append(f" · GPU {_num(f.gpu_percent, '.0f', '%')} {_num(f.gpu_mem_mb, '.0f', ' MB')}")
    text.append("\n ")
    keys = "q quit · p pause · a acknowledge · ? help"
    if pages > 1:
        keys += f" · n/b page {page + 1}/{pages}"
    text.append(keys, style="dim")
    latched = sum(1 for r in snapshot.rows if r.latched and r.unacknowledged)
    if latched:
        text.append(
            f"   {latched} latched alarm{'s' if latched != 1 else ''}: press a to acknowledge",
            style="bold yellow",
        )
    return text


def help_panel() -> Panel:
    table = Table(box=None, show_header=False, padding=(0, 1))
    table.add_column(style="bold")
    table.add_column()
    for key, what in HELP:
        table.add_row(key, what)
    legend = Group(*(Text(line, style="dim") for line in LEGEND))
    return Panel(Group(table, Text(""), legend), title="help (? closes)", title_align="left")


def page_rows(rows: Sequence[StreamRow], *, per_page: int, page: int) -> tuple[list[StreamRow], int, int]:
    """Rows for one page, worst first; returns (rows, page actually shown, page count)."""
    per_page = max(1, per_page)
    ordered = sorted(rows, key=lambda r: -r.severity)  # stable: id order within a severity
    pages = max(1, math.ceil(len(ordered) / per_page))
    page = page % pages
    return ordered[page * per_page : (page + 1) * per_page], page, pages


def render(
    snapshot: Snapshot,
    *,
    height: int | None = None,
    width: int = 100,
    page: int = 0,
    paused: bool = False,
    show_help: bool = False,
) -> RenderableType:
    """The whole screen for ``snapshot``, fitted to ``height`` lines (all rows when None).

    When the rows do not fit, they are sorted worst first (DANGER, ALERT, CHECK SENSOR, NORMAL)
    and paged; ``page`` wraps around.
    """
    rows = snapshot.rows
    transcript = 1 if snapshot.transcript else 0
    event_lines = min(_EVENT_LINES, max(1, len(snapshot.events)))
    fixed = 2 + 1 + 1 + transcript + (1 + event_lines) + 2  # header, title, column heads, ..., footer
    if show_help:
        fixed += len(HELP) + len(LEGEND) + 3 - (1 + event_lines)
    pages, shown_page = 1, 0
    if height is None or len(rows) <= height - fixed:
        shown = list(rows)
        title = f"streams ({len(rows)})"
    else:
        # Events give up lines first; the table keeps at least 3 rows.
        spare = height - fixed
        if not show_help and spare < 3 and event_lines > 1:
            cut = min(event_lines - 1, 3 - spare)
            event_lines -= cut
            spare += cut
        per_page = max(3, spare)
        shown, shown_page, pages = page_rows(rows, per_page=per_page, page=page)
        first = shown_page * per_page + 1
        title = (
            f"streams {first}-{first + len(shown) - 1} of {len(rows)}, worst first"
            f" · page {shown_page + 1}/{pages} (n next, b back)"
        )
    parts: list[RenderableType] = [
        header(snapshot, paused=paused),
        stream_table(shown, width=width, title=title),
    ]
    if snapshot.transcript:
        parts.append(transcript_line(snapshot.transcript, width=width))
    parts.append(help_panel() if show_help else events_pane(snapshot.events, lines=event_lines))
    parts.append(footer(snapshot, page=shown_page, pages=pages))
    return Group(*parts)


def render_once(snapshot: Snapshot, *, width: int = 100, height: int | None = None) -> str:
    """One frame as plain text (``--once`` and tests); all rows unless ``height`` is given."""
    buf = io.StringIO()
    console = Console(width=width, file=buf, force_terminal=False, color_system=None, legacy_windows=False)
    console.print(render(snapshot, height=height, width=width))
    return buf.getvalue()


class Dashboard:
    """Shows ``snapshot_fn()`` with rich.live.Live from its own thread, and reads keys.

    Args:
        snapshot_fn: returns the current Snapshot; called from the dashboard thread, so it
            must be thread-safe (``build_snapshot`` over the live parts is).
        refresh_per_second: screen updates per second (default 4).
        screen: use the alternate screen (full-screen; the shell comes back untouched on exit).
        console: where to draw (a new Console on stdout when None).
        on_ack: called (in the dashboard thread) when ``a`` is pressed.
        quit_event: set when ``q`` is pressed; the pipeline watches it (a new one when None).
        keys: read keys from stdin when it is a terminal.
        input_fd: read keys from this file descriptor instead of stdin (e.g. a pty).
    """

    def __init__(
        self,
        snapshot_fn: Callable[[], Snapshot],
        *,
        refresh_per_second: float = 4.0,
        screen: bool = False,
        console: Console | None = None,
        on_ack: Callable[[], object] | None = None,
        quit_event: threading.Event | None = None,
        keys: bool = True,
        input_fd: int | None = None,
    ) -> None:
        if not refresh_per_second > 0:
            raise ValueError(f"refresh_per_second must be > 0, not {refresh_per_second!r}")
        self.snapshot_fn = snapshot_fn
        self.interval = 1.0 / refresh_per_second
        self.screen = screen
        self.console = console if console is not None else Console()
        self.on_ack = on_ack
        self.quit_event = quit_event if quit_event is not None else threading.Event()
        self.keys = keys
        self.input_fd = input_fd
        self.page = 0
        self.paused = False
        self.show_help = False
        self.frames = 0  # screens drawn, for tests and diagnostics
        self.error = ""  # the last snapshot/ack failure, shown on screen
        self._snapshot: Snapshot | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> Dashboard:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="drsn-dashboard", daemon=True)
            self._thread.start()
        return self

    def stop(self, timeout: float = 2.0) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    def __enter__(self) -> Dashboard:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def handle_key(self, key: str) -> None:
        """Apply one key press (also usable without a terminal)."""
        if key in ("q", "Q"):
            self.quit_event.set()
            self._stop.set()
        elif key in ("p", "P", " "):
            self.paused = not self.paused
        elif key in ("a", "A"):
            if self.on_ack is not None:
                try:
                    self.on_ack()
                except Exception as exc:  # noqa: BLE001 - a failing callback must not kill the view
                    self.error = f"acknowledge failed: {exc}"
        elif key == "?":
            self.show_help = not self.show_help
        elif key in ("n", "pgdn", "down"):
            self.page += 1
        elif key in ("b", "pgup", "up"):
            self.page -= 1
        elif key == "home":
            self.page = 0

    def screen_renderable(self) -> RenderableType:
        """What the next refresh draws, from the latest snapshot taken."""
        if self._snapshot is None:
            return Text("drsn-stream: waiting for the first snapshot…", style="dim")
        size = self.console.size
        body = render(
            self._snapshot,
            height=max(10, size.height - 1),
            width=size.width,
            page=self.page,
            paused=self.paused,
            show_help=self.show_help,
        )
        if self.error:
            return Group(body, Text(self.error, style="bold red"))
        return body

    def _take_snapshot(self) -> None:
        try:
            self._snapshot = self.snapshot_fn()
            self.error = ""
        except Exception as exc:  # noqa: BLE001 - keep showing the last good screen
            self.error = f"snapshot failed: {type(exc).__name__}: {exc}"

    def _draw(self, live: Live) -> None:
        try:
            live.update(self.screen_renderable(), refresh=True)
        except Exception as exc:  # noqa: BLE001 - a bad snapshot must not end the display thread
            self.error = f"cannot draw the dashboard: {type(exc).__name__}: {exc}"
            live.update(Text(self.error, style="bold red"), refresh=True)

    def _run(self) -> None:
        with (
            KeyReader(fd=self.input_fd, enabled=self.keys) as reader,
            Live(
                console=self.console,
                screen=self.screen,
                auto_refresh=False,
                redirect_stdout=False,
                redirect_stderr=False,
                vertical_overflow="crop",
            ) as live,
        ):
            next_draw = 0.0
            while not self._stop.is_set():
                now = time.monotonic()
                if now >= next_draw:
                    if not self.paused or self._snapshot is None:
                        self._take_snapshot()
                    self._draw(live)
                    self.frames += 1
                    next_draw = now + self.interval
                wait = max(0.0, next_draw - time.monotonic())
                if reader.active:
                    pressed = reader.read(timeout=wait)
                    for key in pressed:
                        self.handle_key(key)
                    if pressed and not self._stop.is_set():
                        self._draw(live)  # keys answer at once, not at the next tick
                else:
                    self._stop.wait(wait)


__all__ = [
    "LEVELS",
    "Dashboard",
    "bar",
    "event_line",
    "events_pane",
    "footer",
    "format_duration",
    "header",
    "help_panel",
    "page_rows",
    "render",
    "render_once",
    "sparkline",
    "stream_table",
    "transcript_line",
]
