"""How many stages one machine emulates: bring-up, memory per stage process, tear-down.

    python benchmarks/many_stages.py [--stages 8 16 32 64] [--mode infer train] [--steps 2]

Each point is one ``run_pipeline`` over ``topologies/scale/64stage.yaml``'s link mix for
N stages (odd links N(80, 16) Mbit/s, the others N(1024, 200)), modeled compute (a10g),
d_model 64, one decoder layer per stage, ctx 128, batch 8 in 4 micro-batches. Printed per
point: time until every stage joined its links (network up + processes started + torch
imported + rendezvous), the steps, tear-down, the stage processes' summed PSS (their
proportional share of memory, shared library pages split between them), the growth of the
machine's anonymous memory and its MemAvailable drop, each at its peak, and per stage.
Needs root.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import threading
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
TOPO = ROOT / "topologies" / "scale" / "64stage.yaml"


def topology(stages: int, out: Path) -> Path:
    data = yaml.safe_load(TOPO.read_text())
    data["name"] = f"scale-{stages}stage"
    data["stages"] = stages
    slow = data["links"][0]["bandwidth"]  # the same mix for any N: every odd link slow
    data["links"] = [{"between": [i, i + 1], "bandwidth": slow} for i in range(1, stages - 1, 2)]
    path = out / f"{stages}stage.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def pss_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def meminfo_kib(field: str) -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    return 0


class MemorySampler(threading.Thread):
    """Peak summed PSS of the stage processes, peak growth of the machine's anonymous memory
    (``AnonPages``: every physical anonymous page once, whoever maps it) and peak MemAvailable
    drop, sampled every 0.5 s. The PSS sum reads one ``smaps_rollup`` per process and can miss
    a short peak; ``AnonPages`` is one read, so both are printed."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.procs: list = []  # the stage processes and their fork server (pids read at each sample)
        self.base = meminfo_kib("MemAvailable")
        self.base_anon = meminfo_kib("AnonPages")
        self.peak_pss = self.peak_drop = self.peak_anon = 0
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.wait(0.5):
            self.peak_anon = max(self.peak_anon, meminfo_kib("AnonPages") - self.base_anon)
            self.peak_drop = max(self.peak_drop, self.base - meminfo_kib("MemAvailable"))
            self.peak_pss = max(self.peak_pss, sum(pss_kib(p.pid) for p in list(self.procs) if p.pid))


def point(stages: int, mode: str, steps: int, tmp: Path) -> dict:
    from harness.config.schema import build_spec
    from harness.runtime.launcher import run_pipeline

    spec = build_spec(
        {
            "topology": str(topology(stages, tmp)),
            "model": {"d_model": 64, "n_layers": stages, "n_heads": 4, "ctx": 128},
            "train": {"mode": mode, "steps": steps, "batch": 8, "micro_batches": 4},
            "compute": {"mode": "modeled", "profile": "a10g"},
        }
    )
    sampler = MemorySampler()
    sampler.start()
    t0 = time.time()

    def follow(procs: list) -> None:  # the stages, and the fork server they share pages with
        servers = {id(p.server): p.server for p in procs if hasattr(p, "server")}
        sampler.procs.extend([*procs, *servers.values()])

    result = run_pipeline(spec, tmp / f"run-{stages}-{mode}", on_start=follow)
    t_end = time.time()
    sampler.stop.set()
    sampler.join()
    # the stages' own clocks: a stage starts step 0 as soon as it has joined both its links
    joined = max(r["start"] for r in result.steps if r["step"] == 0)
    last_step = max(r["end"] for r in result.steps)
    return {
        "stages": stages,
        "mode": mode,
        "joined_s": joined - t0,
        "steps_s": last_step - joined,
        "teardown_s": t_end - last_step,
        "wall_s": t_end - t0,
        "pss_gib": sampler.peak_pss / 2**20,
        "pss_per_stage_mib": sampler.peak_pss / 1024 / stages,
        "anon_per_stage_mib": sampler.peak_anon / 1024 / stages,
        "memavail_drop_gib": sampler.peak_drop / 2**20,
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--stages", type=int, nargs="+", default=[8, 16, 32, 64])
    ap.add_argument("--mode", nargs="+", default=["infer", "train"])
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--apiece", action="store_true", help="each stage its own interpreter (PIPENEM_FORK=0)")
    a = ap.parse_args()
    if a.apiece:
        os.environ["PIPENEM_FORK"] = "0"
    print(f"stage processes: {'one interpreter each' if a.apiece else 'forked from one fork server'}")
    print(
        f"{'stages':>6} {'mode':>5} {'joined s':>9} {'steps s':>8} {'teardown s':>10} {'wall s':>7} "
        f"{'PSS GiB':>8} {'PSS/stage MiB':>13} {'anon/stage MiB':>14} {'MemAvail drop GiB':>17}"
    )
    with tempfile.TemporaryDirectory() as d:
        for n in a.stages:
            for mode in a.mode:
                r = point(n, mode, a.steps, Path(d))
                print(
                    f"{r['stages']:>6} {r['mode']:>5} {r['joined_s']:9.1f} {r['steps_s']:8.1f} {r['teardown_s']:10.1f} "
                    f"{r['wall_s']:7.1f} {r['pss_gib']:8.2f} {r['pss_per_stage_mib']:13.0f} "
                    f"{r['anon_per_stage_mib']:14.0f} {r['memavail_drop_gib']:17.2f}",
                    flush=True,
                )


if __name__ == "__main__":
    main()
