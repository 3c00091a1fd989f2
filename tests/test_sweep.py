"""Suites, resumable sweeps and the result tables."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from harness.suite import load_suite
from tests.conftest import ROOT, TOPOLOGIES, needs_netns, netns_names, pipenem

TINY = {"model": {"d_model": 32, "n_layers": 4, "n_heads": 4, "ctx": 32}, "data": {"dataset": "synthetic"},
        "train": {"steps": 4, "batch": 8, "micro_batches": 2, "warmup": 1, "lr": 0.01}}


def _suite(tmp_path: Path, axes: dict, base: dict | None = None, name: str = "t") -> Path:
    f = tmp_path / f"{name}.yaml"
    f.write_text(yaml.safe_dump({"name": name, "topology": str(TOPOLOGIES / "ci-4stage.yaml"), "base": base or TINY, "axes": axes}))
    return f


def test_expansion_rates_apply_only_to_compressors_that_take_one(tmp_path: Path) -> None:
    f = _suite(tmp_path, {"compressor": [{"label": "none"}, {"label": "topk-fwd", "fwd": "topk"},
                                         {"label": "q4", "fwd": {"name": "quantize", "bits": 4}}],
                          "rate": [0.1, 0.9], "mode": ["train", "infer"], "execution": ["twin"]})
    _, trials = load_suite(f)
    labels = [(t.compressor, t.rate, t.mode) for t in trials]
    assert labels.count(("none", None, "train")) == 1 and labels.count(("q4", None, "infer")) == 1
    assert {t.rate for t in trials if t.compressor == "topk-fwd"} == {0.1, 0.9}
    topk = next(t for t in trials if t.compressor == "topk-fwd")
    assert topk.spec["compression"]["fwd"] == {"name": "topk", "rate": 0.1} and topk.spec["compression"]["bwd"] == "none"
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
        f.write_text(yaml.safe_dump({"name": "s", "topology": "topo.yaml", "base": TINY,
                                     "axes": {"compressor": [{"label": "none"}], "execution": ["twin"]}}))
        ids.append([t.trial_id for t in load_suite(f)[1]])
    assert ids[0] == ids[1]
    topo = tmp_path / "b" / "topo.yaml"
    topo.write_text(topo.read_text().replace("seed: 0", "seed: 1"))
    assert "seed: 1" in topo.read_text()
    assert [t.trial_id for t in load_suite(tmp_path / "b" / "s.yaml")[1]] != ids[0]


@pytest.mark.parametrize("axes,topology,words", [
    ({"compresor": [{"label": "none"}]}, None, "axes.compresor: unknown axis"),
    ({"mode": []}, None, "axes.mode: empty"),
    ({"compressor": []}, None, "axes.compressor: empty"),
    ({}, "nope.yaml", "topology: topology file"),
    ({"execution": ["twin"], "compute": ["modeled"]}, None, "axes: the sweep is empty"),
])
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
    f = _suite(tmp_path, {"compressor": [{"label": "none"}, {"label": "bad-bits", "fwd": {"name": "quantize", "bits": 3}},
                                         {"label": "column", "fwd": "column", "bwd": "column"}],
                          "rate": [0.5], "execution": ["twin"]})
    out = pipenem("run", str(f), "--out", str(tmp_path / "res"))
    assert out.returncode == 0, out.stderr
    t = pd.read_parquet(tmp_path / "res" / "trials.parquet").set_index("compressor")
    assert t.loc["bad-bits", "status"] == "failed" and "bits" in t.loc["bad-bits", "error"]
    assert t.loc["none", "status"] == "ok" and t.loc["column", "status"] == "ok"
    steps = pd.read_parquet(tmp_path / "res" / "steps.parquet")
    assert steps.groupby("trial_id").size().tolist() == [4, 4]
    again = pipenem("run", str(f), "--out", str(tmp_path / "res"))
    assert "0 ran, 3 already finished" in " ".join(again.stdout.split())


@needs_netns
@pytest.mark.netns
def test_sigint_mid_trial_keeps_valid_tables_and_resume_skips_finished(tmp_path: Path) -> None:
    f = _suite(tmp_path, {"compressor": [{"label": "none"}, {"label": "column", "fwd": "column", "bwd": "column"}],
                          "rate": [0.5], "execution": ["distributed"]},
               base={**TINY, "train": {**TINY["train"], "steps": 30}}, name="s")
    res = tmp_path / "res"
    before = netns_names()
    proc = subprocess.Popen([sys.executable, "-m", "harness.cli", "run", str(f), "--out", str(res)], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    import time

    # wait until the first trial is recorded and the second one's network is up, then interrupt it
    deadline = time.time() + 240
    while time.time() < deadline:
        runs = list((res / "runs").glob("*/links.json")) if (res / "runs").exists() else []
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
