"""What recording the timeline costs a stage, against its step time (target ≤ 1%).

    python benchmarks/spans.py [RUN_DIR]

Times ``Spans.add`` (what the workers call) and the ``span()`` context manager in a tight
loop, counts the spans a stage records per step in a real run (RUN_DIR: a ``pipenem train``
folder; default: trains ``configs/ci-train.yaml`` — 4 stages, real compute, 30 steps — into a
temporary folder), and prints per stage: spans per step, their recording time per step,
the step time, and the ratio. The send-completion times come from the one thread that waits
on every send anyway (``harness/runtime/transport.py``), so they add a callback, no wait.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from harness.runtime.spans import Spans

ROOT = Path(__file__).resolve().parent.parent


def per_call(n: int = 200_000) -> tuple[float, float]:
    s = Spans()
    t0 = time.perf_counter()
    for i in range(n):
        s.add("fwd", i, 0, None, 1.0, 2.0)
    add = (time.perf_counter() - t0) / n
    s = Spans()
    t0 = time.perf_counter()
    for i in range(n):
        with s.span("optim", i):
            pass
    return add, (time.perf_counter() - t0) / n


def main() -> None:
    run = Path(sys.argv[1]) if len(sys.argv) > 1 else None
    if run is None:
        run = Path(tempfile.mkdtemp(prefix="pipenem-spans-")) / "run"
        cmd = [sys.executable, "-m", "pipenem", "train", "ci-train", "--out", str(run), "--quiet"]
        subprocess.run(cmd, check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
    add, ctx = per_call()
    # a monotonic() call per span end is part of the cost; add() takes two from its caller
    clock = min(timeit_monotonic() for _ in range(3))
    cost = add + 2 * clock
    print(f"Spans.add {add * 1e6:.2f} us, span() {ctx * 1e6:.2f} us, time.monotonic() {clock * 1e6:.3f} us")
    print("stage  spans/step  recording/step  step time  ratio")
    worst = 0.0
    for f in sorted(run.glob("stage*.json")):
        doc = json.loads(f.read_text())
        steps = doc["steps"]
        rows = doc["spans"]["rows"]
        n = len(steps)
        step_s = sum(r["end"] - r["start"] for r in steps[1:]) / max(n - 1, 1)
        per_step = len(rows) / n
        ratio = per_step * cost / step_s
        worst = max(worst, ratio)
        print(f"{f.stem:6s} {per_step:10.1f} {per_step * cost * 1e6:12.1f} us {step_s * 1e3:8.1f} ms {ratio:8.5%}")
    print(f"worst stage: {worst:.5%} of its step time (target <= 1%)")


def timeit_monotonic(n: int = 200_000) -> float:
    t0 = time.perf_counter()
    for _ in range(n):
        time.monotonic()
    return (time.perf_counter() - t0) / n


if __name__ == "__main__":
    main()
