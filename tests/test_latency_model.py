"""The pure parts of delay and loss (no kernel needed): netem's sizing, the Gilbert-Elliott
parameters, the probe's loss/burst/reordering count, the TCP bound and the step-time model."""

from __future__ import annotations

import pytest

from harness.runtime.steptime import step_seconds
from testbed import netem
from testbed.linkstate import LinkState
from testbed.probe import arrivals
from testbed.tcpmodel import mathis_bps, tcp_bound


def test_netem_limit_covers_the_delay_line_and_never_falls_below_the_default() -> None:
    rate = 50e6 / 8  # bytes/s
    assert netem.limit_packets(rate, LinkState(50e6), 0.0) == 1000
    # 1 s at 50 Mbit in 64-byte packets: ~97,700, far above netem's 1000 (iproute2#56)
    assert netem.limit_packets(rate, LinkState(50e6, delay_s=1.0), 0.0) == pytest.approx(rate / 64, rel=0.01)
    jittery = netem.limit_packets(rate, LinkState(50e6, delay_s=0.1, jitter_s=0.05), 0.0)
    assert jittery == pytest.approx(rate * 0.3 / 64, rel=0.01)


def test_netem_args_keep_order_unless_asked_and_switch_to_gilbert_elliott_for_bursts() -> None:
    plain = netem.args(LinkState(50e6, delay_s=0.02, jitter_s=0.005, loss_pct=2.0), 6.25e6, 0.1)
    assert plain["order_rate"] == netem.MAX_RATE and plain["loss"] == 2.0 and "gemodel" not in plain
    assert plain["delay"] == 20_000 and plain["jitter"] == 5_000
    reorder = netem.args(LinkState(50e6, jitter_s=0.005, reorder=True), 6.25e6, 0.1)
    assert "order_rate" not in reorder
    bursty = netem.args(LinkState(50e6, loss_pct=10.0, loss_burst=5.0), 6.25e6, 0.1)
    assert bursty["loss"] == 0 and set(bursty["gemodel"]) == {"p", "r", "h", "k1"}


@pytest.mark.parametrize(("loss", "burst"), [(10.0, 5.0), (2.0, 3.0), (30.0, 2.0)])
def test_gilbert_elliott_parameters_give_the_mean_loss_and_burst(loss: float, burst: float) -> None:
    ge = netem.gilbert_elliott(loss, burst)
    p, r = ge["p"] / (2**32 - 1), ge["r"] / (2**32 - 1)
    assert p / (p + r) == pytest.approx(loss / 100, rel=1e-6)  # stationary share of the lossy state
    assert 1 / r == pytest.approx(burst, rel=1e-6)  # mean sojourn in it


def test_arrivals_count_loss_bursts_and_reordering() -> None:
    got = arrivals([0, 1, 4, 3, 7, 8, 9], 10)  # 2, 5 and 6 lost; 3 after 4
    assert got["loss_measured"] == pytest.approx(30.0)
    assert got["loss_burst_measured"] == pytest.approx(1.5)  # runs {2} and {5, 6}
    assert got["reordered"] == 1
    assert arrivals([], 5)["loss_measured"] == 100.0


def test_tcp_bound_names_what_limits_a_flow() -> None:
    assert tcp_bound(50e6, 0.06, 0.0, None)[1] == "rate"
    rate, what = tcp_bound(50e6, 0.06, 0.02, None)
    assert what.startswith("loss") and rate == pytest.approx(mathis_bps(0.06, 0.02))
    assert rate == pytest.approx(1448 * 8 / 0.06 * 1.2247 / 0.02**0.5, rel=1e-3)
    assert tcp_bound(200e6, 0.2, 0.0, 3 * 2**20)[1].startswith("window")


def test_step_model_charges_delay_per_hop_on_the_critical_path() -> None:
    def step(delay: float, transport: str, norm: bool = False) -> float:
        return step_seconds(
            "gpipe", 4, [0.002] * 3, [0.004] * 3, [2000] * 2, [2000] * 2, [1e9] * 2, [delay] * 2, transport, norm
        )

    # receives posted ahead: GPipe's forward fill and backward drain, 2 (S - 1) hops
    assert step(0.05, "preposted") - step(0.0, "preposted") == pytest.approx(4 * 0.05)
    # pipenem's runtime: 5 delays a message, consecutive messages 4 delays apart
    assert step(0.05, "rendezvous") - step(0.0, "rendezvous") > 5 * (step(0.05, "preposted") - step(0.0, "preposted"))
    # gradient clipping's norm sum: 2 (S - 1) more messages
    assert step(0.05, "preposted", True) - step(0.05, "preposted") == pytest.approx(4 * 0.05, rel=0.01)
    with pytest.raises(ValueError, match="number of stages"):
        step_seconds("gpipe", 4, [0.0] * 3, [0.0] * 3, [1.0], [1.0], [1e9], [0.0])


def test_the_gain_figure_says_how_delay_enters_when_links_had_delay() -> None:
    import pandas as pd

    from reports.figures import _delay_note
    from reports.tables import Tables

    trials = pd.DataFrame({"trial_id": ["a", "b"]})

    def tables(delays: list[float]) -> Tables:
        links = pd.DataFrame({"trial_id": ["a", "b", "b"], "window": [0, 0, -1], "delay_s": delays})
        return Tables(trials, pd.DataFrame(), links, pd.DataFrame())

    assert _delay_note(tables([0.0, 0.0, float("nan")]), trials) == ""
    note = _delay_note(tables([0.0, 0.0335, float("nan")]), trials)
    assert "33.5 ms of one-way delay" in note and "critical path" in note
