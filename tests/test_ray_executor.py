"""`pipenem run --executor ray`: the same tables as the local executor, on a real local Ray
cluster started the way the README documents (`ray start --head --resources=...`)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
import yaml

from tests.conftest import ROOT, TOPOLOGIES, needs_netns, netns_names, pipenem, wait_for, worker_pids

ray = pytest.importorskip("ray", reason="the ray extra is not installed (pip install 'pipenem[ray]')")

TINY = {
    "model": {"d_model": 32, "n_layers": 4, "n_heads": 4, "ctx": 32},
    "data": {"dataset": "synthetic"},
    "train": {"steps": 3, "batch": 8, "micro_batches": 2, "warmup": 1, "lr": 0.01},
}
# columns that are measurements of time or of where/when a trial ran
TIMING = {"tokens_per_s", "wall_s", "finished_at", "time_to_target_s", "run_id"}


def _suite(tmp_path: Path, axes: dict, name: str) -> Path:
    f = tmp_path / f"{name}.yaml"
    f.write_text(
        yaml.safe_dump({"name": name, "topology": str(TOPOLOGIES / "ci-4stage.yaml"), "base": TINY, "axes": axes})
    )
    return f


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A one-node Ray cluster advertising one ``pipenem_host`` (the README's recipe)."""
    ray_bin = shutil.which("ray")
    assert ray_bin, "the ray CLI is missing although the ray package imports"
    tmp = tmp_path_factory.mktemp("ray")
    start = subprocess.run(
        [
            ray_bin,
            "start",
            "--head",
            "--port=0",
            "--num-cpus=2",
            "--resources",
            json.dumps({"pipenem_host": 1}),
            "--disable-usage-stats",
            f"--temp-dir={tmp}",
        ],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert start.returncode == 0, start.stdout + start.stderr
    address = next(line.split("'")[1] for line in start.stdout.splitlines() if "ray start --address=" in line)
    try:
        yield address
    finally:
        subprocess.run([ray_bin, "stop", "--force"], capture_output=True, timeout=120)


def _tables(out: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    trials = pd.read_parquet(out / "trials.parquet").sort_values("trial_id", ignore_index=True)
    steps = pd.read_parquet(out / "steps.parquet").sort_values(["trial_id", "step"], ignore_index=True)
    return trials, steps


def test_a_twin_suite_gives_identical_tables_under_both_executors(tmp_path: Path, cluster: str) -> None:
    suite = _suite(
        tmp_path,
        {
            "compressor": [{"label": "none"}, {"label": "topk", "fwd": "topk", "bwd": "topk"}],
            "rate": [0.5],
            "seed": [0, 1],
            "execution": ["twin"],
        },
        "eq",
    )
    local, remote = tmp_path / "local", tmp_path / "ray"
    r = pipenem("run", str(suite), "--out", str(local))
    assert r.returncode == 0, r.stdout + r.stderr
    r = pipenem("run", str(suite), "--out", str(remote), "--executor", "ray", "--address", cluster)
    assert r.returncode == 0, r.stdout + r.stderr
    said = " ".join(r.stdout.split())  # rich wraps at the terminal width, wherever a long path puts the break
    assert "ray executor" in said and "4 ran" in said
    lt, ls = _tables(local)
    rt, rs = _tables(remote)
    assert list(lt["trial_id"]) == list(rt["trial_id"]) and (rt["status"] == "ok").all()
    same = [c for c in lt.columns if c not in TIMING]
    pd.testing.assert_frame_equal(lt[same], rt[same])  # same rows, ids, losses, settings
    assert ls["loss"].tolist() == rs["loss"].tolist()  # bit-equal losses, every step
    # resumable: a second run finds everything finished
    r = pipenem("run", str(suite), "--out", str(remote), "--executor", "ray", "--address", cluster)
    assert r.returncode == 0 and "0 ran, 4 already finished" in r.stdout


def test_a_failing_trial_is_recorded_and_the_ray_sweep_goes_on(tmp_path: Path, cluster: str) -> None:
    """A plug-in compressor that raises inside the Ray task: recorded with its error, the
    other trial completes (the plug-in reaches the task through the driver's PYTHONPATH)."""
    (tmp_path / "flaky_on_ray.py").write_text(
        "from harness.compressors.dense import NoCompression\n\n"
        "class Flaky(NoCompression):\n    name = 'flaky'\n\n"
        "    def encode(self, x, ctx):\n        raise RuntimeError('flaky encode at step %d' % ctx.step)\n"
    )
    suite = _suite(
        tmp_path,
        {
            "compressor": [{"label": "none"}, {"label": "flaky", "fwd": {"name": "flaky_on_ray:Flaky"}}],
            "execution": ["twin"],
        },
        "fail",
    )
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": f"{tmp_path}:{os.environ.get('PYTHONPATH', '')}"}
    r = pipenem("run", str(suite), "--out", str(out), "--executor", "ray", "--address", cluster, env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    t = pd.read_parquet(out / "trials.parquet").set_index("compressor")
    assert t.loc["none", "status"] == "ok"
    assert t.loc["flaky", "status"] == "failed" and "flaky encode at step 0" in t.loc["flaky", "error"]


@needs_netns
@pytest.mark.netns
def test_a_distributed_trial_runs_through_ray_on_a_pipenem_host(tmp_path: Path, cluster: str) -> None:
    suite = _suite(
        tmp_path,
        {"compressor": [{"label": "none"}], "execution": ["distributed"], "compute": ["modeled"]},
        "dist",
    )
    out = tmp_path / "out"
    r = pipenem("run", str(suite), "--out", str(out), "--executor", "ray", "--address", cluster, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    t = pd.read_parquet(out / "trials.parquet")
    assert t["status"].tolist() == ["ok"] and t["execution"].tolist() == ["distributed"], t.get("error")
    links = pd.read_parquet(out / "links.parquet")
    totals = links[links["window"] == -1]
    assert (totals["payload_bytes"] > 0).all() and (totals["interface_bytes"] >= totals["payload_bytes"]).all()
    assert not netns_names()  # the trial's network is gone


@needs_netns
@pytest.mark.netns
def test_sigint_on_a_ray_sweep_tears_the_trials_network_down(tmp_path: Path, cluster: str) -> None:
    """Ctrl-C of the driver while a distributed trial runs in a Ray task: the task gets a
    KeyboardInterrupt, its testbed tears down; the driver exits 130 with valid tables."""
    suite = _suite(
        tmp_path,
        {"compressor": [{"label": "none"}], "execution": ["twin", "distributed"], "compute": ["real"]},
        "int",
    )
    data = yaml.safe_load(suite.read_text())
    data["base"]["train"]["steps"] = 400  # long enough to be interrupted mid-run
    suite.write_text(yaml.safe_dump(data))
    out = tmp_path / "out"
    before = netns_names()
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipenem.main", "run", str(suite), "--out", str(out), "--executor", "ray"]
        + ["--address", cluster],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )

    def stages_running() -> bool:  # the distributed trial's network is up and its stages run
        assert proc.poll() is None, proc.communicate()[0]
        runs = list((out / "runs").glob("*")) if (out / "runs").exists() else []
        return bool(netns_names() - before) and any(len(worker_pids(r)) == 4 for r in runs)

    wait_for(stages_running, 300, "the distributed trial's network and stage workers")
    proc.send_signal(signal.SIGINT)
    text, _ = proc.communicate(timeout=200)
    assert proc.returncode == 130, text
    assert netns_names() == before, text
    trials = pd.read_parquet(out / "trials.parquet")  # the twin finished before: its row is there, valid
    assert trials["execution"].tolist() == ["twin"] and trials["status"].tolist() == ["ok"]


def test_trials_ask_ray_for_a_whole_host_or_for_cpus(tmp_path: Path) -> None:
    """Placement: a distributed trial takes the host's one pipenem_host unit (no two share a
    host); a twin packs by its CPU threads and GPUs."""
    from harness.sweep.ray_executor import resources_of
    from harness.sweep.suite import load_suite

    _, trials = load_suite(
        _suite(tmp_path, {"compressor": [{"label": "none"}], "execution": ["distributed", "twin"]}, "place")
    )
    dist = next(t for t in trials if t.execution == "distributed")
    twin = next(t for t in trials if t.execution == "twin")
    assert resources_of(dist) == {"num_cpus": 0, "resources": {"pipenem_host": 1}}
    assert resources_of(twin) == {"num_cpus": 1, "num_gpus": 0}
