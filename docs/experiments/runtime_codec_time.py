"""Why torch's runtime trained faster than pipenem's with column 0.9 on the comm-bound profile
(README: "runtime: torch"): step time and per-stage encode/decode/receive-wait seconds of both.

    python docs/experiments/runtime_codec_time.py     (root: real namespaces and shaped links)

ci-4stage (80 Mbit link 1-2), d=512 ctx=1024, batch 8 in 4 micro-batches, GPipe, modeled a10g
compute, 10 steps (the first skipped), seed 0; column 0.9 forward, the kept values' gradient
back (pipenem: bwd mirror). torch's stages time only their forward codec: their backward
placement runs inside autograd.
"""

from __future__ import annotations

import statistics
import tempfile
from pathlib import Path

from harness.config.schema import build_spec
from harness.runtime.launcher import run_pipeline

ROOT = Path(__file__).resolve().parents[2]


def main() -> None:
    for runtime in ("pipenem", "torch"):
        spec = build_spec(
            {
                "topology": str(ROOT / "topologies" / "ci-4stage.yaml"),
                "seed": 0,
                "runtime": runtime,
                "model": {"d_model": 512, "n_layers": 4, "n_heads": 16, "ctx": 1024},
                "train": {"mode": "train", "steps": 10, "batch": 8, "micro_batches": 4},
                "compression": {
                    "fwd": {"name": "column", "rate": 0.9},
                    "bwd": "mirror" if runtime == "pipenem" else "none",
                },
                "compute": {"mode": "modeled", "profile": "a10g"},
            }
        )
        with tempfile.TemporaryDirectory() as d:
            r = run_pipeline(spec, d)
        print(f"{runtime}: {r.throughput(skip=1):,.0f} tokens/s")
        for s in range(r.stages):
            rows = [x for x in r.steps if x["stage"] == s and x["step"] >= 1]

            def ms(key: str, rows: list[dict] = rows) -> float:
                return statistics.mean((x[key] or 0.0) for x in rows) * 1e3

            step = statistics.mean(x["end"] - x["start"] for x in rows) * 1e3
            print(
                f"  stage {s}: step {step:.0f} ms, encode {ms('encode_s'):.1f} ms, decode {ms('decode_s'):.1f} ms, "
                f"recv_wait {ms('recv_wait_s'):.0f} ms"
            )


if __name__ == "__main__":
    main()
