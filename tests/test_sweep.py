"""Suites, resumable sweeps and the result tables."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from harness.sweep.suite import load_suite
from tests.conftest import ROOT, TOPOLOGIES, needs_netns, netns_names, pipenem, wait_for, worker_pids

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
        ({}, "nope.yaml", "not found"),
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

    # interrupt the second trial mid-run: the first is recorded and the second's stages are running
    def second_trial_running() -> bool:
        runs = sorted((res / "runs").glob("*/spec.json")) if (res / "runs").exists() else []
        if not (res / "trials.parquet").exists() or len(runs) != 2:
            return False
        second = next(r.parent for r in runs if not (r.parent / "stage0.json").exists())
        return len(worker_pids(second)) == 4

    wait_for(second_trial_running, 240, "the second trial's four stage workers")
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


def test_a_choice_can_carry_its_own_rates(tmp_path: Path) -> None:
    f = _suite(
        tmp_path,
        {
            "compressor": [
                {"label": "none"},
                {"label": "topk", "fwd": "topk", "rates": [0.9]},
                {"label": "column", "fwd": "column"},
            ],
            "rate": [0.1, 0.5],
            "execution": ["twin"],
        },
    )
    got = [(t.compressor, t.rate) for t in load_suite(f)[1]]
    assert got == [("none", None), ("topk", 0.9), ("column", 0.1), ("column", 0.5)]


@needs_netns
def test_a_trial_is_checked_once_and_its_topology_read_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Validate once: loading the suite checks each trial (one CheckedRun each) and reads the
    topology file once; running them (twin and over the links) checks and reads nothing again."""
    import harness.runtime.check as check
    from harness.sweep.executor import run_trials

    topo_file = TOPOLOGIES / "ci-4stage.yaml"
    checks, reads = [], []
    real_check, real_read = check._cross_check, Path.read_bytes
    monkeypatch.setattr(check, "_cross_check", lambda spec, topo: checks.append(spec) or real_check(spec, topo))

    def read_bytes(self: Path) -> bytes:
        if self.resolve() == topo_file.resolve():
            reads.append(self)
        return real_read(self)

    monkeypatch.setattr(Path, "read_bytes", read_bytes)
    base = {**TINY, "train": {**TINY["train"], "steps": 2}}
    f = _suite(tmp_path, {"compressor": [{"label": "none"}], "execution": ["twin", "distributed"]}, base)
    _, trials = load_suite(f)
    assert len(checks) == 2 and len(reads) == 1
    store = run_trials(trials, tmp_path / "out")
    assert set(store.read("trials")["status"]) == {"ok"}
    assert len(checks) == 2 and len(reads) == 1, (len(checks), len(reads))


@needs_netns
@pytest.mark.parametrize("execution", ["twin", "distributed"])
def test_train_and_run_record_the_same_settings(tmp_path: Path, execution: str) -> None:
    """One definition of what a run records: `pipenem train` and `pipenem run` write the same
    settings for one config (here with modeled compute and codec, where they once disagreed)."""
    from harness.config.schema import build_spec
    from harness.results.schema import run_settings
    from harness.runtime.check import check_run

    base = {
        **TINY,
        "train": {**TINY["train"], "steps": 3},
        "compute": {"mode": "modeled", "profile": "a10g", "codec": "modeled"},
    }
    compute = "modeled" if execution == "distributed" else "real"
    if execution == "twin":
        base = {**base, "compute": {"mode": "real"}}
    cfg = tmp_path / "run.yaml"
    cfg.write_text(yaml.safe_dump({"topology": str(TOPOLOGIES / "ci-4stage.yaml"), **base}))
    train = pipenem("train", str(cfg), "--out", str(tmp_path / "train"), *(["--twin"] if execution == "twin" else []))
    assert train.returncode == 0, train.stdout + train.stderr
    summary = json.loads((tmp_path / "train" / "summary.json").read_text())
    f = _suite(tmp_path, {"compressor": [{"label": "none"}], "execution": [execution], "compute": [compute]}, base)
    ran = pipenem("run", str(f), "--out", str(tmp_path / "run"))
    assert ran.returncode == 0, ran.stdout + ran.stderr
    row = pd.read_parquet(tmp_path / "run" / "trials.parquet").iloc[0]
    spec = build_spec({"topology": str(TOPOLOGIES / "ci-4stage.yaml"), **base})
    keys = list(run_settings(spec, None, execution))
    assert len(keys) > 15
    assert {k: summary[k] for k in keys} == {k: (None if pd.isna(row[k]) else row[k]) for k in keys}
    assert summary["device"] == ("a10g" if execution == "distributed" else "cpu (real compute)")
    assert summary["codec"] == ("modeled" if execution == "distributed" else "real")
    assert check_run(spec).settings(execution) == {k: summary[k] for k in keys}
