"""One pipeline stage under ``runtime: torch``: ``python -m harness.runtime.torch_worker RUN_DIR STAGE``.

The same stage module, data, optimizer and per-step rows as ``harness.runtime.worker``, but the
micro-batches are scheduled and moved by ``torch.distributed.pipelining`` (``PipelineStage`` +
``ScheduleGPipe``/``Schedule1F1B``) in one process group over all stages. Its transport stays on
the shaped links: every rank's gloo device is bound to its host address, which only its
pipeline neighbours can reach, each over the link between them (testbed ``host_addresses``);
gloo connects lazily (``TORCH_GLOO_LAZY_INIT``), so only neighbours ever connect, and the
rendezvous is a ``FileStore`` in the run directory rather than a TCP store on some link.
Compression is in the stages' graph (``torch_stage.py``).
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time
from datetime import timedelta

os.environ["TORCH_GLOO_LAZY_INIT"] = "1"  # read when the process group is built: neighbours only

import torch
import torch.distributed as dist
from torch.distributed import pipelining

from harness.config.schema import RunSpec
from harness.model.data import example_input, load_streams, logits_shape, make_batches, targets_per_sample
from harness.model.stages import Geometry, build_stages
from harness.runtime.torch_spans import TorchSpans
from harness.runtime.torch_stage import TORCH_SCHEDULES, CompressedStage, ModeledStage, example_payload
from harness.runtime.training import (
    BoundaryCodecs,
    ModeledCompute,
    grad_sq_norm,
    lm_loss,
    make_optimizer,
    optimizer_step,
)
from harness.runtime.worker import serve

BACKEND = "pipenem-gloo"
NORM_TAG = 7  # the gradient-norm chain, after the schedule's own messages
TIMEOUT = timedelta(seconds=600)  # a stalled link is named by the launcher's link watch long before


def _process_group(store, rank: int, size: int, timeout: timedelta, address: str) -> dist.ProcessGroupGloo:
    opts = dist.ProcessGroupGloo._Options()
    opts._devices = [dist.ProcessGroupGloo.create_device(hostname=address)]
    opts._timeout = timeout
    return dist.ProcessGroupGloo(store, rank, size, opts)


class TorchStageWorker:
    def __init__(self, spec: RunSpec, stage: int, meta: dict) -> None:
        stages, partition = meta["stages"], meta["partition"]
        geo = Geometry(**meta["geometry"])
        self.spec, self.stage, self.stages = spec, stage, stages
        self.ctx, self.tokens = geo.ctx, spec.train.batch * targets_per_sample(spec.data, geo.ctx)
        self.first, self.last = stage == 0, stage == stages - 1
        self.training = spec.train.mode == "train"
        torch.set_num_threads(spec.compute.threads)
        self.modeled = spec.compute.mode == "modeled"
        inner = build_stages(spec.model, partition, spec.seed)[stage]
        if not self.training:
            inner.eval()
        self.opt = make_optimizer(inner, spec) if self.training and not self.modeled else None
        if self.modeled:  # the profile's times, slept in the schedule's forward and backward
            cpu = torch.device("cpu")
            inner = ModeledStage(ModeledCompute(spec, geo, partition[stage], self.last, cpu, inner))
        codecs = BoundaryCodecs.built(spec, inference=not self.training)
        self.module = CompressedStage(inner, spec, codecs, stage, stages)
        self.batches = None
        if (self.first or self.last) and not self.modeled:
            train, _ = load_streams(spec.data, spec.seed)
            self.batches = make_batches(train, spec.model.ctx, spec.train.batch, spec.seed)
        address = meta["host_addresses"][stage]
        dist.Backend.register_backend(
            BACKEND, lambda store, rank, size, timeout: _process_group(store, rank, size, timeout, address)
        )
        store = dist.FileStore(meta["store"], stages)
        dist.init_process_group(BACKEND, store=store, rank=stage, world_size=stages, timeout=TIMEOUT)
        mb = spec.train.batch // spec.train.micro_batches
        grad, shape = self.training, (mb, geo.ctx, geo.d_model)
        inp = (example_input(spec.data, geo.ctx, mb),) if self.first else example_payload(spec, codecs, shape, grad)
        # modeled: the noise tensor, not logits
        last_shape = shape if self.modeled else logits_shape(spec.data, geo.ctx, mb, geo.vocab)
        out = torch.zeros(last_shape, requires_grad=grad) if self.last else example_payload(spec, codecs, shape, grad)
        if not self.last:
            self.module.expected = [t.shape for t in out]
        self.pp_stage = pipelining.PipelineStage(
            self.module, stage, stages, torch.device("cpu"), input_args=inp, output_args=out
        )
        self.spans = self.module.spans  # the codec's spans and (torch_spans) the schedule's
        self.timeline = TorchSpans(self.spans)
        self.timeline.instrument(self.pp_stage)
        self.losses: list[float] = []
        schedule = getattr(pipelining, TORCH_SCHEDULES[spec.train.schedule])
        # the loss is divided by M here and torch does not scale again: the gradients are those
        # of pipenem's runtime (loss / M per micro-batch), not a sum rescaled afterwards
        self.schedule = schedule(
            self.pp_stage, spec.train.micro_batches, loss_fn=self._loss if self.training else None, scale_grads=False
        )

    def _loss(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if self.modeled:  # no loss to report: its backward only starts the modeled backward
            return logits.sum() * 0.0
        loss = lm_loss(logits, target)
        self.losses.append(loss.item())
        return loss / self.spec.train.micro_batches

    def step(self, step: int) -> dict:
        spec = self.spec
        start, faults0 = time.time(), resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        before = dict(self.module.counters), dict(self.module.times)
        self.module.new_step(step)
        self.timeline.new_step(step)
        self.losses = []
        x = y = None
        if self.batches is not None:
            x, y = self.batches.get(step)
        elif self.modeled:  # the tokens are never read: shapes for torch's micro-batch split
            x = y = example_input(spec.data, self.ctx, spec.train.batch)
        args = (x,) if self.first else ()
        kwargs = {"target": y} if self.last else {}
        if self.training:
            self.schedule.step(*args, **kwargs)
        else:
            out = self.schedule.eval(*args)
            if self.last and not self.modeled:
                m = spec.train.micro_batches
                self.losses = [lm_loss(o, t).item() for o, t in zip(out.chunk(m), y.chunk(m), strict=True)]
        total = None
        if self.training and not self.modeled:
            t0 = time.monotonic()
            total = self._model_sq_norm() if spec.train.grad_clip else None
            t1 = time.monotonic()
            optimizer_step(self.module.inner, self.opt, step, spec, total)
            self.spans.add("norm", step, None, None, t0, t1)
            self.spans.add("optim", step, None, None, t1, time.monotonic())
        counters, times = self.module.counters, self.module.times
        return {
            "step": step,
            "stage": self.stage,
            "start": start,
            "end": time.time(),
            "loss": sum(self.losses) / len(self.losses) if self.losses else None,
            "grad_norm": float(total.sqrt()) if total is not None else None,
            "tokens": self.tokens,
            # torch's schedule interleaves compute and waits: only the codec is timed apart
            "compute_s": None,
            "encode_s": times["encode"] - before[1]["encode"],
            "decode_s": times["decode"] - before[1]["decode"],
            "recv_wait_s": None,
            "send_wait_s": None,
            "faults": resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults0,
            **{k: v - before[0][k] for k, v in counters.items()},
        }

    def close(self) -> None:
        """Nothing to close: no destroy_process_group (see the end of this module)."""

    def _model_sq_norm(self) -> torch.Tensor:
        """The whole model's squared gradient norm, summed up the chain and sent back down (as in
        pipenem's runtime: two 8-byte messages per link and step, neighbours only)."""
        acc = grad_sq_norm(self.module.inner)
        buf = torch.zeros((), dtype=torch.float64)
        if not self.first:
            dist.recv(buf, self.stage - 1, tag=NORM_TAG)
            acc = buf + acc
        counters = self.module.counters
        if not self.last:
            dist.send(acc.reshape(()), self.stage + 1, tag=NORM_TAG)
            counters["bytes_fwd"] += acc.element_size()
            dist.recv(buf, self.stage + 1, tag=NORM_TAG)
            acc = buf.clone()
        if not self.first:
            dist.send(acc.reshape(()), self.stage - 1, tag=NORM_TAG)
            counters["bytes_bwd"] += acc.element_size()
        return acc


def main(run_dir: str, stage: int) -> None:
    main_with_meta(run_dir, stage, json.loads(sys.stdin.readline()))


def main_with_meta(run_dir: str, stage: int, meta: dict) -> None:
    serve(run_dir, stage, lambda spec, meta: TorchStageWorker(spec, stage, meta), meta)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
    sys.stdout.flush()
    os._exit(0)  # no destroy_process_group: a peer may already be gone, and waiting on it is not needed
