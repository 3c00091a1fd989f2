"""Mininet Topo subclasses as topology input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from basics.errors import ConfigError
from testbed.topology_file import load_topology
from tests.conftest import TOPOLOGIES, needs_netns, pipenem

SMALL = """
from mininet.topo import Topo


class Small(Topo):
    def build(self):
        h1, h2, h3 = (self.addHost(f"h{i}") for i in (1, 2, 3))
        s1, s2 = self.addSwitch("s1"), self.addSwitch("s2")
        self.addLink(h1, s1, bw=500)
        self.addLink(s1, h2, bw=40, delay="5ms", loss=1)
        self.addLink(h2, s2, bw=1500, delay=2000)
        self.addLink(s2, h3, bw=2000, delay="1ms", loss=2)
"""


def test_hosts_become_stages_and_paths_become_links(tmp_path: Path) -> None:
    f = tmp_path / "small.py"
    f.write_text(SMALL)
    topo = load_topology(f)
    assert topo.stages == 3 and topo.name == "mininet-Small"
    fwd = {c.label: c.params for c in topo.channels() if c.direction == "forward"}
    assert (
        fwd["0-1"].bandwidth.value == 40 and fwd["0-1"].delay.value == 5 and fwd["0-1"].loss.value == pytest.approx(1.0)
    )
    assert fwd["1-2"].bandwidth.value == 1500  # narrowest on the path; above 1 Gbit is kept
    assert fwd["1-2"].delay.value == pytest.approx(3.0)  # 2000 (tc: µs) + 1 ms
    assert fwd["1-2"].loss.value == pytest.approx(2.0)


def test_shipped_example_maps_and_keeps_rates_above_1_gbit() -> None:
    topo = load_topology(TOPOLOGIES / "examples" / "mininet_linear.py")
    rates = {c.label: c.params.bandwidth.value for c in topo.channels() if c.direction == "forward"}
    assert rates == {"0-1": 2500, "1-2": 80, "2-3": 1000}
    assert not topo.needs_netem()


@pytest.mark.parametrize(
    "text,words",
    [
        (
            "from mininet.topo import Topo\nclass A(Topo):\n    def build(self):\n        self.addHost('h1')\n",
            "at least 2",
        ),
        ("from mininet.topo import Topo\nclass A(Topo): pass\nclass B(Topo): pass\n", "name one"),
        ("raise RuntimeError('boom')\n", "boom"),
        (
            "from mininet.topo import Topo\nclass A(Topo):\n    def build(self):\n        "
            "self.addHost('h1'); self.addHost('h2')\n",
            "no path",
        ),
    ],
)
def test_bad_mininet_files(tmp_path: Path, text: str, words: str) -> None:
    f = tmp_path / "t.py"
    f.write_text(text)
    with pytest.raises(ConfigError, match=words):
        load_topology(f)


@needs_netns
@pytest.mark.netns
@pytest.mark.parametrize(("link", "bps", "lowest"), [("0-1", 2.5e9, 0.5), ("1-2", 80e6, 0.9)])
def test_mininet_topology_runs_on_pipenem_shaping(link: str, bps: float, lowest: float) -> None:
    """The Mininet file's links are shaped at their bottleneck: the 2.5 Gbit host links too
    (Mininet's TCLink would leave them unshaped: an unshaped veth probes at several times that,
    which the upper bound catches). At 2.5 Gbit/s the probe itself is CPU-bound on 2 cores
    (0.88 of the rate seen once in CI), so there the lower bound only says that
    traffic flows; the 80 Mbit link must reach 90% of its rate."""
    out = pipenem(
        "topo",
        "probe",
        str(TOPOLOGIES / "examples" / "mininet_linear.py"),
        "--link",
        link,
        "--direction",
        "forward",
        "--seconds",
        "1.5",
        "--json",
    )
    assert out.returncode == 0, out.stderr
    r = json.loads(out.stdout)["results"][0]
    assert r["configured_bps"] == bps
    assert lowest <= r["ratio"] <= 1.1, r
