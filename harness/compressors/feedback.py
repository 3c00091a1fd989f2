"""Error-feedback wrappers around any compressor.

- ``ef`` (classic error feedback, sender-only state):  v = x + e;  c = C(v);  e ← v − D(c).
- ``ef21`` (Richtárik et al.; both sides keep the estimate g):  c = C(x − g);  g ← g + D(c);
  the receiver applies the same update and outputs its g, so ``receiver_state`` is true.
State resets when the tensor shape changes (e.g. a last, smaller batch) — on both sides alike.
"""

from __future__ import annotations

import torch

from basics.errors import ConfigError
from harness.compressors.base import Compressor, Context, as_3d
from harness.compressors.shapes import read_shape
from harness.compressors.wire import Payload


def _sub(ctx: Context, key: str) -> Context:
    return Context(
        ctx.boundary, ctx.direction, ctx.step, ctx.seed, state=ctx.state.setdefault(key, {}), buffers=ctx.buffers
    )


class _Wrapper(Compressor):
    stateful = True

    def __init__(self, *, inner: Compressor) -> None:
        # the registry's build() turns an ``inner`` spec into the compressor it names
        if not isinstance(inner, Compressor):
            raise ConfigError("inner", "the wrapped compressor (build it with harness.compressors.build)")
        self.inner = inner

    def params(self) -> dict:
        return {"inner": self.inner}

    @property
    def rate(self) -> float:
        return self.inner.rate

    def check_shape(self, shape: torch.Size | tuple[int, ...]) -> None:
        self.inner.check_shape(shape)

    # The Jacobian w.r.t. x, with the carried error / estimate held fixed, is the inner one's.
    @property
    def jacobian(self) -> str:  # type: ignore[override]
        return self.inner.jacobian

    def kept_mask(self, payload: Payload, ctx: Context) -> torch.Tensor | None:
        return self.inner.kept_mask(payload, _sub(ctx, "inner"))

    def vjp(self, grad: torch.Tensor, payload: Payload, ctx: Context) -> torch.Tensor:
        return self.inner.vjp(grad, payload, _sub(ctx, "inner"))


class ErrorFeedback(_Wrapper):
    name = "ef"

    @property
    def receiver_state(self) -> bool:  # type: ignore[override]
        return self.inner.receiver_state

    def encode(self, x: torch.Tensor, ctx: Context) -> Payload:
        e = ctx.state.get("e")
        carried = e is not None and e.shape == x.shape
        fresh = None if carried else torch.empty(x.shape, dtype=x.dtype, device=x.device)  # this side's state
        if x.is_contiguous() and self.inner.decodes_kept_exactly():  # the inner's fused path (topk's rows)
            rule = "error" if carried else "error-first"
            p = self.inner.encode_with_state(x.detach(), e if carried else fresh, rule, _sub(ctx, "inner"))
            if p is not None:
                ctx.state["e"] = e if carried else fresh
                return p
        if carried:
            v = torch.add(x.detach(), e, out=ctx.empty(x.shape, x.dtype, x.device))
        else:
            v, e = x.detach(), None
        p = self.inner.encode(v, _sub(ctx, "inner"))
        if e is None:
            e = fresh  # the carried error: this side's state
        if self.inner.decodes_kept_exactly() and self.inner.write_unkept(p, v, e, _sub(ctx, "inner")):
            pass  # straight from the payload (topk's bitmask: one compiled pass)
        elif self.inner.decodes_kept_exactly() and (mask := self.kept_mask(p, ctx)) is not None:
            # what the receiver sees is v where kept, 0 elsewhere: the error is v outside the mask
            # (one pass; the same bits as v − D(c) for finite v)
            torch.where(mask, v.new_zeros(()), as_3d(v), out=as_3d(e))
        else:
            # the sender decodes its own payload to know exactly what the receiver sees
            torch.sub(v, self.inner.decode(p, _sub(ctx, "inner_mirror")), out=e)
        ctx.state["e"] = e
        return p

    def decode(self, payload: Payload, ctx: Context) -> torch.Tensor:
        return self.inner.decode(payload, _sub(ctx, "inner"))


class EF21(_Wrapper):
    name = "ef21"
    receiver_state = True

    @staticmethod
    def _estimate(ctx: Context, shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        g = ctx.state.get("g")
        if g is None or tuple(g.shape) != tuple(shape):
            g = torch.zeros(shape, dtype=dtype, device=device)
        return g

    def encode(self, x: torch.Tensor, ctx: Context) -> Payload:
        g = self._estimate(ctx, tuple(x.shape), x.dtype, x.device)
        ctx.state["g"] = g  # updated in place below
        if x.is_contiguous():  # the inner's fused path (topk's rows): x − g, encode, g += D(c)
            p = self.inner.encode_with_state(x.detach(), g, "estimate", _sub(ctx, "inner"))
            if p is not None:
                return p
        diff = torch.sub(x.detach(), g, out=ctx.empty(x.shape, x.dtype, x.device))
        p = self.inner.encode(diff, _sub(ctx, "inner"))
        if not self.inner.decode_add(p, g, _sub(ctx, "inner_mirror")):  # straight from the payload
            g.add_(self.inner.decode(p, _sub(ctx, "inner_mirror")))
        return p

    def decode(self, payload: Payload, ctx: Context) -> torch.Tensor:
        dtype, shape, _ = read_shape(payload.header)
        g = self._estimate(ctx, shape, dtype, payload.device)
        ctx.state["g"] = g  # updated in place below
        out = ctx.empty(shape, dtype, payload.device)  # handed out: the estimate stays this side's
        if self.inner.decode_add(payload, g, _sub(ctx, "inner"), copy=out):  # g += D(c), out = g: one pass
            return out
        return out.copy_(g.add_(self.inner.decode(payload, _sub(ctx, "inner"))))
