"""A real boundary activation of a configured run, for fidelity tables (``pipenem fidelity
--config``, a paper's reproduction)."""

from __future__ import annotations

import torch

from basics.errors import ConfigError
from harness.config.schema import RunSpec
from harness.model.data import load_streams, make_batches
from harness.model.stages import build_stages


def boundary_activation(spec: RunSpec, partition: list[int], boundary: int | None = None) -> tuple[torch.Tensor, int]:
    """(the tensor stage ``boundary`` sends to stage ``boundary + 1``, boundary): the first
    micro-batch of step 0 of the run's data through its model at initialisation (the seed's
    weights), exactly what the first forward message on that link carries before compression.
    Default boundary: the middle one."""
    stages = len(partition)
    if stages < 2:
        raise ConfigError("--boundary", "the topology has one stage: no boundary to capture")
    k = (stages - 1) // 2 if boundary is None else boundary
    if not 0 <= k < stages - 1:
        raise ConfigError("--boundary", f"{k} is not a boundary of {stages} stages (0 … {stages - 2})")
    mods = build_stages(spec.model, partition, spec.seed)
    train, _ = load_streams(spec.data, spec.seed)
    x, _ = make_batches(train, spec.model.ctx, spec.train.batch, spec.seed).get(0)
    x = x.chunk(spec.train.micro_batches)[0]
    with torch.no_grad():
        for mod in mods[: k + 1]:
            mod.eval()
            x = mod(x)
    return x.float(), k
