"""``drsn-stream bench``: its options here, the benchmark in ``engine.bench`` (and ``engine.peers``),
imported when it runs: ``drsn-stream --help`` does not load torch for them."""

from __future__ import annotations

import argparse

from drsn_stream.config import arg_number
from drsn_stream.engine.contract import BATCH_LIMIT, THREADS_LIMIT
from drsn_stream.engine.contract import BENCH_BATCH_SIZES as DEFAULT_SIZES


def batch_sizes(text: str) -> str:
    """``--batch-sizes``: comma-separated whole numbers from 1 to ``BATCH_LIMIT`` (checked here,
    kept as text: the default depends on ``--peers``)."""
    parts = [p.strip() for p in text.split(",") if p.strip()]
    if not parts or not all(p.isdigit() and 1 <= int(p) <= BATCH_LIMIT for p in parts):
        raise argparse.ArgumentTypeError(f"{text!r}: give whole numbers from 1 to {BATCH_LIMIT:,}, comma-separated")
    return ",".join(parts)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", "-m", default="bearing-cwru", help="built-in name or .pt path")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--batch-sizes", default=None, type=batch_sizes,
                        help=f"comma-separated (default {','.join(map(str, DEFAULT_SIZES))}; with --peers 64,256)")
    parser.add_argument("--seconds", type=arg_number(float, above=0, most=3600), default=1.0, help="time per measurement (s)")
    parser.add_argument("--threads", type=arg_number(int, 1, THREADS_LIMIT), help="torch CPU threads for all contenders (default: cores - 1)")
    parser.add_argument("--lanes", type=arg_number(int, 1, 16), default=2, help="CUDA batches in flight in the engine (1 = none overlap)")
    parser.add_argument("--cpu-layout", choices=["auto", "script", "off"], default="auto",
                        help="CPU engine: the verified channels-last form of 1-D networks (auto) or the module as stored")
    parser.add_argument("--naive-windows", type=arg_number(int, 1, 1_000_000), default=200, help="windows for the naive eager loop")
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    parser.add_argument("--peers", action="store_true",
                        help="CPU: the engine against frozen TorchScript, ONNX Runtime, OpenVINO and torch.compile "
                             "(those installed: pip install 'drsn-stream[bench]'), 1 thread unless --threads")
    parser.add_argument("--repeat", type=arg_number(int, 1, 1000), default=3, help="--peers: interleaved repeats (medians shown)")
    parser.add_argument("--compile-limit", type=arg_number(float, above=0), default=300.0, metavar="S",
                        help="--peers: seconds torch.compile may take to compile before it is left out")


def run(args: argparse.Namespace) -> int:
    from drsn_stream.engine import bench

    return bench.run(args)
