"""The docker backend, proven equivalent to the netns backend (`tox -e docker`; needs dockerd)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from harness.config.schema import build_spec
from harness.runtime.launcher import run_pipeline
from testbed.registry import all_records
from tests.conftest import ROOT, TOPOLOGIES, link_names, needs_docker, netns_names, pipenem

pytestmark = [pytest.mark.docker, needs_docker]


def _containers(prefix: str = "pn") -> set[str]:
    import docker

    return {c.name for c in docker.from_env().containers.list(all=True) if c.name.startswith(prefix)}


def test_probe_ratios_match_across_backends() -> None:
    ratios = {}
    for backend in ("netns", "docker"):
        out = pipenem(
            "topo", "probe", str(TOPOLOGIES / "ci-4stage.yaml"), "--backend", backend, "--seconds", "1.5", "--json"
        )
        assert out.returncode == 0, out.stderr
        ratios[backend] = {(r["link"], r["direction"]): r["ratio"] for r in json.loads(out.stdout)["results"]}
    for key, r in ratios["docker"].items():
        assert r >= 0.9 and abs(r - ratios["netns"][key]) < 0.03, (key, r, ratios["netns"][key])
    assert _containers() == set() and all_records() == []


def test_training_on_docker_matches_netns_losses(tmp_path: Path) -> None:
    spec = build_spec(
        {
            "topology": str(TOPOLOGIES / "ci-4stage.yaml"),
            "seed": 1,
            "model": {"d_model": 32, "n_layers": 4, "n_heads": 4, "ctx": 32},
            "data": {"dataset": "synthetic"},
            "train": {"steps": 4, "batch": 8, "micro_batches": 2, "warmup": 1, "lr": 0.01},
            "compression": {"fwd": {"name": "column", "rate": 0.5}, "bwd": "none"},
        }
    )
    on_netns = run_pipeline(spec, tmp_path / "netns", "netns").losses()
    on_docker = run_pipeline(spec, tmp_path / "docker", "docker")
    assert on_docker.losses() == on_netns
    assert on_docker.backend == "docker" and all(row["payload_bytes"] > 0 for row in on_docker.links)
    assert _containers() == set()


def test_sigkill_of_the_harness_then_clean_leaves_nothing() -> None:
    before = netns_names(), link_names()
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipenem.main", "topo", "up", "--backend", "docker", str(TOPOLOGIES / "ci-4stage.yaml")],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    for line in proc.stdout:
        if line.startswith("up"):
            break
    run_id = all_records()[0].run_id
    assert len(_containers(run_id)) == 4
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(10)
    assert len(_containers(run_id)) == 4  # left behind by the kill
    out = pipenem("topo", "clean")
    assert out.returncode == 0 and run_id in out.stdout, out.stdout + out.stderr
    assert _containers(run_id) == set()
    assert (netns_names(), link_names()) == before and all_records() == []
