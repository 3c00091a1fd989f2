"""Faults a testbed must survive: dead and crawling links, planned outages, a shared output
folder, and bad input caught before anything is brought up. Real namespaces, real links."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from testbed.registry import all_records
from tests.conftest import (
    ROOT,
    TINY,
    TINY_RUN,
    TOPOLOGIES,
    needs_netns,
    netns_names,
    pipenem,
    pipenem_in_own_session,
    wait_for,
    with_overrides,
    worker_pids,
)

# faults need steps to happen in, not learning: seed 0, two micro-batches
FAULT_RUN = with_overrides(TINY_RUN, seed=0, train={"steps": 4, "micro_batches": 2, "warmup": 1})


def _config(tmp_path: Path, topology: Path | None = None, name: str = "run.yaml", **over) -> Path:
    cfg = with_overrides(FAULT_RUN, **over)
    if topology is not None:
        cfg["topology"] = str(topology)
    path = tmp_path / name
    path.write_text(yaml.safe_dump(cfg))
    return path


def _topology(tmp_path: Path, **extra) -> Path:
    topo = {
        "name": "faults",
        "seed": 0,
        "stages": 4,
        "defaults": {"bandwidth": "1Gbit"},
        "links": [{"between": [1, 2], "bandwidth": "80Mbit"}],
        **extra,
    }
    path = tmp_path / "topo.yaml"
    path.write_text(yaml.safe_dump(topo))
    return path


def _start_train(cfg: Path, out: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "pipenem.main", "train", str(cfg), "--out", str(out)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _wait_for(proc: subprocess.Popen, text: str, timeout: float = 120) -> list[str]:
    seen, end = [], time.time() + timeout
    while time.time() < end:
        line = proc.stdout.readline()
        if not line:
            break
        seen.append(line)
        if text in line:
            return seen
    raise AssertionError(f"never saw {text!r}: {''.join(seen)[-2000:]}")


def _interrupt_training(
    tmp_path: Path, act: Callable[[subprocess.Popen], None], topology: Path | None = None, steps: int = 100000, **train
) -> tuple[int, str, float]:
    """Start a long `pipenem train`, do ``act`` once it is at step 3, then wait for its end:
    (exit status, output, seconds from ``act`` to the end)."""
    cfg = _config(tmp_path, topology, train={"steps": steps, **train}, log_every=1)
    proc = _start_train(cfg, tmp_path / "out")
    try:
        _wait_for(proc, "step 3 ")
        act(proc)
        t0 = time.time()
        out, _ = proc.communicate(timeout=150)
        return proc.returncode, " ".join(out.split()), time.time() - t0  # the words, however the console wrapped
    finally:
        if proc.poll() is None:
            proc.kill()


def _on_link(label: str, change: Callable[[Any, int], None]) -> Callable[[subprocess.Popen], None]:
    """An action that changes the forward sending end of ``label`` behind pipenem's back."""

    def act(_proc: subprocess.Popen) -> None:
        from pyroute2 import IPRoute

        ns, ifname = _link_end(label)
        with IPRoute(netns=ns, flags=0) as h:
            change(h, h.link_lookup(ifname=ifname)[0])

    return act


def _link_end(label: str, forward: bool = True) -> tuple[str, str]:
    """(namespace, interface) of the sending end of a pipeline link of the one running run
    (the netns backend names link i's ends RUNl{i}a, in stage i, and RUNl{i}b, in stage i+1)."""
    from pyroute2 import IPRoute

    recs = [r for r in all_records() if not r.detached]
    assert len(recs) == 1, recs
    ifname = f"{recs[0].run_id}l{label.split('-')[0]}{'a' if forward else 'b'}"
    for ns in (r["name"] for r in recs[0].resources if r["kind"] == "netns"):
        with IPRoute(netns=ns, flags=0) as h:
            if h.link_lookup(ifname=ifname):
                return ns, ifname
    raise AssertionError(f"no interface {ifname} in run {recs[0].run_id}")


# ------------------------------------------------------------------ bad input, before bring-up

BAD_TOPOLOGIES = [
    (
        "normal-nan",
        {"defaults": {"bandwidth": {"dist": "normal", "mean": float("nan"), "std": 1, "unit": "Mbit", "min": 1}}},
        "defaults.bandwidth.mean",
    ),
    (
        "fixed-inf",
        {"defaults": {"bandwidth": {"dist": "fixed", "value": float("inf"), "unit": "Mbit"}}},
        "defaults.bandwidth.value",
    ),
    ("too-fast", {"defaults": {"bandwidth": "100000Gbit"}}, "above what tbf/htb can shape"),
    ("too-slow", {"defaults": {"bandwidth": "1bit"}}, "below what tbf/htb can shape"),
    ("negative-seed", {"seed": -1}, "seed"),
    ("inf-resample", {"defaults": {"bandwidth": "1Gbit", "resample_every": float("inf")}}, "resample_every"),
    ("event-link", {"events": [{"at": "1s", "link": "3-4", "down": "1s"}]}, "events[0].link"),
    ("event-kind", {"events": [{"at": "1s", "link": "1-2", "bandwidth": "1Mbit"}]}, "events[0]"),
]


@pytest.mark.parametrize("name,patch,words", BAD_TOPOLOGIES, ids=[b[0] for b in BAD_TOPOLOGIES])
def test_bad_topology_values_are_refused_by_validate(tmp_path: Path, name: str, patch: dict, words: str) -> None:
    topo = {"name": "bad", "stages": 4, "defaults": {"bandwidth": "1Gbit"}}
    topo.update(patch)
    f = tmp_path / "t.yaml"
    f.write_text(yaml.safe_dump(topo))
    r = pipenem("topo", "validate", str(f))
    assert r.returncode == 2 and words in r.stderr and "Traceback" not in r.stderr, r.stderr


def test_files_that_are_not_utf8_or_repeat_a_key_are_refused(tmp_path: Path) -> None:
    binary = tmp_path / "bin.yaml"
    binary.write_bytes(b"name: \xff\xfe\n")
    dup = tmp_path / "dup.yaml"
    dup.write_text("name: a\nstages: 4\nname: b\ndefaults: {bandwidth: 1Gbit}\n")
    for cmd in (("topo", "validate"), ("train",), ("run",)):
        for f, words in ((binary, "not UTF-8 text"), (dup, "duplicate key")):
            r = pipenem(*cmd, str(f), *(("--out", str(tmp_path / "o")) if cmd[0] != "topo" else ()))
            assert r.returncode == 2 and words in r.stderr and str(f) in r.stderr and "Traceback" not in r.stderr, (
                r.stderr
            )
    assert "'name'" in pipenem("topo", "validate", str(dup)).stderr


@needs_netns
@pytest.mark.netns
@pytest.mark.parametrize(
    "over,field",
    [
        ({"train": {"lr": float("inf")}}, "train.lr"),
        ({"seed": -1}, "seed"),
        ({"data": {"dataset": "text", "paths": ["/nonexistent/*.txt"]}}, "data.paths"),
        ({"train": {"stall_timeout": 0}}, "train.stall_timeout"),
    ],
)
def test_bad_train_configs_exit_2_before_any_namespace_exists(tmp_path: Path, over: dict, field: str) -> None:
    before = netns_names()
    t0 = time.time()
    r = pipenem("train", str(_config(tmp_path, **over)), "--out", str(tmp_path / "out"))
    assert r.returncode == 2 and field in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert time.time() - t0 < 15  # refused up front, not by a worker after bring-up
    assert netns_names() == before and all_records() == []


def test_bad_suite_axis_values_exit_2_naming_the_value(tmp_path: Path) -> None:
    base = {"model": TINY, "train": {"steps": 2, "batch": 8, "micro_batches": 2}}
    for axes, words in (
        ({"compressor": [{"label": "c", "fwd": "column"}], "rate": [2.0], "execution": ["twin"]}, "axes.rate[2]"),
        ({"compressor": [{"label": "x", "fwd": "nosuch"}], "execution": ["twin"]}, "axes.compressor[x]"),
        ({"execution": ["twin"], "seed": [0, -3]}, "axes.seed[-3]"),
    ):
        f = tmp_path / "s.yaml"
        f.write_text(
            yaml.safe_dump({"name": "s", "topology": str(TOPOLOGIES / "ci-4stage.yaml"), "base": base, "axes": axes})
        )
        r = pipenem("run", str(f), "--out", str(tmp_path / "never"))
        assert r.returncode == 2 and words in r.stderr and "Traceback" not in r.stderr, r.stderr
        assert not (tmp_path / "never").exists()


def test_small_cli_inputs_are_checked(tmp_path: Path) -> None:
    topo = str(TOPOLOGIES / "ci-4stage.yaml")
    for args, words in (
        (("topo", "up", topo, "--for", "-5"), "--for"),
        (("topo", "up", topo, "--for", "nan"), "--for"),
        (("topo", "show", topo, "--windows", "-1"), "--windows"),
    ):
        r = pipenem(*args)
        assert r.returncode == 2 and words in r.stderr and "Traceback" not in r.stderr, r.stderr
    bad = tmp_path / "bad.pt"
    bad.write_text("not a tensor")
    r = pipenem("fidelity", str(bad))
    assert r.returncode == 2 and "not a tensor saved with torch.save" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.skipif(os.geteuid() != 0, reason="root ignores file permissions only for root; this checks /proc")
def test_an_unwritable_out_folder_is_refused_naming_it(tmp_path: Path) -> None:
    r = pipenem("train", str(_config(tmp_path)), "--out", "/proc/pipenem-out")
    assert r.returncode == 2 and "--out" in r.stderr and "/proc/pipenem-out" in r.stderr and "Traceback" not in r.stderr


@needs_netns
@pytest.mark.netns
def test_a_full_disk_is_one_message_naming_the_file_and_leaves_no_tmp(tmp_path: Path) -> None:
    out = tmp_path / "small"
    out.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=20k", "tmpfs", str(out)], check=True)
    try:
        f = tmp_path / "s.yaml"
        f.write_text(
            yaml.safe_dump(
                {
                    "name": "s",
                    "topology": str(TOPOLOGIES / "ci-4stage.yaml"),
                    "base": {"model": TINY, "train": {"steps": 40, "batch": 8, "micro_batches": 2}},
                    "axes": {"execution": ["twin"], "seed": [0, 1, 2, 3]},
                }
            )
        )
        r = pipenem("run", str(f), "--out", str(out))
        assert r.returncode == 1 and "no space left" in r.stderr and "Traceback" not in r.stderr, r.stderr
        assert ".parquet" in r.stderr  # names the file
        assert not list(out.glob("*.tmp")), list(out.iterdir())
        import pandas as pd

        trials = (
            set(pd.read_parquet(out / "trials.parquet")["trial_id"]) if (out / "trials.parquet").exists() else set()
        )
        if (out / "steps.parquet").exists():  # all of a trial's rows or none: no steps without their trial
            assert set(pd.read_parquet(out / "steps.parquet")["trial_id"]) <= trials
    finally:
        subprocess.run(["umount", str(out)], check=True)


# ------------------------------------------------------------------ one owner per --out


@needs_netns
@pytest.mark.netns
def test_a_second_run_on_a_busy_out_folder_exits_2_at_once_and_the_first_is_unaffected(tmp_path: Path) -> None:
    out = tmp_path / "out"
    first = _start_train(_config(tmp_path, train={"steps": 400}, name="a.yaml"), out)
    try:
        _wait_for(first, "joined its links")
        t0 = time.time()
        second = pipenem("train", str(_config(tmp_path, train={"steps": 15}, name="b.yaml")), "--out", str(out))
        assert second.returncode == 2 and f"PID {first.pid}" in second.stderr, second.stderr
        assert time.time() - t0 < 10
        suite = tmp_path / "s.yaml"
        suite.write_text(
            yaml.safe_dump(
                {
                    "name": "s",
                    "topology": str(TOPOLOGIES / "ci-4stage.yaml"),
                    "base": {"model": TINY},
                    "axes": {"execution": ["twin"]},
                }
            )
        )
        assert pipenem("run", str(suite), "--out", str(out)).returncode == 2
        first.communicate(timeout=180)
        assert first.returncode == 0
    finally:
        if first.poll() is None:  # a failed assertion: end it as a user would, so it removes its network
            first.send_signal(signal.SIGINT)
            try:
                first.communicate(timeout=60)
            except subprocess.TimeoutExpired:
                first.kill()
    summary = json.loads((out / "summary.json").read_text())
    assert len(summary["losses"]) == 400  # the first run's own spec, not the second's 15 steps


# ------------------------------------------------------------------ links that die or crawl


@needs_netns
@pytest.mark.netns
def test_a_link_set_down_mid_run_ends_it_within_the_bound_naming_the_link(tmp_path: Path) -> None:
    """Default bound (30 s floor) on the CI topology: the run ends ≤ 90 s after the link died."""
    before = netns_names()
    rc, out, took = _interrupt_training(
        tmp_path, _on_link("1-2", lambda h, idx: h.link("set", index=idx, state="down"))
    )
    assert rc == 1 and took <= 90, (took, out[-2000:])
    assert "link 1-2 is down" in out and "Traceback" not in out, out[-2000:]
    assert netns_names() == before and all_records() == []


@needs_netns
@pytest.mark.netns
def test_a_link_slowed_to_a_crawl_is_reported_as_stalled_with_bytes_and_rates(tmp_path: Path) -> None:
    # 1 kbit/s (125 bytes/s), as `tc qdisc change` by hand would
    crawl = _on_link("1-2", lambda h, idx: h.tc("change", "tbf", idx, 0x10000, rate=125, burst=1600, limit=20000))
    rc, out, took = _interrupt_training(tmp_path, crawl, stall_timeout=8)
    assert rc == 1 and took < 40, (took, out[-2000:])
    # named by the link watch after the bound, or — when a stage's TCP connection times out on the
    # crawling link first — by the stage failure, which says what the watch saw on that link
    assert "link 1-2 forward stalled" in out or "while link 1-2 forward crawling" in out, out[-2000:]
    assert "bytes moved" in out or "its shaper is set to 1.0 Kbit/s" in out, out[-2000:]
    assert "the plan gives 80.0 Mbit/s" in out, out[-2000:]
    assert all_records() == []


@needs_netns
@pytest.mark.netns
def test_a_short_planned_outage_is_ridden_through_and_a_long_one_reported(tmp_path: Path) -> None:
    from harness.config.schema import load_spec
    from harness.runtime.twin import run_twin

    # short: 3 s down, every 10 s, while training: transfers resume, losses are the twin's (bit for
    # bit). Events are timed from bring-up and steps start when the stages have joined (later on a
    # busy machine), so the outage repeats: one of them falls inside the run however long joining took
    outages = [{"at": f"{t}s", "link": "1-2", "down": "3s"} for t in (6, 16, 26, 36, 46)]
    short = _topology(tmp_path, events=outages)
    cfg = _config(tmp_path, short, train={"steps": 300, "stall_timeout": 20})
    r = pipenem("train", str(cfg), "--out", str(tmp_path / "short"), timeout=240)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr
    summary = json.loads((tmp_path / "short" / "summary.json").read_text())
    assert summary["losses"] == [row["loss"] for row in run_twin(load_spec(cfg))]
    downs = [a for a in summary["applied"] if a["link"] == "1-2" and not a["up"]]
    assert {a["direction"] for a in downs} == {"forward", "backward"} and all(a["event"] == "down 3s" for a in downs)
    steps = json.loads((tmp_path / "short" / "stage0.json").read_text())["steps"]
    inside = [a for a in downs if steps[0]["start"] < a["applied_at"] < steps[-1]["end"] - 2.5]
    assert inside, "no outage began inside the run: it joined only after the last one"  # ...
    assert max(r["end"] - r["start"] for r in steps) > 2.5  # ... and a step waited it out
    # long: 120 s down with a 6 s bound: reported as down, within the bound
    (tmp_path / "long").mkdir()
    long_topo = _topology(tmp_path / "long", events=[{"at": "5s", "link": "1-2", "down": "120s"}])
    t0 = time.time()
    r = pipenem(
        "train",
        str(_config(tmp_path / "long", long_topo, train={"steps": 100000, "stall_timeout": 6})),
        "--out",
        str(tmp_path / "long" / "out"),
        timeout=120,
    )
    assert r.returncode == 1 and "link 1-2 is down" in r.stdout and time.time() - t0 < 60, r.stdout[-2000:]
    assert all_records() == []


# ------------------------------------------------------------------ messages and cleanup details


@needs_netns
@pytest.mark.netns
def test_a_failing_stage_message_with_markup_like_text_is_printed_literally(tmp_path: Path) -> None:
    mod = tmp_path / "markup_compressor.py"
    mod.write_text(
        "from harness.compressors.dense import NoCompression\n\n"
        "class Boom(NoCompression):\n    name = 'boom'\n\n"
        "    def encode(self, x, ctx):\n"
        "        raise RuntimeError(\"closing tag '[/__w/pytorch/unbound_buffer.cc:78]' [bold]x\")\n"
    )
    cfg = _config(tmp_path, compression={"fwd": {"name": "markup_compressor:Boom"}, "bwd": "none"})
    env = {**os.environ, "PYTHONPATH": f"{tmp_path}:{os.environ.get('PYTHONPATH', '')}"}
    r = pipenem("train", str(cfg), "--out", str(tmp_path / "out"), env=env)
    assert r.returncode == 1, r.stdout[-2000:] + r.stderr
    assert "[/__w/pytorch/unbound_buffer.cc:78]' [bold]x" in r.stdout and "MarkupError" not in r.stdout + r.stderr
    assert "stage 0" in r.stdout and "RuntimeError" in r.stdout  # the failing stage's own last lines


def test_topo_clean_never_kills_a_reused_pid() -> None:
    from testbed.backends.netns import _kill_pid
    from testbed.registry import proc_start_time

    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", "testbed.standin"])
    try:
        wait_for(lambda: b"testbed.standin" in Path(f"/proc/{proc.pid}/cmdline").read_bytes(), 10, "the stand-in")
        assert _kill_pid(proc.pid, "") == []  # no recorded start time: nothing to verify, never killed
        assert _kill_pid(proc.pid, "12345") == []  # recorded start time differs: another process now
        assert proc.poll() is None
        assert _kill_pid(proc.pid, proc_start_time(proc.pid)) == [f"process {proc.pid}"]
        assert proc.wait(timeout=5) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()


@needs_netns
@pytest.mark.netns
def test_ctrl_c_on_train_says_so_and_leaves_nothing(tmp_path: Path) -> None:
    before = netns_names()
    rc, out, _ = _interrupt_training(tmp_path, lambda proc: proc.send_signal(signal.SIGINT))
    assert rc == 130 and "interrupted; everything this run created was removed" in out, out[-1000:]
    assert netns_names() == before and all_records() == []


# ------------------------------------------------------------------ round two: who changed what, who failed first

RESAMPLING = {"defaults": {"bandwidth": {"dist": "normal", "mean": 1000, "std": 50, "unit": "Mbit", "min": 500}}}


def _resampling(tmp_path: Path) -> Path:
    """The fault topology with every link re-sampled every 2 s (the 80 Mbit link too)."""
    return _topology(
        tmp_path,
        defaults={**RESAMPLING["defaults"], "resample_every": "2s"},
        links=[{"between": [1, 2], "bandwidth": {"dist": "normal", "mean": 80, "std": 8, "unit": "Mbit", "min": 20}}],
    )


@needs_netns
@pytest.mark.netns
def test_a_cable_pulled_by_hand_stays_pulled_on_a_resampling_topology_and_is_named(tmp_path: Path) -> None:
    """The link plan re-samples every 2 s but never re-ups a link it did not take down: the run
    ends within its bound, naming the link and that pipenem did not do it."""
    before = netns_names()
    rc, out, took = _interrupt_training(
        tmp_path,
        _on_link("1-2", lambda h, idx: h.link("set", index=idx, state="down")),
        topology=_resampling(tmp_path),
        stall_timeout=6,
    )
    assert rc == 1 and took < 40, (took, out[-2000:])
    assert "link 1-2 is down" in out and "set down outside pipenem" in out, out[-2000:]
    assert "Traceback" not in out and netns_names() == before and all_records() == []


@needs_netns
@pytest.mark.netns
def test_a_shaper_changed_by_hand_is_said_before_the_plan_replaces_it(tmp_path: Path) -> None:
    slow = _on_link("1-2", lambda h, idx: h.tc("change", "tbf", idx, 0x10000, rate=1250, burst=1600, limit=20000))
    rc, out, _ = _interrupt_training(tmp_path, slow, topology=_resampling(tmp_path), steps=300, stall_timeout=60)
    assert rc == 0, out[-2000:]
    assert "was set outside pipenem" in out and "10.0 Kbit/s" in out, out[-3000:]
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert any("outside pipenem" in a.get("outside", "") for a in summary["applied"] if a["link"] == "1-2")


@needs_netns
@pytest.mark.netns
def test_a_stopped_stage_is_named_within_the_bound(tmp_path: Path) -> None:
    """SIGSTOP, as a debugger or a frozen container would: no exit, no error, no progress."""
    before = netns_names()
    victim: dict[str, int] = {}

    def stop(_proc: subprocess.Popen) -> None:
        victim["pid"] = worker_pids(tmp_path / "out")[1]
        os.kill(victim["pid"], signal.SIGSTOP)

    try:
        rc, out, took = _interrupt_training(tmp_path, stop, stall_timeout=6)
    finally:
        if victim:
            try:
                os.kill(victim["pid"], signal.SIGCONT)
            except ProcessLookupError:
                pass
    assert rc == 1 and took < 30, (took, out[-2000:])
    assert f"stage 1 (pid {victim['pid']}) has been stopped" in out, out[-2000:]
    assert netns_names() == before and all_records() == []


FAILING_FACTORY = """
import torch
from torch import nn


class Stage(nn.Module):
    def __init__(self, first, fail_at):
        super().__init__()
        self.first, self.fail_at, self.calls = first, fail_at, 0
        self.embed = nn.Embedding(256, 16) if first else None
        self.lin = nn.Linear(16, 256 if fail_at is None and not first else 16)

    def forward(self, x):
        self.calls += 1
        if self.fail_at is not None and self.calls > self.fail_at:
            raise ValueError("planted failure on stage 0")
        return self.lin(self.embed(x) if self.first else x)


def build(partition, seed, fail_at=6):
    torch.manual_seed(seed)
    return [Stage(True, fail_at), Stage(False, None)]
"""


@needs_netns
@pytest.mark.netns
def test_the_stage_that_failed_first_is_named_not_the_peer_that_saw_it_go(tmp_path: Path) -> None:
    (tmp_path / "failing_factory.py").write_text(FAILING_FACTORY)
    topo = tmp_path / "two.yaml"
    topo.write_text(yaml.safe_dump({"name": "two", "stages": 2, "defaults": {"bandwidth": "1Gbit"}}))
    model = {"factory": "failing_factory:build", "d_model": 16, "n_layers": 2, "vocab": 256, "ctx": 16}
    cfg = _config(tmp_path, topo, train={"steps": 50})
    cfg.write_text(yaml.safe_dump({**yaml.safe_load(cfg.read_text()), "model": model}))
    env = {**os.environ, "PYTHONPATH": f"{tmp_path}:{os.environ.get('PYTHONPATH', '')}"}
    r = pipenem("train", str(cfg), "--out", str(tmp_path / "out"), env=env)
    assert r.returncode == 1, r.stdout[-2000:]
    failed = next(line for line in r.stdout.splitlines() if line.startswith("failed: "))
    assert failed.startswith("failed: stage 0 exited with status 1") and "ValueError: planted failure" in failed, failed
    assert "then stage 1" not in failed or "consequences" in failed, failed


@needs_netns
@pytest.mark.netns
def test_a_dead_link_plan_applier_ends_the_run_with_its_name(tmp_path: Path) -> None:
    def kill_applier(_proc: subprocess.Popen) -> None:
        procs = [r for r in all_records()[0].resources if r["kind"] == "process"]
        applier = next(
            p for p in procs if b"testbed.linkplan_daemon" in Path(f"/proc/{p['name']}/cmdline").read_bytes()
        )
        os.kill(int(applier["name"]), signal.SIGKILL)

    before = netns_names()
    rc, out, took = _interrupt_training(tmp_path, kill_applier, topology=_resampling(tmp_path))
    assert rc == 1 and took < 20, (took, out[-2000:])
    assert "the link-plan applier of run" in out and "Traceback" not in out, out[-2000:]
    assert netns_names() == before and all_records() == []


def test_ctrl_c_of_a_parallel_sweep_ends_it_at_once(tmp_path: Path) -> None:
    """`pipenem run --jobs 2` on Ctrl-C: the twin processes end, the tables keep what finished."""
    suite = tmp_path / "s.yaml"
    base = {"model": TINY, "data": {"dataset": "synthetic"}, "train": {"steps": 5000, "batch": 8, "micro_batches": 2}}
    axes = {"execution": ["twin"], "seed": [0, 1, 2, 3]}
    suite.write_text(
        yaml.safe_dump({"name": "s", "topology": str(TOPOLOGIES / "ci-4stage.yaml"), "base": base, "axes": axes})
    )
    proc = pipenem_in_own_session("run", str(suite), "--out", str(tmp_path / "out"), "--jobs", "2")
    try:
        children = lambda: [p for p in os.listdir("/proc") if p.isdigit() and _parent(int(p)) == proc.pid]  # noqa: E731
        wait_for(lambda: len(children()) >= 2, 120, "two twin processes")
        os.killpg(proc.pid, signal.SIGINT)
        out, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130 and "interrupted" in out and "Traceback" not in out, out[-2000:]


def _parent(pid: int) -> int | None:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return None
