"""Suites, resumable sweeps and the result tables."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from harness.sweep.suite import load_suite
from tests.conftest import ROOT, TOPOLOGIES, needs_netns, netns_names, pipenem

TINY = {
    "model": {"d_model": 32, "n_layers": 4, "n_heads": 4, "ctx": 32},
    "data": {"dataset": "synthetic"},
    "train": {"steps": 4, "batch": 8, "micro_batches": 2, "warmup": 1, "lr": 0.01},
}


def _suite(tmp_path: Path, axes: dict, base: dict | None = None, name: str = "t") -> Path:
    f = tmp_path / f"{name}.yaml"
    f.write_text(
        yaml.safe_dump(
            {"name": name, "topology": str(TOPOLOGIES / "ci-4stage.yaml"), "base": base or TINY, "axes": axes}
        )
    )
    return f


def test_expansion_rates_apply_only_to_compressors_that_take_one(tmp_path: Path) -> None:
    f = _suite(
        tmp_path,
        {
            "compressor": [
                {"label": "none"},
                {"label": "topk-fwd", "fwd": "topk"},
                {"label": "q4", "fwd": {"name": "quantize", "bits": 4}},
            ],
            "rate": [0.1, 0.9],
            "mode": ["train", "infer"],
            "execution": ["twin"],
        },
    )
    _, trials = load_suite(f)
    labels = [(t.compressor, t.rate, t.mode) for t in trials]
    assert labels.count(("none", None, "train")) == 1 and labels.count(("q4", None, "infer")) == 1
    assert {t.rate for t in trials if t.compressor == "topk-fwd"} == {0.1, 0.9}
    topk = next(t for t in trials if t.compressor == "topk-fwd")
    assert (
        topk.spec["compression"]["fwd"] == {"name": "topk", "rate": 0.1} and topk.spec["compression"]["bwd"] == "none"
    )
    assert len(trials) == 2 * (1 + 2 + 1)
    assert [t.trial_id for t in load_suite(f)[1]] == [t.trial_id for t in trials]  # stable ids


def test_trial_ids_follow_the_topology_content_not_its_path(tmp_path: Path) -> None:
    """A checkout moved elsewhere resumes its sweep; an edited topology is a new trial."""
    ids = []
    for where in ("a", "b"):
        d = tmp_path / where
        d.mkdir()
        (d / "topo.yaml").write_text((TOPOLOGIES / "ci-4stage.yaml").read_text())
        f = d / "s.yaml"
        f.write_text(
            yaml.safe_dump(
                {
                    "name": "s",
                    "topology": "topo.yaml",
                    "base": TINY,
                    "axes": {"compressor": [{"label": "none"}], "execution": ["twin"]},
                }
            )
        )
        ids.append([t.trial_id for t in load_suite(f)[1]])
    assert ids[0] == ids[1]
    topo = tmp_path / "b" / "topo.yaml"
    topo.write_text(topo.read_text().replace("seed: 0", "seed: 1"))
    assert "seed: 1" in topo.read_text()
    assert [t.trial_id for t in load_suite(tmp_path / "b" / "s.yaml")[1]] != ids[0]


@pytest.mark.parametrize(
    "axes,topology,words",
    [
        ({"compresor": [{"label": "none"}]}, None, "axes.compresor: unknown axis"),
        ({"mode": []}, None, "axes.mode: empty"),
        ({"compressor": []}, None, "axes.compressor: empty"),
        ({}, "nope.yaml", "topology: topology file"),
        ({"execution": ["twin"], "compute": ["modeled"]}, None, "axes: the sweep is empty"),
    ],
)
def test_bad_suite_input_exit_2(tmp_path: Path, axes: dict, topology: str | None, words: str) -> None:
    data = {"name": "bad", "topology": topology or str(TOPOLOGIES / "ci-4stage.yaml"), "base": TINY, "axes": axes}
    f = tmp_path / "bad.yaml"
    f.write_text(yaml.safe_dump(data))
    out = pipenem("run", str(f), "--out", str(tmp_path / "out"))
    assert out.returncode == 2, out.stdout + out.stderr
    assert words in out.stderr and "Traceback" not in out.stderr
    assert not (tmp_path / "out" / "trials.parquet").exists()


def test_missing_suite_file_exit_2(tmp_path: Path) -> None:
    out = pipenem("run", str(tmp_path / "missing.yaml"))
    assert out.returncode == 2 and "not found" in out.stderr


def test_a_failing_trial_is_recorded_and_the_others_complete(tmp_path: Path) -> None:
    """A trial that fails while it runs (here: a plug-in compressor that raises) is recorded
    with its error and the sweep goes on; a bad config is refused before anything runs."""
    (tmp_path / "flaky_compressor.py").write_text(
        "from harness.compressors.dense import NoCompression\n\n"
        "class Flaky(NoCompression):\n    name = 'flaky'\n\n"
        "    def encode(self, x, ctx):\n        raise RuntimeError('flaky encode at step %d' % ctx.step)\n"
    )
    f = _suite(
        tmp_path,
        {
            "compressor": [
                {"label": "none"},
                {"label": "flaky", "fwd": {"name": "flaky_compressor:Flaky"}},
                {"label": "column", "fwd": "column", "bwd": "column"},
            ],
            "rate": [0.5],
            "execution": ["twin"],
        },
    )
    env = {**os.environ, "PYTHONPATH": f"{tmp_path}:{os.environ.get('PYTHONPATH', '')}"}
    out = pipenem("run", str(f), "--out", str(tmp_path / "res"), env=env)
    assert out.returncode == 0, out.stderr
    t = pd.read_parquet(tmp_path / "res" / "trials.parquet").set_index("compressor")
    assert t.loc["flaky", "status"] == "failed" and "flaky encode at step 0" in t.loc["flaky", "error"]
    assert t.loc["none", "status"] == "ok" and t.loc["column", "status"] == "ok"
    steps = pd.read_parquet(tmp_path / "res" / "steps.parquet")
    assert steps.groupby("trial_id").size().tolist() == [4, 4]
    again = pipenem("run", str(f), "--out", str(tmp_path / "res"), env=env)
    assert "0 ran, 3 already finished" in " ".join(again.stdout.split())


@needs_netns
@pytest.mark.netns
def test_sigint_mid_trial_keeps_valid_tables_and_resume_skips_finished(tmp_path: Path) -> None:
    f = _suite(
        tmp_path,
        {
            "compressor": [{"label": "none"}, {"label": "column", "fwd": "column", "bwd": "column"}],
            "rate": [0.5],
            "execution": ["distributed"],
        },
        base={**TINY, "train": {**TINY["train"], "steps": 30}},
        name="s",
    )
    res = tmp_path / "res"
    before = netns_names()
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipenem.main", "run", str(f), "--out", str(res)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    import time

    # wait until the first trial is recorded and the second one's network is up, then interrupt it
    deadline = time.time() + 240
    while time.time() < deadline:
        runs = list((res / "runs").glob("*/spec.json")) if (res / "runs").exists() else []
        if (res / "trials.parquet").exists() and len(runs) == 2:
            break
        time.sleep(0.2)
    time.sleep(2.0)
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 130, out
    trials = pd.read_parquet(res / "trials.parquet")
    assert list(trials["status"]) == ["ok"] and len(trials) == 1
    assert netns_names() == before
    again = pipenem("run", str(f), "--out", str(res))
    assert again.returncode == 0, again.stderr
    assert "1 ran, 1 already finished" in " ".join(again.stdout.split())
    trials = pd.read_parquet(res / "trials.parquet")
    assert len(trials) == 2 and set(trials["status"]) == {"ok"}
    links = pd.read_parquet(res / "links.parquet")
    assert set(links["trial_id"]) == set(trials["trial_id"])


def test_the_set_axis_sweeps_any_config_field_and_every_trial_records_its_settings(tmp_path: Path) -> None:
    f = _suite(
        tmp_path,
        {
            "compressor": [{"label": "row-fwd", "fwd": "row"}],
            "rate": [0.1],
            "execution": ["twin"],
            "set": {"train.boundary_grad": ["exact", "straight-through"], "model.norm_eps": [1e-5, 1e-2]},
        },
    )
    _, trials = load_suite(f)
    assert len(trials) == 4 and len({t.trial_id for t in trials}) == 4
    t = next(t for t in trials if t.overrides == {"train.boundary_grad": "straight-through", "model.norm_eps": 1e-2})
    assert t.run_spec().train.boundary_grad == "straight-through" and t.run_spec().model.norm_eps == 1e-2
    assert t.run_spec().train.steps == 4  # the rest of base is kept
    assert sorted(t.variant.split()) == ["model.norm_eps=0.01", "train.boundary_grad=straight-through"]
    bad = _suite(tmp_path, {"execution": ["twin"], "set": {"train.boundary_grad": ["exact", "sideways"]}}, name="bad")
    r = pipenem("run", str(bad), "--out", str(tmp_path / "never"))
    assert r.returncode == 2 and "axes.set.train.boundary_grad" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "never").exists()


def test_parallel_twin_jobs_give_the_same_tables_as_one_at_a_time(tmp_path: Path) -> None:
    """--jobs runs twin trials in separate processes: same rows, same ids, bit-equal losses."""
    f = _suite(
        tmp_path,
        {
            "compressor": [{"label": "none"}, {"label": "column", "fwd": "column", "bwd": "mirror"}],
            "rate": [0.5],
            "execution": ["twin"],
            "seed": [0, 1],
            "set": {"train.boundary_grad": ["exact", "straight-through"]},
        },
    )
    for jobs in (1, 2):
        r = pipenem("run", str(f), "--out", str(tmp_path / f"j{jobs}"), "--jobs", str(jobs))
        assert r.returncode == 0, r.stderr
    one, two = (
        pd.read_parquet(tmp_path / f"j{j}" / "trials.parquet").sort_values("trial_id", ignore_index=True)
        for j in (1, 2)
    )
    assert len(one) == 8 and list(one["trial_id"]) == list(two["trial_id"]) and set(one["status"]) == {"ok"}
    assert list(one["final_loss"]) == list(two["final_loss"]) and list(one["eval_loss"]) == list(two["eval_loss"])
    assert set(one["boundary_grad"]) == {"exact", "straight-through"} and set(one["grad_clip"]) == {1.0}
    steps = [
        pd.read_parquet(tmp_path / f"j{j}" / "steps.parquet").sort_values(["trial_id", "step"], ignore_index=True)
        for j in (1, 2)
    ]
    assert list(steps[0]["loss"]) == list(steps[1]["loss"]) and steps[0]["grad_norm"].notna().all()
    # the baseline does not depend on boundary semantics: identical under both
    base = one[one["compressor"] == "none"].groupby("seed")["final_loss"].nunique()
    assert (base == 1).all()
