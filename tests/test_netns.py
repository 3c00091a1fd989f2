"""Integration: real namespaces, real veths, real shaping, real TCP bytes (root; runs in CI)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from testbed.backends.netns import NetnsBackend
from testbed.probe import probe
from testbed.registry import all_records
from testbed.topology import Topology, build_topology
from testbed.topology_file import load_topology
from tests.conftest import ROOT, TOPOLOGIES, link_names, needs_netns, netns_names, pipenem

pytestmark = [needs_netns, pytest.mark.netns]


def _ours(run_id: str) -> tuple[set[str], set[str]]:
    return ({n for n in netns_names() if n.startswith(run_id)}, {n for n in link_names() if n.startswith(run_id)})


def test_bring_up_creates_hosts_links_and_shaping_then_removes_exactly_them() -> None:
    before_ns, before_links = netns_names(), link_names()
    topo = load_topology(TOPOLOGIES / "ci-4stage.yaml")
    with NetnsBackend(topo) as b:
        assert len(b.hosts) == 4 and len(b.links) == 3
        assert set(b.hosts) <= netns_names()
        from pyroute2 import IPRoute

        from testbed import shaping

        for ns, ifname, label, direction in b.shaped:
            with IPRoute(netns=ns, flags=0) as ipr:
                rate = shaping.applied_rate(ipr, ipr.link_lookup(ifname=ifname)[0], "tbf")
            expected = 80e6 if label == "1-2" else 1e9
            assert rate == int(expected / 8), (label, direction)
        run_id = b.run_id
        assert all_records()[0].run_id == run_id
    assert _ours(run_id) == (set(), set())
    assert netns_names() == before_ns and link_names() == before_links
    assert all_records() == []


@pytest.mark.parametrize("rate", ["80Mbit", "1400Mbit"])
@pytest.mark.parametrize("shaper", ["tbf", "htb"])
def test_achieved_goodput_matches_configured_rate(rate: str, shaper: str) -> None:
    topo = Topology.chain(2, rate, name="rate").model_copy(update={"shaper": shaper})
    with NetnsBackend(topo) as b:
        fwd = probe(b, 0, "forward", seconds=1.5, interval=0.25)
    assert 0.90 <= fwd.ratio <= 1.0, fwd.row()


def test_directions_are_shaped_independently() -> None:
    topo = build_topology(
        {
            "name": "asym",
            "stages": 2,
            "links": [
                {"between": [0, 1], "direction": "forward", "bandwidth": "20Mbit"},
                {"between": [0, 1], "direction": "backward", "bandwidth": "100Mbit"},
            ],
        }
    )
    with NetnsBackend(topo) as b:
        fwd = probe(b, 0, "forward", seconds=1.5, interval=0.25)
        bwd = probe(b, 0, "backward", seconds=1.5, interval=0.25)
    assert fwd.configured_bps == 20e6 and bwd.configured_bps == 100e6
    assert 0.9 < fwd.ratio <= 1.0 and 0.9 < bwd.ratio <= 1.0


def test_changing_bandwidth_is_followed_without_flushing() -> None:
    """The step trace goes 30 -> 90 -> 30 Mbit every 3 s; the achieved rate follows it."""
    topo = load_topology(TOPOLOGIES / "examples" / "step-trace.yaml")
    with NetnsBackend(topo) as b:
        r = probe(b, 0, "forward", seconds=8.5, interval=0.5)
        applied = b.applied()
    changes = [row for row in applied if row["direction"] == "forward"]
    assert [row["rate_bps"] for row in changes[:3]] == [30e6, 90e6, 30e6]
    # every interval not within 0.5 s of a change: achieved within 15% of what was applied then
    change_walls = [row["applied_at"] for row in changes]
    steady = [
        row for row in r.timeline[1:] if all(not (row["wall"] - 0.5 <= c <= row["wall"] + 1.0) for c in change_walls)
    ]
    assert len(steady) >= 6
    for row in steady:
        assert 0.85 < row["achieved_bps"] / row["configured_bps"] <= 1.05, row
    assert {round(row["configured_bps"]) for row in steady} == {30_000_000, 90_000_000}


def test_shared_bottleneck_caps_the_sum_of_its_links() -> None:
    topo = build_topology(
        {
            "name": "shared",
            "stages": 4,
            "defaults": {"bandwidth": "200Mbit"},
            "bottlenecks": [{"name": "wan", "links": [[0, 1], [2, 3]], "bandwidth": "60Mbit"}],
        }
    )
    with NetnsBackend(topo) as b:
        alone = probe(b, 0, "forward", seconds=1.5, interval=0.25)
        mid = probe(b, 1, "forward", seconds=1.5, interval=0.25)  # not in the bottleneck
        # both bottleneck links at once: their sum is held to the shared 60 Mbit
        py = [sys.executable, "-m", "testbed.probe_ends"]
        recvs = [
            subprocess.Popen(
                b.exec_argv(i + 1, py + ["recv", "--bind", b.links[i].b.address, "--interval", "0.25"]),
                stdout=subprocess.PIPE,
                text=True,
            )
            for i in (0, 2)
        ]
        for r in recvs:
            assert r.stdout.readline().strip() == "READY"
        sends = [
            subprocess.Popen(b.exec_argv(i, py + ["send", "--to", b.links[i].b.address, "--seconds", "3"]))
            for i in (0, 2)
        ]
        for s in sends:
            assert s.wait(30) == 0
        outs = [json.loads(r.communicate(timeout=30)[0].splitlines()[-1]) for r in recvs]
    assert alone.configured_bps == 60e6 and 0.9 < alone.ratio <= 1.0
    assert mid.configured_bps == 200e6 and 0.9 < mid.ratio <= 1.0
    # Sum the two flows over the wall-clock span where both ran: a flow that started
    # earlier had the trunk to itself for a while, which must not count as sharing.
    t0 = max(o["start"] for o in outs) + 0.5
    t1 = min(o["end"] for o in outs) - 0.25
    assert t1 - t0 > 1.0, (t0, t1)
    total = 0.0
    for o in outs:
        iv = o["interval"]
        inside = [n for k, n in enumerate(o["bins"]) if o["start"] + k * iv >= t0 and o["start"] + (k + 1) * iv <= t1]
        total += sum(inside) * 8 / (len(inside) * iv)
    assert 0.85 * 60e6 < total <= 1.03 * 60e6


def test_exception_inside_the_context_still_tears_down() -> None:
    topo = load_topology(TOPOLOGIES / "ci-4stage.yaml")
    with pytest.raises(RuntimeError, match="boom"), NetnsBackend(topo) as b:
        run_id = b.run_id
        raise RuntimeError("boom")
    assert _ours(run_id) == (set(), set())


def _start_up(args: list[str]) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipenem.main", "topo", "up", *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    for line in proc.stdout:  # the CLI prints its hosts table, then a line starting with "up"
        if line.startswith("up"):
            return proc, all_records()[0].run_id
    proc.send_signal(signal.SIGINT)  # never SIGKILL here: that would leave the run behind
    proc.wait(30)
    raise AssertionError("topology did not come up")


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_ctrl_c_and_sigterm_tear_down(sig: int) -> None:
    proc, run_id = _start_up([str(TOPOLOGIES / "ci-4stage.yaml")])
    assert _ours(run_id)[0]
    proc.send_signal(sig)
    assert proc.wait(30) in (130, 143, 0)
    assert _ours(run_id) == (set(), set())
    assert all_records() == []


def test_sigkill_then_clean_removes_that_run_and_nothing_else() -> None:
    from pyroute2 import IPRoute, netns

    # a bystander namespace and veth pipenem did not create: must survive `clean`
    netns.create("bystander-ns")
    with IPRoute() as ipr:
        ipr.link("add", ifname="bystand0", kind="veth", peer="bystand1")
    try:
        before = netns_names(), link_names()
        proc, run_id = _start_up([str(TOPOLOGIES / "examples" / "step-trace.yaml")])
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        ns, links = _ours(run_id)
        assert len(ns) == 2 and len(links) == 0  # left behind (veth ends live inside the namespaces)
        applier = [r for r in all_records()[0].resources if r["kind"] == "process"]
        assert applier, "the step trace needs a plan-applier process"
        out = pipenem("topo", "clean")
        assert out.returncode == 0, out.stderr
        assert run_id in out.stdout
        assert _ours(run_id) == (set(), set())
        assert (
            not Path(f"/proc/{applier[0]['name']}").exists()
            or b"testbed.linkplan_daemon" not in Path(f"/proc/{applier[0]['name']}/cmdline").read_bytes()
        )
        assert netns_names() == before[0] and link_names() == before[1]
        assert "bystander-ns" in netns_names() and {"bystand0", "bystand1"} <= link_names()
        assert all_records() == []
    finally:
        netns.remove("bystander-ns")
        with IPRoute() as ipr:
            for idx in ipr.link_lookup(ifname="bystand0"):
                ipr.link("del", index=idx)


def test_clean_spares_runs_whose_owner_is_alive() -> None:
    proc, run_id = _start_up([str(TOPOLOGIES / "ci-4stage.yaml")])
    try:
        out = pipenem("topo", "clean")
        assert "nothing to clean" in out.stdout
        assert len(_ours(run_id)[0]) == 4
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(30)
    assert _ours(run_id) == (set(), set())


def test_detached_up_and_down() -> None:
    before = netns_names()
    out = pipenem("topo", "up", "--detach", str(TOPOLOGIES / "ci-4stage.yaml"))
    assert out.returncode == 0, out.stderr
    run_id = all_records()[0].run_id
    assert len(_ours(run_id)[0]) == 4
    assert "nothing to clean" in pipenem("topo", "clean").stdout  # detached runs are not leftovers
    out = pipenem("topo", "down", str(TOPOLOGIES / "ci-4stage.yaml"))
    assert out.returncode == 0 and run_id in out.stdout
    assert netns_names() == before and all_records() == []


def test_a_detached_run_keeps_applying_its_link_plan_until_down() -> None:
    from pyroute2 import IPRoute

    from testbed import shaping
    from testbed.registry import applied_log

    before = netns_names()
    out = pipenem("topo", "up", "--detach", str(TOPOLOGIES / "examples" / "step-trace.yaml"))
    assert out.returncode == 0, out.stderr
    rec = all_records()[0]
    try:
        pid = int(next(r["name"] for r in rec.resources if r["kind"] == "process"))
        assert f"applied by process {pid}" in out.stdout
        log = applied_log(rec.run_id)
        deadline = time.time() + 20
        rows: list[dict] = []
        while time.time() < deadline and not any(r["window"] >= 1 for r in rows):
            time.sleep(0.5)
            rows = [json.loads(line) for line in log.read_text().splitlines()]
        changed = [r for r in rows if r["window"] >= 1]
        assert changed and changed[0]["rate_bps"] == 90e6, rows  # the trace's 3 s step, applied
        for ns in _ours(rec.run_id)[0]:  # and the kernel holds what was last applied, on both ends
            with IPRoute(netns=ns, flags=0) as ipr:
                rates = {
                    shaping.applied_rate(ipr, link["index"], "tbf")
                    for link in ipr.get_links()
                    if link.get_attr("IFLA_IFNAME") != "lo"
                }
            last = json.loads(log.read_text().splitlines()[-1])
            assert rates == {int(last["rate_bps"] / 8)} and last["window"] >= 1, (ns, rates, last)
        assert "running" in pipenem("topo", "list").stdout
    finally:
        out = pipenem("topo", "down", rec.run_id)
    assert out.returncode == 0
    assert (
        not os.path.exists(f"/proc/{pid}")
        or b"testbed.linkplan_daemon" not in open(f"/proc/{pid}/cmdline", "rb").read()
    )
    assert netns_names() == before and all_records() == [] and not log.exists()


BAD = {
    "malformed.yaml": ("name: x\nstages: 3\n  links: [", "malformed YAML"),
    "unknown-key.yaml": (
        "name: x\nstages: 3\ndefaults: {bandwidth: 1Gbit, bandwith: 2}\n",
        "defaults.bandwith: unknown key",
    ),
    "negative.yaml": ("name: x\nstages: 3\ndefaults: {bandwidth: -1Mbit}\n", "defaults.bandwidth"),
    "zero.yaml": ("name: x\nstages: 3\ndefaults: {bandwidth: 0Mbit}\n", "defaults.bandwidth"),
    "std.yaml": (
        "name: x\nstages: 3\ndefaults: {bandwidth: {dist: normal, mean: 8, std: -2, unit: Mbit, min: 1}}\n",
        "defaults.bandwidth.std",
    ),
    "no-stage.yaml": (
        "name: x\nstages: 3\ndefaults: {bandwidth: 1Gbit}\nlinks: [{between: [2, 5], bandwidth: 1Mbit}]\n",
        "links[0].between",
    ),
    "lonely.yaml": ("name: x\nstages: 3\nlinks: [{between: [0, 1], bandwidth: 1Mbit}]\n", "stage 1 has no link"),
    "unit.yaml": ("name: x\nstages: 3\ndefaults: {bandwidth: 5Mbyte}\n", "defaults.bandwidth"),
}


@pytest.mark.parametrize("name", sorted(BAD))
def test_cli_bad_input_exit_2_one_message_nothing_created(tmp_path: Path, name: str) -> None:
    text, expected = BAD[name]
    f = tmp_path / name
    f.write_text(text)
    before = netns_names(), link_names()
    out = pipenem("topo", "up", str(f))
    assert out.returncode == 2, (out.stdout, out.stderr)
    assert expected in out.stderr and "Traceback" not in out.stderr
    assert len(out.stderr.strip().splitlines()) <= 3
    assert (netns_names(), link_names()) == before
    assert all_records() == []


def test_delay_without_netem_is_refused_or_applied() -> None:
    from testbed.capabilities import kernel_features

    f = TOPOLOGIES / "examples" / "every-feature.yaml"
    before = netns_names(), link_names()
    if kernel_features()["netem"]:
        out = pipenem("topo", "up", str(f), "--for", "1")
        assert out.returncode == 2
        assert "needs netem" in out.stderr and "link 3-4" in out.stderr and "Traceback" not in out.stderr
        assert (netns_names(), link_names()) == before and all_records() == []
    else:  # a kernel with netem: the same file comes up with delay applied
        with NetnsBackend(load_topology(f)) as b:
            from pyroute2 import IPRoute

            ns, ifname, *_ = next(s for s in b.shaped if s[2] == "3-4")
            with IPRoute(netns=ns, flags=0) as ipr:
                kinds = {q.get_attr("TCA_KIND") for q in ipr.get_qdiscs(index=ipr.link_lookup(ifname=ifname)[0])}
            assert "netem" in kinds


def test_cli_probe_json_reports_every_link() -> None:
    out = pipenem("topo", "probe", str(TOPOLOGIES / "ci-4stage.yaml"), "--seconds", "1", "--json")
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert len(data["results"]) == 6 and data["backend"] == "netns"
    for r in data["results"]:
        # at 1 Gbit/s the probe's sender and receiver are CPU-bound on 2 cores (0.895 seen, and 0.79
        # with the other core busy; the Mininet test's 2.5 Gbit links likewise): there the shaper
        # is held to its rate from above and the lower bound says only that traffic flows; the
        # 80 Mbit link, where the shaper binds, must reach 90% of its rate
        lowest = 0.9 if r["configured_bps"] < 1e9 else 0.5
        assert lowest <= r["ratio"] <= 1.0, r
    assert all_records() == []


def test_doctor_reports_each_capability() -> None:
    out = pipenem("doctor", "--json")
    names = {c["name"]: c for c in json.loads(out.stdout)}
    assert set(names) >= {"root / CAP_NET_ADMIN", "netns", "veth", "tbf", "htb", "netem", "docker engine"}
    assert names["tbf"]["ok"] and names["htb"]["ok"] and names["netns"]["ok"]


def test_a_ctrl_c_whose_exception_was_dropped_is_raised_again_while_the_network_is_up() -> None:
    """Ctrl-C landing inside an at-fork hook (logging's, when pyroute2 forks to open a namespace
    socket) has its KeyboardInterrupt printed and dropped by Python: seen in CI, the run went
    on and exited 0. The testbed keeps the signal; the supervisor's next tick raises it again."""
    topo = load_topology(TOPOLOGIES / "ci-4stage.yaml")
    before = netns_names()
    with NetnsBackend(topo) as b:
        b.raise_pending_signal()  # nothing pending: no exception
        try:
            signal.raise_signal(signal.SIGINT)
            time.sleep(0)  # the handler runs here at the latest
        except KeyboardInterrupt:
            pass  # what a dropping context does
        with pytest.raises(KeyboardInterrupt):
            b.raise_pending_signal()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    assert netns_names() == before
