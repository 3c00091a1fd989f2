"""Benchmark suites: a topology, a base run config, and sweep axes, expanded into trials.

```yaml
name: my-sweep
topology: ../topologies/ci-4stage.yaml
base: {model: {...}, data: {...}, train: {...}}      # a RunSpec without topology
axes:
  compressor:                                        # forward and backward chosen independently
    - {label: none, fwd: none, bwd: none}
    - {label: topk-fwd, fwd: topk, bwd: none}
    - {label: column, fwd: column, bwd: column}
    - {label: topk, fwd: topk, bwd: topk, rates: [0.9]}   # this choice only at these rates
  rate: [0.1, 0.5, 0.9]        # given to every compressor that takes a rate and has none
  mode: [train, infer]
  compute: [real, modeled]
  execution: [twin, distributed]
  runtime: [pipenem, torch]    # distributed trials: pipenem's GPipe/1F1B or torch.distributed.pipelining
  seed: [0, 1]
  set:                         # any config field, by its dotted path: every combination is swept
    train.boundary_grad: [exact, straight-through]
    train.grad_clip: [1.0, null]
```

A trial is self-contained (its full RunSpec) and has a stable id (a digest of its
content), so a re-run of the suite recognises what already finished.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, model_validator

from basics.errors import ConfigError, FieldError, from_validation
from basics.shipped import find
from basics.yamlfile import read_yaml
from harness.compressors.rates import takes_rate, with_rate
from harness.config.schema import RunSpec, build_spec
from harness.runtime.check import CheckedRun, check_run
from testbed.topology import Topology
from testbed.topology_file import load_topology

AXES = ("compressor", "rate", "mode", "compute", "execution", "runtime", "seed", "backend", "set")


class CompressorChoice(BaseModel):
    model_config = ConfigDict(extra="forbid")
    label: str
    fwd: Any = "none"
    bwd: Any = "none"
    # this choice's own rate axis (instead of the suite's ``rate``): a sweep of a few
    # compressor x rate points without the full product (e.g. the scaling tier)
    rates: list[float] | None = Field(None, min_length=1)


class Axes(BaseModel):
    model_config = ConfigDict(extra="forbid")
    compressor: list[CompressorChoice] = Field(default_factory=lambda: [CompressorChoice(label="none")], min_length=1)
    rate: list[float] = Field(default_factory=list)
    mode: list[Literal["train", "infer"]] = Field(default_factory=lambda: ["train"], min_length=1)
    compute: list[Literal["real", "modeled"]] = Field(default_factory=lambda: ["real"], min_length=1)
    execution: list[Literal["twin", "distributed"]] = Field(default_factory=lambda: ["distributed"], min_length=1)
    runtime: list[Literal["pipenem", "torch"]] = Field(default_factory=lambda: ["pipenem"], min_length=1)
    seed: list[int] = Field(default_factory=lambda: [0], min_length=1)
    backend: list[Literal["netns", "docker"]] = Field(default_factory=lambda: ["netns"], min_length=1)
    set: dict[str, list[Any]] = Field(default_factory=dict)  # dotted config path -> values

    @model_validator(mode="after")
    def _labels(self) -> Axes:
        seen: dict[str, int] = {}
        for k, c in enumerate(self.compressor):
            if c.label in seen:  # reports group by label: two choices with one label would merge
                raise FieldError(
                    f"compressor[{k}].label", f"{c.label!r} is already the label of compressor[{seen[c.label]}]"
                )
            seen[c.label] = k
        return self

    def variants(self) -> list[dict[str, Any]]:
        """Every combination of the ``set`` axis' values ({} when it is empty)."""
        keys = list(self.set)
        return [dict(zip(keys, combo, strict=True)) for combo in itertools.product(*(self.set[k] for k in keys))]


class Suite(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    topology: str
    base: dict[str, Any] = {}
    axes: Axes = Axes()
    description: str = ""


class Trial(BaseModel):
    """One point of the sweep: everything needed to run it, and the labels reports group by."""

    model_config = ConfigDict(extra="forbid")
    trial_id: str
    suite: str
    compressor: str  # the axis label
    rate: float | None
    fwd: Any
    bwd: Any
    mode: str
    compute: str
    execution: str
    backend: str
    seed: int
    spec: dict[str, Any]
    runtime: str = "pipenem"
    overrides: dict[str, Any] = {}  # this trial's values of the ``set`` axis
    # the run checked once when the suite was loaded (travels with the trial to pool processes
    # and Ray tasks; not part of its id or its JSON)
    _checked: CheckedRun | None = PrivateAttr(default=None)

    @property
    def checked(self) -> CheckedRun:
        """The checked run (checked now if this trial did not come from :func:`load_suite`)."""
        if self._checked is None:
            self._checked = check_run(self.run_spec())
        return self._checked

    @checked.setter
    def checked(self, run: CheckedRun) -> None:
        self._checked = run

    def checked_or_none(self) -> CheckedRun | None:
        """The checked run, or None if this trial's config does not pass the check."""
        try:
            return self.checked
        except ConfigError:
            return None

    @property
    def variant(self) -> str:
        """The ``set`` axis' values as one label ('' without that axis)."""
        return " ".join(f"{k}={v}" for k, v in self.overrides.items())

    def run_spec(self) -> RunSpec:
        return RunSpec.model_validate(self.spec)


def _deep_merge(a: dict, b: dict) -> dict:
    out = dict(a)
    for k, v in b.items():
        out[k] = _deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _nested(path: str, value: Any) -> dict:
    """'train.lr', 1e-3 -> {'train': {'lr': 1e-3}}."""
    out: Any = value
    for key in reversed(path.split(".")):
        out = {key: out}
    return out


def topology_digest(topo: Topology) -> str:
    """What a topology *is* (its parsed model, trace samples included), as a short hash."""
    # exclude_defaults: a field added to the model later (with its default) keeps old ids valid
    return "sha256:" + hashlib.sha256(topo.model_dump_json(exclude_defaults=True).encode()).hexdigest()[:16]


def expand(suite: Suite, topology: Topology | None = None) -> list[Trial]:
    """Every trial of the suite, in a stable order; compressors without a rate appear once.
    ``topology``: the suite's topology already read (else its file is read here)."""
    ax = suite.axes
    trials, seen = [], set()
    topo_key = topology_digest(topology if topology is not None else load_topology(suite.topology))
    points = [(c, r) for c in ax.compressor for r in (c.rates or ax.rate or [None])]
    for (choice, rate), mode, compute, execution, runtime, seed, backend, overrides in itertools.product(
        points,
        ax.mode,
        ax.compute,
        ax.execution,
        ax.runtime,
        ax.seed,
        ax.backend,
        ax.variants(),
    ):
        rated = takes_rate(choice.fwd) or takes_rate(choice.bwd)
        r = rate if rated else None
        fwd, bwd = with_rate(choice.fwd, r), with_rate(choice.bwd, r)
        if execution == "twin" and (compute == "modeled" or backend != "netns"):
            continue  # the twin has no network and real compute only: those axes do not apply
        if execution == "twin" and runtime != "pipenem":
            continue  # the twin is pipenem's single-process reference; torch's schedules need stage hosts
        spec = _deep_merge(
            suite.base,
            {
                "topology": suite.topology,
                "seed": seed,
                "backend": backend if execution == "distributed" else "twin",
                "train": {"mode": mode},
                "compute": {"mode": compute},
                "compression": {"fwd": fwd, "bwd": bwd},
            },
        )
        if runtime != "pipenem":  # only then: the ids of trials from before this axis stay valid
            spec["runtime"] = runtime
        for path, value in overrides.items():
            spec = _deep_merge(spec, _nested(path, value))
        # the id names the topology by its content, not its path: a moved checkout still resumes
        body = json.dumps({"spec": {**spec, "topology": topo_key}, "execution": execution}, sort_keys=True, default=str)
        if body in seen:
            continue
        seen.add(body)
        tid = hashlib.sha256(body.encode()).hexdigest()[:12]
        trials.append(
            Trial(
                trial_id=tid,
                suite=suite.name,
                compressor=choice.label,
                rate=r,
                fwd=fwd,
                bwd=bwd,
                mode=mode,
                compute=compute,
                execution=execution,
                backend=backend,
                seed=seed,
                spec=spec,
                runtime=runtime,
                overrides=overrides,
            )
        )
    return trials


def load_suite(path: str | Path) -> tuple[Suite, list[Trial]]:
    """Read, validate and expand a suite; every trial's config is checked before anything runs."""
    path = Path(path)
    data = read_yaml(path, "suite")
    if not isinstance(data, dict):
        raise ConfigError("", "a suite is a mapping (name, topology, base, axes)", str(path))
    if isinstance(data.get("axes"), dict):
        unknown = sorted(set(data["axes"]) - set(AXES))
        if unknown:
            raise ConfigError(f"axes.{unknown[0]}", f"unknown axis; axes are {', '.join(AXES)}", str(path))
    try:
        suite = Suite.model_validate(data)
    except ValidationError as exc:
        raise from_validation(exc, str(path)) from None
    topo = Path(suite.topology)
    if not topo.is_absolute():
        topo = path.parent / topo
    if not topo.is_file():  # a shipped topology by name (`topology: ci-4stage`), else the error names both
        try:
            topo = find("topology", suite.topology, "topology")
        except ConfigError:
            raise ConfigError(
                "topology", f"{str(topo)!r} not found (nor a shipped topology named {suite.topology!r})", str(path)
            ) from None
    suite = suite.model_copy(update={"topology": str(topo.resolve())})
    topology = load_topology(suite.topology)  # read once for every trial (its errors name its own file)
    trials = expand(suite, topology)
    if not trials:
        raise ConfigError("axes", "the sweep is empty", str(path))
    for t in trials:
        try:
            spec = build_spec(t.spec)
        except ConfigError as exc:
            raise ConfigError(_axis_field(t, exc.field), exc.message, str(path)) from None
        try:
            t.checked = check_run(spec, topology)
        except ConfigError as exc:
            # before anything runs: name the axis value that produced the bad trial
            raise ConfigError(_axis_field(t, exc.field), exc.message, str(path)) from None
    return suite, trials


def _axis_field(t: Trial, field: str) -> str:
    """Where in the suite a trial's bad field comes from: an axis value, or base."""
    if t.runtime != "pipenem" and (field == "runtime" or field.startswith(("compression", "compute", "train"))):
        where = f" (axes.compressor[{t.compressor}])" if field.startswith("compression") else ""
        return f"axes.runtime[{t.runtime}] with {field}{where}"
    if field.startswith("compression"):
        where = f"axes.compressor[{t.compressor}]"
        if t.rate is not None and ".rate" in field:
            return f"axes.rate[{t.rate:g}] ({where})"
        return f"{where}.{field.removeprefix('compression.')}"
    if field == "seed":
        return f"axes.seed[{t.seed}]"
    for key in t.overrides:
        if field.startswith(key):
            return f"axes.set.{key}"
    return f"base.{field}" if field else "base"
