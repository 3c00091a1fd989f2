"""The single-process twin: the same model, partition, compressors and seed in one process.

Boundaries are applied in-graph: forward returns ``D_fwd(E_fwd(x))``; backward passes
``D_bwd(E_bwd(grad))`` on, through the forward compressor's Jacobian (``exact``) or
unchanged (``straight-through``), exactly as the stage workers do. Micro-batches run forward in order and
backward in the schedule's order, so parameter gradients accumulate in the same order
as on the stages, and with ``none`` the losses equal the distributed run's bit for bit.
No network: the fast path for convergence sweeps.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch

from harness.compressors import Compressor, build
from harness.compressors.base import ForwardRecord
from harness.config.schema import RunSpec
from harness.model.data import AnyBatches, Source, eval_batches, load_streams, make_batches
from harness.model.stages import build_stages
from harness.runtime.check import CheckedRun, as_checked
from harness.runtime.devices import stage_device
from harness.runtime.pipeline import backward_order
from harness.runtime.training import (
    BoundaryCodecs,
    autocast,
    grad_sq_norm,
    lm_loss,
    make_optimizer,
    optimizer_step,
)


class _Boundary(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, codecs, boundary, step, m, device):
        """The sender (on x's device) encodes; the receiver decodes on ``device``, its stage's."""
        c = codecs.codec("forward")
        send = codecs.ctx(boundary, "forward", "send", step, m)
        payload = c.encode(x.detach(), send)
        recv = codecs.ctx(boundary, "forward", "recv", step, m)
        arrived = payload.to(device)
        # what each side of the link holds of this forward (its backward needs it)
        ctx.meta = (codecs, boundary, step, m, ForwardRecord(c, payload, send), ForwardRecord(c, arrived, recv))
        return c.decode(arrived, recv)

    @staticmethod
    def backward(ctx, grad):
        codecs, boundary, step, m, sent, received = ctx.meta
        c = codecs.codec("backward")
        payload = c.encode(grad, codecs.ctx(boundary, "backward", "send", step, m, forward=received))
        g = c.decode(payload.to(sent.payload.device), codecs.ctx(boundary, "backward", "recv", step, m, forward=sent))
        return codecs.boundary_grad(g, sent), None, None, None, None, None


def run_twin(
    run: CheckedRun | RunSpec, on_step: Callable[[dict], None] | None = None, eval_batches: int = 0
) -> list[dict]:
    """Train (or run inference) in one process; one row per step (loss, time); the last row
    also has the held-out loss and accuracy over ``eval_batches`` batches (:func:`evaluate`)."""
    run = as_checked(run)
    spec = run.spec
    torch.set_num_threads(spec.compute.threads)
    inference = spec.train.mode == "infer"
    mods = _placed(spec, build_stages(spec.model, run.partition, spec.seed))
    opts = [None if inference else make_optimizer(m, spec) for m in mods]
    codecs = BoundaryCodecs(spec, run.fwd, run.bwd, inference=inference)
    train, held_out = load_streams(spec.data, spec.seed)
    batches = make_batches(train, spec.model.ctx, spec.train.batch, spec.seed)
    M = spec.train.micro_batches
    order = backward_order(spec.train.schedule, M)
    rows = []
    for step in range(spec.train.steps):
        t0 = time.time()
        losses = _forward_backward(mods, codecs, batches, spec, step, order, inference)
        total = None
        if not inference:
            # summed in pipeline order, as the stages add it up the chain
            total = sum(grad_sq_norm(mod) for mod in mods)
            for mod, opt in zip(mods, opts, strict=True):
                optimizer_step(mod, opt, step, spec, total if spec.train.grad_clip else None)
        row = {
            "step": step,
            "loss": sum(losses) / M,
            "tokens": run.tokens_per_step,
            "grad_norm": float(total.sqrt()) if total is not None else None,
            "start": t0,
            "end": time.time(),
        }
        if eval_batches and step == spec.train.steps - 1:
            row.update(evaluate(mods, codecs, held_out, spec, eval_batches))
        rows.append(row)
        if on_step:
            on_step(row)
    return rows


def _forward_backward(
    mods: list, codecs: BoundaryCodecs, batches: AnyBatches, spec: RunSpec, step: int, order: list[int], inference: bool
) -> list[float]:
    """One step's micro-batches forward (in order) and backward (in the schedule's order);
    parameter gradients accumulate as on the stages. Returns the micro-batch losses."""
    M = spec.train.micro_batches
    x, y = batches.get(step)
    x, y = x.to(_device(mods[0])), y.to(_device(mods[-1]))
    losses, graph = [], {}
    with torch.set_grad_enabled(not inference):
        for m, (xm, ym) in enumerate(zip(x.chunk(M), y.chunk(M), strict=True)):
            h = xm
            for i, mod in enumerate(mods):
                if i > 0:
                    h = _Boundary.apply(h, codecs, i - 1, step, m, _device(mod))
                with autocast(spec, _device(mod)):
                    h = mod(h)
            loss = lm_loss(h, ym)
            losses.append(loss.item())
            graph[m] = loss / M
    if not inference:
        for m in order:
            graph.pop(m).backward()
    return losses


def stage_gradient_norms(run: CheckedRun | RunSpec, step: int = 0) -> list[float]:
    """ℓ2 norm of each stage's parameter gradients after one step's backward (no update):
    how the boundary semantics distribute the gradient over the pipeline (README: row masking)."""
    run = as_checked(run)
    spec = run.spec
    mods = _placed(spec, build_stages(spec.model, run.partition, spec.seed))
    train, _ = load_streams(spec.data, spec.seed)
    batches = make_batches(train, spec.model.ctx, spec.train.batch, spec.seed)
    _forward_backward(
        mods,
        BoundaryCodecs(spec, run.fwd, run.bwd),
        batches,
        spec,
        step,
        backward_order(spec.train.schedule, spec.train.micro_batches),
        False,
    )
    return [float(grad_sq_norm(mod).sqrt()) for mod in mods]


def _placed(spec: RunSpec, mods: list) -> list:
    """Each stage on the device a stage worker would use (``compute.device``); the device is
    kept on the module, since a stage with no layers has no parameter to tell it."""
    for i, mod in enumerate(mods):
        mod.to(stage_device(spec.compute.device, i))
        mod.pipenem_device = stage_device(spec.compute.device, i)
    return mods


def _device(mod: torch.nn.Module) -> torch.device:
    return mod.pipenem_device


def evaluate(mods: list, codecs: BoundaryCodecs, source: Source, spec: RunSpec, n: int) -> dict[str, float]:
    """Held-out loss and accuracy (of the argmax: images, or next tokens) through the same
    boundaries (forward compressor, inference contexts); with ``train.eval_uncompressed`` also
    with no compressor at the boundaries. Layers run in eval mode (batch norm: running stats)."""
    batches = eval_batches(source, spec.model.ctx, spec.train.batch // spec.train.micro_batches, spec.seed, n)
    was = [m.training for m in mods]
    for m in mods:
        m.eval()
    try:
        out = _held_out(mods, codecs, codecs.codec("forward"), batches, spec, "eval")
        if spec.train.eval_uncompressed:
            plain = _held_out(mods, codecs, build("none"), batches, spec, "eval-plain")
            out |= {f"{k}_uncompressed": v for k, v in plain.items()}
    finally:
        for m, w in zip(mods, was, strict=True):
            m.train(w)
    return out


@torch.no_grad()
def _held_out(
    mods: list, codecs: BoundaryCodecs, c: Compressor, batches: list, spec: RunSpec, side: str
) -> dict[str, float]:
    losses, sizes, correct = [], [], 0
    for k, (x, y) in enumerate(batches):
        h = x.to(_device(mods[0]))
        for i, mod in enumerate(mods):
            if i > 0:
                h = c.decode(
                    c.encode(h, codecs.ctx(i - 1, "forward", f"{side}-send", -1, k)).to(_device(mod)),
                    codecs.ctx(i - 1, "forward", f"{side}-recv", -1, k),
                )
            with autocast(spec, _device(mod)):
                h = mod(h)
        y = y.to(h.device)
        losses.append(lm_loss(h, y).item())
        sizes.append(y.numel())
        correct += int((h.argmax(-1) == y).sum())
    # equal batches (text): the plain mean, as before accuracy was recorded; images: per image
    if len(set(sizes)) == 1:
        loss = sum(losses) / len(losses)
    else:
        loss = sum(v * n for v, n in zip(losses, sizes, strict=True)) / sum(sizes)
    return {"eval_loss": loss, "eval_accuracy": correct / sum(sizes)}
