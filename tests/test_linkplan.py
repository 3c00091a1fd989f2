"""The seeded, time-varying link plan."""

from __future__ import annotations

import numpy as np

from testbed.linkplan import LinkPlan
from testbed.topology import build_topology
from testbed.topology_file import load_topology
from tests.conftest import TOPOLOGIES


def _paper(seed: int = 0):
    topo = load_topology(TOPOLOGIES / "beyond-topk-8stage.yaml")
    return topo.model_copy(update={"seed": seed})


def test_same_seed_same_values_different_seed_different_values() -> None:
    a = [e.row() for e in LinkPlan(_paper(0)).events(60)]
    b = [e.row() for e in LinkPlan(_paper(0)).events(60)]
    c = [e.row() for e in LinkPlan(_paper(1)).events(60)]
    assert a == b
    assert [r["rate_bps"] for r in a] != [r["rate_bps"] for r in c]


def test_values_do_not_depend_on_how_far_the_plan_was_read() -> None:
    s = LinkPlan(_paper())
    short = {(e.link, e.direction, e.window): e.state for e in s.events(25)}
    long = {(e.link, e.direction, e.window): e.state for e in s.events(300)}
    assert len(short) > 10 and all(long[k] == v for k, v in short.items())


def test_windows_follow_resample_every() -> None:
    events = LinkPlan(_paper()).events(35)
    times = sorted({e.t for e in events})
    assert times == [0.0, 10.0, 20.0, 30.0]
    assert len(events) == 4 * 14


def test_truncated_normal_statistics() -> None:
    topo = build_topology(
        {
            "name": "x",
            "stages": 2,
            "defaults": {
                "bandwidth": {"dist": "normal", "mean": 80, "std": 40, "unit": "Mbit", "min": 60},
                "resample_every": "1s",
            },
        }
    )
    rates = np.array([e.state.rate_bps for e in LinkPlan(topo).events(4000) if e.direction == "forward"]) / 1e6
    assert rates.min() >= 60  # truncated, never below min
    # mean of N(80, 40) truncated at 60: 80 + 40 * phi(-0.5) / (1 - Phi(-0.5)) = 100.4
    assert abs(rates.mean() - 100.4) < 2.5


def test_both_directions_of_a_symmetric_link_share_a_draw() -> None:
    for e_f, e_b in zip(
        *[[e for e in LinkPlan(_paper()).events(30) if e.direction == d] for d in ("forward", "backward")], strict=True
    ):
        assert e_f.state == e_b.state and e_f.link == e_b.link


def test_trace_changes_at_its_change_points(tmp_path) -> None:
    (tmp_path / "t.csv").write_text("time_s,value\n0,30\n3,90\n")
    (tmp_path / "t.yaml").write_text("name: x\nstages: 2\nlinks: [{between: [0, 1], trace: t.csv, trace_unit: Mbit}]\n")
    s = LinkPlan(load_topology(tmp_path / "t.yaml"))
    fwd = [(e.t, e.state.rate_bps) for e in s.events(12) if e.direction == "forward"]
    assert fwd == [(0.0, 30e6), (3.0, 90e6), (6.0, 30e6), (9.0, 90e6)]
    assert s.at(4.0)[("0-1", "forward")].rate_bps == 90e6


# ---------------------------------------------------------------- the link watch's judgement


def _channel(samples: list[tuple[float, int, int, int]]):
    from testbed.linkwatch import _Channel

    ch = _Channel("1-2", "forward", None, None)
    ch.samples.extend(samples)  # (t, tx_bytes, shaper backlog, unacked TCP segments)
    return ch


def test_a_crawl_counts_only_while_data_waits_and_only_the_latest_run() -> None:
    from testbed.linkwatch import LinkWatch

    rate = 80e6
    # healthy, then TCP backing off: shaper empty between retransmissions but segments unacked
    ch = _channel([(0, 0, 5000, 3), (1, 10_000_000, 0, 0)] + [(2 + i, 10_000_000 + 70 * i, 0, 1) for i in range(8)])
    text, since, shaped = LinkWatch._crawl(ch, rate)
    assert text.startswith("490 bytes moved in 7 s with data waiting throughout") and since == 2 and not shaped
    assert "the plan gives 80.0 Mbit/s" in text
    # an idle link (a stage computing): nothing waits, nothing moves — not a crawl
    assert LinkWatch._crawl(_channel([(i, 100, 0, 0) for i in range(10)]), rate)[0] == ""
    # a busy healthy link: data waits and moves at the rate
    assert LinkWatch._crawl(_channel([(i, i * 10_000_000, 4000, 10) for i in range(10)]), rate)[0] == ""
    # the connection died (nothing waits any more): only the latest run, not the trailing one, still shows it
    dead = _channel([(i, 70 * i, 800, 2) for i in range(6)] + [(6, 420, 0, 0), (7, 420, 0, 0)])
    assert LinkWatch._crawl(dead, rate)[0] == ""
    text, since, shaped = LinkWatch._crawl(dead, rate, trailing=False)
    assert text.startswith("350 bytes moved in 5 s") and since == 0 and shaped


def test_the_state_now_is_the_last_window_begun_and_costs_a_lookup() -> None:
    """``state_at`` (what the link watch asks every poll) equals replaying every window from
    t = 0, and does not replay them: asking again later reuses the plan read so far."""
    topo = _paper()
    plan, replay = LinkPlan(topo), LinkPlan(topo)
    for t in (0.0, 0.5, 9.99, 10.0, 33.3, 599.0, 1234.5):
        rows = [e for e in replay.events(t + 1e-9)]
        expected = {}
        for e in rows:
            expected[(e.link, e.direction)] = e.state
        assert plan.at(t) == expected
    calls = []
    real = LinkPlan.change_times
    plan2 = LinkPlan(topo)
    plan2.change_times = lambda ch, until: calls.append(until) or real(ch, until)  # type: ignore[method-assign]
    for k in range(200):
        plan2.state_at("1-2", "forward", 1800 + 0.05 * k)
    assert len(calls) <= 2  # the plan is read ahead (doubling), then each poll is a lookup
