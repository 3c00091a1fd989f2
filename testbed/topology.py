"""Topology model: stages (one host each, in pipeline order) and the links between them.

YAML and Python build the same validated object::

    topo = load_topology("topologies/beyond-topk-8stage.yaml")   # testbed.topology_file
    topo = Topology.chain(4, bandwidth="80Mbit", name="four")

Every link parameter is a constant or a distribution. Distributions are sampled by
:mod:`testbed.linkplan` with the topology's seed, so two runs apply the same values.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from basics.errors import ConfigError, FieldError, from_validation
from basics.units import (
    parse_duration,
)
from testbed.addresses import MAX_BOTTLENECKS, MAX_LINKS
from testbed.distributions import BandwidthParam, DelayParam, Fixed, JitterParam, LossParam, Strict

MIN_RESAMPLE_S = 0.1  # the shortest link-plan window: one shaper change per link direction each
Direction = Literal["forward", "backward"]
DIRECTIONS: tuple[Direction, Direction] = ("forward", "backward")


class LinkParams(Strict):
    bandwidth: BandwidthParam | None = None
    delay: DelayParam | None = None
    jitter: JitterParam | None = None
    loss: LossParam | None = None
    # netem's loss model and ordering (see testbed/netem.py); constant over the run
    loss_burst: float | None = Field(
        None, ge=1, le=1000, description="mean loss-burst length in packets (Gilbert-Elliott); absent: random loss"
    )
    reorder: bool | None = Field(None, description="let jitter reorder packets (netem's default); absent: no")
    resample_every: float | None = None

    @field_validator("resample_every", mode="before")
    @classmethod
    def _duration(cls, v: Any) -> Any:
        if v is None:
            return None
        seconds = parse_duration(v)
        if seconds < MIN_RESAMPLE_S:
            raise ValueError(
                f"{seconds:g} s is below {MIN_RESAMPLE_S:g} s: every window changes every link's shaper "
                "(and a run's plan holds every window)"
            )
        return seconds

    def merged_over(self, base: LinkParams | None) -> LinkParams:
        if base is None:
            return self
        return LinkParams(
            **{
                f: getattr(self, f) if getattr(self, f) is not None else getattr(base, f)
                for f in LinkParams.model_fields
            }
        )

    def needs_netem(self) -> list[str]:
        return [
            k for k in ("delay", "jitter", "loss") if getattr(self, k) is not None and getattr(self, k).support()[1] > 0
        ]


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
            data = {
                **data,
                "bandwidth": {"trace": data["trace"], "unit": data.get("trace_unit", "Mbit")},
                "trace": None,
            }
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
    """How link plans, shaping records and probes name a shared bottleneck's channel."""
    return f"bn:{name}"


class Channel(BaseModel):
    """One direction of one link with its resolved parameters: what the link plan samples."""

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


class LinkEvent(Strict):
    """A planned fault on one pipeline link, applied by the same applier as the bandwidth:
    ``{at: 30s, link: 1-2, down: 10s}`` (both ends set down, then up again) or
    ``{at: 60s, link: 3-4, bandwidth: 1Mbit, for: 20s}`` (then back to the plan's value)."""

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


class Topology(Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    seed: int = Field(0, ge=0)
    # every link is addressed in 198.18.0.0/15 (testbed/addresses.py): 16,384 links
    stages: int = Field(ge=2, le=MAX_LINKS + 1)
    shaper: Literal["tbf", "htb"] = "tbf"
    defaults: LinkParams | None = None
    links: list[LinkSpec] = []
    bottlenecks: list[Bottleneck] = Field(default_factory=list, max_length=MAX_BOTTLENECKS)
    events: list[LinkEvent] = []

    @model_validator(mode="after")
    def _structure(self) -> Topology:
        for k, ev in enumerate(self.events):
            a, b = ev.stages
            if b != a + 1 or b >= self.stages:
                raise FieldError(
                    f"events[{k}].link",
                    f"{ev.link} is not a pipeline link of this topology (0-1 .. {self.stages - 2}-{self.stages - 1})",
                )
        seen: set[tuple[tuple[int, int], str]] = set()
        for k, link in enumerate(self.links):
            a, b = link.between
            if not (0 <= a < self.stages and 0 <= b < self.stages):
                raise FieldError(
                    f"links[{k}].between",
                    f"stage {b if a < self.stages else a} does not exist (stages are 0..{self.stages - 1})",
                )
            if b != a + 1:
                raise FieldError(
                    f"links[{k}].between",
                    f"pipeline links join adjacent stages (i, i+1), got [{a}, {b}]; use 'bottlenecks' for shared paths",
                )
            for d in DIRECTIONS if link.direction == "both" else (link.direction,):
                if ((a, b), d) in seen:
                    raise FieldError(f"links[{k}]", f"link {a}-{b} {d} is given twice")
                seen.add(((a, b), d))
        for i in range(self.stages - 1):
            has_link = any(((i, i + 1), d) in seen for d in DIRECTIONS)
            if not has_link and (self.defaults is None or self.defaults.bandwidth is None):
                raise FieldError(
                    "links",
                    f"stage {i} has no link to stage {i + 1}: list one with between: [{i}, {i + 1}] or "
                    "set defaults.bandwidth",
                )
        for c in self.channels():
            if c.params.bandwidth is None:
                raise FieldError(
                    "links", f"link {c.label} ({c.direction}) has no bandwidth and defaults.bandwidth is not set"
                )
        in_bottleneck: set[tuple[int, int]] = set()
        for k, bn in enumerate(self.bottlenecks):
            if bn.bandwidth is None:
                raise FieldError(f"bottlenecks[{k}].bandwidth", "a shared bottleneck needs a bandwidth")
            for link in bn.links:
                if link[1] != link[0] + 1 or link[1] >= self.stages:
                    raise FieldError(f"bottlenecks[{k}].links", f"{list(link)} is not a pipeline link of this topology")
                if link in in_bottleneck:
                    raise FieldError(f"bottlenecks[{k}].links", f"link {link[0]}-{link[1]} is already in a bottleneck")
                in_bottleneck.add(link)
        return self

    def channels(self) -> list[Channel]:
        """Both directions of every pipeline link, defaults merged in, in a stable order."""
        out = []
        for i in range(self.stages - 1):
            for d_idx, d in enumerate(DIRECTIONS):
                spec = next((s for s in self.links if s.between == (i, i + 1) and s.direction in ("both", d)), None)
                params = spec.merged_over(self.defaults) if spec else (self.defaults or LinkParams())
                shared = spec is None or spec.direction == "both"
                key = i * 2 if shared else i * 2 + d_idx
                out.append(
                    Channel(
                        link=(i, i + 1),
                        direction=d,
                        params=LinkParams(**{f: getattr(params, f) for f in LinkParams.model_fields}),
                        key=key,
                    )
                )
        return out

    def bottleneck_channels(self) -> list[Channel]:
        """The shared paths, one channel per direction, keyed after every link's channels."""
        out = []
        for k, bn in enumerate(self.bottlenecks):
            params = LinkParams(**{f: getattr(bn, f) for f in LinkParams.model_fields}).merged_over(
                LinkParams(resample_every=self.defaults.resample_every) if self.defaults else None
            )
            for d in DIRECTIONS:
                out.append(
                    Channel(link=bn.links[0], direction=d, params=params, key=10_000 + 2 * k, bottleneck=bn.name)
                )
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
        return build_topology(
            {"name": name, "seed": seed, "stages": stages, "defaults": {"bandwidth": bandwidth, **defaults}}
        )


def build_topology(data: Any, source: str | None = None, base_dir: str | Path = ".") -> Topology:
    """Validate a mapping into a Topology; any problem becomes one ConfigError naming the field."""
    if not isinstance(data, dict):
        raise ConfigError("", "a topology must be a YAML mapping (name, stages, links, ...)", source)
    try:
        return Topology.model_validate(data, context={"base_dir": str(base_dir)})
    except ValidationError as exc:
        raise from_validation(exc, source) from None
