"""Row masking, straight-through: how the boundary gradient's blow-up scales with RMSNorm's ε
and the number of compressed boundaries (README: "Row masking: the mechanism").

    python docs/experiments/row_masking_depth.py

Tiny twin runs (d=32, synthetic text, 20 steps, no clipping, seed 0), forward-only row masking
at 10%, straight-through boundary gradients; prints the median pre-clip gradient norm.
"""

from __future__ import annotations

import statistics
from pathlib import Path

from harness.config.schema import build_spec
from harness.runtime.twin import run_twin

ROOT = Path(__file__).resolve().parents[2]


def median_grad_norm(eps: float, topology: str, layers: int, boundary_grad: str) -> float:
    spec = build_spec(
        {
            "topology": str(ROOT / "topologies" / f"{topology}.yaml"),
            "backend": "twin",
            "seed": 0,
            "model": {"d_model": 32, "n_layers": layers, "n_heads": 4, "ctx": 32, "norm_eps": eps},
            "data": {"dataset": "synthetic"},
            "train": {
                "steps": 20,
                "batch": 8,
                "micro_batches": 2,
                "lr": 0.003,
                "warmup": 4,
                "boundary_grad": boundary_grad,
                "grad_clip": None,
            },
            "compression": {"fwd": {"name": "row", "rate": 0.1}, "bwd": "none"},
        }
    )
    return statistics.median(r["grad_norm"] for r in run_twin(spec))


def main() -> None:
    print(
        "| RMSNorm ε | 1/√ε | 3 boundaries, straight-through | 7 boundaries, straight-through | 7 boundaries, exact |"
    )
    print("|---|---|---|---|---|")
    for eps in (1e-5, 1e-3, 1e-2, 1e-1):
        cells = [
            median_grad_norm(eps, "ci-4stage", 4, "straight-through"),
            median_grad_norm(eps, "beyond-topk-8stage", 8, "straight-through"),
            median_grad_norm(eps, "beyond-topk-8stage", 8, "exact"),
        ]
        print(f"| {eps:g} | {eps**-0.5:.0f} | " + " | ".join(f"{c:.3g}" for c in cells) + " |")


if __name__ == "__main__":
    main()
