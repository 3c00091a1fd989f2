"""The README's example compressor, loaded by import path and by entry point."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest
import torch

from basics.errors import ConfigError
from harness.compressors import build
from tests.conftest import ROOT


@pytest.fixture
def example_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    readme = (ROOT / "harness" / "compressors" / "README.md").read_text()
    code = re.search(r"```python\n# my_compressors.py\n(.*?)```", readme, re.S).group(1)
    (tmp_path / "my_compressors.py").write_text(code)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    sys.modules.pop("my_compressors", None)


def test_loaded_by_import_path(example_module: Path) -> None:
    c = build({"name": "my_compressors:EveryOtherColumn", "offset": 1})
    x = torch.randn(2, 50, 60)
    x_hat, p = c.roundtrip(x)
    assert torch.equal(x_hat[..., 1::2], x[..., 1::2]) and (x_hat[..., 0::2] == 0).all()
    assert p.nbytes == 48 + 2 * 50 * 30 * 4  # aligned header (5 ints, 1 part) + half the values
    with pytest.raises(ConfigError) as info:
        build({"name": "my_compressors:EveryOtherColumn", "offset": 2})
    assert info.value.field == "compressor.offset"


def test_loaded_by_entry_point(example_module: Path) -> None:
    dist = example_module / "my_compressors-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: my-compressors\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(
        "[pipenem.compressors]\nevery_other_column = my_compressors:EveryOtherColumn\n"
    )
    c = build({"name": "every_other_column"})
    assert type(c).__name__ == "EveryOtherColumn"
    x = torch.randn(1, 3, 4)
    assert torch.equal(c.roundtrip(x)[0][..., ::2], x[..., ::2])


def test_not_a_compressor_is_refused(example_module: Path) -> None:
    with pytest.raises(ConfigError, match="not a Compressor"):
        build({"name": "my_compressors:torch"})


RATED_PLUGIN = """
import torch
from harness.compressors import Compressor, register
from harness.compressors.base import check_rate
from harness.compressors.sparse import TopK


class MyTopK(TopK):  # not registered under a built-in name: known only by its import path
    name = "my_topk"

    def __init__(self, *, rate: float) -> None:
        super().__init__(rate=check_rate(rate))
"""


def test_a_plugin_that_takes_rate_gets_the_suites_rate_axis(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Whether a compressor takes ``rate`` comes from its class, not from a list of names."""
    import yaml

    from harness.sweep.suite import load_suite
    from tests.conftest import TOPOLOGIES

    (tmp_path / "mypkg_rated.py").write_text(RATED_PLUGIN)
    monkeypatch.syspath_prepend(str(tmp_path))
    f = tmp_path / "s.yaml"
    f.write_text(
        yaml.safe_dump(
            {
                "name": "s",
                "topology": str(TOPOLOGIES / "ci-4stage.yaml"),
                "base": {
                    "model": {"d_model": 32, "n_layers": 4, "n_heads": 4, "ctx": 32},
                    "data": {"dataset": "synthetic"},
                },
                "axes": {
                    "compressor": [
                        {"label": "mine", "fwd": "mypkg_rated:MyTopK"},
                        {"label": "mine-ef", "fwd": {"name": "ef", "inner": "mypkg_rated:MyTopK"}},
                    ],
                    "rate": [0.1, 0.9],
                    "execution": ["twin"],
                },
            }
        )
    )
    try:
        _, trials = load_suite(f)
    finally:
        sys.modules.pop("mypkg_rated", None)
    got = {(t.compressor, t.rate): t.spec["compression"]["fwd"] for t in trials}
    assert got[("mine", 0.9)] == {"name": "mypkg_rated:MyTopK", "rate": 0.9}
    assert got[("mine-ef", 0.1)] == {"name": "ef", "inner": {"name": "mypkg_rated:MyTopK", "rate": 0.1}}
    assert len(trials) == 4
