"""netns vs docker backend, measured in one run: 8-stage bring-up/tear-down time and the
probe table of the paper's topology on both.

    python benchmarks/backends.py [--repeat 3] [--seconds 2]

Needs root and a running dockerd (``dockerd --bridge=none --iptables=false &``).
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

from testbed.backends import make_backend
from testbed.probe import probe_all
from testbed.topology_file import load_topology

TOPO = Path(__file__).resolve().parent.parent / "topologies" / "beyond-topk-8stage.yaml"


def bringup(kind: str, repeat: int) -> float:
    topo = load_topology(TOPO)
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        b = make_backend(kind, topo)
        b.up()
        b.down()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=2.0)
    a = ap.parse_args()
    up = {k: bringup(k, a.repeat) for k in ("netns", "docker")}
    print(
        f"8-stage bring-up + tear-down, median of {a.repeat}: netns {up['netns']:.2f} s, docker {up['docker']:.2f} s "
        f"(docker / netns = {up['docker'] / up['netns']:.2f}x)"
    )
    topo = load_topology(TOPO)
    tables = {}
    for kind in ("netns", "docker"):
        with make_backend(kind, topo) as b:
            tables[kind] = probe_all(b, seconds=a.seconds)
    print(
        f"\n{TOPO.name}: TCP goodput per link, {a.seconds:g} s transfers (tbf, seed {topo.seed}; "
        "the link plan re-samples every 10 s, so the two backends may measure a link at different windows)"
    )
    print(
        f"{'link':5s} {'dir':9s} | {'netns conf':>11s} {'achieved':>10s} {'ratio':>6s} | "
        f"{'docker conf':>11s} {'achieved':>10s} {'ratio':>6s}"
    )
    for n, d in zip(tables["netns"], tables["docker"], strict=True):
        print(
            f"{n.link:5s} {n.direction:9s} | {n.configured_bps / 1e6:9.1f}Mb "
            f"{n.achieved_bps / 1e6:8.1f}Mb {n.ratio:6.3f} | "
            f"{d.configured_bps / 1e6:9.1f}Mb {d.achieved_bps / 1e6:8.1f}Mb {d.ratio:6.3f}"
        )
    worst = {k: min(r.ratio for r in v) for k, v in tables.items()}
    print(f"\nworst ratio: netns {worst['netns']:.3f}, docker {worst['docker']:.3f}")


if __name__ == "__main__":
    main()
