"""Bad input, round two: every item of an audit of fresh bad inputs ends in one message naming
the field, exit status 2, before anything is brought up, and leaves nothing behind."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
import yaml

from testbed.registry import all_records
from tests.conftest import TINY, TOPOLOGIES, needs_netns, netns_names, pipenem

RUN = {
    "topology": str(TOPOLOGIES / "ci-4stage.yaml"),
    "model": TINY,
    "data": {"dataset": "synthetic"},
    "train": {"steps": 2, "batch": 8, "micro_batches": 2},
}
GPT2 = {"hf": "gpt2", "config": {"n_layer": 4, "n_embd": 64, "n_head": 4, "n_positions": 64, "vocab_size": 256}}
FACTORIES = """
from torch import nn

def raises(partition, seed):
    raise RuntimeError("the factory's own error")

def too_few(partition, seed):
    return [nn.Linear(2, 2)]

def not_modules(partition, seed):
    return ["a", "b", "c", "d"]
"""


def _run(tmp_path: Path, config: dict, *args: str) -> tuple[int, str]:
    (tmp_path / "bad_factories.py").write_text(FACTORIES)
    (tmp_path / "profile.yaml").write_text("flops_per_s: [1, 2\n")
    (tmp_path / "negative.yaml").write_text("flops_per_s: -1e12\n")
    (tmp_path / "zero.yaml").write_text("flops_per_s: 0\n")
    cfg = tmp_path / "run.yaml"
    cfg.write_text(yaml.safe_dump(config))
    env = {**os.environ, "PYTHONPATH": f"{tmp_path}:{os.environ.get('PYTHONPATH', '')}"}
    r = pipenem("train", str(cfg), "--out", str(tmp_path / "out"), *args, env=env, cwd=tmp_path)
    return r.returncode, r.stdout + r.stderr


def _factory(fn: str) -> dict:
    return {"factory": f"bad_factories:{fn}", "d_model": 2, "n_layers": 4, "vocab": 256, "ctx": 8}


BAD_RUNS = [
    ("grad-clip-negative", {"train": {**RUN["train"], "grad_clip": -1}}, "train.grad_clip"),
    ("grad-clip-zero", {"train": {**RUN["train"], "grad_clip": 0}}, "train.grad_clip"),
    ("decay-negative", {"train": {**RUN["train"], "decay_steps": -5}}, "train.decay_steps"),
    ("decay-before-warmup", {"train": {**RUN["train"], "warmup": 10, "decay_steps": 5}}, "train.decay_steps"),
    ("seed-too-large", {"seed": 2**70}, "seed"),
    ("partition-negative", {"partition": [2, -1, 2, 1]}, "partition[1]"),
    ("gpt2-positions", {"model": GPT2}, "model.config.n_positions"),
    ("gpt2-heads", {"model": {**GPT2, "config": {**GPT2["config"], "n_embd": 63}, "ctx": 32}}, "divisible"),
    ("factory-raises", {"model": _factory("raises")}, "the factory's own error"),
    ("factory-too-few", {"model": _factory("too_few")}, "expected a list of 4 stages"),
    ("factory-not-modules", {"model": _factory("not_modules")}, "not an nn.Module"),
    ("profile-malformed", {"compute": {"mode": "modeled", "profile": "profile.yaml"}}, "malformed YAML"),
    ("profile-negative", {"compute": {"mode": "modeled", "profile": "negative.yaml"}}, "flops_per_s"),
    ("profile-zero", {"compute": {"mode": "modeled", "profile": "zero.yaml"}}, "flops_per_s"),
    ("topology-not-a-path", {"topology": 5}, "topology"),
]


@needs_netns
@pytest.mark.netns
@pytest.mark.parametrize("name,over,words", BAD_RUNS, ids=[b[0] for b in BAD_RUNS])
def test_bad_runs_exit_2_before_bring_up_naming_the_field(tmp_path: Path, name: str, over: dict, words: str) -> None:
    before = netns_names()
    t0 = time.time()
    rc, out = _run(tmp_path, {**RUN, **over})
    assert rc == 2 and words in out and "Traceback" not in out, out[-2000:]
    assert time.time() - t0 < 30  # refused up front, not by a worker after bring-up
    assert netns_names() == before and all_records() == [] and not (tmp_path / "out").exists()


BAD_TOPOLOGIES = [
    ("tiny-windows", {"defaults": {"bandwidth": "1Gbit", "resample_every": "1us"}}, "resample_every"),
    ("trace-without-file", {"defaults": {"bandwidth": {"dist": "trace", "unit": "Mbit"}}}, "needs 'file'"),
    (
        "min-far-above-mean",
        {"defaults": {"bandwidth": {"dist": "normal", "mean": 80, "std": 16, "unit": "Mbit", "min": 500}}},
        "of its mass",
    ),
]


@pytest.mark.parametrize("name,patch,words", BAD_TOPOLOGIES, ids=[b[0] for b in BAD_TOPOLOGIES])
def test_topologies_that_would_exhaust_time_or_memory_are_refused_at_once(
    tmp_path: Path, name: str, patch: dict, words: str
) -> None:
    f = tmp_path / "t.yaml"
    f.write_text(yaml.safe_dump({"name": "bad", "stages": 4, **patch}))
    t0 = time.time()
    for cmd in ("validate", "show"):
        r = pipenem("topo", cmd, str(f))
        assert r.returncode == 2 and words in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert time.time() - t0 < 20


def test_a_huge_trace_is_refused_by_name(tmp_path: Path) -> None:
    (tmp_path / "huge.csv").write_text("time_s,value\n" + "".join(f"{i},{10 + i % 7}\n" for i in range(100_002)))
    f = tmp_path / "t.yaml"
    f.write_text(
        yaml.safe_dump({"name": "bad", "stages": 2, "defaults": {"bandwidth": {"trace": "huge.csv", "unit": "Mbit"}}})
    )
    r = pipenem("topo", "show", str(f))
    assert r.returncode == 2 and "more than 100,000 rows" in r.stderr, r.stderr


def test_a_yaml_bomb_is_refused_and_plain_aliases_are_kept(tmp_path: Path) -> None:
    """Nested aliases that expand to millions of values once copied are refused at once; an
    alias as yaml.dump writes them (a value used twice) reads as before."""
    levels = ["a: &a [x, x, x, x, x, x, x, x, x]"]
    for k in range(1, 8):
        prev, name = chr(ord("a") + k - 1), chr(ord("a") + k)
        levels.append(f"{name}: &{name} [" + ", ".join([f"*{prev}"] * 9) + "]")
    cfg = tmp_path / "run.yaml"
    cfg.write_text(yaml.safe_dump(RUN) + "bomb:\n" + "".join("  " + line + "\n" for line in levels))
    t0 = time.time()
    r = pipenem("train", str(cfg), "--out", str(tmp_path / "out"))
    assert r.returncode == 2 and "expands to" in r.stderr and "once its aliases are followed" in r.stderr, r.stderr
    assert time.time() - t0 < 15
    bw = {"dist": "normal", "mean": 80, "std": 8, "unit": "Mbit", "min": 10}  # one object, dumped as an alias
    text = yaml.safe_dump(
        {"name": "t", "stages": 3, "links": [{"between": [i, i + 1], "bandwidth": bw} for i in (0, 1)]}
    )
    assert "*id" in text
    topo = tmp_path / "t.yaml"
    topo.write_text(text)
    assert pipenem("topo", "validate", str(topo)).returncode == 0


def test_duplicate_compressor_labels_are_refused(tmp_path: Path) -> None:
    f = tmp_path / "s.yaml"
    axes = {"compressor": [{"label": "none"}, {"label": "none", "fwd": "topk"}], "rate": [0.5], "execution": ["twin"]}
    base = {"model": TINY, "train": {"steps": 2, "batch": 8, "micro_batches": 2}}
    f.write_text(
        yaml.safe_dump({"name": "s", "topology": str(TOPOLOGIES / "ci-4stage.yaml"), "base": base, "axes": axes})
    )
    r = pipenem("run", str(f), "--out", str(tmp_path / "out"))
    assert r.returncode == 2 and "axes.compressor[1].label" in r.stderr and "already the label" in r.stderr


def test_small_options_and_damaged_tables_say_so(tmp_path: Path) -> None:
    for args, words in (
        (("run", "quickstart", "--jobs", "0"), "--jobs"),
        (("topo", "show", "ci-4stage", "--windows", "abc"), "--windows"),
    ):
        r = pipenem(*args, cwd=tmp_path)
        assert r.returncode == 2 and words in r.stderr and "Traceback" not in r.stderr, r.stderr
    res = tmp_path / "res"
    res.mkdir()
    (res / "trials.parquet").write_text("not parquet")
    for args in (("report", str(res)), ("run", "quickstart", "--out", str(res))):
        r = pipenem(*args, cwd=tmp_path)
        assert r.returncode == 2 and "is not a readable Parquet table" in r.stderr and "Traceback" not in r.stderr, (
            r.stderr
        )


def test_fidelity_refuses_a_tensor_holding_nan(tmp_path: Path) -> None:
    import torch

    x = torch.randn(2, 16, 16)
    x[0, 3, 4] = float("nan")
    torch.save(x, tmp_path / "nan.pt")
    r = pipenem("fidelity", str(tmp_path / "nan.pt"), "--rates", "0.5", "--compressors", "column")
    assert r.returncode == 2 and "NaN or infinite" in r.stderr and "Traceback" not in r.stderr, r.stderr


def test_topo_clean_touches_only_what_carries_the_runs_prefix(tmp_path: Path, isolated_state: Path) -> None:
    """A forged record (a namespace and a veth without pipenem's prefix, a process with no start
    time) makes clean touch none of them."""
    import json
    import subprocess
    import sys

    from tests.conftest import wait_for

    victim = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", "testbed.victim"])
    try:
        wait_for(lambda: b"testbed.victim" in Path(f"/proc/{victim.pid}/cmdline").read_bytes(), 10, "the victim")
        isolated_state.mkdir(parents=True, exist_ok=True)
        forged = {
            "run_id": "pn00abcd",
            "topology": "x",
            "backend": "netns",
            "owner_pid": 999999,
            "owner_start": "1",
            "resources": [
                {"kind": "netns", "name": "production-ns"},
                {"kind": "veth", "name": "eth0"},
                {"kind": "process", "name": str(victim.pid), "start": ""},
            ],
        }
        (isolated_state / "pn00abcd.json").write_text(json.dumps(forged))
        (isolated_state / "pnffffff.json").write_text(json.dumps({**forged, "run_id": "../../etc"}))
        r = pipenem("topo", "clean")
        assert r.returncode == 0, r.stdout + r.stderr
        assert victim.poll() is None, "a process with no recorded start time was killed"
        assert "removed nothing" in " ".join(r.stdout.split()) and "skipped" in r.stdout, r.stdout
    finally:
        victim.kill()
