"""The compressor protocol: :class:`Compressor`, its :class:`Context` and the helpers every
compressor shares (names and building them: ``registry.py``).

A compressor is configured by name + parameters (``{name: column, rate: 0.9}``)
and turns a tensor (b×n×d, any float dtype) into a :class:`Payload` — exactly
what crosses the wire — and back. State (error feedback, warm starts) is never
hidden in the compressor: it lives in a :class:`State` dict the caller keeps per
(boundary, direction, side) and passes in; ``receiver_state`` says whether the
receiving side must hold matching state (then both sides see the same payloads
in the same order).
"""

from __future__ import annotations

import hashlib
import math
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import torch

from basics.errors import ConfigError
from harness.compressors.buffers import BufferPool
from harness.compressors.wire import Payload, dense_bytes


@dataclass
class Context:
    """Where a tensor is being compressed. ``state`` is this side's state for (boundary, direction).

    ``forward`` is set for backward-direction contexts: the forward payload of the same
    boundary and micro-batch, as this side holds it (the sender of the gradient received it,
    the receiver sent it). ``mirror`` and the exact boundary Jacobian read it."""

    boundary: int = 0
    direction: str = "forward"
    step: int = 0
    seed: int = 0
    state: dict[str, Any] = field(default_factory=dict)
    forward: ForwardRecord | None = None
    # the boundary's reusable buffers (None: allocate): ``empty``/``zeros`` below hand them out
    buffers: BufferPool | None = None

    def empty(self, shape: tuple[int, ...] | torch.Size, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        """An uninitialised tensor for a codec's output or scratch: the boundary's, when it keeps buffers."""
        if self.buffers is None:
            return torch.empty(tuple(shape), dtype=dtype, device=device)
        return self.buffers.empty(shape, dtype, device)

    def zeros(self, shape: tuple[int, ...] | torch.Size, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        return self.empty(shape, dtype, device).zero_()

    def generator(self, salt: int = 0) -> torch.Generator:
        """A generator both sides derive identically (for seeded index choices and projections)."""
        # A stable digest, not hash(): str hashes differ between processes (PYTHONHASHSEED).
        digest = hashlib.blake2b(
            repr((self.seed, self.boundary, self.direction, self.step, salt)).encode(), digest_size=8
        )
        g = torch.Generator()
        g.manual_seed(int.from_bytes(digest.digest(), "little") & 0x7FFF_FFFF_FFFF_FFFF)
        return g


@dataclass
class ForwardRecord:
    """What one boundary's forward compression was: the compressor, its payload and context.
    Enough to rebuild its Jacobian (kept positions, projection) on either side of the link."""

    codec: Compressor
    payload: Payload
    ctx: Context

    def kept_mask(self) -> torch.Tensor | None:
        return self.codec.kept_mask(self.payload, self.ctx)


class Compressor(ABC):
    """Subclass, set ``name``, declare parameters as keyword-only ``__init__`` args, register
    (``harness.compressors.register``, or an entry point)."""

    name: ClassVar[str] = ""
    stateful: ClassVar[bool] = False
    receiver_state: ClassVar[bool] = False
    cost_note: ClassVar[str] = ""  # honest word on its encode/decode cost, shown in tables
    # ---- self-description, for suites' rate axis and `pipenem fidelity` (built-ins and plug-ins alike)
    backward_only: ClassVar[bool] = False  # follows a forward compressor (mirror): not usable alone
    rate_instead: ClassVar[tuple[str, ...]] = ()  # parameters that replace rate when given (lowrank: rank)
    sweep: ClassVar[dict[str, tuple[Any, ...]]] = {}  # values `pipenem fidelity` tries for rate-less ones

    @classmethod
    def parameters(cls) -> tuple[str, ...]:
        """The keyword parameters its constructor declares."""
        import inspect

        return tuple(
            n for n, p in inspect.signature(cls.__init__).parameters.items() if p.kind == inspect.Parameter.KEYWORD_ONLY
        )

    @classmethod
    def takes_rate(cls) -> bool:
        return "rate" in cls.parameters()

    @classmethod
    def wraps(cls) -> bool:
        """Wraps another compressor (``inner``), which then takes the rate axis."""
        return "inner" in cls.parameters()

    @abstractmethod
    def encode(self, x: torch.Tensor, ctx: Context) -> Payload: ...

    @abstractmethod
    def decode(self, payload: Payload, ctx: Context) -> torch.Tensor: ...

    # ---- the boundary Jacobian (``train.boundary_grad: exact``)
    jacobian: ClassVar[str] = "straight-through"  # what vjp() applies: mask | projection | straight-through

    def decodes_kept_exactly(self) -> bool:
        """True where ``decode(encode(v))`` is ``v`` where :meth:`kept_mask` is True and 0
        elsewhere, bit for bit (values sent as they are, nothing scaled): error feedback then
        takes its residual from the mask, without decoding its own payload."""
        return False

    def write_unkept(self, payload: Payload, v: torch.Tensor, out: torch.Tensor, ctx: Context) -> bool:
        """For compressors that decode kept entries exactly: ``out`` = ``v`` where this payload
        kept nothing, 0 where it kept (what error feedback carries), written straight from the
        payload. False (out untouched) where the compressor has no such path: the caller uses
        :meth:`kept_mask`."""
        return False

    def encode_with_state(self, x: torch.Tensor, s: torch.Tensor, rule: str, ctx: Context) -> Payload | None:
        """Error feedback in one go, for compressors that can, on the wrapper's state ``s`` (x's
        shape, contiguous), updated in place:

        - ``"error"`` (ef): encode v = x + s, then s = what the payload leaves out (v where
          nothing was kept, +0 where kept); ``"error-first"``: the same with v = x;
        - ``"estimate"`` (ef21's sender): encode v = x − s, then s += decode(payload).

        The same payload and bits as the wrapper's separate steps; None (s untouched) where the
        compressor has no such path."""
        return None

    def decode_add(self, payload: Payload, out: torch.Tensor, ctx: Context, copy: torch.Tensor | None = None) -> bool:
        """``out += decode(payload)`` in place, without making the decoded tensor, where the
        compressor can (EF21's estimate update; the same bits as ``out.add_(decode(...))``), and
        the sum written into ``copy`` too where given. False (nothing written) where it cannot:
        the caller decodes and adds."""
        return False

    def kept_mask(self, payload: Payload, ctx: Context) -> torch.Tensor | None:
        """For masking compressors: a bool tensor broadcastable to the input's (b, n, d) view
        (:func:`as_3d`), True where an entry was kept, rebuilt from the payload and ctx alone
        (so the receiver of the forward can rebuild it too). None otherwise."""
        return None

    def vjp(self, grad: torch.Tensor, payload: Payload, ctx: Context) -> torch.Tensor:
        """The gradient w.r.t. the compressor's input, given the gradient w.r.t. its decoded
        output: the transposed Jacobian of ``decode(encode(x))`` at this forward, with its
        data-dependent choices (kept positions, projection) held fixed. The default is the
        kept mask where there is one, else straight-through (the identity)."""
        mask = self.kept_mask(payload, ctx)
        if mask is None:
            return grad
        g = as_3d(grad)
        out = ctx.empty(g.shape, g.dtype, g.device)
        if g.device.type == "cpu" and g.dtype in (torch.float32, torch.float64) and mask.device.type == "cpu":
            # numpy casts the mask in small buffers; torch's mixed-dtype multiply would first make a
            # tensor-sized float copy of it (g · mask either way: the same bits, -0.0 included)
            np.multiply(g.numpy(), mask.numpy(), out=out.numpy())
        else:
            torch.mul(g, mask, out=out)
        return out.view(grad.shape)

    # ---- descriptive
    def params(self) -> dict[str, Any]:
        return {k: v for k, v in vars(self).items() if not k.startswith("_")}

    def label(self) -> str:
        """Short form for tables: name and the parameters that differ from their defaults."""
        import inspect

        defaults = {
            k: v.default
            for k, v in inspect.signature(type(self).__init__).parameters.items()
            if v.default is not inspect.Parameter.empty
        }
        bits = []
        for k, v in self.params().items():
            if isinstance(v, Compressor):
                bits.append(v.label())
            elif k == "rate" and not (isinstance(v, float) and math.isnan(v)):
                bits.append(f"{v:g}")
            elif (
                k != "rate" and v is not None and (k in ("bits", "rank", "threshold") or defaults.get(k, object()) != v)
            ):
                bits.append(f"{k}={v}")
        return f"{self.name}({' '.join(bits)})" if bits else self.name

    def describe(self) -> str:
        ps = ", ".join(f"{k}={v}" for k, v in self.params().items() if not isinstance(v, Compressor))
        inner = [v.describe() for v in self.params().values() if isinstance(v, Compressor)]
        return f"{self.name}({', '.join(filter(None, [ps, *inner]))})"

    @property
    def rate(self) -> float:
        """Nominal fraction removed (entries, columns, rows, rank share); 0 for dense."""
        return float(getattr(self, "_rate", 0.0))

    def check_shape(self, shape: torch.Size | tuple[int, ...]) -> None:  # noqa: B027 - optional hook
        """Raise ConfigError if this configuration cannot compress tensors of this shape."""

    def check_forward(self, fwd: Compressor) -> None:  # noqa: B027 - optional hook
        """Used as the backward compressor: raise ConfigError if it cannot follow ``fwd``."""

    def roundtrip(self, x: torch.Tensor, ctx: Context | None = None) -> tuple[torch.Tensor, Payload]:
        """encode -> bytes -> decode, as on a real link (for tests and fidelity tables)."""
        send_ctx = ctx or Context()
        recv_ctx = Context(
            send_ctx.boundary,
            send_ctx.direction,
            send_ctx.step,
            send_ctx.seed,
            state=send_ctx.state if not self.receiver_state else send_ctx.state.setdefault("_peer", {}),
            forward=send_ctx.forward,
        )
        p = self.encode(x, send_ctx)
        back = Payload.from_bytes(p.to_bytes()).to(x.device)
        return self.decode(back, recv_ctx), p


def wire_ratio(x: torch.Tensor, payload: Payload) -> float:
    """Dense bytes / bytes actually sent."""
    return dense_bytes(x.shape, x.dtype) / payload.nbytes


def check_rate(rate: Any, field_name: str = "rate") -> float:
    if isinstance(rate, bool) or not isinstance(rate, int | float) or not (0 < rate < 1) or math.isnan(rate):
        raise ConfigError(field_name, f"must be a fraction removed in (0, 1), got {rate!r}")
    return float(rate)


def kept(rate: float, total: int) -> int:
    """⌈(1 − x)·total⌉, at least 1."""
    return max(1, min(total, math.ceil((1.0 - rate) * total - 1e-9)))


LOOP_BYTES = 1 << 22  # see by_instance()


def by_instance(t: torch.Tensor) -> bool:
    """Whether a CPU tensor is large enough (≥ 4 MiB, past the per-core cache) for codecs to
    work instance by instance (row by row), so that each pass over a slice finds it in cache.
    Smaller tensors take one vectorised call per step: fewer calls cost less there."""
    return t.device.type == "cpu" and t.numel() * t.element_size() >= LOOP_BYTES


def as_3d(x: torch.Tensor) -> torch.Tensor:
    """View any tensor as (b, n, d): 2-D is one instance, higher ranks fold leading dims into b."""
    if x.dim() == 2:
        return x.unsqueeze(0)
    if x.dim() == 1:
        return x.view(1, 1, -1)
    return x.reshape(-1, x.shape[-2], x.shape[-1])
