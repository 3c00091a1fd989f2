"""Bring-up + tear-down time of the 8-stage topology: pipenem (netns) vs Mininet, measured in one run.

    python benchmarks/bringup.py [--repeat 5]

Mininet: ``mn --switch lxbr --controller none --topo linear,8 --link tc,bw=80 --test none``
(whole command, as in the anchor measurement). pipenem: the whole CLI command
``pipenem topo up --for 0 topologies/beyond-topk-8stage.yaml`` and, separately, the
in-process ``Backend.up(); down()``. Prints medians and ratios. Needs root;
Mininet is optional (``apt-get install mininet``) and reported as missing if absent.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TOPO = ROOT / "topologies" / "beyond-topk-8stage.yaml"
MN = ["mn", "--switch", "lxbr", "--controller", "none", "--topo", "linear,8", "--link", "tc,bw=80", "--test", "none"]


def timed(cmd: list[str]) -> float:
    t = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True)
    dt = time.perf_counter() - t
    if out.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{out.stderr[-2000:]}")
    return dt


def in_process(repeat: int) -> list[float]:
    from testbed.backends.netns import NetnsBackend
    from testbed.topology_file import load_topology

    topo = load_topology(TOPO)
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        b = NetnsBackend(topo)
        b.up()
        b.down()
        times.append(time.perf_counter() - t)
    return times


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=5)
    a = ap.parse_args()
    cli = [sys.executable, "-m", "pipenem.main", "topo", "up", "--for", "0", str(TOPO)]
    rows = {
        "pipenem in-process up+down": statistics.median(in_process(a.repeat)),
        "pipenem CLI command (up+down)": statistics.median(timed(cli) for _ in range(a.repeat)),
    }
    if shutil.which("mn"):
        subprocess.run(["mn", "-c"], capture_output=True)
        rows["mininet mn command (linear,8 tc bw=80)"] = statistics.median(timed(MN) for _ in range(a.repeat))
    print(f"8-stage bring-up + tear-down, median of {a.repeat} (this machine, one run)")
    for name, secs in rows.items():
        print(f"  {name:45s} {secs:7.3f} s")
    mn = rows.get("mininet mn command (linear,8 tc bw=80)")
    if mn:
        print(f"  ratio mininet / pipenem CLI        = {mn / rows['pipenem CLI command (up+down)']:.2f}x")
        print(f"  ratio mininet / pipenem in-process = {mn / rows['pipenem in-process up+down']:.2f}x")
    else:
        print("  mininet not installed: no ratio (apt-get install mininet)")


if __name__ == "__main__":
    main()
