"""`pipenem fidelity`: every compressor × rate on one tensor, as a table."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from testbed.errors import ConfigError


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


def default_compressors() -> str:
    """Every registered compressor that works on its own (plus error feedback around TopK)."""
    from harness.compressors import REGISTRY

    names = [n for n, cls in REGISTRY.items() if not cls.backward_only and not cls.wraps()]
    return ",".join([*names, "ef:topk"])


def specs_for(name: str, rates: list[float]) -> list[dict]:
    """The configurations a fidelity table sweeps for one compressor name, as the class
    describes itself: its rates if it takes one, else its ``sweep`` values, else as is."""
    import itertools

    from harness.compressors import resolve

    wrapper, _, inner = name.partition(":")
    cls = resolve(wrapper)
    if inner and cls.wraps():
        return [{"name": wrapper, "inner": s} for s in specs_for(inner, rates)]
    if cls.takes_rate():
        return [{"name": name, "rate": r} for r in rates]
    keys = list(cls.sweep)
    return [
        {"name": name, **dict(zip(keys, values, strict=True))} for values in itertools.product(*cls.sweep.values())
    ] or [{"name": name}]


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
    import torch

    from harness.compressors import build
    from harness.compressors.fidelity import measure, synthetic_activation
    from papers.beyond_topk.bounds import bound_for

    rate_list = _parse_rates(rates)
    if tensor is not None and config is not None:
        raise ConfigError("--config", "give a captured tensor or a config, not both")
    if config is not None:
        from harness.runtime.capture import boundary_activation
        from harness.runtime.config import load_spec

        spec = load_spec(config)
        x, k = boundary_activation(spec, boundary)
        source = (
            f"{config} boundary {k}-{k + 1} ({spec.model.label}, {spec.data.dataset}, step 0 micro-batch 0, "
            f"weights at init, seed {spec.seed})"
        )
    elif boundary is not None:
        raise ConfigError("--boundary", "needs --config (the run whose model makes the activation)")
    elif tensor is not None:
        if not tensor.is_file():
            raise ConfigError("tensor", f"{str(tensor)!r} not found")
        try:
            x = torch.load(tensor, map_location="cpu", weights_only=True)
        except Exception as exc:  # pickle, zip and torch's own errors alike
            raise ConfigError(
                "tensor",
                f"{str(tensor)!r} is not a tensor saved with torch.save "
                f"({type(exc).__name__}: {str(exc).splitlines()[0][:200]})",
            ) from None
        if not isinstance(x, torch.Tensor) or not x.is_floating_point() or x.dim() < 2:
            raise ConfigError("tensor", "expected a floating-point tensor with at least 2 dimensions")
        source = str(tensor)
    else:
        x = synthetic_activation(_parse_shape(shape), rank=rank, seed=seed)
        source = f"synthetic {shape} (low-rank {rank} + noise, seed {seed})"
    n, d = x.shape[-2], x.shape[-1]
    if not 1 <= rank <= min(n, d):
        raise ConfigError("--rank", f"must be in [1, min(n, d) = {min(n, d)}]")
    names = [n.strip() for n in (compressors or default_compressors()).split(",") if n.strip()]
    try:
        specs = [s for name in names for s in specs_for(name, rate_list)]
    except ConfigError as exc:
        raise ConfigError("--compressors", exc.message) from None
    comps = [build(s, field_name=f"--compressors {s['name']}") for s in specs]
    for c in comps:
        c.check_shape(x.shape)
    console = Console(stderr=json_out)
    rows = []
    with console.status("measuring") as status:
        for c in comps:
            status.update(f"measuring {c.describe()}")
            rows.append(measure(c, x, rank, bound=bound_for))
    if json_out:
        print(
            json.dumps(
                {
                    "source": source,
                    "shape": list(x.shape),
                    "dtype": str(x.dtype),
                    "rank": rank,
                    "rows": [r.row() for r in rows],
                },
                indent=1,
            )
        )
        return
    table = Table(
        title=f"fidelity on {source}, shape {tuple(x.shape)} {x.dtype}, r = {rank} "
        "(times: one run on this machine, encode / decode incl. wire parsing)"
    )
    for col in (
        "compressor",
        "bytes",
        "wire ratio",
        "rel. error",
        "cosine",
        "sin Θ",
        "paper bound",
        "enc ms",
        "dec ms",
    ):
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
    console.print(table)
    console.print("paper bound: Theorem 4.1 for column, Theorem 3.2 (with C = 1, the constant is not given) for topk.")
