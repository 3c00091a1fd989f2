"""Distributions of link parameters: constants, normal/uniform draws per window, recorded traces.

Each is a validated pydantic model with ``sample(rng, t)`` and ``support()``; the topology
model (:mod:`testbed.topology`) declares its parameters with them and
:mod:`testbed.linkplan` samples them with the topology's seed.
"""

from __future__ import annotations

import bisect
import csv
import math
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationInfo,
    model_validator,
)

from basics.units import (
    canonical_unit,
    default_unit,
    format_rate,
    split_quantity,
    units_for,
)
from testbed.shaping import MAX_RATE_BPS, MIN_RATE_BPS

if TYPE_CHECKING:  # samplers take a numpy Generator; validating a topology needs no numpy
    import numpy as np


MIN_KEPT = 1e-12  # a truncated normal must keep this much of its mass (else its bounds say nothing else)
MAX_TRACE_ROWS = 100_000  # a bandwidth trace's rows (a plan and its record hold every change point)


class Strict(BaseModel):
    # allow_inf_nan=False: `.nan`/`.inf` anywhere is refused as "not a finite number"
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


# ---------------------------------------------------------------- distributions


class Fixed(Strict):
    dist: Literal["fixed"] = "fixed"
    value: float
    unit: str | None = None

    def sample(self, rng: np.random.Generator, t: float) -> float:
        return self.value

    def support(self) -> tuple[float, float]:
        return self.value, self.value


class Normal(Strict):
    """N(mean, std) truncated to [min, max] (a bandwidth must give ``min`` > 0)."""

    dist: Literal["normal"] = "normal"
    mean: float
    std: float = Field(ge=0)
    unit: str | None = None
    min: float | None = None
    max: float | None = None

    @model_validator(mode="after")
    def _bounds(self) -> Normal:
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError("min must be ≤ max")
        if self.std > 0 and self.kept() < MIN_KEPT:
            raise ValueError(
                f"N({self.mean:g}, {self.std:g}) truncated to [{self.min}, {self.max}] keeps a fraction "
                f"{self.kept():.1e} of its mass: the bounds are many standard deviations from the mean"
            )
        return self

    def _z(self) -> tuple[float, float]:
        lo = -math.inf if self.min is None else (self.min - self.mean) / self.std
        hi = math.inf if self.max is None else (self.max - self.mean) / self.std
        return lo, hi

    def kept(self) -> float:
        """The probability mass of N(mean, std) inside [min, max]."""
        a, b = self._z()
        return 0.5 * (math.erf(b / math.sqrt(2)) - math.erf(a / math.sqrt(2)))

    def sample(self, rng: np.random.Generator, t: float) -> float:
        lo = -math.inf if self.min is None else self.min
        hi = math.inf if self.max is None else self.max
        if self.std == 0:
            return float(min(max(self.mean, lo), hi))
        if self.kept() >= 0.01:  # rejection sampling: exact, and what every plan drew so far
            for _ in range(10_000):
                v = float(rng.normal(self.mean, self.std))
                if lo <= v <= hi:
                    return v
        # a far-off truncation: the inverse CDF, exact and O(1) (survival side for the upper tail)
        from scipy.special import ndtr, ndtri

        a, b = self._z()
        u = float(rng.uniform())
        if a > 0:
            sa, sb = ndtr(-a), ndtr(-b)
            z = -ndtri(sa - u * (sa - sb))
        else:
            fa, fb = ndtr(a), ndtr(b)
            z = ndtri(fa + u * (fb - fa))
        return float(min(max(self.mean + self.std * z, lo), hi))

    def support(self) -> tuple[float, float]:
        return (self.min if self.min is not None else -math.inf, self.max if self.max is not None else math.inf)


class Uniform(Strict):
    dist: Literal["uniform"] = "uniform"
    low: float
    high: float
    unit: str | None = None

    @model_validator(mode="after")
    def _order(self) -> Uniform:
        if self.low > self.high:
            raise ValueError("low must be ≤ high")
        return self

    def sample(self, rng: np.random.Generator, t: float) -> float:
        return float(rng.uniform(self.low, self.high))

    def support(self) -> tuple[float, float]:
        return self.low, self.high


class Trace(Strict):
    """A recorded time series (CSV with columns ``time_s,value``), piecewise constant."""

    dist: Literal["trace"] = "trace"
    file: str
    unit: str | None = None
    loop: bool = True
    times: tuple[float, ...] = ()
    values: tuple[float, ...] = ()

    @model_validator(mode="before")
    @classmethod
    def _load(cls, data: Any, info: ValidationInfo) -> Any:
        if not isinstance(data, dict) or data.get("times"):
            return data
        if not isinstance(data.get("file"), str):
            raise ValueError("a trace needs 'file': a CSV of time_s,value rows")
        base = Path((info.context or {}).get("base_dir", "."))
        path = Path(data["file"]) if Path(data["file"]).is_absolute() else base / data["file"]
        if not path.is_file():
            raise ValueError(f"trace file {str(path)!r} not found")
        times, values = [], []
        rows = []
        with path.open(newline="") as fh:
            for row in csv.reader(row for row in fh if row.strip() and not row.startswith("#")):
                rows.append(row)
                if len(rows) > MAX_TRACE_ROWS + 1:  # + a header
                    raise ValueError(f"{path.name} has more than {MAX_TRACE_ROWS:,} rows: resample it coarser")
        if rows and not _is_number(rows[0][0]):
            rows = rows[1:]  # header
        for n, row in enumerate(rows, 1):
            if len(row) < 2 or not (_is_number(row[0]) and _is_number(row[1])):
                raise ValueError(f"{path.name} row {n}: expected 'time_s,value'")
            times.append(float(row[0]))
            values.append(float(row[1]))
        if not times or times[0] != 0 or any(b <= a for a, b in zip(times, times[1:], strict=False)):
            raise ValueError(f"{path.name}: times must start at 0 and increase")
        return {**data, "times": tuple(times), "values": tuple(values)}

    def at(self, t: float) -> float:
        if self.loop and len(self.times) > 1:
            period = self.times[-1] + (self.times[-1] - self.times[-2])
            t = t % period
        idx = bisect.bisect_right(self.times, t) - 1
        return self.values[max(idx, 0)]

    def change_points(self, until: float) -> list[float]:
        if not self.loop or len(self.times) < 2:
            return [t for t in self.times if t < until]
        period = self.times[-1] + (self.times[-1] - self.times[-2])
        out, base = [], 0.0
        while base < until:
            out.extend(base + t for t in self.times if base + t < until)
            base += period
        return out

    def sample(self, rng: np.random.Generator, t: float) -> float:
        return self.at(t)

    def support(self) -> tuple[float, float]:
        return min(self.values), max(self.values)


def _is_number(s: str) -> bool:
    try:
        float(s)
    except ValueError:
        return False
    return True


def _tag(v: Any) -> str | None:
    if isinstance(v, dict):
        if "trace" in v and "dist" not in v:
            return "trace"
        return v.get("dist")
    return getattr(v, "dist", None)


Dist = Annotated[
    Annotated[Fixed, Tag("fixed")]
    | Annotated[Normal, Tag("normal")]
    | Annotated[Uniform, Tag("uniform")]
    | Annotated[Trace, Tag("trace")],
    Discriminator(
        _tag, custom_error_type="dist", custom_error_message="'dist' must be one of fixed, normal, uniform, trace"
    ),
]


def _coerce(kind: str, v: Any) -> Any:
    """'80Mbit' -> Fixed; {trace: f.csv} -> Trace; bare numbers only where a unit is implied."""
    if isinstance(v, bool):
        raise ValueError("expected a value with a unit")
    if isinstance(v, int | float):
        if default_unit(kind) is None:
            raise ValueError(f"{v!r} has no unit; write e.g. '{v}{'Mbit' if kind == 'bandwidth' else 'ms'}'")
        return {"dist": "fixed", "value": v, "unit": default_unit(kind)}
    if isinstance(v, str):
        value, unit = split_quantity(v)
        return {"dist": "fixed", "value": value, "unit": unit or default_unit(kind)}
    if isinstance(v, dict) and "trace" in v and "dist" not in v:
        v = {**v, "dist": "trace", "file": v["trace"]}
        v.pop("trace")
    return v


def _check(kind: str, d: Fixed | Normal | Uniform | Trace) -> Fixed | Normal | Uniform | Trace:
    unit = d.unit if d.unit is not None else default_unit(kind)
    if unit is None:
        raise ValueError(f"{kind} needs a unit: one of {', '.join(units_for(kind))}")
    unit = canonical_unit(kind, unit)
    lo, hi = d.support()
    if kind == "bandwidth" and isinstance(d, Normal) and d.min is None:
        raise ValueError("a normal bandwidth needs 'min' > 0 to truncate at (bandwidth is never ≤ 0)")
    if kind == "bandwidth" and lo <= 0:
        raise ValueError(f"bandwidth must be > 0 (got {lo:g} {unit})")
    if kind == "bandwidth":
        scale = units_for(kind)[unit]
        top = hi if math.isfinite(hi) else d.mean if isinstance(d, Normal) else hi
        if lo * scale < MIN_RATE_BPS:
            raise ValueError(f"bandwidth {lo:g} {unit} is below what tbf/htb can shape ({format_rate(MIN_RATE_BPS)})")
        if top * scale > MAX_RATE_BPS:
            raise ValueError(
                f"bandwidth {top:g} {unit} is above what tbf/htb can shape ({format_rate(MAX_RATE_BPS)}: "
                "tc's rate is a 32-bit count of bytes/s)"
            )
    if kind in ("delay", "jitter") and lo < 0:
        raise ValueError(f"{kind} must be ≥ 0")
    if kind == "loss" and (lo < 0 or hi > 100):
        raise ValueError("loss is a percentage in [0, 100]")
    return d.model_copy(update={"unit": unit})


def _param(kind: str) -> Any:
    return Annotated[Dist, BeforeValidator(partial(_coerce, kind)), AfterValidator(partial(_check, kind))]


BandwidthParam = _param("bandwidth")
DelayParam = _param("delay")
JitterParam = _param("jitter")
LossParam = _param("loss")

PARAM_KINDS = ("bandwidth", "delay", "jitter", "loss")


def base_value(kind: str, dist: Fixed | Normal | Uniform | Trace, raw: float) -> float:
    """Convert a sampled value to base units (bit/s, seconds, percent)."""
    return raw * units_for(kind)[dist.unit or default_unit(kind)]


# ---------------------------------------------------------------- links
