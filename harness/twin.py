"""The single-process twin: the same model, partition, compressors and seed in one process.

Boundaries are applied in-graph: forward returns ``D_fwd(E_fwd(x))``; backward passes
``D_bwd(E_bwd(grad))`` on (straight-through). Micro-batches run forward in order and
backward in the schedule's order, so parameter gradients accumulate in the same order
as on the stages, and with ``none`` the losses equal the distributed run's bit for bit.
No network: the fast path for convergence sweeps.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch

from harness.config import RunSpec, check_spec
from harness.data import Batches, load_streams
from harness.model import build_stages
from harness.schedule import backward_order
from harness.training import BoundaryCodecs, grad_sq_norm, lm_loss, make_optimizer, optimizer_step


class _Boundary(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, codecs, boundary, step, m):  # noqa: ANN001, ANN205
        ctx.meta = (codecs, boundary, step, m)
        c = codecs.codec("forward")
        payload = c.encode(x.detach(), codecs.ctx(boundary, "forward", "send", step, m))
        return c.decode(payload, codecs.ctx(boundary, "forward", "recv", step, m))

    @staticmethod
    def backward(ctx, grad):  # noqa: ANN001, ANN205
        codecs, boundary, step, m = ctx.meta
        c = codecs.codec("backward")
        payload = c.encode(grad, codecs.ctx(boundary, "backward", "send", step, m))
        return c.decode(payload, codecs.ctx(boundary, "backward", "recv", step, m)), None, None, None, None


def run_twin(spec: RunSpec, on_step: Callable[[dict], None] | None = None, eval_batches: int = 0) -> list[dict]:
    """Train (or run inference) in one process; one row per step (loss, time); the last row
    also has the held-out loss over ``eval_batches`` batches."""
    partition, stages = check_spec(spec)
    torch.set_num_threads(spec.compute.threads)
    inference = spec.train.mode == "infer"
    mods = build_stages(spec.model, partition, spec.seed)
    opts = [None if inference else make_optimizer(m, spec) for m in mods]
    codecs = BoundaryCodecs(spec, inference=inference)
    train, held_out = load_streams(spec.data, spec.seed)
    batches = Batches(train, spec.model.ctx, spec.train.batch, spec.seed)
    M = spec.train.micro_batches
    order = backward_order(spec.train.schedule, M)
    rows = []
    for step in range(spec.train.steps):
        t0 = time.time()
        x, y = batches.get(step)
        losses, graph = [], {}
        with torch.set_grad_enabled(not inference):
            for m, (xm, ym) in enumerate(zip(x.chunk(M), y.chunk(M), strict=True)):
                h = xm
                for i, mod in enumerate(mods):
                    if i > 0:
                        h = _Boundary.apply(h, codecs, i - 1, step, m)
                    h = mod(h)
                loss = lm_loss(h, ym)
                losses.append(loss.item())
                graph[m] = loss / M
        if not inference:
            for m in order:
                graph.pop(m).backward()
            # summed in pipeline order, as the stages add it up the chain
            total = sum(grad_sq_norm(mod) for mod in mods) if spec.train.grad_clip else None
            for mod, opt in zip(mods, opts, strict=True):
                optimizer_step(mod, opt, step, spec, total)
        row = {"step": step, "loss": sum(losses) / M, "tokens": spec.train.batch * spec.model.ctx,
               "start": t0, "end": time.time()}
        if eval_batches and step == spec.train.steps - 1:
            row["eval_loss"] = evaluate(mods, codecs, held_out, spec, eval_batches)
        rows.append(row)
        if on_step:
            on_step(row)
    return rows


@torch.no_grad()
def evaluate(mods: list, codecs: BoundaryCodecs, stream: torch.Tensor, spec: RunSpec, n: int) -> float:
    """Held-out loss through the same boundaries (forward compressor, inference contexts)."""
    batches = Batches(stream, spec.model.ctx, spec.train.batch // spec.train.micro_batches, spec.seed + 1)
    total = 0.0
    for k in range(n):
        x, y = batches.get(k)
        h = x
        for i, mod in enumerate(mods):
            if i > 0:
                c = codecs.codec("forward")
                h = c.decode(c.encode(h, codecs.ctx(i - 1, "forward", "eval-send", -1, k)), codecs.ctx(i - 1, "forward", "eval-recv", -1, k))
            h = mod(h)
        total += lm_loss(h, y).item()
    return total / n
