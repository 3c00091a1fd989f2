"""Beyond Top-K (seeds/000_…): its suites, claims, bounds, colours and reproduction.

- ``claims.py``: the claims and the rules that judge them (verdicts with intervals)
- ``bounds.py``: Theorem 3.2 (TopK) and 4.1 (column masking), for the fidelity table
- ``reproduce.py``: ``pipenem reproduce beyond-topk [--quick]``
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

from reports.figures import Published
from reports.verdicts import Verdict
from testbed.errors import ConfigError
from testbed.yamlfile import read_yaml

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


def repo_file(rel: str) -> Path:
    """A file shipped at the repository root (suites/, topologies/): next to the code, or in the cwd."""
    for base in (Path(__file__).resolve().parents[2], Path.cwd()):
        if (base / rel).exists():
            return base / rel
    raise ConfigError("", f"cannot find {rel}: run from the pipenem checkout")


@cache
def suite_names() -> frozenset[str]:
    """The ``name:`` of every suite this paper's claims are about."""
    files = [*SUITES["quick"], *SUITES["paper"], *EXTRA_SUITES]
    return frozenset(read_yaml(repo_file(f), "suite")["name"] for f in files)


def report(results: Path, out: Path | None = None, title: str | None = None) -> tuple[Path, list[Verdict]]:
    from papers.beyond_topk.claims import verdicts
    from reports.console import build_report

    return build_report(results, out, title or f"{TITLE} reproduction", PUBLISHED, verdicts)


def reproduce(quick: bool, out: Path, check: bool, jobs: int) -> None:
    from papers.beyond_topk.reproduce import reproduce as run

    run(quick, out, check, jobs)
