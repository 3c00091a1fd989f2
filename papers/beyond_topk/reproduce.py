"""`pipenem reproduce beyond-topk [--quick | --scaling]`: the paper's experiments, claim vs measured vs bound.

Runs the convergence sweep (single-process twin) and the throughput experiment (pipeline
over the emulated links, compute modeled as an A10G), measures subspace fidelity against
the paper's bounds, then writes the report and the verdict table. Tiers (``paper.TIERS``):
``quick`` the CI-sized suites (minutes here), ``scaling`` the convergence claims at d = 64,
128, 256 and ctx 64/256 (about 2.5 h here), ``paper`` the paper-sized suites (a GPU's work).
"""

from __future__ import annotations

import time
from pathlib import Path

import typer

from basics.terminal import make_console
from harness.results.outdir import exclusive
from harness.sweep.suite import load_suite

console = make_console()
FIDELITY_RATES = (0.1, 0.3, 0.5, 0.7, 0.9)


def fidelity_rows(conv_suite_path: Path, r: int = 8) -> list[dict]:
    """sin Θ vs rate for column, row and TopK on (a) a real activation of the convergence model
    at boundary 0–1 (untrained, on its data) and (b) a synthetic low-rank activation."""
    from harness.compressors import build
    from harness.compressors.fidelity import measure, synthetic_activation
    from harness.model.capture import boundary_activation
    from papers.beyond_topk.bounds import bound_for

    suite, trials = load_suite(conv_suite_path)
    run = trials[0].checked
    real, _ = boundary_activation(run.spec, run.partition, 0)
    sources = {
        f"activation 0-1 of {suite.name} model": real,
        "synthetic low-rank": synthetic_activation(real.shape, rank=r, seed=0),
    }
    rows = []
    for source, tensor in sources.items():
        for name in ("column", "row", "topk"):
            for rate in FIDELITY_RATES:
                m = measure(build({"name": name, "rate": rate}), tensor, r, bound=bound_for)
                rows.append(
                    {
                        "source": source,
                        "compressor_name": name,
                        "rate": rate,
                        "r": r,
                        "sin_theta": m.sin_theta,
                        "bound": m.bound,
                        "relative_error": m.relative_error,
                        "wire_ratio": m.wire_ratio,
                        "shape": str(tuple(tensor.shape)),
                    }
                )
    return rows


def reproduce(tier: str, out: Path, check: bool, jobs: int) -> None:
    """Run a tier's suites (resuming), measure fidelity, write the report and verdicts.json; with
    ``check``, exit 1 if a trial failed or (tiers with throughput) the system properties do not hold."""
    with exclusive(out):
        _reproduce(tier, out, check, jobs)


def _reproduce(tier: str, out: Path, check: bool, jobs: int) -> None:
    from harness.results.store import ResultStore
    from papers.beyond_topk.paper import SUITES, TIERS, TITLE, suite_file
    from papers.beyond_topk.report import report
    from papers.reproduction import publish, run_tier

    t0 = time.time()
    paths = [suite_file(p) for p in SUITES[tier]]
    counts = run_tier("Beyond Top-K", TIERS[tier], paths, out, jobs, "beyond-topk")
    with console.status("measuring subspace fidelity"):
        store = ResultStore(out)
        rows = fidelity_rows(paths[0])  # on the model of the tier's first convergence suite
        store.path("fidelity").unlink(missing_ok=True)
        store.append("fidelity", rows)
    path, vs = report(out, title=f"{TITLE} reproduction ({TIERS[tier]})")
    publish(out, vs, TITLE, counts, path, t0)
    if check:
        problems = system_property_problems(vs) if tier != "scaling" else []  # the scaling tier has no throughput
        for p in problems:
            console.print(f"[red]check failed:[/] {p}")
        if problems or counts["failed"]:
            raise typer.Exit(1)


def system_property_problems(vs: list) -> list[str]:
    """The properties of the system (not of luck) CI insists on."""
    from papers.beyond_topk.claims import INFER_GAIN, TRAIN_GAIN

    by = {v.claim: v for v in vs}
    problems = []
    tr = by.get(TRAIN_GAIN)
    if tr is None or tr.value is None:
        problems.append("training throughput gain was not measured")
    elif tr.value < 2.0:
        problems.append(f"training gain {tr.value:.2f}× < 2×")
    inf = by.get(INFER_GAIN)
    if inf is None or inf.value is None:
        problems.append("inference throughput gain was not measured")
    elif inf.value < 0.8 * inf.bound_value:
        problems.append(f"inference gain {inf.value:.2f}× < 0.8 × wire ratio {inf.bound_value:.2f}×")
    return problems
