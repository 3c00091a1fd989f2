"""`pipenem train CONFIG.yaml`: one pipeline run, distributed over the testbed or as the twin."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from harness.runtime.config import RunSpec, check_spec, load_spec
from harness.runtime.devices import device_label
from harness.runtime.outdir import exclusive

console = Console()


def train_cmd(
    config: Annotated[
        Path, typer.Argument(help="run config YAML (topology, model, data, train, compression, compute)")
    ],
    out: Annotated[Path, typer.Option(help="run directory (spec, per-stage metrics, summary.json)")] = Path(
        "results/train"
    ),
    twin: Annotated[bool, typer.Option(help="single process, no network (same losses, no throughput)")] = False,
    backend: Annotated[str, typer.Option(help="netns or docker")] = "netns",
    quiet: Annotated[bool, typer.Option(help="do not stream the stages' logs")] = False,
) -> None:
    """Train (or serve, train.mode: infer) a pipeline over real shaped links, one process per stage."""
    spec = load_spec(config)
    check_spec(spec)  # everything a worker would refuse, refused before any namespace exists
    with exclusive(out):
        _train(spec, out, twin, backend, quiet)


def _train(spec: RunSpec, out: Path, twin: bool, backend: str, quiet: bool) -> None:
    if twin:
        from harness.runtime.twin import run_twin

        with console.status("twin running") as status:
            rows = run_twin(spec, on_step=lambda r: status.update(f"step {r['step']} loss {r['loss']:.4f}"))
        summary = {
            "execution": "twin",
            "compute": "real",
            "seed": spec.seed,
            **semantics(spec),
            "losses": [r["loss"] for r in rows],
            "grad_norms": [r["grad_norm"] for r in rows],
        }
        (out / "summary.json").write_text(json.dumps(summary, indent=1))
        console.print(
            f"twin: {len(rows)} steps, loss {rows[0]['loss']:.4f} -> {rows[-1]['loss']:.4f} (seed {spec.seed}; "
            + ", ".join(f"{k} {v}" for k, v in semantics(spec).items())
            + ")",
            highlight=False,
        )
        return
    from harness.runtime.launcher import StageFailed, run_pipeline
    from testbed.linkwatch import LinkStalled

    def log(stage: int, line: str) -> None:
        if not quiet:
            console.print(Text.assemble((f"[stage {stage}] ", "dim"), line), highlight=False)  # literally, never markup

    try:
        result = run_pipeline(spec, out, backend_name=backend, on_log=log)
    except StageFailed as exc:
        console.print(Text.assemble(("failed: ", "bold red"), str(exc), "; the network and all stages were torn down"))
        if exc.tail:
            console.print(
                Text(f"last output of stage {exc.stage}:\n" + "\n".join(exc.tail), style="dim"), highlight=False
            )
        raise typer.Exit(1) from None
    except LinkStalled as exc:
        console.print(Text.assemble(("failed: ", "bold red"), str(exc), "; the network and all stages were torn down"))
        raise typer.Exit(1) from None
    tput = result.throughput()
    summary = {
        "execution": "distributed",
        "backend": backend,
        "shaper": load_topology_shaper(spec.topology),
        "compute": spec.compute.mode,
        "mode": spec.train.mode,
        "schedule": spec.train.schedule,
        "seed": spec.seed,
        "stages": result.stages,
        "partition": result.partition,
        "losses": result.losses(),
        "tokens_per_s": tput,
        "wall_s": result.wall_s,
        "links": result.links,
        "compression": spec.compression.model_dump(),
        **semantics(spec),
        "link_wire_ratio": {
            "forward": result.link_wire_ratio("forward"),
            "backward": result.link_wire_ratio("backward"),
        },
        "applied": result.applied,  # every link state the schedule applied (events included), with its time
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=1, default=str))
    table = Table(
        title=f"{spec.train.mode} over {result.stages} stages ({backend}, {summary['shaper']}, compute "
        f"{spec.compute.mode}, seed {spec.seed})"
    )
    for col in ("link", "direction", "payload bytes", "interface bytes", "overhead"):
        table.add_column(col, justify="right")
    for row in result.links:
        table.add_row(
            row["link"],
            row["direction"],
            f"{row['payload_bytes']:,}",
            f"{row['interface_bytes']:,}",
            f"{row['overhead']:.3f}" if row["overhead"] else "-",
        )
    console.print(table)
    losses = [v for v in result.losses() if v is not None]
    if losses:
        console.print(f"loss {losses[0]:.4f} -> {losses[-1]:.4f} over {len(losses)} steps")
    console.print(
        f"throughput {tput:,.0f} tokens/s (measured after 1 warm-up step; compute {spec.compute.mode}); "
        f"summary in {out / 'summary.json'}"
    )


def semantics(spec) -> dict:
    """The settings that change results, stated with every run (README: Results a researcher can trust)."""
    return {
        "model": spec.model.label,
        "boundary_grad": spec.train.boundary_grad,
        "grad_clip": spec.train.grad_clip,
        "norm_eps": spec.model.norm_eps,
        "device": device_label(spec.compute.mode, spec.compute.device, spec.compute.profile),
        "dtype": spec.compute.dtype,
        "codec": spec.compute.codec,
    }


def load_topology_shaper(path: str) -> str:
    from testbed.topology_file import load_topology

    return load_topology(path).shaper
