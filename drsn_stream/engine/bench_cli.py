"""``drsn-stream bench``: its options here, the benchmark in ``engine.bench`` (and ``engine.peers``),
imported when it runs: ``drsn-stream --help`` does not load torch for them."""

from __future__ import annotations

import argparse

from drsn_stream.engine.contract import BENCH_BATCH_SIZES as DEFAULT_SIZES


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", "-m", default="bearing-cwru", help="built-in name or .pt path")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--batch-sizes", default=None,
                        help=f"comma-separated (default {','.join(map(str, DEFAULT_SIZES))}; with --peers 64,256)")
    parser.add_argument("--seconds", type=float, default=1.0, help="time per measurement (s)")
    parser.add_argument("--threads", type=int, help="torch CPU threads for all contenders (default: cores - 1)")
    parser.add_argument("--lanes", type=int, default=2, help="CUDA batches in flight in the engine (1 = none overlap)")
    parser.add_argument("--cpu-layout", choices=["auto", "off"], default="auto",
                        help="CPU engine: the verified channels-last form of 1-D networks (auto) or the module as stored")
    parser.add_argument("--naive-windows", type=int, default=200, help="windows for the naive eager loop")
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    parser.add_argument("--peers", action="store_true",
                        help="CPU: the engine against frozen TorchScript, ONNX Runtime, OpenVINO and torch.compile "
                             "(those installed: pip install 'drsn-stream[bench]'), 1 thread unless --threads")
    parser.add_argument("--repeat", type=int, default=3, help="--peers: interleaved repeats (medians shown)")
    parser.add_argument("--compile-limit", type=float, default=300.0, metavar="S",
                        help="--peers: seconds torch.compile may take to compile before it is left out")


def run(args: argparse.Namespace) -> int:
    from drsn_stream.engine import bench

    return bench.run(args)
