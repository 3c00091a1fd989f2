"""A run validated once: :func:`check_run` turns a :class:`RunSpec` into a :class:`CheckedRun`
(the spec, its resolved topology, partition, model geometry, the built boundary codecs, the
boundary shape) that the executor, the launcher, the twin and the CLI take instead of checking
again. Everything a stage would refuse is refused here, before any namespace exists."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from basics.errors import ConfigError
from harness.compressors import Compressor, build
from harness.compressors.base import Context, ForwardRecord
from harness.config.profiles import DeviceProfile, load_profile
from harness.config.schema import RunSpec
from harness.model.check import check_buildable, check_model, resolve_partition
from harness.model.data import data_files, targets_per_sample
from harness.model.stages import Geometry
from harness.runtime.devices import check_torch_device
from harness.runtime.torch_stage import check_schedule, check_torch_runtime
from testbed.topology import Topology
from testbed.topology_file import load_topology


@dataclass(frozen=True)
class CheckedRun:
    spec: RunSpec
    topology: Topology
    partition: list[int]
    geometry: Geometry
    fwd: Compressor  # the boundary codecs, built once
    bwd: Compressor
    profile: DeviceProfile | None  # modeled compute's device profile

    @property
    def stages(self) -> int:
        return self.topology.stages

    @property
    def micro_batch(self) -> int:
        return self.spec.train.batch // self.spec.train.micro_batches

    @property
    def boundary_shape(self) -> tuple[int, int, int]:
        """(micro-batch, ctx, d_model): what crosses every boundary, as float32."""
        return (self.micro_batch, self.geometry.ctx, self.geometry.d_model)

    @property
    def message_bytes(self) -> int:
        """Dense bytes of one boundary message (a float32 micro-batch activation)."""
        b, n, d = self.boundary_shape
        return b * n * d * 4

    @property
    def tokens_per_step(self) -> int:
        """What throughput counts per step: tokens, or images (an image dataset)."""
        return self.spec.train.batch * targets_per_sample(self.spec.data, self.geometry.ctx)

    def payload_wire_ratio(self, direction: str) -> float:
        """Dense bytes / payload bytes of this run's compressor on one boundary micro-batch of
        seeded noise (a twin has no link to count; distributed trials also record the ratio
        of the bytes their links carried)."""
        x = torch.randn(self.boundary_shape, generator=torch.Generator().manual_seed(0))
        fctx = Context(direction="forward")
        p = self.fwd.encode(x, fctx)
        if direction == "backward":
            p = self.bwd.encode(x, Context(direction="backward", forward=ForwardRecord(self.fwd, p, fctx)))
        return x.numel() * 4 / p.nbytes

    def settings(self, execution: str = "distributed") -> dict[str, Any]:
        """The settings that change results, as every trial row records them (``execution``:
        twin or distributed: a twin computes for real whatever the spec's compute says)."""
        from harness.results.schema import run_settings

        return run_settings(self.spec, self.geometry, execution, self.profile.name if self.profile else None)


def check_run(spec: RunSpec, topology: Topology | None = None) -> CheckedRun:
    """Every cross-check that needs the topology, the model's library, the compressors or the
    machine; ConfigError naming the field. ``topology``: the spec's topology already read (a
    suite reads its file once for all its trials)."""
    topo = topology if topology is not None else load_topology(spec.topology)
    return _cross_check(spec, topo)


def _cross_check(spec: RunSpec, topo: Topology) -> CheckedRun:
    geo = check_model(spec.model, spec.data)
    partition = resolve_partition(spec.partition, geo.n_layers, topo.stages)
    check_buildable(spec.model, partition, spec.seed)
    fwd = build(spec.compression.fwd, "compression.fwd")
    bwd = build(spec.compression.bwd, "compression.bwd")
    shape = (spec.train.batch // spec.train.micro_batches, geo.ctx, geo.d_model)
    fwd.check_shape(shape)
    bwd.check_shape(shape)
    if spec.train.mode == "train":
        bwd.check_forward(fwd)
    check_schedule(spec)
    if spec.runtime == "torch":
        check_torch_runtime(spec, fwd, bwd)
    check_torch_device(spec.compute.device)
    profile = None
    if spec.compute.mode == "modeled":
        profile = load_profile(spec.compute.profile)
        if spec.compute.codec == "modeled" and profile.mem_bandwidth is None:
            raise ConfigError("compute.codec", f"profile {profile.name!r} has no mem_bandwidth to model the codec with")
    else:
        data_files(spec.data)  # the files exist now, not when a worker reads them after bring-up
    return CheckedRun(spec, topo, partition, geo, fwd, bwd, profile)


def as_checked(run: RunSpec | CheckedRun) -> CheckedRun:
    """A checked run as it is; a bare spec checked now (library callers may pass either)."""
    return run if isinstance(run, CheckedRun) else check_run(run)
