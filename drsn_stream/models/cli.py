"""``drsn-stream models``: the built-in artifacts with their metadata, and the registered networks."""

from __future__ import annotations

import argparse
import json

from rich.table import Table

from drsn_stream.console import PipeConsole as Console
from drsn_stream.models.meta import builtin_dir, list_artifacts, read_meta


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print the metadata as one JSON document")
    parser.add_argument("--networks", action="store_true", help="also list the registered network architectures")


def run(args: argparse.Namespace) -> int:
    metas = [read_meta(name) for name in list_artifacts()]
    if args.json:
        print(json.dumps({"artifacts": [m.to_dict() for m in metas], "networks": _networks()}, indent=1))
        return 0
    console = Console()
    console.print(f"[bold]Built-in models[/] ({builtin_dir()})")
    room = max(20, console.width - len("trained on") - 2)  # the value column's width: the grid's first column and gap
    for m in metas:
        grid = Table.grid(padding=(0, 2))
        grid.add_column(style="dim", no_wrap=True)
        grid.add_column(overflow="fold")
        grid.add_row("network", m.model)
        grid.add_row("labels", f"{len(m.labels)}: " + ", ".join(m.labels))
        grid.add_row("input", f"{m.sample_rate} Hz, window {m.window} ({m.window_seconds:.3g} s), hop {m.hop}, "
                              f"{m.input.get('kind', '?')}, normalization {m.normalization.get('kind', '?')}")
        acc = [f"{k.removesuffix('_pct')} {_pct(k, v)}" for k, v in m.accuracy.items() if _pct(k, v)]
        if acc:
            split = f"({m.accuracy['split']} split)" if "split" in m.accuracy else ""
            grid.add_row("accuracy", _packed(acc, room, tail=split))
        grid.add_row("trained on", _data_summary(m.training))
        cal = m.unknown.get("calibration", {}) if m.unknown else {}
        if "test_refused" in cal:
            grid.add_row("unknown", _packed([f"label refused on {100 * cal['test_refused']:.2f} % of the test windows;",
                                             *(f"{k} {100 * v:.1f} %" for k, v in cal.get("synthetic_refused", {}).items())],
                                            room))
        if m.description:
            grid.add_row("about", m.description)
        grid.add_row("torch", f"{m.torch_version}, format v{m.format_version}, created {m.created}")
        console.print(f"\n[bold cyan]{m.name}[/]")
        console.print(grid)
    if not metas:
        console.print("[yellow]no built-in models are installed; train one with `drsn-stream train`[/]")
    if args.networks:
        console.print("\nnetworks: " + ", ".join(_networks()))
    return 0


def _packed(items: list[str], width: int, tail: str = "") -> str:
    """``items`` joined by ", " (after an item ending in ";": a space) into lines of at most
    ``width`` characters, broken between items only (a terminal's wrap split "pink@0dB 99.8 %"
    from its value), then ``tail`` two spaces after them."""
    lines: list[str] = []
    for item in items:
        sep = " " if lines and lines[-1].endswith(";") else ", "
        if lines and len(lines[-1]) + len(sep) + len(item) < width:  # (< : room for a "," after it)
            lines[-1] += sep + item
        else:
            if lines and sep == ", ":
                lines[-1] += ","
            lines.append(item)
    if tail:
        if lines and len(lines[-1]) + 2 + len(tail) <= width:
            lines[-1] += "  " + tail
        else:
            lines.append(tail)
    return "\n".join(lines)


def _data_summary(training: dict) -> str:
    data = training.get("data", "")
    if isinstance(data, dict):
        parts = [str(data.get(k)) for k in ("dataset", "description") if data.get(k)]
        if "files" in data and isinstance(data["files"], dict):
            n = sum(len(v) for v in data["files"].values())
            parts.append(f"{n} recordings")
        if "loads" in data:
            parts.append(f"loads {data['loads']} HP")
        data = ", ".join(parts)
    credit = training.get("credit")
    return f"{data}" + (f" ({credit})" if credit else "")


def _pct(key: str, v: object) -> str:
    """An accuracy as a percentage: fractions in [0, 1], or ``*_pct`` numbers that already are
    percentages; anything else (counts, seeds, nested tables) is not shown here."""
    if isinstance(v, (int, float)) and not isinstance(v, bool) and key.endswith("_pct"):
        return f"{v:.1f} %"
    if isinstance(v, float) and 0.0 <= v <= 1.0:
        return f"{100 * v:.1f} %"
    return ""


def _networks() -> list[str]:
    from drsn_stream.models.registry import list_models  # torch: the networks are torch modules

    return list_models()
