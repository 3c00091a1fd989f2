"""Each compressor's encode and decode time against the memory floor, measured in one run.

    python benchmarks/compressors.py [--json] [--shape 32x1024x512] [--rate 0.9] [--repeat 5]

A (32×1024×512) fp32 tensor (the paper's activation at one boundary), rate 0.9, one torch
thread (what a stage worker runs with: ``compute.threads: 1``). The **floor** is what any codec
must at least do: read the input once and write the dense output once — ``out.copy_(x)`` into a
buffer that is already allocated and faulted in — on the same tensor, in the same process.
``ratio`` = (encode + decode) / floor. Encode and decode run as the stage workers run them:
the boundary's buffers (``harness.compressors.buffers``) are reused from the second step on, so
nothing is allocated or faulted in on the codec path; times are medians over ``--repeat``
steps after one warm-up step. The floor is timed inside every step, just before the encode, so
that each codec is compared with the floor under the same conditions (on a shared VM the
memory bandwidth drifts by ±20% over a minute).

``target`` is the issue-21 bound on ``ratio`` for this 2-core machine; for ``ef`` and ``ef21`` it
is their inner compressor's ratio in the same run plus one floor.

Both mallocs are measured, one process each (glibc's, then tcmalloc's where the host has it);
``PIPENEM_ALLOCATOR=system`` measures the system malloc only. ``--json`` prints one object per
compressor and malloc: compressor, allocator, encode_ms, decode_ms, floor_ms, ratio, target.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import torch

from harness.compressors import Context, build
from harness.compressors.buffers import BufferPool
from harness.runtime.allocator import active, find_tcmalloc, preload_env

# (encode + decode) / floor targets on the 2-core dev machine, system malloc (issue 21)
TARGETS = {
    "column": 2.0,
    "row": 2.0,
    "randk": 2.0,
    "fp16": 2.0,
    "bf16": 2.0,
    "quantize": 3.0,
    "topk": 5.0,
}


def specs(rate: float) -> list[dict]:
    return [
        {"name": "none"},
        {"name": "fp16"},
        {"name": "bf16"},
        {"name": "topk", "rate": rate},
        {"name": "randk", "rate": rate},
        {"name": "column", "rate": rate},
        {"name": "row", "rate": rate},
        {"name": "quantize", "bits": 8},
        {"name": "quantize", "bits": 4},
        {"name": "quantize", "bits": 2},
        {"name": "lowrank", "rate": rate, "method": "power"},
        {"name": "lowrank", "rate": rate},
        {"name": "ef", "inner": {"name": "topk", "rate": rate}},
        {"name": "ef21", "inner": {"name": "topk", "rate": rate}},
        {"name": "sketch", "rate": rate},
    ]


def time_codec(c, x: torch.Tensor, repeat: int) -> tuple[float, float, float, int]:
    """(encode ms, decode ms, floor ms, payload bytes): a boundary's sender and receiver, steps
    1 … repeat, each step timing the floor first."""
    dense, evict = torch.empty_like(x), torch.empty_like(x)
    send_pool, recv_pool = BufferPool(), BufferPool()
    sender, receiver = {}, {}
    step = {"k": 0}
    held = {}

    def ctx(pool, state) -> Context:
        return Context(step=step["k"], state=state, buffers=pool)

    def encode() -> None:
        held.pop("p", None)
        held["p"] = c.encode(x, ctx(send_pool, sender))

    def decode() -> None:
        held.pop("y", None)
        held["y"] = c.decode(held["p"], ctx(recv_pool, receiver if c.receiver_state else sender))
        step["k"] += 1

    enc, dec, floor = [], [], []
    for k in range(repeat + 1):
        tf = time.perf_counter()
        dense.copy_(x)
        t_floor = time.perf_counter() - tf
        evict.zero_()  # untimed: the floor's read of x leaves no part of it in cache for the encode
        t0 = time.perf_counter()
        encode()
        t1 = time.perf_counter()
        decode()
        t2 = time.perf_counter()
        if k:  # the first step allocates the boundary's buffers
            enc.append(t1 - t0)
            dec.append(t2 - t1)
            floor.append(t_floor)
    ms = [statistics.median(v) * 1e3 for v in (enc, dec, floor)]
    return ms[0], ms[1], ms[2], held["p"].nbytes


def measure(shape: tuple[int, ...], rate: float, repeat: int, skip: set[str]) -> list[dict]:
    torch.set_num_threads(1)
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(0))
    rows = []
    for spec in specs(rate):
        c = build(spec)
        if c.name in skip:
            continue
        enc, dec, floor, nbytes = time_codec(c, x, repeat)
        target = TARGETS.get(c.name)
        if c.wraps():  # error feedback: its inner compressor's ratio in this run + one floor
            inner = next((r for r in rows if r["compressor"] == c.inner.label()), None)
            target = None if inner is None else round(inner["ratio"] + 1.0, 2)
        rows.append(
            {
                "compressor": c.label(),
                "allocator": active(),
                "encode_ms": round(enc, 3),
                "decode_ms": round(dec, 3),
                "floor_ms": round(floor, 3),
                "ratio": round((enc + dec) / floor, 2),
                "target": target,
                "payload_bytes": nbytes,
            }
        )
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--shape", default="32x1024x512")
    ap.add_argument("--rate", type=float, default=0.9)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--skip", default="", help="comma-separated names to skip (e.g. sketch)")
    ap.add_argument("--json", action="store_true", help="one JSON object per compressor and malloc")
    ap.add_argument("--one", action="store_true", help=argparse.SUPPRESS)  # this malloc only (the child run)
    a = ap.parse_args()
    shape = tuple(int(v) for v in a.shape.split("x"))
    rows = measure(shape, a.rate, a.repeat, set(filter(None, a.skip.split(","))))
    if not a.one and os.environ.get("PIPENEM_ALLOCATOR") != "system" and active() != "tcmalloc" and find_tcmalloc():
        child = subprocess.run(
            [sys.executable, *sys.argv, "--one", "--json"],
            env=preload_env({**os.environ, "PIPENEM_ALLOCATOR": "tcmalloc"}),
            capture_output=True,
            text=True,
            check=True,
        )
        rows += [json.loads(line) for line in child.stdout.splitlines() if line.startswith("{")]
    if a.json:
        for r in rows:
            print(json.dumps(r))
        return
    print(f"tensor {shape} fp32, rate {a.rate}, median of {a.repeat} steps after a warm-up, 1 torch thread")
    head = (
        f"{'compressor':24s} {'malloc':14s} {'enc ms':>8s} {'dec ms':>8s} {'floor ms':>8s} {'ratio':>6s} {'target':>7s}"
    )
    print(head)
    print("-" * len(head))
    for r in rows:
        t = r["target"]
        verdict = "" if t is None else ("ok" if r["ratio"] <= t else "MISS")
        print(
            f"{r['compressor']:24s} {r['allocator']:14s} {r['encode_ms']:8.1f} {r['decode_ms']:8.1f} "
            f"{r['floor_ms']:8.2f} {r['ratio']:6.2f} {'' if t is None else f'≤{t:g}':>7s} {verdict}"
        )


if __name__ == "__main__":
    main()
