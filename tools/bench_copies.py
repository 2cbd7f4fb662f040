#!/usr/bin/env python3
"""The floor of a multi-channel frame's data movement on the ingest path: today's three moves
against other arrangements of the same work, in the same run.

A 16-channel frame's samples are moved three times on their way in: the sensor health's gather
into its level rows (a transposed write, after a read that finds them finite), the windower's
copy into its rows (transposed again), and the level tests' read of the gathered rows every
``--every`` samples. This models exactly those moves (compiled with numba, no Python between
them) for ``--modules`` modules of ``--channels`` channels, frames of ``--samples`` samples
written fresh before each round as the socket's thread would, and times four arrangements:

- ``A``: as the monitor does (gather, copy, level tests on the gathered rows);
- ``B``: one read of each frame writing both the level rows and the windower's rows;
- ``C``: no level rows: the level tests read the windower's rows;
- ``D``: as A, the frames channel-major on the wire (every copy a row's memcpy).

Prints the thread's CPU per frame of each, per repeat (alternating), and each one's median as a
ratio to A's; then checks that every arrangement left the windower's rows and the level tests'
results exactly as A did (exit 1 where one did not: its time would mean nothing). A model, not
the monitor: it says what a restructuring could gain on this host before one is built
(docs/performance.md, "The copies' floor of a 16-channel frame").

    python tools/bench_copies.py
    python tools/bench_copies.py --modules 64 --channels 16 --rounds 400 --repeat 3
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from drsn_stream.errors import run_tool

VARIANTS = ("A", "B", "C", "D")


def _kernels() -> dict:
    import numba as nb

    @nb.njit
    def finite(x):  # every sample finite: no exponent with all bits set (as the gather reads it)
        b = x.reshape(x.size).view(np.int32)
        top = 0
        for i in range(b.shape[0]):
            top = max(top, b[i] & 0x7F800000)
        return top < 0x7F800000

    @nb.njit
    def copy_t(frame, dst, col):  # (n, channels) into rows from column col
        for k in range(frame.shape[1]):
            row = dst[k, col : col + frame.shape[0]]
            for i in range(frame.shape[0]):
                row[i] = frame[i, k]

    @nb.njit
    def copy_t2(frame, dst, col, dst2, row0, col2):  # into both, from one read
        for k in range(frame.shape[1]):
            row = dst[k, col : col + frame.shape[0]]
            row2 = dst2[row0 + k, col2 : col2 + frame.shape[0]]
            for i in range(frame.shape[0]):
                v = frame[i, k]
                row[i] = v
                row2[i] = v

    @nb.njit
    def copy_rows(planar, dst, row0, col):  # (channels, n) into rows: a memcpy each
        for k in range(planar.shape[0]):
            dst[row0 + k, col : col + planar.shape[1]] = planar[k]

    @nb.njit(fastmath={"reassoc", "nsz", "contract"})
    def levels(src, row0, rows, col, n):
        # the level tests' two passes per row: sum and extremes (as ordered integers, which the
        # compiler vectorizes), then the centred sum of squares and the samples at the extremes
        bits = src.view(np.int32)
        out = 0.0
        for k in range(row0, row0 + rows):
            s1 = 0.0
            hi = np.int32(-2147483648)
            lo = np.int32(2147483647)
            for i in range(col, col + n):
                s1 += np.float64(src[k, i])
                b = bits[k, i]
                key = b ^ ((b >> 31) & 0x7FFFFFFF)
                hi = max(hi, key)
                lo = min(lo, key)
            mean = np.float32(s1 / n)
            m2 = 0.0
            at = 0
            for i in range(col, col + n):
                v = src[k, i]
                d = np.float64(v - mean)
                m2 += d * d
                at += bits[k, i] == hi
                at += bits[k, i] == lo
            out += m2 + at
        return out

    return {"finite": finite, "copy_t": copy_t, "copy_t2": copy_t2, "copy_rows": copy_rows, "levels": levels}


def run(variant: str, k: dict, *, modules: int, channels: int, samples: int, every: int, window: int,
        rounds: int) -> tuple[float, list[np.ndarray], float]:
    """The thread's CPU per frame (us) of ``variant`` over ``rounds`` rounds of one frame per
    module; the windower's rows and the level tests' results it left (the same in every one)."""
    ring_len = 3 * window
    keep = window - samples  # what a windower keeps behind its newest samples, at most
    rings = [np.zeros((channels, ring_len), np.float32) for _ in range(modules)]
    pend = np.zeros((modules * channels, every + samples), np.float32)
    pos, pn = [0] * modules, [0] * modules
    src = np.random.default_rng(0).standard_normal((modules, samples, channels)).astype(np.float32)
    finite, copy_t, copy_t2, copy_rows, levels = k["finite"], k["copy_t"], k["copy_t2"], k["copy_rows"], k["levels"]
    cpu = 0.0
    judged = 0.0
    for r in range(rounds):
        # the socket's thread: fresh messages, written before the ingest reads them (channel-major
        # for D: the same samples, each channel's together)
        frames = [np.empty((samples, channels), np.float32) for _ in range(modules)]
        for m in range(modules):
            if variant == "D":
                frames[m].reshape(channels, samples)[...] = src[(m + r) % modules].T
            else:
                frames[m][...] = src[(m + r) % modules]
        t = time.thread_time()
        if variant in ("A", "D"):  # the health's gather for the whole round first, as the monitor does
            for m in range(modules):
                if variant == "A":
                    finite(frames[m])
                    copy_t(frames[m], pend[m * channels : (m + 1) * channels], pn[m])
                else:
                    planar = frames[m].reshape(channels, samples)
                    finite(planar)
                    copy_rows(planar, pend, m * channels, pn[m])
        for m in range(modules):
            if pos[m] + samples > ring_len:  # the windower's move: its kept samples to the front
                rings[m][:, :keep] = rings[m][:, pos[m] - keep : pos[m]]
                pos[m] = keep
            if variant == "A":
                copy_t(frames[m], rings[m], pos[m])
            elif variant == "B":
                finite(frames[m])
                copy_t2(frames[m], rings[m], pos[m], pend, m * channels, pn[m])
            elif variant == "C":
                finite(frames[m])
                copy_t(frames[m], rings[m], pos[m])
            else:
                copy_rows(frames[m].reshape(channels, samples), rings[m], 0, pos[m])
            pos[m] += samples
            pn[m] += samples
            if pn[m] >= every:
                if variant == "C":
                    judged += levels(rings[m], 0, channels, pos[m] - pn[m], pn[m])
                else:
                    judged += levels(pend, m * channels, channels, 0, pn[m])
                pn[m] = 0
        cpu += time.thread_time() - t
    return cpu / (rounds * modules) * 1e6, rings, judged


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--modules", type=int, default=64, help="modules (frames per round)")
    ap.add_argument("--channels", type=int, default=16, help="channels per frame")
    ap.add_argument("--samples", type=int, default=512, help="samples per channel of a frame")
    ap.add_argument("--every", type=int, default=1200, help="samples per level test (check_every_s at 12 kHz: 1,200)")
    ap.add_argument("--window", type=int, default=2048, help="the model's window (the windower keeps up to this)")
    ap.add_argument("--rounds", type=int, default=400, help="rounds of one frame per module per repeat")
    ap.add_argument("--repeat", type=int, default=3, help="repeats, the variants alternating")
    ap.add_argument("--variants", default=",".join(VARIANTS), help="which of A,B,C,D (A is the baseline)")
    args = ap.parse_args(argv)
    variants = [v.strip().upper() for v in args.variants.split(",") if v.strip()]
    if "A" not in variants or not set(variants) <= set(VARIANTS):
        ap.error(f"--variants: some of {','.join(VARIANTS)}, A among them (the baseline)")
    if args.window <= args.samples or min(args.modules, args.channels, args.samples, args.every, args.rounds,
                                          args.repeat) < 1:
        ap.error("sizes must be positive and --window larger than --samples")
    if "C" in variants and args.every > args.window - args.samples:
        ap.error(f"--every {args.every} is more than --window minus --samples ({args.window - args.samples}): C "
                 "reads the level tests' samples from the windower's rows, which keep no more than that")
    k = _kernels()
    sizes = dict(modules=args.modules, channels=args.channels, samples=args.samples, every=args.every,
                 window=args.window)
    # compiled, and the arrays' pages faulted in, before any timing; long enough for the windower's
    # rows to move once (3 windows long), so that the check below covers reads after a move too
    first = max(7, 3 * args.window // args.samples + 2)
    left = {v: run(v, k, **sizes, rounds=first)[1:] for v in variants}
    got: dict[str, list[float]] = {v: [] for v in variants}
    for _ in range(args.repeat):
        for v in variants:
            got[v].append(run(v, k, **sizes, rounds=args.rounds)[0])
    print(f"{args.modules} modules x {args.channels} channels, {args.samples} samples per frame, level tests every "
          f"{args.every}, {args.rounds} rounds x {args.repeat} (thread CPU per frame)")
    base = statistics.median(got["A"])
    for v in variants:
        med = statistics.median(got[v])
        runs = ", ".join(f"{x:.1f}" for x in got[v])
        print(f"  {v}: {runs} us per frame; median {med:.1f} ({med / args.channels:.2f} per channel), "
              f"{med / base:.2f}x A")
    rings_a, judged_a = left["A"]
    differ = [v for v in variants if left[v][1] != judged_a
              or not all(np.array_equal(x, y) for x, y in zip(left[v][0], rings_a))]
    if differ:
        print(f"  {', '.join(differ)} left other rows or level results than A: their times mean nothing")
        return 1
    print("  every arrangement left the windower's rows and the level tests' results exactly as A did")
    return 0


if __name__ == "__main__":
    raise SystemExit(run_tool(main, "tools/bench_copies.py"))
