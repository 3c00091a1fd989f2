"""Where the time between pipenem's and torch's runtime goes, from their timelines.

    python docs/experiments/runtime_gap_trace.py [--steps 12] [--out docs/img]

Both runtimes train the comm-bound CI profile (ci-4stage: 1 Gbit links, link 1–2 at
80 Mbit; d=512, ctx 1024, one block per stage, batch 8 in 4 micro-batches, GPipe, modeled
a10g compute, netns/tbf, seed 0) with column 0.9 forward (pipenem: the gradient back with
``bwd: mirror``, what torch's runtime sends). Prints per runtime: tokens/s, mean step, the
per-micro-batch codec time of each stage and direction, and when the slow link's forward
and backward phases begin and end within a step (steps after the second). Writes one Gantt
picture per runtime (``gantt_runtime_<name>.png``) of a steady step, and the Perfetto traces.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from harness.results.timeline import _merge, message_intervals
from harness.runtime.spans import span_rows
from reports.figures import gantt_axes

ROOT = Path(__file__).resolve().parents[2]


def config(runtime: str, steps: int) -> dict:
    return {
        "topology": str(ROOT / "topologies" / "ci-4stage.yaml"),
        "runtime": runtime,
        "seed": 0,
        "model": {"d_model": 512, "n_layers": 4, "n_heads": 16, "ctx": 1024},
        "train": {"mode": "train", "schedule": "gpipe", "steps": steps, "batch": 8, "micro_batches": 4},
        "compression": {
            "fwd": {"name": "column", "rate": 0.9},
            "bwd": {"name": "mirror"} if runtime == "pipenem" else {"name": "none"},
        },
        "compute": {"mode": "modeled", "profile": "a10g"},
    }


def spans_of(run: Path) -> pd.DataFrame:
    rows = []
    for i in range(4):
        rows += span_rows(i, json.loads((run / f"stage{i}.json").read_text())["spans"])
    return pd.DataFrame(rows)


def summarise(name: str, run: Path) -> None:
    s = spans_of(run)
    summary = json.loads((run / "summary.json").read_text())
    steady = sorted(s["step"].unique())[2:]
    step_ms, phases = [], defaultdict(list)
    rows = s.to_dict("records")
    for k in steady:
        st = s[s["step"] == k]
        lo = st[st["kind"] == "fwd"]["t0"].min()
        hi = st[st["kind"].isin(["bwd", "optim"])]["t1"].max()
        step_ms.append((hi - lo) * 1e3)
        near = [r for r in rows if r["step"] in (k - 1, k)]
        for direction in ("forward", "backward"):
            iv = _merge([(a, b) for a, b in message_intervals(near, "1-2", direction) if lo - 0.05 <= a <= hi])
            if iv:
                phases[direction].append(((iv[0][0] - lo) * 1e3, (iv[-1][1] - lo) * 1e3))
    print(f"== runtime {name}: {summary['tokens_per_s']:,.0f} tokens/s, step {np.mean(step_ms):.1f} ms")
    for direction, v in phases.items():
        a, b = np.mean(v, axis=0)
        print(f"   slow link 1-2 {direction}: busy from {a:.1f} to {b:.1f} ms into the step")
    codec = s[(s["step"] >= 2) & s["kind"].isin(["encode", "decode", "fwd", "bwd"])].copy()
    codec["ms"] = (codec["t1"] - codec["t0"]) * 1e3
    table = codec.groupby(["stage", "kind", "direction"], dropna=False)["ms"].mean().round(2)
    print("   per micro-batch (ms; torch's fwd/bwd spans contain its codec, which runs inside autograd):")
    print("   " + table.to_string().replace("\n", "\n   "))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "img")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="pipenem-gap-"))
    fig, axes = plt.subplots(2, 1, figsize=(10, 7.4))
    for ax, name in zip(axes, ("pipenem", "torch"), strict=True):
        (work / f"{name}.json").write_text(json.dumps(config(name, args.steps)))
        run = work / name
        cmd = [sys.executable, "-m", "pipenem", "train", str(work / f"{name}.json"), "--out", str(run), "--quiet"]
        subprocess.run(cmd, check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
        subprocess.run([sys.executable, "-m", "pipenem", "trace", str(run)], check=True, cwd=ROOT)
        summarise(name, run)
        s = spans_of(run)
        tps = json.loads((run / "summary.json").read_text())["tokens_per_s"]
        gantt_axes(ax, s, args.steps // 2)
        ax.set_title(f"runtime {name}: column 0.9 train, GPipe, ci-4stage (80 Mbit link 1-2), {tps:,.0f} tokens/s")
    fig.tight_layout()
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "gantt_runtimes.png"
    fig.savefig(path, dpi=100)
    print(f"picture: {path}; runs and traces in {work}")


if __name__ == "__main__":
    main()
