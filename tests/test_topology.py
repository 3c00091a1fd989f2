"""Parsing, validation and units of topology files (no root needed)."""

from __future__ import annotations

from pathlib import Path

import pytest

from basics.errors import ConfigError
from testbed.distributions import Fixed, Normal
from testbed.topology import LinkSpec, Topology, build_topology
from testbed.topology_file import load_topology
from tests.conftest import TOPOLOGIES


def test_paper_topology_matches_the_paper() -> None:
    topo = load_topology(TOPOLOGIES / "beyond-topk-8stage.yaml")
    assert topo.stages == 8 and topo.seed == 0
    slow = {c.label for c in topo.channels() if c.params.bandwidth.mean == 80}
    assert slow == {"1-2", "3-4", "5-6"}
    for c in topo.channels():
        bw = c.params.bandwidth
        assert isinstance(bw, Normal) and bw.unit == "Mbit" and bw.min == 1
        assert (bw.mean, bw.std) in ((80, 16), (1024, 200))
        assert c.params.resample_every == 10.0


@pytest.mark.parametrize("path", sorted(TOPOLOGIES.rglob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_topology_validates(path: Path) -> None:
    assert load_topology(path).stages >= 2


def test_python_api_builds_the_same_object_as_yaml() -> None:
    from_yaml = build_topology(
        {
            "name": "t",
            "stages": 3,
            "defaults": {"bandwidth": "1Gbit"},
            "links": [
                {"between": [1, 2], "bandwidth": {"dist": "normal", "mean": 80, "std": 16, "unit": "Mbit", "min": 1}}
            ],
        }
    )
    in_code = Topology(
        name="t",
        stages=3,
        defaults={"bandwidth": "1Gbit"},
        links=[LinkSpec(between=(1, 2), bandwidth=Normal(mean=80, std=16, unit="Mbit", min=1))],
    )
    assert from_yaml == in_code
    chain = Topology.chain(4, "80Mbit", name="c")
    assert [c.params.bandwidth for c in chain.channels()] == [Fixed(value=80, unit="Mbit")] * 6


@pytest.mark.parametrize(
    "text,field,words",
    [
        ("name: x\nstages: 3\n  links: [", "", "malformed YAML"),
        ("name: x\nstages: 3\ndefaults: {bandwidth: 1Gbit}\nlinkz: []\n", "linkz", "unknown key"),
        ("name: x\nstages: 3\ndefaults: {bandwidth: -5Mbit}\n", "defaults.bandwidth", "> 0"),
        ("name: x\nstages: 3\ndefaults: {bandwidth: 0Gbit}\n", "defaults.bandwidth", "> 0"),
        (
            "name: x\nstages: 3\ndefaults: {bandwidth: {dist: normal, mean: 80, std: -1, unit: Mbit, min: 1}}\n",
            "defaults.bandwidth.std",
            "greater than or equal to 0",
        ),
        (
            "name: x\nstages: 3\ndefaults: {bandwidth: 1Gbit}\nlinks: [{between: [2, 3], bandwidth: 1Mbit}]\n",
            "links[0].between",
            "stage 3 does not exist",
        ),
        ("name: x\nstages: 3\nlinks: [{between: [0, 1], bandwidth: 1Mbit}]\n", "links", "stage 1 has no link"),
        ("name: x\nstages: 3\ndefaults: {bandwidth: 80furlongs}\n", "defaults.bandwidth", "unknown unit"),
        ("name: x\nstages: 3\ndefaults: {bandwidth: 80mbps}\n", "defaults.bandwidth", "BYTES"),
        ("name: x\nstages: 3\ndefaults: {bandwidth: 80}\n", "defaults.bandwidth", "no unit"),
        (
            "name: x\nstages: 3\ndefaults: {bandwidth: {dist: poisson, mean: 3}}\n",
            "defaults.bandwidth",
            "'dist' must be one of",
        ),
        (
            "name: x\nstages: 3\ndefaults: {bandwidth: {dist: normal, mean: 80, std: 8, unit: Mbit}}\n",
            "defaults.bandwidth",
            "min",
        ),
        ("name: x\nstages: 3\ndefaults: {bandwidth: 1Gbit, delay: -2ms}\n", "defaults.delay", "≥ 0"),
        ("name: x\nstages: 3\ndefaults: {bandwidth: 1Gbit, loss: 150}\n", "defaults.loss", "[0, 100]"),
        (
            "name: x\nstages: 3\ndefaults: {bandwidth: 1Gbit}\nlinks: [{between: [0, 2], bandwidth: 1Mbit}]\n",
            "links[0].between",
            "adjacent",
        ),
        ("name: x\nstages: 1\ndefaults: {bandwidth: 1Gbit}\n", "stages", "greater than or equal to 2"),
        ("name: x\nstages: 3\ndefaults: {bandwidth: 1Gbit, resample_every: 0s}\n", "defaults.resample_every", "> 0"),
        ("- 1\n- 2\n", "", "mapping"),
    ],
)
def test_bad_input_names_the_field(tmp_path: Path, text: str, field: str, words: str) -> None:
    f = tmp_path / "t.yaml"
    f.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_topology(f)
    assert info.value.field == field
    assert words in str(info.value)


def test_units_and_trace_loading(tmp_path: Path) -> None:
    (tmp_path / "tr.csv").write_text("time_s,value\n0,10\n2,20\n")
    (tmp_path / "t.yaml").write_text(
        "name: x\nstages: 2\nlinks: [{between: [0, 1], trace: tr.csv, trace_unit: Mbit}]\n"
    )
    topo = load_topology(tmp_path / "t.yaml")
    bw = topo.channels()[0].params.bandwidth
    assert bw.values == (10.0, 20.0) and bw.at(1.9) == 10 and bw.at(2.0) == 20
    assert bw.at(4.5) == 10  # looped with period 4 s


def test_direction_specific_links_get_their_own_values() -> None:
    topo = build_topology(
        {
            "name": "x",
            "stages": 2,
            "defaults": {"bandwidth": "1Gbit"},
            "links": [{"between": [0, 1], "direction": "forward", "bandwidth": "10Mbit"}],
        }
    )
    fwd, bwd = topo.channels()
    assert fwd.params.bandwidth.value == 10 and bwd.params.bandwidth.value == 1
    with pytest.raises(ConfigError, match="given twice"):
        build_topology(
            {
                "name": "x",
                "stages": 2,
                "links": [
                    {"between": [0, 1], "bandwidth": "1Mbit"},
                    {"between": [1, 0], "direction": "forward", "bandwidth": "1Mbit"},
                ],
            }
        )


def test_netem_needs_are_reported() -> None:
    topo = Topology.chain(3, "1Gbit", delay="5ms")
    assert topo.needs_netem() and "delay" in topo.needs_netem()[0]
    assert not Topology.chain(3, "1Gbit", delay="0ms").needs_netem()


def test_a_shared_bottleneck_is_named_as_itself_not_as_its_first_link() -> None:
    topo = build_topology(
        {
            "name": "x",
            "stages": 4,
            "defaults": {"bandwidth": "1Gbit"},
            "bottlenecks": [{"name": "wan", "links": [[0, 1], [2, 3]], "bandwidth": "60Mbit", "delay": "5ms"}],
        }
    )
    assert [c.label for c in topo.bottleneck_channels()] == ["bn:wan", "bn:wan"]
    assert topo.needs_netem()[0] == "link bn:wan forward: delay"


def test_stage_count_is_bounded_by_the_link_addressing() -> None:
    """Link i owns a /29 of 198.18.0.0/15: 16,384 links, 16,385 stages; no two links share an address."""
    from testbed.addresses import MAX_LINKS, host_address, link_addresses

    top = MAX_LINKS + 1
    assert build_topology({"name": "wide", "stages": top, "defaults": {"bandwidth": "1Gbit"}}).stages == top
    with pytest.raises(ConfigError) as exc:
        build_topology({"name": "wider", "stages": top + 1, "defaults": {"bandwidth": "1Gbit"}})
    assert exc.value.field == "stages"
    seen = set()
    for i in range(MAX_LINKS):
        for bn in (False, True):
            ad = link_addresses(i, bottleneck=bn)
            ours = {ad.a, ad.b, ad.a_router, ad.b_router} - {None}
            assert all(a.startswith(("198.18.", "198.19.")) for a in ours)
            if not bn:
                assert not ours & seen
                seen |= ours
    assert link_addresses(MAX_LINKS - 1).b == "198.19.255.250"
    assert len({host_address(s) for s in range(top)}) == top
