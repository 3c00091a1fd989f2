"""FLOPs of a convergence trial, measured, and the wall time they imply on a GPU.

    python benchmarks/paper_flops.py [--suite suites/beyond-topk-convergence.yaml] [--tokens 2048]

Counts one training micro-batch (forward + backward through all stages, ``none`` at the
boundaries) with ``torch.utils.flop_counter.FlopCounterMode`` on the CPU for ``--tokens``
tokens of the suite's model (FLOPs are linear in the tokens of a step, so a slice of a
micro-batch is enough). FlopCounterMode counts the matmuls but not the CPU's fused
scaled-dot-product attention, so causal attention (QKᵀ and AV over half the context on
average, forward and 2× backward) is added from the formula, which is also pipenem's own
count (``harness.model.stages.stage_flops``, 3× the forward) — printed beside it as a check.
Codec work (topk, masks) is not counted: it is memory-bound. The GPU time is a projection at
an assumed fraction of the bf16 dense peak (stated; nothing here ran on a GPU).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from harness.model.stages import build_stages, stage_flops
from harness.runtime.training import lm_loss
from harness.sweep.suite import load_suite

ROOT = Path(__file__).resolve().parent.parent
H100_H200_BF16_DENSE = 989e12  # NVIDIA datasheet, SXM, dense (the H200 has the H100's compute)
EFFICIENCY = (0.15, 0.25, 0.40)  # fractions of that peak a d=512 eager-PyTorch model may sustain


def measured_flops(run, tokens: int) -> tuple[float, float, float]:
    """(FlopCounterMode's count, causal attention by formula, pipenem's whole formula) for
    forward + backward of ``tokens`` tokens."""
    spec, geo = run.spec, run.geometry
    seqs = max(1, tokens // geo.ctx)
    mods = build_stages(spec.model, run.partition, spec.seed)
    x = torch.randint(0, geo.vocab, (seqs, geo.ctx))
    with FlopCounterMode(display=False) as counter:
        h = x
        for mod in mods:
            h = mod(h)
        lm_loss(h, x).backward()
    last = len(mods) - 1
    formula = 3 * sum(
        stage_flops(spec.model, geo, n, seqs * geo.ctx, i == last, mods[i]) for i, n in enumerate(run.partition)
    )
    attention = 3 * geo.n_layers * 2 * 2 * (geo.ctx / 2) * geo.d_model * seqs * geo.ctx
    return float(counter.get_total_flops()), attention, formula


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--suite", default=str(ROOT / "suites" / "beyond-topk-convergence.yaml"))
    ap.add_argument("--tokens", type=int, default=2048, help="tokens counted (a slice of one micro-batch)")
    a = ap.parse_args()
    suite, trials = load_suite(a.suite)
    run = trials[0].checked
    spec = run.spec
    tokens = max(1, a.tokens // run.geometry.ctx) * run.geometry.ctx
    counted, attention, formula = measured_flops(run, tokens)
    per_token = (counted + attention) / tokens
    step = per_token * run.tokens_per_step
    trial = step * spec.train.steps
    total = trial * len(trials)
    print(
        f"suite {suite.name}: {len(trials)} trials; model {run.geometry}; {spec.train.steps} steps of "
        f"{run.tokens_per_step:,} tokens"
    )
    print(
        f"training FLOPs per token: {counted / tokens / 1e6:.1f} M counted by FlopCounterMode (matmuls) + "
        f"{attention / tokens / 1e6:.1f} M causal attention = {per_token / 1e6:.1f} M; "
        f"pipenem's formula: {formula / tokens / 1e6:.1f} M"
    )
    print(f"per step {step / 1e12:.2f} TFLOP; per trial {trial / 1e15:.2f} PFLOP; suite {total / 1e15:.0f} PFLOP")
    for eff in EFFICIENCY:
        rate = eff * H100_H200_BF16_DENSE
        print(
            f"  at {eff:.0%} of the H100/H200 bf16 dense peak ({rate / 1e12:.0f} TFLOP/s): "
            f"{trial / rate / 60:.1f} min per trial, {total / rate / 3600:.1f} h for the suite"
        )


if __name__ == "__main__":
    main()
