"""What the distributed stages and the single-process twin share: optimizer, learning-rate decay,
loss, compression contexts, and modeled compute. Keeping one copy is what makes the
twin's losses match the distributed run's."""

from __future__ import annotations

import contextlib
import math
import time

import torch
import torch.nn.functional as F

from harness.compressors import Compressor, Context, build
from harness.compressors.base import ForwardRecord
from harness.compressors.buffers import BufferPool
from harness.config.profiles import load_profile
from harness.config.schema import RunSpec
from harness.model.stages import Geometry, stage_flops


def make_optimizer(stage: torch.nn.Module, spec: RunSpec) -> torch.optim.Optimizer | None:
    params = [p for p in stage.parameters() if p.requires_grad]
    if not params:
        return None
    t = spec.train
    # foreach=False: the same elementwise kernels whether the model is split or not
    if t.optimizer == "sgd":
        return torch.optim.SGD(params, lr=t.lr, momentum=t.momentum, weight_decay=t.weight_decay, foreach=False)
    return torch.optim.AdamW(params, lr=t.lr, weight_decay=t.weight_decay, foreach=False)


def lr_at(step: int, spec: RunSpec) -> float:
    """Linear warm-up, then decay to 0 at ``decay_steps`` (default: the run's steps): linear, or
    along half a cosine (``lr_schedule: cosine``, torch's CosineAnnealingLR with eta_min 0)."""
    t = spec.train
    if t.warmup and step < t.warmup:
        return t.lr * (step + 1) / t.warmup
    end = t.decay_steps or t.steps
    span = max(1, end - t.warmup)
    done = min(1.0, (step - t.warmup) / span)
    if t.lr_schedule == "cosine":
        return t.lr * 0.5 * (1.0 + math.cos(math.pi * done))
    return t.lr * max(0.0, 1.0 - done)


def grad_sq_norm(stage: torch.nn.Module) -> torch.Tensor:
    """Squared ℓ2 norm of one stage's gradients (fp64 scalar). Stages add theirs in pipeline
    order to get the model's norm, the same sum in the twin and in the distributed run."""
    params = list(stage.parameters())
    total = torch.zeros((), dtype=torch.float64, device=params[0].device if params else "cpu")
    for p in params:
        if p.grad is not None:
            total += p.grad.detach().double().square().sum()
    return total.cpu()  # a host scalar: it travels between stages as an 8-byte message


def clip_to_norm(stage: torch.nn.Module, max_norm: float, total_sq_norm: torch.Tensor) -> None:
    """Scale this stage's gradients so the whole model's norm is at most ``max_norm``
    (torch's clip_grad_norm_ rule, with the norm summed over every stage)."""
    coef = max_norm / (float(total_sq_norm.sqrt()) + 1e-6)
    if coef < 1.0:
        for p in stage.parameters():
            if p.grad is not None:
                p.grad.mul_(coef)


def optimizer_step(
    stage: torch.nn.Module,
    opt: torch.optim.Optimizer | None,
    step: int,
    spec: RunSpec,
    total_sq_norm: torch.Tensor | None = None,
) -> None:
    """Clip by the whole model's gradient norm (``total_sq_norm``: the sum of every stage's
    :func:`grad_sq_norm`, as single-device training would), set the lr, step."""
    if opt is None:
        return
    if spec.train.grad_clip:
        if total_sq_norm is None:
            raise ValueError("grad_clip needs the model's squared gradient norm from every stage")
        clip_to_norm(stage, spec.train.grad_clip, total_sq_norm)
    for group in opt.param_groups:
        group["lr"] = lr_at(step, spec)
    opt.step()
    opt.zero_grad(set_to_none=True)


def autocast(spec: RunSpec, device: torch.device) -> contextlib.AbstractContextManager:
    """``compute.dtype: bfloat16``: autocast the stage's forward (backward follows the forward's dtypes)."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=spec.compute.dtype == "bfloat16")


def lm_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))


class BoundaryCodecs:
    """The compressors of one side of the pipeline boundaries, with their explicit state.

    State is keyed by (boundary, direction) and kept separately for the sending and the
    receiving side, as two processes would hold it. ``micro_index`` numbers micro-batches
    globally (step · M + m), so seeded choices (randk, sketch) agree on both ends.
    """

    def __init__(self, spec: RunSpec, fwd: Compressor, bwd: Compressor, inference: bool = False) -> None:
        self.fwd: Compressor = build("none") if inference and not spec.train.compress_inference else fwd
        self.bwd: Compressor = bwd
        self.seed = spec.seed
        self.micro = spec.train.micro_batches
        self._state: dict[tuple[int, str, str], dict] = {}
        self.exact = spec.train.boundary_grad == "exact"
        # the boundaries' buffers: codecs write into them instead of allocating every micro-batch
        self.buffers = BufferPool()

    @classmethod
    def built(cls, spec: RunSpec, inference: bool = False) -> BoundaryCodecs:
        """Built from the spec's compressor specs (a stage process: the run was checked by its launcher)."""
        return cls(spec, build(spec.compression.fwd), build(spec.compression.bwd), inference)

    def ctx(
        self,
        boundary: int,
        direction: str,
        side: str,
        step: int,
        m: int,
        forward: ForwardRecord | None = None,
        buffered: bool = True,
    ) -> Context:
        """``buffered``: the codec may write into the boundaries' reused buffers (not where autograd
        follows the codec's output, as in ``runtime: torch``'s in-graph decode)."""
        state = self._state.setdefault((boundary, direction, side), {})
        return Context(
            boundary=boundary,
            direction=direction,
            step=step * self.micro + m,
            seed=self.seed,
            state=state,
            forward=forward,
            buffers=self.buffers if buffered else None,
        )

    def codec(self, direction: str) -> Compressor:
        return self.fwd if direction == "forward" else self.bwd

    def boundary_grad(self, grad: torch.Tensor, sent: ForwardRecord) -> torch.Tensor:
        """The gradient the sender of the activations back-propagates, from the one it received:
        through its forward compressor's Jacobian (``exact``) or unchanged (``straight-through``).
        A gradient that already lies on a mask Jacobian's support (``mirror``'s) is its own vjp."""
        if not self.exact or (getattr(self.bwd, "on_forward_support", False) and sent.codec.jacobian == "mask"):
            return grad
        return sent.codec.vjp(grad, sent.payload, sent.ctx)


class ModeledCompute:
    """``compute: modeled``: sleep for the time the device profile needs for the stage's FLOPs.

    Real-size tensors (seeded noise) still cross the real links. Backward = 2× forward.
    With ``compute.codec: modeled`` encode/decode are charged :meth:`DeviceProfile.codec_seconds`
    instead of timed: the first payload of each direction is encoded for real, then re-sent
    (same bytes; with modeled compute the values are never used)."""

    def __init__(
        self,
        spec: RunSpec,
        geo: Geometry,
        n_blocks: int,
        last: bool,
        device: torch.device,
        module: torch.nn.Module | None = None,
    ) -> None:
        self.profile = load_profile(spec.compute.profile)
        mb = spec.train.batch // spec.train.micro_batches
        # a model other than the built-in one is counted from the stage's own weights
        flops = stage_flops(spec.model, geo, n_blocks, mb * geo.ctx, last, module)
        self.fwd_s = self.profile.seconds(flops)
        self.bwd_s = 2 * self.fwd_s
        g = torch.Generator().manual_seed(spec.seed)
        self.tensor = torch.randn(mb, geo.ctx, geo.d_model, generator=g).to(device)
        self.codec = spec.compute.codec == "modeled"
        self.dense_bytes = self.tensor.numel() * self.tensor.element_size()
        self.payloads: dict[str, object] = {}  # direction -> the payload re-sent (codec: modeled)

    def codec_time(self, payload_bytes: int) -> float:
        """Sleep one modeled encode or decode; returns its seconds."""
        s = self.profile.codec_seconds(self.dense_bytes, payload_bytes)
        _sleep(s)
        return s

    def forward(self) -> torch.Tensor:
        _sleep(self.fwd_s)
        return self.tensor

    def backward(self) -> torch.Tensor:
        _sleep(self.bwd_s)
        return self.tensor


def _sleep(seconds: float) -> None:
    # sleep() alone overshoots by ~0.1 ms per call; spin the last half-millisecond
    end = time.perf_counter() + seconds
    if seconds > 0.001:
        time.sleep(seconds - 0.0005)
    while time.perf_counter() < end:
        pass
