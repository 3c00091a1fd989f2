"""Topology model: stages (one host each, in pipeline order) and the links between them.

YAML and Python build the same validated object::

    topo = load_topology("topologies/beyond-topk-8stage.yaml")
    topo = Topology.chain(4, bandwidth="80Mbit", name="four")

Every link parameter is a constant or a distribution. Distributions are sampled by
:mod:`testbed.schedule` with the topology's seed, so two runs apply the same values.
"""

from __future__ import annotations

import csv
import math
from functools import partial
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from testbed.errors import ConfigError
from testbed.shaping import MAX_RATE_BPS, MIN_RATE_BPS
from testbed.units import (
    canonical_unit,
    default_unit,
    format_rate,
    parse_duration,
    split_quantity,
    units_for,
)
from testbed.yamlfile import read_yaml

Direction = Literal["forward", "backward"]
DIRECTIONS: tuple[Direction, Direction] = ("forward", "backward")


class _Strict(BaseModel):
    # allow_inf_nan=False: `.nan`/`.inf` anywhere is refused as "not a finite number"
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


# ---------------------------------------------------------------- distributions


class Fixed(_Strict):
    dist: Literal["fixed"] = "fixed"
    value: float
    unit: str | None = None

    def sample(self, rng: np.random.Generator, t: float) -> float:
        return self.value

    def support(self) -> tuple[float, float]:
        return self.value, self.value


class Normal(_Strict):
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
        return self

    def sample(self, rng: np.random.Generator, t: float) -> float:
        lo = -math.inf if self.min is None else self.min
        hi = math.inf if self.max is None else self.max
        # Rejection sampling is exact truncation; bounded so a far-off window can't spin.
        for _ in range(10_000):
            v = float(rng.normal(self.mean, self.std))
            if lo <= v <= hi:
                return v
        return float(min(max(self.mean, lo), hi))

    def support(self) -> tuple[float, float]:
        return (self.min if self.min is not None else -math.inf, self.max if self.max is not None else math.inf)


class Uniform(_Strict):
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


class Trace(_Strict):
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
        base = Path((info.context or {}).get("base_dir", "."))
        path = Path(data["file"]) if Path(data["file"]).is_absolute() else base / data["file"]
        if not path.is_file():
            raise ValueError(f"trace file {str(path)!r} not found")
        times, values = [], []
        with path.open(newline="") as fh:
            rows = list(csv.reader(row for row in fh if row.strip() and not row.startswith("#")))
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
        idx = int(np.searchsorted(self.times, t, side="right")) - 1
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
    Discriminator(_tag, custom_error_type="dist", custom_error_message="'dist' must be one of fixed, normal, uniform, trace"),
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
            raise ValueError(f"bandwidth {top:g} {unit} is above what tbf/htb can shape ({format_rate(MAX_RATE_BPS)}: "
                             "tc's rate is a 32-bit count of bytes/s)")
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


class LinkParams(_Strict):
    bandwidth: BandwidthParam | None = None
    delay: DelayParam | None = None
    jitter: JitterParam | None = None
    loss: LossParam | None = None
    resample_every: float | None = None

    @field_validator("resample_every", mode="before")
    @classmethod
    def _duration(cls, v: Any) -> Any:
        return None if v is None else parse_duration(v)

    def merged_over(self, base: LinkParams | None) -> LinkParams:
        if base is None:
            return self
        return LinkParams(**{f: getattr(self, f) if getattr(self, f) is not None else getattr(base, f) for f in LinkParams.model_fields})

    def needs_netem(self) -> list[str]:
        return [k for k in ("delay", "jitter", "loss") if getattr(self, k) is not None and getattr(self, k).support()[1] > 0]


class LinkSpec(LinkParams):
    between: tuple[int, int]
    direction: Literal["both", "forward", "backward"] = "both"
    trace: str | None = None  # shorthand for bandwidth: {trace: FILE, unit: Mbit}

    @model_validator(mode="before")
    @classmethod
    def _trace_shorthand(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("trace") is not None:
            if data.get("bandwidth") is not None:
                raise ValueError("give either 'trace' or 'bandwidth', not both")
            data = {**data, "bandwidth": {"trace": data["trace"], "unit": data.get("trace_unit", "Mbit")}, "trace": None}
            data.pop("trace_unit", None)
        return data

    @field_validator("between")
    @classmethod
    def _between(cls, v: tuple[int, int]) -> tuple[int, int]:
        if v[0] == v[1]:
            raise ValueError("a link joins two different stages")
        return (min(v), max(v))


class Bottleneck(LinkParams):
    """Several pipeline links whose traffic crosses one shared path (e.g. one WAN uplink)."""

    name: str = Field(pattern=r"^[a-z0-9]{1,8}$")
    links: list[tuple[int, int]] = Field(min_length=2)

    @field_validator("links")
    @classmethod
    def _norm(cls, v: list[tuple[int, int]]) -> list[tuple[int, int]]:
        return [(min(a, b), max(a, b)) for a, b in v]


def bottleneck_label(name: str) -> str:
    """How schedules, shaping records and probes name a shared bottleneck's channel."""
    return f"bn:{name}"


class Channel(BaseModel):
    """One direction of one link with its resolved parameters: what the schedule samples."""

    model_config = ConfigDict(frozen=True)
    link: tuple[int, int]
    direction: Direction
    params: LinkParams
    key: int  # stable id; directions of a `both` link share it (same sampled value)
    bottleneck: str | None = None  # set on a shared bottleneck's channels

    @property
    def label(self) -> str:
        return bottleneck_label(self.bottleneck) if self.bottleneck else f"{self.link[0]}-{self.link[1]}"

    @property
    def src(self) -> int:
        return self.link[0] if self.direction == "forward" else self.link[1]

    @property
    def dst(self) -> int:
        return self.link[1] if self.direction == "forward" else self.link[0]


class LinkEvent(_Strict):
    """A scheduled fault on one pipeline link, applied by the same scheduler as the bandwidth:
    ``{at: 30s, link: 1-2, down: 10s}`` (both ends set down, then up again) or
    ``{at: 60s, link: 3-4, bandwidth: 1Mbit, for: 20s}`` (then back to the schedule's value)."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False, populate_by_name=True)
    at: float
    link: str = Field(pattern=r"^\d+-\d+$")
    direction: Literal["both", "forward", "backward"] = "both"
    down: float | None = None
    bandwidth: BandwidthParam | None = None
    for_: float | None = Field(None, alias="for")

    @field_validator("at", "down", "for_", mode="before")
    @classmethod
    def _span(cls, v: Any) -> Any:
        return None if v is None else parse_duration(v)

    @model_validator(mode="after")
    def _kind(self) -> LinkEvent:
        if (self.down is None) == (self.bandwidth is None):
            raise ValueError("an event is either 'down: DURATION' or 'bandwidth: RATE' with 'for: DURATION'")
        if self.bandwidth is not None:
            if self.for_ is None:
                raise ValueError("a bandwidth event needs 'for: DURATION'")
            if not isinstance(self.bandwidth, Fixed):
                raise ValueError("an event's bandwidth is one value, e.g. '1Mbit'")
        elif self.for_ is not None:
            raise ValueError("'for' goes with 'bandwidth'; a down event's duration is 'down: DURATION'")
        elif self.direction != "both":
            raise ValueError("a link is down in both directions (omit 'direction')")
        return self

    @property
    def end(self) -> float:
        return self.at + (self.down if self.down is not None else self.for_)

    @property
    def stages(self) -> tuple[int, int]:
        a, b = self.link.split("-")
        return int(a), int(b)

    def applies(self, label: str, direction: str) -> bool:
        return self.link == label and self.direction in ("both", direction)

    def describe(self) -> str:
        if self.down is not None:
            return f"down {self.down:g}s"
        return f"bandwidth {self.bandwidth.value:g}{self.bandwidth.unit} for {self.for_:g}s"


class Topology(_Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    seed: int = Field(0, ge=0)
    stages: int = Field(ge=2, le=64)
    shaper: Literal["tbf", "htb"] = "tbf"
    defaults: LinkParams | None = None
    links: list[LinkSpec] = []
    bottlenecks: list[Bottleneck] = []
    events: list[LinkEvent] = []

    @model_validator(mode="after")
    def _structure(self) -> Topology:
        for k, ev in enumerate(self.events):
            a, b = ev.stages
            if b != a + 1 or b >= self.stages:
                raise _FieldError(f"events[{k}].link", f"{ev.link} is not a pipeline link of this topology (0-1 .. "
                                                      f"{self.stages - 2}-{self.stages - 1})")
        seen: set[tuple[tuple[int, int], str]] = set()
        for k, link in enumerate(self.links):
            a, b = link.between
            if not (0 <= a < self.stages and 0 <= b < self.stages):
                raise _FieldError(f"links[{k}].between", f"stage {b if a < self.stages else a} does not exist (stages are 0..{self.stages - 1})")
            if b != a + 1:
                raise _FieldError(f"links[{k}].between", f"pipeline links join adjacent stages (i, i+1), got [{a}, {b}]; use 'bottlenecks' for shared paths")
            for d in DIRECTIONS if link.direction == "both" else (link.direction,):
                if ((a, b), d) in seen:
                    raise _FieldError(f"links[{k}]", f"link {a}-{b} {d} is given twice")
                seen.add(((a, b), d))
        for i in range(self.stages - 1):
            has_link = any(((i, i + 1), d) in seen for d in DIRECTIONS)
            if not has_link and (self.defaults is None or self.defaults.bandwidth is None):
                raise _FieldError("links", f"stage {i} has no link to stage {i + 1}: list one with between: [{i}, {i + 1}] or set defaults.bandwidth")
        for c in self.channels():
            if c.params.bandwidth is None:
                raise _FieldError("links", f"link {c.label} ({c.direction}) has no bandwidth and defaults.bandwidth is not set")
        in_bottleneck: set[tuple[int, int]] = set()
        for k, bn in enumerate(self.bottlenecks):
            if bn.bandwidth is None:
                raise _FieldError(f"bottlenecks[{k}].bandwidth", "a shared bottleneck needs a bandwidth")
            for link in bn.links:
                if link[1] != link[0] + 1 or link[1] >= self.stages:
                    raise _FieldError(f"bottlenecks[{k}].links", f"{list(link)} is not a pipeline link of this topology")
                if link in in_bottleneck:
                    raise _FieldError(f"bottlenecks[{k}].links", f"link {link[0]}-{link[1]} is already in a bottleneck")
                in_bottleneck.add(link)
        return self

    def channels(self) -> list[Channel]:
        """Both directions of every pipeline link, defaults merged in, in a stable order."""
        out = []
        for i in range(self.stages - 1):
            for d_idx, d in enumerate(DIRECTIONS):
                spec = next((s for s in self.links if s.between == (i, i + 1) and s.direction in ("both", d)), None)
                params = (spec.merged_over(self.defaults) if spec else (self.defaults or LinkParams()))
                shared = spec is None or spec.direction == "both"
                key = i * 2 if shared else i * 2 + d_idx
                out.append(Channel(link=(i, i + 1), direction=d, params=LinkParams(**{f: getattr(params, f) for f in LinkParams.model_fields}), key=key))
        return out

    def bottleneck_channels(self) -> list[Channel]:
        """The shared paths, one channel per direction, keyed after every link's channels."""
        out = []
        for k, bn in enumerate(self.bottlenecks):
            params = LinkParams(**{f: getattr(bn, f) for f in LinkParams.model_fields}).merged_over(
                LinkParams(resample_every=self.defaults.resample_every) if self.defaults else None
            )
            for d in DIRECTIONS:
                out.append(Channel(link=bn.links[0], direction=d, params=params, key=10_000 + 2 * k, bottleneck=bn.name))
        return out

    def needs_netem(self) -> list[str]:
        """Fields that need netem, e.g. ['links 1-2 delay']; empty when tbf/htb suffice."""
        found = []
        for c in self.channels() + self.bottleneck_channels():
            found += [f"link {c.label} {c.direction}: {k}" for k in c.params.needs_netem()]
        return found

    # ------------------------------------------------------------ Python API

    @classmethod
    def chain(cls, stages: int, bandwidth: Any, name: str = "chain", seed: int = 0, **defaults: Any) -> Topology:
        """A chain of ``stages`` hosts, every link with the same parameters."""
        return build_topology({"name": name, "seed": seed, "stages": stages, "defaults": {"bandwidth": bandwidth, **defaults}})


class _FieldError(ValueError):
    """Raised inside validators to name a field precisely, beyond pydantic's location."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


_TAGS = {"fixed", "normal", "uniform", "trace", "function-after", "function-before"}


def _loc(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif isinstance(part, str) and (part in _TAGS or part.startswith(("function-", "tagged-union"))):
            continue
        else:
            out += ("." if out else "") + str(part)
    return out


def build_topology(data: Any, source: str | None = None, base_dir: str | Path = ".") -> Topology:
    """Validate a mapping into a Topology; any problem becomes one ConfigError naming the field."""
    if not isinstance(data, dict):
        raise ConfigError("", "a topology must be a YAML mapping (name, stages, links, ...)", source)
    try:
        return Topology.model_validate(data, context={"base_dir": str(base_dir)})
    except ValidationError as exc:
        err = exc.errors()[0]
        ctx_err = (err.get("ctx") or {}).get("error")
        if isinstance(ctx_err, _FieldError):
            raise ConfigError(ctx_err.field, ctx_err.message, source) from None
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        elif err["type"] == "missing":
            msg = "required but missing"
        raise ConfigError(_loc(err["loc"]), msg, source) from None


def load_topology(path: str | Path) -> Topology:
    """Read and validate a topology YAML file (or a Mininet topology .py file)."""
    path = Path(path)
    if path.suffix == ".py" and path.is_file():  # a Mininet Topo subclass
        from testbed.mininet_topo import topology_from_mininet

        return topology_from_mininet(path)
    return build_topology(read_yaml(path, "topology"), source=str(path), base_dir=path.parent)
