"""The README's example compressor, loaded by import path and by entry point."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest
import torch

from harness.compressors import build
from testbed.errors import ConfigError
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
    (dist / "entry_points.txt").write_text("[pipenem.compressors]\nevery_other_column = my_compressors:EveryOtherColumn\n")
    c = build({"name": "every_other_column"})
    assert type(c).__name__ == "EveryOtherColumn"
    x = torch.randn(1, 3, 4)
    assert torch.equal(c.roundtrip(x)[0][..., ::2], x[..., ::2])


def test_not_a_compressor_is_refused(example_module: Path) -> None:
    with pytest.raises(ConfigError, match="not a Compressor"):
        build({"name": "my_compressors:torch"})
