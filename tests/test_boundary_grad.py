"""Boundary-gradient semantics: the behaviour the row-masking ablation found (README:
"Row masking: the mechanism"), pinned on a tiny twin (no network, a few seconds)."""

from __future__ import annotations

import statistics

from harness.config.schema import build_spec
from harness.runtime.twin import run_twin, stage_gradient_norms
from tests.conftest import TOPOLOGIES


def _spec(**train) -> dict:
    return {
        "topology": str(TOPOLOGIES / "ci-4stage.yaml"),
        "backend": "twin",
        "seed": 0,
        "model": {"d_model": 32, "n_layers": 4, "n_heads": 4, "ctx": 32},
        "data": {"dataset": "synthetic"},
        "train": {"steps": 40, "batch": 8, "micro_batches": 2, "lr": 0.003, "warmup": 4, **train},
        "compression": {"fwd": {"name": "row", "rate": 0.1}, "bwd": "none"},
    }


def _run(eps: float = 1e-5, **train) -> tuple[float, float]:
    """(mean loss of the last 5 steps, median pre-clip gradient norm)."""
    spec = _spec(**train)
    spec["model"]["norm_eps"] = eps
    rows = run_twin(build_spec(spec))
    return statistics.mean(r["loss"] for r in rows[-5:]), statistics.median(r["grad_norm"] for r in rows)


def test_straight_through_row_masking_explodes_the_gradient_and_the_clip_then_stops_learning() -> None:
    exact_clip, st_clip = _run(), _run(boundary_grad="straight-through")
    exact_free, st_free = _run(grad_clip=None), _run(grad_clip=None, boundary_grad="straight-through")
    none = build_spec({**_spec(), "compression": {"fwd": "none", "bwd": "none"}})
    base_loss = statistics.mean(r["loss"] for r in run_twin(none)[-5:])
    # exact: 10% row masking is nearly free, clip or not; gradient norms stay O(1)
    assert exact_clip[0] < base_loss + 0.15 and exact_free[0] < base_loss + 0.15
    assert exact_clip[1] < 10 and exact_free[1] < 10
    # straight-through: each boundary passes back the ~1/sqrt(eps)-amplified gradient of the rows
    # the next stage got as zeros; over 3 boundaries it compounds to norms > 1e4 ...
    assert st_clip[1] > 1e4 and st_free[1] > 1e4
    # ... so the global clip scales every real gradient to ~0 (learning stops), while without
    # the clip Adam's per-parameter normalisation keeps it learning, worse than exact
    assert st_clip[0] > exact_clip[0] + 0.5
    assert exact_free[0] < st_free[0] < st_clip[0] - 0.3
    # the amplification is RMSNorm's 1/sqrt(eps) at an all-zero row: a large eps removes it
    assert _run(eps=0.1, grad_clip=None, boundary_grad="straight-through")[1] < 10


def test_one_straight_through_backward_already_amplifies_the_upstream_stages() -> None:
    exact = stage_gradient_norms(build_spec(_spec(steps=1)))
    st = stage_gradient_norms(build_spec(_spec(steps=1, boundary_grad="straight-through")))
    assert st[-1] == exact[-1]  # the last stage sends nothing back through a mask
    assert st[0] > 1.5 * exact[0]  # the first stage gets the zeroed rows' gradients too
