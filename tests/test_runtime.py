"""The distributed runtime over real namespaces and shaped links, checked against the twin."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from harness.config.schema import build_spec
from harness.runtime.allocator import find_tcmalloc
from harness.runtime.launcher import StageFailed, run_pipeline
from harness.runtime.twin import run_twin
from testbed.registry import all_records
from tests.conftest import (
    ROOT,
    TINY,
    TINY_RUN,
    TOPOLOGIES,
    needs_netns,
    netns_names,
    pipenem,
    with_overrides,
    worker_pids,
)

pytestmark = [needs_netns, pytest.mark.netns]


def _spec(**over) -> dict:
    return with_overrides(TINY_RUN, **over)


def test_gpipe_trains_over_shaped_links_and_matches_the_twin_bit_for_bit(tmp_path: Path) -> None:
    spec = build_spec(_spec())
    result = run_pipeline(spec, tmp_path)
    losses = result.losses()
    assert len(losses) == 6 and losses[-1] < losses[0] - 0.3  # it learns
    assert losses == [r["loss"] for r in run_twin(spec)]  # `none`: bit-exact
    # every payload byte crossed its link: interface counters agree within protocol overhead
    for row in result.links:
        assert row["payload_bytes"] > 0 and 1.0 < row["overhead"] < 1.2, row
    by_stage = {r["stage"] for r in result.steps}
    assert by_stage == {0, 1, 2, 3}
    for r in result.steps:
        assert r["compute_s"] > 0 and r["end"] > r["start"]
    assert not netns_names() - set() or all(not n.startswith(result.run_id) for n in netns_names())
    assert all_records() == []
    # the workers' malloc is recorded, and is tcmalloc wherever the host has it
    assert result.allocator == ("tcmalloc" if find_tcmalloc() else "system malloc")


def test_1f1b_with_column_compression_matches_the_twin_within_float_tolerance(tmp_path: Path) -> None:
    spec = build_spec(
        _spec(
            train={"schedule": "1f1b", "steps": 4},
            compression={"fwd": {"name": "column", "rate": 0.5}, "bwd": {"name": "topk", "rate": 0.5}},
        )
    )
    dist = run_pipeline(spec, tmp_path).losses()
    twin = [r["loss"] for r in run_twin(spec)]
    assert dist == pytest.approx(twin, rel=1e-5, abs=1e-6)
    none = [r["loss"] for r in run_twin(build_spec(_spec(train={"schedule": "1f1b", "steps": 4})))]
    assert dist != pytest.approx(none, rel=1e-6)  # compression really was applied


def test_inference_sends_forward_only_and_compressed(tmp_path: Path) -> None:
    spec = build_spec(_spec(train={"mode": "infer", "steps": 3}, compression={"fwd": {"name": "column", "rate": 0.75}}))
    result = run_pipeline(spec, tmp_path)
    fwd = {r["link"]: r["payload_bytes"] for r in result.links if r["direction"] == "forward"}
    bwd = {r["link"]: r["payload_bytes"] for r in result.links if r["direction"] == "backward"}
    assert all(v == 0 for v in bwd.values()) and all(v > 0 for v in fwd.values())
    dense = 3 * 8 * 32 * 32 * 4  # steps × batch × ctx × d × fp32
    assert all(v < dense * 0.3 for v in fwd.values())  # a quarter of the columns, plus indices and headers
    assert result.throughput() > 0 and all(v is not None for v in result.losses())


def test_killing_a_stage_is_reported_and_everything_is_torn_down(tmp_path: Path) -> None:
    cfg = tmp_path / "run.yaml"
    cfg.write_text(yaml.safe_dump(_spec(train={"steps": 500}, log_every=1)))
    before = netns_names()
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipenem.main", "train", str(cfg), "--out", str(tmp_path / "out")],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    out_lines = []
    for line in proc.stdout:
        out_lines.append(line)
        if "step 2 loss" in line:
            break
    victim = worker_pids(tmp_path / "out")[2]  # this run's stage 2, never a concurrent test's
    os.kill(victim, signal.SIGKILL)
    rest, _ = proc.communicate(timeout=120)
    output = "".join(out_lines) + rest
    assert proc.returncode == 1, output
    assert "stage 2 was killed by signal 9" in output
    assert netns_names() == before and all_records() == []
    assert not worker_pids(tmp_path / "out")


def test_launcher_raises_stage_failed_with_the_stage(tmp_path: Path) -> None:
    spec = build_spec(_spec(train={"steps": 400}))
    procs: list[subprocess.Popen] = []

    def kill_stage_1_once_it_steps(stage: int, msg: dict) -> None:
        # mid-run, whatever the machine's load: after the last stage reported step 1's loss
        if msg["event"] == "step" and msg.get("loss") is not None and msg["step"] >= 1 and procs[1].poll() is None:
            procs[1].send_signal(signal.SIGTERM)

    with pytest.raises(StageFailed) as info:
        run_pipeline(spec, tmp_path, on_start=procs.extend, on_progress=kill_stage_1_once_it_steps)
    assert info.value.stage == 1 and info.value.code == -signal.SIGTERM
    assert all_records() == []


@pytest.mark.parametrize(
    "over,field",
    [
        ({"partition": [1, 1, 1]}, "partition"),
        ({"partition": [2, 2, 1, 1]}, "partition"),
        ({"model": {**TINY, "n_heads": 5}}, "model.n_heads"),
        ({"topology": str(TOPOLOGIES / "beyond-topk-8stage.yaml"), "partition": [1, 1, 1, 1]}, "partition"),
        ({"train": {"steps": 2, "batch": 8, "micro_batches": 3}}, "train.micro_batches"),
        ({"compression": {"fwd": {"name": "column", "rate": 1.5}}}, "compression.fwd.rate"),
        ({"compression": {"bwd": {"name": "lowrank", "rank": 64}}}, "rank"),
        ({"compute": {"mode": "modeled", "profile": "tpu-v9"}}, "compute.profile"),
        ({"compute": {"device": "a10g"}}, "compute.device"),
        ({"compute": {"codec": "modeled"}}, "compute.codec"),
        ({"surprise": 1}, "surprise"),
    ],
)
def test_bad_config_exit_2_nothing_started(tmp_path: Path, over: dict, field: str) -> None:
    cfg = tmp_path / "bad.yaml"
    spec = _spec()
    spec.update(over)
    cfg.write_text(yaml.safe_dump(spec))
    before = netns_names()
    out = pipenem("train", str(cfg), "--out", str(tmp_path / "out"))
    assert out.returncode == 2, out.stdout + out.stderr
    assert field in out.stderr and "Traceback" not in out.stderr
    assert netns_names() == before and all_records() == []
    assert not (tmp_path / "out" / "spec.json").exists()


def test_exact_boundary_gradients_and_mirror_match_the_twin_and_links_carry_payload_bytes(tmp_path: Path) -> None:
    """Exact semantics (the default) with a mirror backward: distributed == twin; the links carry
    exactly the payloads' bytes (Payload.to_bytes framing) and mirror sends values only."""
    spec = build_spec(_spec(train={"steps": 4}, compression={"fwd": {"name": "column", "rate": 0.5}, "bwd": "mirror"}))
    assert spec.train.boundary_grad == "exact"
    result = run_pipeline(spec, tmp_path)
    twin = [r["loss"] for r in run_twin(spec)]
    assert result.losses() == pytest.approx(twin, rel=1e-5, abs=1e-6)
    straight = build_spec(
        _spec(
            train={"steps": 4, "boundary_grad": "straight-through"},
            compression={"fwd": {"name": "column", "rate": 0.5}, "bwd": "mirror"},
        )
    )
    assert [r["loss"] for r in run_twin(straight)][1:] == pytest.approx(
        twin[1:], rel=1e-6
    )  # mirror zeroes the rest anyway
    # per micro-batch and boundary: a 16-byte frame + the payload (header + values [+ indices])
    mb = 8 // 4 * 32 * 32  # entries of one micro-batch's activation
    msgs = 4 * 4  # steps × micro-batches
    header = 8 * ((2 + 8 * 5 + 5 * 1 + 7) // 8)  # fp32 3-D shape header, one part
    norm_msgs = 4 * 32  # per step, one 32-byte grad-norm control message each way on every link
    for row in result.links:
        if row["direction"] == "backward":  # mirror: values at the kept half of the columns, no indices
            assert row["payload_bytes"] == msgs * (16 + header + mb // 2 * 4) + norm_msgs, row
        assert row["dense_bytes"] == msgs * mb * 4
        assert 1.0 < row["overhead"] < 1.6, row  # interface counters: payload + TCP/IP and gloo per-message overhead
    bwd_ratio = result.link_wire_ratio("backward")
    assert 1.9 < bwd_ratio < 2.0  # dense / (values + frame + header + control)
    assert result.link_wire_ratio("forward") < bwd_ratio  # the forward also carries column indices


def test_a_fork_server_that_dies_while_importing_is_named_before_any_stage_waits_on_it() -> None:
    """The first stage waits for the server's ready line (its imports and rehearsal step, up to
    STARTUP_S), not for a fork: a server that exits first is said at once, with its status."""
    from harness.runtime.forkserver import ForkServer

    server = ForkServer([sys.executable, "-c", "import sys; sys.exit(3)"], dict(os.environ))
    with pytest.raises(RuntimeError, match=r"exited before it was ready \(exit status 3\)"):
        server.start(0, "pn000000-s0", "harness.runtime.worker", "/nonexistent", {})
    server.close()


@needs_netns
def test_stages_are_forked_from_one_single_threaded_server_and_train_the_same(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The fork server imported torch once and forks every stage into its namespace: it has one
    thread whenever it forks; each stage is its child; the losses equal stages started apiece."""
    from harness.runtime.forkserver import ForkedStage

    spec = build_spec(_spec(train={"steps": 4}))
    seen: dict = {}

    def look(procs: list) -> None:
        assert all(isinstance(p, ForkedStage) for p in procs)
        server = procs[0].server.pid
        seen["threads"] = len(os.listdir(f"/proc/{server}/task"))
        seen["parents"] = {int(Path(f"/proc/{p.pid}/stat").read_text().rsplit(")", 1)[1].split()[1]) for p in procs}
        seen["server"] = server

    forked = run_pipeline(spec, tmp_path / "forked", on_start=look).losses()
    assert seen["threads"] == 1 and seen["parents"] == {seen["server"]}
    monkeypatch.setenv("PIPENEM_FORK", "0")
    apiece = run_pipeline(spec, tmp_path / "apiece").losses()
    assert forked == apiece and len(forked) == 4
