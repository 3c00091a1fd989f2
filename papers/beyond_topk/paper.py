"""What "Beyond Top-K" is to pipenem: its title, the suites that reproduce it, what it published."""

from __future__ import annotations

from functools import cache
from pathlib import Path

from basics.shipped import shipped
from basics.yamlfile import read_yaml
from reports.figures import Published

NAME = "beyond-topk"
TITLE = "Beyond Top-K"
# (convergence suite, the suites measured over the links): the first one's model is the one
# the fidelity table measures
SUITES = {
    "quick": (
        "suites/ci-convergence.yaml",
        "suites/ci-throughput.yaml",
        "suites/ci-throughput-conditions.yaml",
        "suites/ci-time-to-target.yaml",
    ),
    "paper": ("suites/beyond-topk-convergence.yaml", "suites/beyond-topk-throughput.yaml"),
    # the same on one GPU (bf16 autocast); and its ~12-minute subset (README: the paper-sized run)
    "paper-gpu": ("suites/beyond-topk-convergence-gpu.yaml", "suites/beyond-topk-throughput.yaml"),
    "gpu-subset": ("suites/beyond-topk-gpu-subset.yaml",),
    # the convergence claims across width and context (README: verdicts by scale)
    "scaling": (
        "suites/scaling-d64-ctx64.yaml",
        "suites/scaling-d128-ctx64.yaml",
        "suites/scaling-d256-ctx64.yaml",
        "suites/scaling-d128-ctx256.yaml",
        "suites/scaling-baseline-steps.yaml",
    ),
}
TIERS = {
    "quick": "quick",
    "scaling": "scaling: d = 64, 128, 256; ctx 64, 256",
    "paper": "paper-sized",
    "paper-gpu": "paper-sized, one GPU, bf16",
    "gpu-subset": "paper-sized subset, one GPU, bf16",
}
# suites of experiments on this paper that are not part of the reproduction itself
EXTRA_SUITES = ("suites/ablation-row-masking.yaml",)
PUBLISHED = Published(
    name=TITLE,
    palette={
        "topk-fwd": "tab:orange",
        "topk-fwd+bwd": "tab:red",
        "column-fwd+bwd": "tab:blue",
        "row-fwd+bwd": "tab:green",
    },
    gains={"train": 2.0, "infer": 12.0},
    gain_of=("column-fwd+bwd", 0.9),
    bounds="Theorem 4.1 (column) and Theorem 3.2 with C = 1 (TopK; its constant is not given)",
)


def suite_file(rel: str) -> Path:
    """One of this paper's suites, as pipenem ships it (``suites/NAME.yaml``: from the checkout or
    the installed wheel, whatever the current folder)."""
    return shipped("suite", Path(rel).stem)


@cache
def suite_names() -> frozenset[str]:
    """The ``name:`` of every suite this paper's claims are about."""
    files = {f for tier in SUITES.values() for f in tier} | set(EXTRA_SUITES)
    return frozenset(read_yaml(suite_file(f), "suite")["name"] for f in files)
