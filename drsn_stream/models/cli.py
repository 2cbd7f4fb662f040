"""``drsn-stream models``: the built-in artifacts with their metadata, and the registered networks."""

from __future__ import annotations

import argparse
import json

from rich.console import Console
from rich.table import Table

from drsn_stream.models.artifact import builtin_dir, list_artifacts, read_meta
from drsn_stream.models.registry import list_models


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print the metadata as one JSON document")
    parser.add_argument("--networks", action="store_true", help="also list the registered network architectures")


def run(args: argparse.Namespace) -> int:
    metas = [read_meta(name) for name in list_artifacts()]
    if args.json:
        print(json.dumps({"artifacts": [m.to_dict() for m in metas], "networks": list_models()}, indent=1))
        return 0
    console = Console()
    table = Table(title=f"Built-in models ({builtin_dir()})")
    for col in ("name", "network", "labels", "rate", "window / hop", "input", "accuracy (held-out)", "trained on"):
        table.add_column(col, overflow="fold")
    for m in metas:
        acc = ", ".join(f"{k} {_pct(v)}" for k, v in list(m.accuracy.items())[:6] if _pct(v))
        labels = ", ".join(m.labels) if len(m.labels) <= 13 else f"{len(m.labels)} labels"
        table.add_row(
            m.name, m.model, labels, f"{m.sample_rate} Hz", f"{m.window} / {m.hop}", m.input.get("kind", "?"),
            acc, str(m.training.get("data", ""))[:80],
        )
    console.print(table)
    if not metas:
        console.print("[yellow]no built-in models are installed; train one with `drsn-stream train`[/]")
    if args.networks:
        console.print("networks: " + ", ".join(list_models()))
    return 0


def _pct(v: object) -> str:
    if isinstance(v, (int, float)):
        return f"{100 * v:.1f} %" if v <= 1 else f"{v:.1f} %"
    return ""
