"""A claim checked against measurements: the verdict vocabulary every paper's report shares.

A verdict is decided only when the whole 95% interval clears the rule's threshold;
otherwise it is *inconclusive (n seeds)*. The claims themselves, their rules and
thresholds belong to a paper (papers/<paper>/claims.py).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass

from reports.stats import Estimate


@dataclass
class Verdict:
    claim: str
    published: str
    measured: str
    bound: str
    verdict: str
    reason: str
    value: float | None = None  # the measured point estimate, for checks (e.g. CI)
    bound_value: float | None = None
    lo: float | None = None  # its 95% interval
    hi: float | None = None
    n: int = 0  # seeds (convergence) or steps (throughput) behind it
    explanation: str = ""  # throughput claims: which measured condition matches; across sizes: the trend
    scale: str = ""  # the size it was decided at (convergence: "d=64, ctx 64"; "" where it does not apply)

    def row(self) -> dict:
        return asdict(self)

    @property
    def shown(self) -> str:
        """The verdict as tables print it: with the size it holds at, where it was decided at one."""
        return f"{self.verdict} at {self.scale}" if self.scale and self.scale != ALL_SIZES else self.verdict


ALL_SIZES = "all sizes measured"  # the scale of a headline verdict over several model sizes


def inconclusive(n: int, unit: str = "seeds") -> str:
    return f"inconclusive ({n} {unit})"


def decide(est: Estimate, reproduced: Callable[[Estimate], bool], refuted: Callable[[Estimate], bool]) -> str:
    """reproduced / not reproduced when the interval decides, else inconclusive (n seeds)."""
    if est.n == 0:
        return "not measured"
    if reproduced(est):
        return "reproduced"
    if refuted(est):
        return "not reproduced"
    return inconclusive(est.n)


# ------------------------------------------------------------------ convergence
