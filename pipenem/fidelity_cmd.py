"""`pipenem fidelity`: every compressor × rate on one tensor, as a table."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from basics.errors import ConfigError
from basics.terminal import make_console
from pipenem.needs import need


def _parse_shape(text: str) -> tuple[int, int, int]:
    try:
        dims = tuple(int(v) for v in text.lower().split("x"))
    except ValueError:
        dims = ()
    if len(dims) != 3 or min(dims) < 1:
        raise ConfigError("--shape", f"expected BxNxD, e.g. 8x256x128, got {text!r}")
    return dims  # type: ignore[return-value]


def _parse_rates(text: str) -> list[float]:
    try:
        rates = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ConfigError("--rates", f"expected fractions like 0.5,0.9, got {text!r}") from None
    bad = [r for r in rates if not 0 < r < 1]
    if not rates or bad:
        raise ConfigError("--rates", f"each rate is a fraction removed in (0, 1), got {text!r}")
    return rates


def _source(tensor: Path | None, config: Path | None, boundary: int | None, shape: str, rank: int, seed: int):
    """(the tensor to measure on, how it was obtained)."""
    if tensor is not None and config is not None:
        raise ConfigError("--config", "give a captured tensor or a config, not both")
    if config is not None:
        from basics.shipped import find
        from harness.config.schema import load_spec
        from harness.model.capture import boundary_activation
        from harness.runtime.check import check_run

        run = check_run(load_spec(find("config", config, "--config")))
        x, k = boundary_activation(run.spec, run.partition, boundary)
        return x, (
            f"{config} boundary {k}-{k + 1} ({run.geometry.label}, {run.spec.data.dataset}, step 0 micro-batch 0, "
            f"weights at init, seed {run.spec.seed})"
        )
    if boundary is not None:
        raise ConfigError("--boundary", "needs --config (the run whose model makes the activation)")
    if tensor is not None:
        from harness.compressors.fidelity import load_tensor

        return load_tensor(tensor), str(tensor)
    from harness.compressors.fidelity import synthetic_activation

    return synthetic_activation(_parse_shape(shape), rank=rank, seed=seed), (
        f"synthetic {shape} (low-rank {rank} + noise, seed {seed})"
    )


def fidelity_cmd(
    tensor: Annotated[
        Path | None, typer.Argument(help="a captured tensor (torch.save'd .pt); default: synthetic")
    ] = None,
    shape: Annotated[str, typer.Option(help="synthetic tensor shape BxNxD")] = "8x256x128",
    rates: Annotated[str, typer.Option(help="rates to sweep (fraction removed)")] = "0.1,0.5,0.9",
    compressors: Annotated[
        str | None,
        typer.Option(
            help="comma-separated names; ef:NAME wraps NAME in error feedback (default: every registered compressor)"
        ),
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option(help="a run config: measure on its model's real activation at --boundary (any model)"),
    ] = None,
    boundary: Annotated[
        int | None, typer.Option(help="with --config: the boundary (stage k -> k+1); default the middle one")
    ] = None,
    rank: Annotated[int, typer.Option(help="r of the sin Θ metric and the bounds")] = 8,
    seed: Annotated[int, typer.Option(help="seed of the synthetic tensor")] = 0,
    json_out: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Fidelity of every compressor × rate: payload bytes, wire ratio, errors, sin Θ vs the paper's bounds, timing."""
    need("torch", "pipenem fidelity")
    from harness.compressors.fidelity import fidelity_table
    from harness.compressors.rates import standalone_names
    from papers.beyond_topk.bounds import bound_for

    rate_list = _parse_rates(rates)
    x, source = _source(tensor, config, boundary, shape, rank, seed)
    names = [n.strip() for n in compressors.split(",") if n.strip()] if compressors else standalone_names()
    console = make_console(stderr=json_out)
    with console.status("measuring") as status:
        rows = fidelity_table(
            x, names, rate_list, rank, bound_for, on_compressor=lambda c: status.update(f"measuring {c.describe()}")
        )
    if json_out:
        doc = {"source": source, "shape": list(x.shape), "dtype": str(x.dtype), "rank": rank}
        print(json.dumps({**doc, "rows": [r.row() for r in rows]}, indent=1))
        return
    console.print(_table(rows, source, x, rank))
    console.print("paper bound: Theorem 4.1 for column, Theorem 3.2 (with C = 1, the constant is not given) for topk.")


def _table(rows: list, source: str, x, rank: int) -> Table:
    table = Table(
        title=f"fidelity on {source}, shape {tuple(x.shape)} {x.dtype}, r = {rank} "
        "(times: one run on this machine, encode / decode incl. wire parsing)"
    )
    cols = ("compressor", "bytes", "wire ratio", "rel. error", "cosine", "sin Θ", "paper bound", "enc ms", "dec ms")
    for col in cols:
        table.add_column(col, justify="right" if col != "compressor" else "left", no_wrap=col == "compressor")
    for r in rows:
        table.add_row(
            r.compressor,
            f"{r.payload_bytes:,}",
            f"{r.wire_ratio:.2f}",
            f"{r.relative_error:.3f}",
            f"{r.cosine:.3f}",
            f"{r.sin_theta:.3f}",
            "-" if r.bound is None else f"{r.bound:.3g}",
            f"{r.encode_ms:.1f}",
            f"{r.decode_ms:.1f}",
        )
    return table
