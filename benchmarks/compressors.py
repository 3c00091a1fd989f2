"""Encode+decode time of each compressor vs the time its payload takes on a link.

    python benchmarks/compressors.py [--shape 32x1024x512] [--rate 0.9] [--repeat 3]

A (32×1024×512) fp32 tensor (the paper's activation at one boundary), rate 0.9.
Time = median of ``--repeat`` runs of encode → decode on this machine, torch's default
threads (the runtime sends a payload's parts as they are, so no serialization copy is
timed), under the malloc the stage workers use: tcmalloc where installed, see
harness/runtime/allocator.py; ``--allocator system`` times glibc's, which faults in every fresh
64 MiB output page by page. Link time = payload bits / link rate (no protocol overhead).
Targets on the 2-core dev machine: column, row, randk, quantize ≤ 5 % of the payload's
1 Gbit transfer time; topk ≤ 25 %; the rest is reported without a target.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch

from harness.compressors import Context, build
from harness.compressors.wire import dense_bytes
from harness.runtime.allocator import active, exec_python, find_tcmalloc

TARGETS = {"column": 0.05, "row": 0.05, "randk": 0.05, "quantize": 0.05, "topk": 0.25}


def specs(rate: float) -> list[dict]:
    return [
        {"name": "none"},
        {"name": "fp16"},
        {"name": "topk", "rate": rate},
        {"name": "randk", "rate": rate},
        {"name": "column", "rate": rate},
        {"name": "row", "rate": rate},
        {"name": "quantize", "bits": 4},
        {"name": "quantize", "bits": 2},
        {"name": "lowrank", "rate": rate, "method": "power"},
        {"name": "lowrank", "rate": rate},
        {"name": "ef", "inner": {"name": "topk", "rate": rate}},
        {"name": "sketch", "rate": rate},
    ]


def time_roundtrip(c, x: torch.Tensor, repeat: int) -> tuple[float, float, float, int]:
    enc, dec, total = [], [], []
    nbytes = 0
    for step in range(repeat):
        ctx = Context(step=step)
        t0 = time.perf_counter()
        p = c.encode(x, ctx)
        t1 = time.perf_counter()
        c.decode(p, Context(step=step) if c.receiver_state else ctx)
        t2 = time.perf_counter()
        enc.append(t1 - t0)
        dec.append(t2 - t1)
        total.append(t2 - t0)
        nbytes = p.nbytes
    return statistics.median(enc), statistics.median(dec), statistics.median(total), nbytes


def _timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--shape", default="32x1024x512")
    ap.add_argument("--rate", type=float, default=0.9)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--skip", default="", help="comma-separated names to skip (e.g. sketch)")
    ap.add_argument(
        "--allocator",
        choices=["tcmalloc", "system"],
        default="tcmalloc",
        help="malloc to time under; stage workers use tcmalloc where the host has it (harness.runtime.allocator)",
    )
    a = ap.parse_args()
    if a.allocator == "tcmalloc" and active() != "tcmalloc" and find_tcmalloc():
        exec_python(sys.argv)  # this script again, from the start, under tcmalloc
    allocator = active()
    shape = tuple(int(v) for v in a.shape.split("x"))
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(0))
    skip = set(filter(None, a.skip.split(",")))
    dense = dense_bytes(x.shape, x.dtype)
    print(
        f"tensor {shape} fp32 ({dense / 1e6:.1f} MB), rate {a.rate}, median of {a.repeat}, "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, allocator: {allocator}"
    )
    torch.zeros(shape)  # the first large block grows the heap once
    floor_alloc = statistics.median(_timed(lambda: torch.zeros(shape)) for _ in range(a.repeat))
    floor_read = statistics.median(_timed(lambda: x.sum()) for _ in range(a.repeat))
    print(
        f"floors on this machine: allocate+zero a dense output {floor_alloc * 1e3:.1f} ms, "
        f"read the tensor once {floor_read * 1e3:.1f} ms; 5% of the 1 Gbit time of a 10x-smaller payload "
        f"is {0.05 * dense / 10 * 8 / 1e9 * 1e3:.1f} ms"
    )
    head = (
        f"{'compressor':26s} {'payload MB':>10s} {'ratio':>6s} {'enc ms':>8s} {'dec ms':>9s} {'enc+dec':>9s} "
        f"{'1Gbit ms':>9s} {'80Mbit ms':>9s} {'% of 1G':>8s} {'target':>7s}"
    )
    print(head)
    print("-" * len(head))
    for spec in specs(a.rate):
        c = build(spec)
        if c.name in skip:
            continue
        enc, dec, total, nbytes = time_roundtrip(c, x, a.repeat)
        t1g, t80 = nbytes * 8 / 1e9, nbytes * 8 / 80e6
        frac = total / t1g
        target = TARGETS.get(c.name) if c.name in TARGETS and spec.get("name") != "ef" else None
        verdict = "-" if target is None else ("ok" if frac <= target else "MISS")
        print(
            f"{c.label():26s} {nbytes / 1e6:10.2f} {dense / nbytes:6.2f} {enc * 1e3:8.1f} {dec * 1e3:9.1f} "
            f"{total * 1e3:9.1f} {t1g * 1e3:9.1f} {t80 * 1e3:9.1f} {frac * 100:7.1f}% "
            f"{verdict if target is None else f'{verdict} ≤{target * 100:.0f}%'}"
        )


if __name__ == "__main__":
    main()
