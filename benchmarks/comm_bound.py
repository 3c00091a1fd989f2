"""Throughput of a comm-bound pipeline vs the bound its bottleneck link implies, for both runtimes.

    python benchmarks/comm_bound.py [--steps-none 4] [--steps-column 24] [--mode infer|train]
                                    [--runtime pipenem torch]

Topology ``topologies/ci-4stage.yaml`` (1 Gbit links, link 1–2 at 80 Mbit), the paper's
width (d=512, ctx 1024), one block per stage, batch 8 in 4 micro-batches, **modeled**
A10G compute (so the links, not this CPU, limit the pipeline), netns backend, tbf, seed 0.
For ``none`` and ``column`` 0.9 (forward; training: the gradient back at the kept columns only,
``bwd: mirror`` in pipenem's runtime, which is what ``runtime: torch`` sends), under each
runtime (pipenem's GPipe, torch.distributed.pipelining's ScheduleGPipe), in one run each:

- measured tokens/s (after one warm-up step),
- the bound = tokens per micro-batch / (payload bits per micro-batch on link 1–2 / 80 Mbit/s),
  with the payload bytes measured on that link,
- their ratio, then column vs none: the drop in bytes on the slow link, the payload wire
  ratio, and the throughput gain.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from harness.config.schema import build_spec
from harness.runtime.launcher import run_pipeline

ROOT = Path(__file__).resolve().parent.parent
SLOW_RATE = 80e6


def run(compressor: dict | str, steps: int, mode: str = "infer", runtime: str = "pipenem") -> dict:
    bwd = "mirror" if compressor != "none" and runtime == "pipenem" and mode == "train" else "none"
    spec = build_spec(
        {
            "topology": str(ROOT / "topologies" / "ci-4stage.yaml"),
            "seed": 0,
            "runtime": runtime,
            "model": {"d_model": 512, "n_layers": 4, "n_heads": 16, "ctx": 1024},
            "train": {"mode": mode, "steps": steps, "batch": 8, "micro_batches": 4},
            "compression": {"fwd": compressor, "bwd": bwd},
            "compute": {"mode": "modeled", "profile": "a10g"},
        }
    )
    with tempfile.TemporaryDirectory() as d:
        r = run_pipeline(spec, d)
    slow = next(row for row in r.links if row["link"] == "1-2" and row["direction"] == "forward")
    micro = steps * spec.train.micro_batches
    bytes_per_micro = slow["payload_bytes"] / micro
    tokens_per_micro = spec.train.batch // spec.train.micro_batches * spec.model.ctx
    bound = tokens_per_micro / (bytes_per_micro * 8 / SLOW_RATE)
    measured = r.throughput(skip=1)
    return {
        "bytes_per_micro": bytes_per_micro,
        "bound": bound,
        "measured": measured,
        "ratio": measured / bound,
        "overhead": slow["overhead"],
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps-none", type=int, default=4)
    ap.add_argument("--steps-column", type=int, default=24)
    ap.add_argument("--mode", choices=["infer", "train"], default="infer")
    ap.add_argument("--runtime", nargs="+", choices=["pipenem", "torch"], default=["pipenem"])
    a = ap.parse_args()
    print(
        f"comm-bound {a.mode}: ci-4stage (80 Mbit link 1-2), d=512 ctx=1024, modeled a10g compute, netns/tbf, "
        "seed 0, GPipe, bound and bytes from the forward direction of link 1-2"
    )
    print(
        f"{'runtime':8s} {'compressor':12s} {'bytes/micro':>12s} {'bound tok/s':>12s} {'measured':>10s} "
        f"{'ratio':>6s} {'iface/payload':>14s}"
    )
    for runtime in a.runtime:
        rows = {
            "none": run("none", a.steps_none, a.mode, runtime),
            "column 0.9": run({"name": "column", "rate": 0.9}, a.steps_column, a.mode, runtime),
        }
        for name, r in rows.items():
            print(
                f"{runtime:8s} {name:12s} {r['bytes_per_micro']:12,.0f} {r['bound']:12,.0f} {r['measured']:10,.0f} "
                f"{r['ratio']:6.3f} {r['overhead']:14.3f}"
            )
        n, c = rows["none"], rows["column 0.9"]
        print(
            f"{runtime:8s} column 0.9 vs none: slow-link bytes {n['bytes_per_micro'] / c['bytes_per_micro']:.2f}x "
            f"fewer, throughput {c['measured'] / n['measured']:.2f}x"
        )


if __name__ == "__main__":
    main()
