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
import re
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from drsn_stream.dsp.envelope import agreement
from drsn_stream.sinks.keys import KeyReader
from drsn_stream.sinks.lines import event_parts
from drsn_stream.types import Event
from drsn_stream.view import LEVELS, Snapshot, StreamRow

LEVEL_STYLE = {"NORMAL": "green", "ALERT": "bold yellow", "DANGER": "bold white on red"}
LABEL_STYLE = {"NORMAL": "green", "ALERT": "yellow", "DANGER": "bold red"}
_SPARK = "▁▂▃▄▅▆▇█"
_BAR = " ▏▎▍▌▋▊▉█"
_EVENT_LINES = 6

HELP = (
    ("q", "quit"),
    ("p", "pause / resume the view (the monitor keeps running)"),
    ("a", "acknowledge latched alarms"),
    ("n / b", "next / previous page of streams (also PgDn / PgUp)"),
    ("?", "show / hide this help"),
)
LEGEND = (  # each line fits an 80-column terminal's help panel without wrapping
    "alarm: NORMAL / ALERT / DANGER and how long; * = latched, waiting for 'a'",
    "label ?: check the sensor; unknown: unlike the training data; no claim made",
    "noise 0-1: share of activations the DRSN zeroed (higher: noisier input)",
    "input RMS: recent input level; drops: windows dropped and frames lost",
    "lat p50/p99 ms: capture-to-label latency, median / 99th percentile",
    "envelope dB: type (outer?: not held 3 s; learned: own lines); ✓ all agree",
    "anomaly: distance from the learned baseline (1.0 = threshold), its course",
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


@dataclass(frozen=True)
class Part:
    """A piece of a header or footer line: kept whole or left out, never cut.

    ``rank`` 0 is always kept; higher ranks take their ``short`` form first, then go, the highest
    first, until the line fits.
    """

    text: Text
    rank: int = 0
    short: Text | None = None


def _part(text: str, rank: int = 0, style: str = "", short: str | None = None) -> Part:
    return Part(Text(text, style=style), rank, Text(short, style=style) if short is not None else None)


def fit_parts(parts: Sequence[Part], width: int) -> Text:
    """One line of whole parts in ``width`` cells (see ``Part``)."""
    chosen: list[Text | None] = [p.text for p in parts]

    def length() -> int:
        return sum(t.cell_len for t in chosen if t is not None)

    order = sorted(range(len(parts)), key=lambda i: -parts[i].rank)
    for i in order:
        if length() <= width:
            break
        if parts[i].rank > 0 and parts[i].short is not None:
            chosen[i] = parts[i].short
    for i in order:
        if length() <= width:
            break
        if parts[i].rank > 0:
            chosen[i] = None
    for i in reversed(order):  # a part left out may fit again in the room a later one left
        for form in (parts[i].text, parts[i].short):
            if chosen[i] is None and form is not None and length() + form.cell_len <= width:
                chosen[i] = form
    line = Text(no_wrap=True, overflow="ellipsis")
    for t in chosen:
        if t is not None:
            line.append_text(t)
    return line


def short_device(device: str) -> str:
    """The device without its details, for a narrow header: "NVIDIA H200 (fp16, CUDA graphs)" ->
    "NVIDIA H200", "CPU (1 torch thread, channels-last, ...), engine process" -> "CPU, 1 thread"."""
    name = device.split(" (", 1)[0]
    threads = re.match(r"CPU \((\d+) torch thread", device)
    if threads:
        return f"{name}, {threads.group(1)} thread{'s' if threads.group(1) != '1' else ''}"
    return name


def header(snapshot: Snapshot, *, paused: bool = False, width: int = 100) -> Text:
    """Two lines: model, device, readiness; sources and counts per level. Parts that do not fit
    ``width`` are abbreviated or left out whole, the least important first."""
    h = snapshot.header
    first = [_part(" drsn-stream ", style="bold reverse"), _part(" ")]
    # Readiness and pause come first: they must survive a narrow terminal.
    if h.ready:
        first.append(_part(" READY ", style="bold black on green"))
    else:
        first.append(_part(" WARMING UP ", style="bold black on yellow"))
    if paused:
        first += [_part(" "), _part(" PAUSED (p resumes) ", style="bold black on cyan")]
    if h.status:
        first.append(_part(f" {h.status}", 1, "dim"))
    first.append(_part(f" {h.model or 'no model'}", style="bold"))
    if h.labels:
        first.append(_part(f" · {len(h.labels)} labels", 5))
    if h.sample_rate:
        khz = f"{h.sample_rate / 1000:g} kHz"
        first.append(_part(f" · {h.sample_rate:g} Hz", 3, short=f" · {khz}"))
        first.append(_part(f" · window/hop {h.window}/{h.hop}", 4, short=f" · win/hop {h.window}/{h.hop}"))
    if h.device:
        first.append(_part(f" · {h.device}", 2, "cyan", short=f" · {short_device(h.device)}"))
    counts = snapshot.level_counts()
    n = len(snapshot.rows)
    second = [_part(f" {n} stream{'s' if n != 1 else ''}: ")]
    for name in ("DANGER", "ALERT", "NORMAL"):
        second.append(_part(f"{counts[name]} {name}", style=LABEL_STYLE[name] if counts[name] else "dim"))
        second.append(_part(" · "))
    second.append(_part(f"{counts['CHECK_SENSOR']} CHECK SENSOR",
                        style="magenta" if counts["CHECK_SENSOR"] else "dim"))
    if h.sources:
        more = f" +{len(h.sources) - 1}" if len(h.sources) > 1 else ""
        second.append(_part(f"   sources: {', '.join(h.sources)}", 1, "dim", short=f"   {h.sources[0]}{more}"))
    text = fit_parts(first, width)
    text.append("\n")
    text.append_text(fit_parts(second, width))
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


def _health_cell(row: StreamRow, *, full: bool = False) -> Text:
    if row.healthy:
        return Text("OK", style="green")
    reasons = row.health_reasons if full else [_SHORT_REASON.get(r, r) for r in row.health_reasons]
    return Text("CHECK " + ",".join(reasons), style="bold magenta")


_ENV_SHORT = {"outer_race": "outer", "inner_race": "inner", "ball": "ball", "none": "none"}


def _envelope_cell(row: StreamRow) -> Text:
    """``inner 9.1dB ✓``: the envelope fault type, its evidence, and whether the label agrees.
    A type the latest block named but the stream's last three did not hold is a maybe
    (``outer? 3.4dB``, dim, no verdict): a healthy machine's own lines near a fault order cross
    the threshold now and then, and a type that flickers on and off is no finding. Lines that
    reach the threshold but not the margin over the machine's learned normal are its own
    (``learned 3.6dB``, dim): no fault type, though the number is over the threshold."""
    if row.envelope is None:
        return Text("-", style="dim")
    kind = _ENV_SHORT.get(row.envelope, row.envelope)
    if row.envelope != "none" and not row.envelope_held:
        return Text(f"{kind}? {row.envelope_db:.1f}dB", style="dim")
    if row.envelope_own:
        kind = "learned"
    text = Text(f"{kind} {row.envelope_db:.1f}dB", style="dim" if row.envelope == "none" else "bold")
    agree = agreement(row.label, row.envelope, getattr(row, "anomaly", None))
    if agree is True:
        text.append(" ✓", style="bold green")
    elif agree is False:
        text.append(" ≠", style="yellow")
    return text


def _anomaly_cell(row: StreamRow, *, spark: int) -> Text:
    """``12.3 ▁▂▇█``: the latest anomaly score and its course; the baseline's state while it learns."""
    if row.anomaly is None:
        state = row.baseline or "-"
        learning = state.startswith("learn") or state == "fitting"
        return Text(state if state != "monitoring" else "-", style="cyan" if learning else "dim")
    style = "bold red" if row.anomaly >= 1.0 else "green"
    text = Text(f"{row.anomaly:5.1f}" if row.anomaly < 1000 else f"{row.anomaly:5.0e}", style=style)
    if spark:
        text.append(" " + sparkline(row.anomalies, spark), style="cyan")
    return text


def _top3_cell(row: StreamRow, *, full: bool) -> Text:
    items = row.top3 if full else row.top3[1:2]
    return Text(" ".join(f"{lab} {p * 100:.0f}%" for lab, p in items), style="dim")


def _conf_cell(row: StreamRow, *, full: bool) -> Text:
    text = Text(bar(row.confidence) + " ", style=LABEL_STYLE[row.level]) if full else Text()
    text.append(f"{row.confidence * 100:3.0f}%")
    return text


def _label_cell(row: StreamRow, *, full: bool) -> Text:
    return Text(row.label, style={"?": "dim magenta", "unknown": "yellow"}.get(row.label, LABEL_STYLE[row.level]))


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


@dataclass(frozen=True)
class Column:
    """One column of the stream table, in two forms: compact (narrow terminals) and full.

    ``heading`` / ``short`` name the column with its unit; ``cell(row, full=...)`` formats one
    row; the column is at most ``cap`` cells wide compact and ``full_cap`` full (0: as wide as its
    widest cell). ``shown(rows)`` hides a column that has nothing to show (e.g. no envelope stage).
    """

    key: str
    heading: str
    short: str
    cell: Callable[..., Text]
    cap: int = 0
    full_cap: int = 0
    right: bool = False
    shown: Callable[[Sequence[StreamRow]], bool] | None = None
    abbreviates: bool = False  # the cells differ between the forms (else only the heading and cap)


# Display order, left to right. A new column (e.g. an anomaly score) is one entry here and one in
# COLUMN_PRIORITY.
COLUMNS: tuple[Column, ...] = (
    Column("stream", "stream", "stream", lambda r, full: Text(r.stream_id), cap=12, full_cap=18),
    Column("label", "label", "label", _label_cell, cap=10, full_cap=12),
    Column("conf", "conf %", "conf %", _conf_cell, abbreviates=True),
    Column("top", "top-3 %", "2nd %", _top3_cell, cap=13, full_cap=40, abbreviates=True),
    Column("alarm", "alarm, held for", "alarm held", lambda r, full: _alarm_cell(r)),
    Column("anomaly", "anomaly x thr", "anomaly", lambda r, full: _anomaly_cell(r, spark=6 if full else 0), cap=14,
           full_cap=14, shown=lambda rows: any(r.baseline is not None for r in rows), abbreviates=True),
    Column("env", "envelope dB", "env dB", lambda r, full: _envelope_cell(r), cap=16, full_cap=16,
           shown=lambda rows: any(r.envelope is not None for r in rows)),
    # the shaft speed where the frames carry it (the wire format's rpm): a machine's operating point
    Column("rpm", "shaft rpm", "rpm", lambda r, full: Text(f"{r.rpm:.0f}" if r.rpm is not None else "-", style="dim"),
           right=True, shown=lambda rows: any(r.rpm is not None for r in rows)),
    Column("noise", "noise 0-1", "noise", lambda r, full: Text(f"{r.noise_index:.2f}", style="dim"), right=True),
    Column("input", "input RMS", "input", lambda r, full: Text(sparkline(r.levels, 8 if full else 6), style="cyan"),
           abbreviates=True),
    Column("health", "sensor health", "health", _health_cell, cap=13, full_cap=24, abbreviates=True),
    Column("lat", "lat p50/p99 ms", "p50/p99 ms", lambda r, full: Text(f"{_ms(r.latency_p50_ms)}/{_ms(r.latency_p99_ms)}"),
           right=True),
    Column("drops", "drops", "drops", lambda r, full: Text(str(r.drops), style="red" if r.drops else "dim"),
           right=True),
    Column("host", "host", "host", lambda r, full: Text(r.host, style="dim"), cap=10, full_cap=16,
           shown=lambda rows: any(r.host for r in rows)),  # cluster mode: the host classifying the stream
)
# What stays when the terminal is narrow, most important first: the first ALWAYS_SHOWN are shown
# for every stream at any width; the others join, compact, in this order up to the first that does
# not fit; then columns take their full form (wider heading, confidence bar, all three labels, full
# health reasons) in the same order while the room lasts.
COLUMN_PRIORITY: tuple[str, ...] = ("stream", "label", "conf", "alarm", "health", "lat",
                                    "drops", "anomaly", "host", "env", "rpm", "noise", "top", "input")
ALWAYS_SHOWN = 6


def table_layout(rows: Sequence[StreamRow], width: int,
                 cells: dict[tuple[str, bool], list[Text]] | None = None) -> list[tuple[Column, bool, int]]:
    """``[(column, full form?, width)]`` in display order for ``rows`` in ``width`` cells.

    ``cells``: filled with the formatted cells it measured, ``{(key, full): [Text per row]}``.
    """
    cells = {} if cells is None else cells
    by_key = {c.key: c for c in COLUMNS}
    keys = [k for k in COLUMN_PRIORITY if k in by_key]
    keys += [c.key for c in COLUMNS if c.key not in keys]  # a column missing from the list goes last
    always = set(keys[:ALWAYS_SHOWN])

    def span(col: Column, full: bool) -> int:
        cap = col.full_cap if full else col.cap
        head = col.heading if full else col.short
        got = cells.get((col.key, full))
        if got is None and not col.abbreviates:
            got = cells.get((col.key, not full))
        if got is None:
            got = [col.cell(r, full=full) for r in rows]
        cells[(col.key, full)] = got
        need = max([len(head)] + [t.cell_len for t in got])
        return min(cap, need) if cap else need

    chosen: dict[str, tuple[bool, int]] = {}
    used = -1
    full_up = False
    for k in keys:
        col = by_key[k]
        if col.shown is not None and not col.shown(rows):
            continue
        w = span(col, False)
        if k in always or (not full_up and used + 1 + w <= width):
            chosen[k] = (False, w)
            used += 1 + w
        else:
            full_up = True  # strictly in priority order: no lower column takes a higher one's place
    for k in keys:
        if k in chosen:
            w = chosen[k][1]
            wf = span(by_key[k], True)
            if used - w + wf <= width:
                chosen[k] = (True, wf)
                used += wf - w
    over = used - width
    if over > 0:  # only the always-shown columns are left: the id and label give up cells first
        for k, floor in (("stream", 6), ("label", 6)):
            if k in chosen and over > 0:
                full, w = chosen[k]
                cut = min(over, max(0, w - floor))
                chosen[k] = (full, w - cut)
                over -= cut
    return [(c, *chosen[c.key]) for c in COLUMNS if c.key in chosen]


def stream_table(rows: Sequence[StreamRow], *, width: int = 100, title: str | None = None) -> Group:
    """The stream table: a title, column heads and one line per row, fitted to ``width`` cells.

    Columns fold and abbreviate in COLUMN_PRIORITY order (``table_layout``). Laid out by hand
    rather than with rich.Table: measuring a Table of a few dozen rows costs tens of
    milliseconds per refresh, taken from the pipeline's share of the GIL.
    """
    cells: dict[tuple[str, bool], list[Text]] = {}
    cols = table_layout(rows, width, cells)
    lines: list[RenderableType] = []
    if title:
        lines.append(Text(title, style="bold"))
    head = Text(style="bold dim", no_wrap=True, overflow="crop")
    for i, (col, full, w) in enumerate(cols):
        head.append_text(_fit(Text(col.heading if full else col.short), w, right=col.right))
        if i < len(cols) - 1:
            head.append(" ")
    lines.append(head)
    for n in range(len(rows)):
        line = Text(no_wrap=True, overflow="crop")  # fitted already: spare rich the wrapping
        for i, (col, full, w) in enumerate(cols):
            line.append_text(_fit(cells[(col.key, full)][n], w, right=col.right))
            if i < len(cols) - 1:
                line.append(" ")
        line.rstrip()
        lines.append(line)
    return Group(*lines)


def _role_style(role: str) -> str | None:
    kind, _, arg = role.partition(":")
    if kind == "alarm":
        return LABEL_STYLE.get(arg, "bold")
    if kind == "health":
        return "green" if arg == "OK" else "magenta"
    return {"dim": "dim", "heard": "bold cyan", "gap": "bold yellow"}.get(kind)


def event_line(event: Event) -> Text:
    """One line of the events pane (worded by ``sinks.lines.event_parts``, styled here)."""
    text = Text(no_wrap=True, overflow="ellipsis")
    text.append(time.strftime("%H:%M:%S", time.localtime(event.time)) + " ", style="dim")
    for part, role in event_parts(event.type, event.stream_id, event.data):
        text.append(part, style=_role_style(role))
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


def footer(snapshot: Snapshot, *, page: int = 0, pages: int = 1, width: int = 100) -> Text:
    """Engine and process figures, then the keys; parts that do not fit ``width`` are abbreviated
    or left out whole (the figures the metrics endpoint also has go first)."""
    f = snapshot.footer
    first = [
        _part(f" {f.windows_per_s:.1f} windows/s", short=f" {f.windows_per_s:.0f} win/s"),
        _part(f" · batch {f.avg_batch:.1f}", 4),
        _part(f" · queue {f.queue_depth}", 3),
        _part(" · "),
        _part(f"dropped {f.dropped}", style="red" if f.dropped else ""),
        _part(" · "),
        _part(f"malformed {f.malformed}", style="red" if f.malformed else ""),
        _part(f" · CPU {_num(f.cpu_percent, '.0f', '%')}", 2),
        _part(f" · RSS {_num(f.rss_mb, '.0f', ' MB')}", 2),
    ]
    if f.gpu_percent is not None or f.gpu_mem_mb is not None:
        first.append(_part(f" · GPU {_num(f.gpu_percent, '.0f', '%')} {_num(f.gpu_mem_mb, '.0f', ' MB')}", 1))
    second = [_part(" q quit · p pause · a acknowledge · ? help", 1, "dim", short=" q quit · p pause · a ack · ? help")]
    if pages > 1:
        second.append(_part(f" · n/b page {page + 1}/{pages}", style="dim"))
    latched = sum(1 for r in snapshot.rows if r.latched and r.unacknowledged)
    if latched:
        second.append(_part(f"   {latched} latched alarm{'s' if latched != 1 else ''}: press a to acknowledge",
                            style="bold yellow", short=f"   {latched} latched: press a"))
    text = fit_parts(first, width)
    text.append("\n")
    text.append_text(fit_parts(second, width))
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
        header(snapshot, paused=paused, width=width),
        stream_table(shown, width=width, title=title),
    ]
    if snapshot.transcript:
        parts.append(transcript_line(snapshot.transcript, width=width))
    parts.append(help_panel() if show_help else events_pane(snapshot.events, lines=event_lines))
    parts.append(footer(snapshot, page=shown_page, pages=pages, width=width))
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
        if not self.console.is_terminal:
            # rich ends its last screen with a newline on a terminal only: in a file or a pipe the
            # run's summary, printed next, began on the dashboard's last line ("? helpdrsn-stream: ...")
            self.console.line()


__all__ = [
    "ALWAYS_SHOWN",
    "COLUMNS",
    "COLUMN_PRIORITY",
    "LEVELS",
    "Column",
    "Dashboard",
    "Part",
    "bar",
    "event_line",
    "events_pane",
    "footer",
    "fit_parts",
    "format_duration",
    "header",
    "help_panel",
    "page_rows",
    "render",
    "render_once",
    "sparkline",
    "stream_table",
    "table_layout",
    "transcript_line",
]
