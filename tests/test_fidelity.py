"""Fidelity metrics and the paper's bounds."""

from __future__ import annotations

import json
import math

import pytest
import torch

from harness.compressors import build
from harness.compressors.fidelity import cosine, relative_error, sin_theta
from papers.beyond_topk.bounds import column_bound, topk_bound
from tests.conftest import pipenem


def _known_spectrum(n: int, d: int, spectrum: list[float], col_scales: torch.Tensor, seed: int) -> torch.Tensor:
    """G = U diag(s) Vᵀ with orthonormal U, V; then columns rescaled (a rank-r matrix with uneven columns)."""
    g = torch.Generator().manual_seed(seed)
    r = len(spectrum)
    u, _ = torch.linalg.qr(torch.randn(n, r, generator=g, dtype=torch.float64))
    v, _ = torch.linalg.qr(torch.randn(d, r, generator=g, dtype=torch.float64))
    return (u * torch.tensor(spectrum, dtype=torch.float64)) @ v.T * col_scales


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("rate", [0.1, 0.3, 0.5, 0.7, 0.9])
def test_column_bound_holds_on_matrices_with_known_spectra(seed: int, rate: float) -> None:
    n, d, r = 96, 64, 4
    scales = torch.exp(torch.randn(d, generator=torch.Generator().manual_seed(100 + seed), dtype=torch.float64))
    g = _known_spectrum(n, d, [10.0, 7.0, 5.0, 3.0], scales, seed).unsqueeze(0)
    g_hat, _ = build({"name": "column", "rate": rate}).roundtrip(g)
    measured = sin_theta(g, g_hat, r)
    bound = column_bound(g, rate, r)
    assert measured <= bound + 1e-9, (measured, bound)
    assert 0 <= measured <= math.sqrt(r) + 1e-9


def test_sin_theta_is_zero_for_the_same_subspace_and_maximal_for_orthogonal_ones() -> None:
    e = torch.eye(8, dtype=torch.float64)
    a = (e[:, :2] @ torch.diag(torch.tensor([3.0, 2.0], dtype=torch.float64)) @ e[:2, :]).unsqueeze(0)
    b = (e[:, 2:4] @ torch.diag(torch.tensor([3.0, 2.0], dtype=torch.float64)) @ e[:2, :]).unsqueeze(0)
    assert sin_theta(a, 5 * a, 2) == pytest.approx(0.0, abs=1e-7)
    assert sin_theta(a, b, 2) == pytest.approx(math.sqrt(2), abs=1e-7)


def test_error_metrics() -> None:
    x = torch.randn(3, 4, 5)
    assert relative_error(x, x) == 0 and cosine(x, x) == pytest.approx(1.0)
    assert relative_error(x, torch.zeros_like(x)) == pytest.approx(1.0)
    assert cosine(x, -x) == pytest.approx(-1.0)


def test_topk_bound_grows_without_bound_as_x_goes_to_one() -> None:
    x = torch.randn(1, 64, 32, dtype=torch.float64)
    values = [topk_bound(x, rate, 4) for rate in (0.1, 0.5, 0.9, 0.999, 0.999999)]
    assert all(a < b for a, b in zip(values, values[1:], strict=False))
    assert values[-1] / values[2] > 1.5


def test_fidelity_command_table(tmp_path) -> None:
    torch.save(torch.randn(2, 32, 16), tmp_path / "t.pt")
    out = pipenem(
        "fidelity",
        str(tmp_path / "t.pt"),
        "--rates",
        "0.5,0.9",
        "--compressors",
        "none,topk,column,quantize",
        "--rank",
        "4",
        "--json",
    )
    assert out.returncode == 0, out.stderr
    rows = json.loads(out.stdout)["rows"]
    assert [r["compressor"] for r in rows] == [
        "none",
        "topk(0.5)",
        "topk(0.9)",
        "column(0.5)",
        "column(0.9)",
        "quantize(bits=8)",
        "quantize(bits=4)",
        "quantize(bits=2)",
    ]
    assert rows[0]["wire_ratio"] == pytest.approx(4096 / (4096 + 48), rel=1e-9) and rows[0]["relative_error"] == 0
    assert rows[3]["bound"] is not None and rows[1]["bound"] is not None


@pytest.mark.parametrize(
    "args,words",
    [
        (["--rates", "0.5,1.5"], "--rates"),
        (["--compressors", "topk,nope"], "unknown compressor"),
        (["--shape", "3x4"], "--shape"),
        (["--rank", "500", "--shape", "2x16x8"], "--rank"),
    ],
)
def test_fidelity_bad_input_exit_2(args: list[str], words: str) -> None:
    out = pipenem("fidelity", *args)
    assert out.returncode == 2 and words in out.stderr and "Traceback" not in out.stderr
