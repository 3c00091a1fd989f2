"""``runtime: torch``: a pipenem stage as a ``torch.distributed.pipelining`` stage module, with
the boundary compression in its graph.

A stage that sends ends its forward with ``C_fwd.encode``: its outputs are the payload's parts
(values, positions, …) and its header as an int64 tensor, so those are exactly the tensors
torch's schedule sends over the link. The next stage starts with ``C_fwd.decode``. The
gradient comes back as torch's schedules send it: the gradient of the payload's float part
(the kept values), i.e. only the kept positions' gradients — what ``bwd: mirror`` sends in
pipenem's runtime — and the sender places it at the kept positions (the compressor's kept
mask: ``boundary_grad: exact``). A separate backward compressor cannot exist here: a torch
stage receives a gradient of the same shape as each float tensor it sent.

Forward compressors that qualify: ``none`` and those whose float part is the input at the
kept mask (``jacobian = "mask"``: topk, randk, column, row). Their payloads have fixed sizes,
which torch needs (it preallocates receive buffers from example tensors).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch
from torch import nn

from basics.errors import ConfigError
from harness.compressors import Compressor
from harness.compressors.base import Context, as_3d
from harness.compressors.wire import Payload
from harness.config.schema import RunSpec
from harness.runtime.spans import Spans
from harness.runtime.training import BoundaryCodecs, ModeledCompute

# pipenem's schedule names -> torch's single-stage-per-rank schedules
TORCH_SCHEDULES = {"gpipe": "ScheduleGPipe", "1f1b": "Schedule1F1B"}
_MULTI_STAGE = {"interleaved-1f1b", "looped-bfs"}


def check_torch_runtime(spec: RunSpec, fwd: Compressor, bwd: Compressor) -> None:
    """What ``runtime: torch`` cannot run here, refused before anything starts (ConfigError naming the field)."""
    if spec.backend == "twin":
        raise ConfigError("runtime", "torch's schedules run on the stage hosts: use execution distributed (not twin)")
    if spec.compute.codec == "modeled":
        raise ConfigError("compute.codec", "runtime: torch encodes and decodes in the stage graph: codec time is real")
    if spec.compute.device != "cpu":
        raise ConfigError(
            "compute.device",
            f"{spec.compute.device!r}: runtime: torch sends over gloo, which carries CPU tensors only "
            "(pipenem's runtime copies payloads to the host and runs on GPUs)",
        )
    if spec.compute.dtype != "float32":
        raise ConfigError("compute.dtype", "runtime: torch runs float32 here (its receive buffers are fixed float32)")
    if fwd.name != "none" and (fwd.jacobian != "mask" or fwd.stateful):
        raise ConfigError(
            "compression.fwd",
            f"{fwd.label()!r} cannot be part of a torch stage's graph: runtime: torch needs a fixed-size payload "
            "whose float part is the input at a kept mask (none, topk, randk, column, row)",
        )
    if spec.train.mode == "train" and bwd.name not in ("none", "mirror"):
        raise ConfigError(
            "compression.bwd",
            f"{bwd.label()!r}: under runtime: torch the gradient goes back as the gradient of the forward "
            "payload's values (what bwd: mirror sends); a separate backward compressor would need a "
            "different shape than torch's schedule receives. Use bwd: none (or mirror) with runtime: torch",
        )
    if spec.train.mode == "train" and spec.train.boundary_grad != "exact" and fwd.name != "none":
        raise ConfigError(
            "train.boundary_grad",
            "runtime: torch differentiates through the kept mask (exact); straight-through would need the "
            "dense gradient, which torch's schedule does not send",
        )


def check_schedule(spec: RunSpec) -> None:
    if spec.train.schedule in _MULTI_STAGE:
        raise ConfigError(
            "train.schedule",
            f"{spec.train.schedule!r} places several virtual stages on each host and sends from the last host "
            "back to the first; a chain topology has no such link (use gpipe or 1f1b)",
        )


def example_payload(
    spec: RunSpec, codecs: BoundaryCodecs, shape: tuple[int, int, int], requires_grad: bool
) -> tuple[torch.Tensor, ...]:
    """The tensors a boundary carries (payload parts, then the header), sized as the real ones
    for activations of ``shape``: torch's stages preallocate their receive buffers from these.
    Encoded with a state of its own (the run's codecs keep theirs untouched)."""
    scratch = BoundaryCodecs(spec, codecs.fwd, codecs.bwd)
    p = scratch.fwd.encode(torch.randn(shape), scratch.ctx(0, "forward", "send", 0, 0))
    parts = [t.clone().requires_grad_(requires_grad and t.is_floating_point()) for t in p.parts]
    return (*parts, torch.tensor(p.header, dtype=torch.int64))


def as_payload(tensors: tuple[torch.Tensor, ...]) -> Payload:
    """The payload a boundary's tensors carry (its parts, then the header as int64: ``_Encode``'s order)."""
    return Payload(list(tensors[:-1]), tuple(tensors[-1].tolist()))


class _Encode(torch.autograd.Function):
    """Forward: the payload of ``x`` (float values, integer parts, header). Backward: the values'
    gradient placed where they were taken from (the kept mask; ``none``: the identity)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, codec: Compressor, cctx: object, on_backward: Callable | None = None):
        p = codec.encode(x, cctx)
        ctx.meta = (codec, p, cctx, x.shape)
        ctx.on_backward = on_backward  # (t0, t1) of placing the gradient: a span of its own
        rest = [*p.parts[1:], torch.tensor(p.header, dtype=torch.int64)]
        ctx.mark_non_differentiable(*rest)
        return (p.parts[0], *rest)

    @staticmethod
    def backward(ctx, grad_values: torch.Tensor, *_):
        t0 = time.monotonic()
        codec, p, cctx, shape = ctx.meta
        mask = codec.kept_mask(p, cctx)
        if mask is None:
            grad = grad_values.view(shape)
        else:
            out = cctx.zeros(as_3d(torch.empty(shape, device="meta")).shape, grad_values.dtype, grad_values.device)
            grad = out.masked_scatter(mask.expand_as(out), grad_values).view(shape)
        if ctx.on_backward is not None:
            ctx.on_backward(t0, time.monotonic())
        return grad, None, None, None


class _Modeled(torch.autograd.Function):
    """``compute: modeled`` inside torch's schedule: forward and backward sleep the profile's
    times (``ModeledCompute``); the seeded noise tensor stands for the activations."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, sim: ModeledCompute) -> torch.Tensor:
        ctx.sim, ctx.float_input = sim, x.is_floating_point()
        return sim.forward().clone()  # a fresh output for autograd (the shared tensor stays untouched)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        g = ctx.sim.backward()
        return (g if ctx.float_input else None), None


class ModeledStage(nn.Module):
    def __init__(self, sim: ModeledCompute) -> None:
        super().__init__()
        self.sim = sim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _Modeled.apply(x, self.sim)


class CompressedStage(nn.Module):
    """One pipenem stage module between a decoding start and an encoding end (where it has
    neighbours). ``step`` is set by the worker before each schedule step; micro-batches are
    counted (torch's single-stage schedules run forwards in micro-batch order)."""

    def __init__(self, inner: nn.Module, spec: RunSpec, codecs: BoundaryCodecs, stage: int, stages: int) -> None:
        super().__init__()
        self.inner = inner
        self.stage, self.first, self.last = stage, stage == 0, stage == stages - 1
        self.training_run = spec.train.mode == "train"
        self.codecs = codecs
        self.codec = self.codecs.fwd  # `none` for inference with compress_inference: false
        self.step, self._m = 0, 0
        self.counters = {"bytes_fwd": 0, "bytes_bwd": 0, "dense_fwd": 0, "dense_bwd": 0}
        self.times = {"encode": 0.0, "decode": 0.0}
        self.expected: list[torch.Size] | None = None  # the sent tensors' shapes torch preallocated for
        self._checked = False
        self.spans = Spans()

    def new_step(self, step: int) -> None:
        self.step, self._m = step, 0

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, ...]:
        m = self._m
        self._m += 1
        if self.first:
            x = inputs[0]
        else:
            t0 = time.monotonic()
            # unbuffered: autograd follows the decoded values back to the received parts
            rctx = self.codecs.ctx(self.stage - 1, "forward", "recv", self.step, m, buffered=False)
            x = self.codec.decode(as_payload(inputs), rctx)
            t1 = time.monotonic()
            self.times["decode"] += t1 - t0
            self.spans.add("decode", self.step, m, "forward", t0, t1)
            if self.training_run:  # what goes back to the previous stage: the values' gradient
                self.counters["bytes_bwd"] += inputs[0].numel() * inputs[0].element_size()
                self.counters["dense_bwd"] += x.numel() * x.element_size()
        x = self.inner(x)
        if self.last:
            return x
        t0 = time.monotonic()
        # unbuffered too: torch's schedule keeps what a stage sent in its graph in ways a buffer
        # pool cannot see; in-graph codecs allocate (runtime: pipenem's do not)
        cctx = self.codecs.ctx(self.stage, "forward", "send", self.step, m, buffered=False)
        step = self.step
        placed = lambda b0, b1: self.spans.add("decode", step, m, "backward", b0, b1)  # noqa: E731
        out = _Encode.apply(x, self.codec, cctx, placed)
        t1 = time.monotonic()
        self.times["encode"] += t1 - t0
        self.spans.add("encode", self.step, m, "forward", t0, t1)
        self._check(x, out, cctx)
        self.counters["bytes_fwd"] += sum(t.numel() * t.element_size() for t in out)
        self.counters["dense_fwd"] += x.numel() * x.element_size()
        return out

    def _check(self, x: torch.Tensor, out: tuple[torch.Tensor, ...], cctx: Context) -> None:
        """What in-graph compression relies on, said by name instead of a gloo size error or a
        silently wrong gradient (plug-in compressors): fixed part shapes, and (checked once)
        a float part that is the input at the kept mask."""
        shapes = [t.shape for t in out]
        if self.expected is not None and shapes != self.expected:
            raise RuntimeError(
                f"{self.codec.label()} sent parts shaped {[tuple(s) for s in shapes]}, torch's stage expects "
                f"{[tuple(s) for s in self.expected]}: runtime: torch needs fixed-size payloads"
            )
        if self._checked or self.codec.name == "none":
            return
        self._checked = True
        mask = self.codec.kept_mask(as_payload(out), cctx)
        flat = as_3d(x.detach())
        if mask is None or not torch.equal(out[0].detach(), flat[mask.expand_as(flat)]):
            raise RuntimeError(
                f"{self.codec.label()}: its first payload part is not the input at its kept mask (row-major), "
                "which runtime: torch's gradient placement relies on (jacobian = 'mask')"
            )
