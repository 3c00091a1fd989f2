"""Why error feedback breaks model-parallel training (README: seed 003, EF): the carried error
belongs to other samples.

At boundary 0–1 of the quick tier's ResNet (untrained, seed 0), consecutive micro-batches of
25 digits go through TopK keeping 5%, alone and wrapped in EF and EF21, with their state
carried from micro-batch to micro-batch as in training. Printed per micro-batch: the relative
error ‖decode − x‖ / ‖x‖ of what the next stage receives, and at the end the same error of
the sum of everything received against the sum sent. Twice: with *different* images each
micro-batch (training), and with the *same* micro-batch sent again and again (what error
feedback was designed for: a slowly changing stream, as data-parallel gradients are).

    python3 docs/experiments/ef_cross_sample.py
"""

from __future__ import annotations

import torch

from harness.compressors import Context, build
from harness.config.schema import DataConfig
from harness.model.data import load_streams, make_batches
from papers.mp_compression.resnet import build_stages

MICRO, STEPS = 25, 8


def relative_errors(spec: dict, inputs: list[torch.Tensor]) -> tuple[list[float], list[float]]:
    """Per micro-batch: the error of what arrives, and of the running mean of what arrived
    against the running mean of what was sent (error feedback's guarantee is about sums)."""
    codec, state = build(spec), {}
    out, mean_err, sent, got = [], [], 0, 0
    for k, x in enumerate(inputs):
        send = Context(boundary=0, direction="forward", step=k, state=state.setdefault("send", {}))
        recv = Context(boundary=0, direction="forward", step=k, state=state.setdefault("recv", {}))
        y = codec.decode(codec.encode(x, send), recv)
        out.append(float((y - x).norm() / x.norm()))
        sent, got = sent + x, got + y
        mean_err.append(float((got - sent).norm() / sent.norm()))
    return out, mean_err


def main() -> None:
    train, _ = load_streams(DataConfig(dataset="digits", eval_fraction=0.25), seed=0)
    batches = make_batches(train, 64, MICRO, seed=0)
    stage0 = build_stages([2, 2, 2, 2], seed=0)[0].eval()
    with torch.no_grad():
        different = [stage0(batches.get(k)[0]) for k in range(STEPS)]
    same = [different[0]] * STEPS
    topk = {"name": "topk", "rate": 0.95}
    for name, inputs in (("different images each micro-batch (training)", different), ("the same micro-batch", same)):
        print(f"\n{name}: relative error per micro-batch")
        for label, spec in (
            ("topk 5%", topk),
            ("ef(topk 5%)", {"name": "ef", "inner": topk}),
            ("ef21(topk 5%)", {"name": "ef21", "inner": topk}),
        ):
            errs, of_sums = relative_errors(spec, inputs)
            print(f"  {label:14s}", " ".join(f"{e:5.2f}" for e in errs), "   of the sums:", f"{of_sums[-1]:.2f}")


if __name__ == "__main__":
    main()
