"""One pipeline stage: ``python -m harness.runtime.worker RUN_DIR STAGE`` (started inside its host).

Reads its spec and links from the launcher (one JSON line on stdin: never from a file
another run could overwrite), joins its links' process groups, runs the schedule, and
writes ``RUN_DIR/stage{STAGE}.json`` (per-step metrics).
At every boundary the sender sends ``C.encode(tensor)``; the receiver decodes it and
goes on; backward gradients come back through ``C_bwd`` and, with ``boundary_grad: exact``,
through the Jacobian of the ``C_fwd`` this stage applied to that micro-batch.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from harness.compressors.base import ForwardRecord
from harness.compressors.wire import Payload
from harness.config.schema import RunSpec
from harness.model.data import load_streams, make_batches, targets_per_sample
from harness.model.stages import Geometry, build_stages
from harness.results.atomic import atomic_write
from harness.runtime import messages
from harness.runtime.allocator import active
from harness.runtime.devices import stage_device
from harness.runtime.pipeline import SCHEDULES
from harness.runtime.spans import Spans
from harness.runtime.training import (
    BoundaryCodecs,
    ModeledCompute,
    autocast,
    grad_sq_norm,
    lm_loss,
    make_optimizer,
    optimizer_step,
)
from harness.runtime.transport import BWD, FWD, NORM_DOWN, NORM_UP, LinkChannel


def join_links(links: dict) -> tuple[LinkChannel | None, LinkChannel | None]:
    """Both of a stage's links at once (prev: rank 1, next: rank 0). One after the other,
    stage i's next link would wait for stage i+1 to finish its prev link first, which waits
    for stage i+2 …: a rendezvous chain as long as the pipeline (measured: 16 stages took
    53 s to join, 8 took 11 s)."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(2, thread_name_prefix="join") as pool:
        prev = pool.submit(LinkChannel, links["prev"]["me"], links["prev"]["peer"], 1) if links.get("prev") else None
        nxt = pool.submit(LinkChannel, links["next"]["me"], links["next"]["peer"], 0) if links.get("next") else None
        return (prev.result() if prev else None), (nxt.result() if nxt else None)


class StageWorker:
    def __init__(self, spec: RunSpec, stage: int, meta: dict) -> None:
        stages, partition = meta["stages"], meta["partition"]
        self.spec, self.stage, self.stages = spec, stage, stages
        self.first, self.last = stage == 0, stage == stages - 1
        self.inference = spec.train.mode == "infer"
        torch.set_num_threads(spec.compute.threads)
        self.modeled = spec.compute.mode == "modeled"
        self.device = stage_device(spec.compute.device, stage)
        self.module = build_stages(spec.model, partition, spec.seed)[stage].to(self.device)
        if self.inference:
            self.module.eval()
        self.opt = None if self.inference else make_optimizer(self.module, spec)
        self.codecs = BoundaryCodecs.built(spec, inference=self.inference)
        geo = Geometry(**meta["geometry"])
        self.tokens = spec.train.batch * targets_per_sample(spec.data, geo.ctx)
        self.sim = (
            ModeledCompute(spec, geo, partition[stage], self.last, self.device, self.module) if self.modeled else None
        )
        self.codec_modeled = self.modeled and self.sim.codec
        self.batches = None
        if not self.modeled and (self.first or self.last):
            train, _ = load_streams(spec.data, spec.seed)
            self.batches = make_batches(train, spec.model.ctx, spec.train.batch, spec.seed)
        self.prev, self.next = join_links(meta["links"])
        self.spans = Spans()

    # ------------------------------------------------------------------ one step
    def step(self, step: int) -> dict:
        spec, M = self.spec, self.spec.train.micro_batches
        t = {"compute": 0.0, "encode": 0.0, "decode": 0.0, "recv_wait": 0.0}
        start, faults0 = time.time(), resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        sent0 = self._counters()
        sw0 = sum(c.send_wait_s for c in (self.prev, self.next) if c)
        x_mb = y_mb = None
        if self.batches is not None:
            x, y = self.batches.get(step)
            x_mb, y_mb = x.to(self.device).chunk(M), y.to(self.device).chunk(M)
        saved: dict[int, tuple] = {}
        self._sent, self._received = {}, {}  # per micro-batch: this stage's forward records
        losses = []
        actions = (
            [("F", m) for m in range(M)]
            if self.inference
            else SCHEDULES[spec.train.schedule](self.stages, M, self.stage)
        )
        for kind, m in actions:
            if kind == "F":
                inp = self._receive(FWD, "forward", step, m, t) if not self.first else (x_mb[m] if x_mb else None)
                t0 = time.monotonic()
                if self.modeled:
                    out = self.sim.forward()
                else:
                    with torch.set_grad_enabled(not self.inference), autocast(spec, self.device):
                        out = self.module(inp)
                t1 = time.monotonic()
                t["compute"] += t1 - t0
                self.spans.add("fwd", step, m, None, t0, t1)
                if self.last:
                    if self.modeled:
                        saved[m] = (inp, None)  # nothing to back-propagate: backward is a modeled sleep
                    else:
                        loss = lm_loss(out, y_mb[m])
                        losses.append(loss.item())
                        saved[m] = (inp, loss / M)
                else:
                    self._send(self.next, FWD, "forward", self.stage, out.detach(), step, m, t)
                    saved[m] = (inp, out)
            else:
                inp, out = saved.pop(m)
                grad = self._receive(BWD, "backward", step, m, t) if not self.last else None
                t0 = time.monotonic()
                if self.modeled:
                    g_in = self.sim.backward()
                else:
                    out.backward(grad) if grad is not None else out.backward()
                    g_in = inp.grad if not self.first else None
                t1 = time.monotonic()
                t["compute"] += t1 - t0
                self.spans.add("bwd", step, m, None, t0, t1)
                if not self.first:
                    self._send(self.prev, BWD, "backward", self.stage - 1, g_in, step, m, t)
        total = None
        if not self.inference and not self.modeled:
            total = self._model_sq_norm(t, step) if spec.train.grad_clip else None
            t0 = time.monotonic()
            optimizer_step(self.module, self.opt, step, spec, total)
            t1 = time.monotonic()
            t["compute"] += t1 - t0
            self.spans.add("optim", step, None, None, t0, t1)
        if not self.inference:
            for c in (self.prev, self.next):
                if c:
                    c.flush()  # the step ends when its messages are out (GPipe/1F1B flush)
        send_wait = sum(c.send_wait_s for c in (self.prev, self.next) if c) - sw0
        return {
            "step": step,
            "stage": self.stage,
            "start": start,
            "end": time.time(),
            "loss": sum(losses) / len(losses) if losses else None,
            # the whole model's gradient norm before clipping (known to every stage when clipping)
            "grad_norm": float(total.sqrt()) if total is not None else None,
            "tokens": self.tokens,
            "compute_s": t["compute"],
            "encode_s": t["encode"],
            "decode_s": t["decode"],
            "recv_wait_s": t["recv_wait"],
            "send_wait_s": send_wait,
            # pages this process faulted in during the step: fresh memory (a codec that allocates
            # its output every micro-batch shows here, under a malloc that returns it to the kernel)
            "faults": resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults0,
            **{k: v - sent0[k] for k, v in self._counters().items()},
        }

    def _counters(self) -> dict[str, int]:
        """Bytes this stage handed to its links (frames and control messages included) and the
        dense size of the tensors they carried, forward (to next) and backward (to prev)."""
        nxt, prv = self.next, self.prev
        return {
            "bytes_fwd": nxt.bytes_sent if nxt else 0,
            "bytes_bwd": prv.bytes_sent if prv else 0,
            "dense_fwd": nxt.dense_sent if nxt else 0,
            "dense_bwd": prv.dense_sent if prv else 0,
        }

    def _send(
        self, chan: LinkChannel, tag: int, direction: str, boundary: int, x: torch.Tensor, step: int, m: int, t: dict
    ) -> None:
        t0 = time.monotonic()
        codec = self.codecs.codec(direction)
        ctx = self.codecs.ctx(
            boundary,
            direction,
            "send",
            step,
            m,
            forward=self._received.pop(m, None) if direction == "backward" else None,
        )
        if self.codec_modeled and direction in self.sim.payloads:
            payload = self.sim.payloads[direction]
            t["encode"] += self.sim.codec_time(payload.nbytes)
        else:
            payload = codec.encode(x, ctx)
            if self.codec_modeled:
                self.sim.payloads[direction] = payload
            t["encode"] += time.monotonic() - t0
        self.spans.add("encode", step, m, direction, t0, time.monotonic())
        if direction == "forward" and not self.inference:
            self._sent[m] = ForwardRecord(codec, payload, ctx)
        done = lambda t0, t1: self.spans.add("send", step, m, direction, t0, t1)  # noqa: E731
        chan.send(payload, tag, dense_bytes=x.numel() * x.element_size(), on_done=done)

    def _receive(self, tag: int, direction: str, step: int, m: int, t: dict) -> torch.Tensor:
        chan = self.prev if direction == "forward" else self.next
        boundary = self.stage - 1 if direction == "forward" else self.stage
        t0 = time.monotonic()
        payload = chan.recv(tag).to(self.device)  # the wire bytes onto the device that decodes them
        t1 = time.monotonic()
        self.spans.add("recv", step, m, direction, t0, t1)
        self.spans.add("arrive", step, m, direction, *chan.arrival[tag])
        codec = self.codecs.codec(direction)
        sent = self._sent.pop(m) if direction == "backward" else None
        ctx = self.codecs.ctx(boundary, direction, "recv", step, m, forward=sent)
        t["recv_wait"] += t1 - t0
        if self.codec_modeled:  # modeled compute never reads the values: charge the decode, skip it
            t["decode"] += self.sim.codec_time(payload.nbytes)
            x = self.sim.tensor
        else:
            x = codec.decode(payload, ctx)
            if sent is not None:
                x = self.codecs.boundary_grad(x, sent)
            t["decode"] += time.monotonic() - t1
        self.spans.add("decode", step, m, direction, t1, time.monotonic())
        if direction == "forward" and not self.inference:
            self._received[m] = ForwardRecord(codec, payload, ctx)
            x = x.detach().requires_grad_(True)  # a leaf: its grad is what goes back
        return x

    def _model_sq_norm(self, t: dict, step: int) -> torch.Tensor:
        """The whole model's squared gradient norm: partial sums travel up the chain, the
        total comes back down (two 8-byte messages per link and step, on their own tags)."""
        t0 = time.monotonic()
        acc = grad_sq_norm(self.module)
        t["compute"] += time.monotonic() - t0
        t0 = time.monotonic()
        if not self.first:
            acc = self.prev.recv(NORM_UP).parts[0][0] + acc
        if not self.last:
            self.next.send(Payload([acc.reshape(1)], ()), NORM_UP)
            acc = self.next.recv(NORM_DOWN).parts[0][0]
        if not self.first:
            self.prev.send(Payload([acc.reshape(1)], ()), NORM_DOWN)
        t["recv_wait"] += time.monotonic() - t0
        self.spans.add("norm", step, None, None, t0, time.monotonic())
        return acc

    def close(self) -> None:
        for c in (self.prev, self.next):
            if c:
                c.close()


def main(run_dir: str, stage: int) -> None:
    main_with_meta(run_dir, stage, json.loads(sys.stdin.readline()))


def main_with_meta(run_dir: str, stage: int, meta: dict) -> None:
    """The stage with its launcher's meta already read (a process forked by the fork server)."""
    serve(run_dir, stage, lambda spec, meta: StageWorker(spec, stage, meta), meta)


def serve(run_dir: str, stage: int, make: Callable[[RunSpec, dict], Any], meta: dict) -> None:
    """A stage process of either runtime: from the launcher's meta, build the stage worker
    with ``make(spec, meta)`` (anything with ``step(step) -> row`` and ``close()``), run every
    step with progress for the launcher, then write the rows. Every step after at most
    :data:`ALIVE_EVERY_S` it says it is alive (the launcher's watch for a stage that stops);
    an exception is said with the time it happened (the launcher names the stage that failed
    first, not a peer that only saw its connection close) before the traceback."""
    spec = RunSpec.model_validate(meta["spec"])
    Path(run_dir, f"stage{stage}.pid").write_text(str(os.getpid()))  # which process is this stage
    try:
        worker = make(spec, meta)
        messages.emit("joined", stage=stage)
        steps, alive = [], 0.0
        for step in range(spec.train.steps):
            steps.append(worker.step(step))
            _report_step(spec, steps[-1])
            if time.time() - alive >= ALIVE_EVERY_S:
                alive = time.time()
                messages.emit("alive", stage=stage, step=step, step_s=steps[-1]["end"] - steps[-1]["start"])
        worker.close()
    except Exception as exc:
        messages.emit("failed", stage=stage, error=f"{type(exc).__name__}: {exc}"[:2000], at=time.time())
        raise
    spans = getattr(worker, "spans", None)
    _write_steps(Path(run_dir), stage, steps, spans.as_json() if spans is not None else None)


ALIVE_EVERY_S = 2.0


def _report_step(spec: RunSpec, row: dict) -> None:
    """A progress line for the launcher: the loss where this stage has it, else stage 0's tick."""
    step, stage = row["step"], row["stage"]
    if row["loss"] is not None and (step % spec.log_every == 0 or step == spec.train.steps - 1):
        messages.emit("step", stage=stage, step=step, loss=row["loss"])
    elif stage == 0 and step % spec.log_every == 0:
        messages.emit("step", stage=stage, step=step, loss=None)


def _write_steps(run_dir: Path, stage: int, steps: list[dict], spans: dict | None) -> None:
    """``RUN_DIR/stage{N}.json``: this stage's per-step rows and spans (all or nothing)."""
    out = run_dir / f"stage{stage}.json"
    doc = {"stage": stage, "pid": os.getpid(), "allocator": active(), "steps": steps, "spans": spans}
    try:
        atomic_write(out, lambda tmp: tmp.write_text(json.dumps(doc)))
    except OSError as exc:  # e.g. a full disk: one line naming the file, nothing half-written left
        messages.emit("error", stage=stage, text=f"cannot write {out}: {exc.strerror or exc}")
        os._exit(1)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
    sys.stdout.flush()
    # receive threads may be blocked in gloo; a normal interpreter exit would abort under them
    os._exit(0)
