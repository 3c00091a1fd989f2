"""`pipenem train CONFIG.yaml`: one pipeline run, distributed over the testbed or as the twin."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from harness.config import load_spec

console = Console()


def train_cmd(
    config: Annotated[Path, typer.Argument(help="run config YAML (topology, model, data, train, compression, compute)")],
    out: Annotated[Path, typer.Option(help="run directory (spec, per-stage metrics, summary.json)")] = Path("results/train"),
    twin: Annotated[bool, typer.Option(help="single process, no network (same losses, no throughput)")] = False,
    backend: Annotated[str, typer.Option(help="netns or docker")] = "netns",
    quiet: Annotated[bool, typer.Option(help="do not stream the stages' logs")] = False,
) -> None:
    """Train (or serve, train.mode: infer) a pipeline over real shaped links, one process per stage."""
    spec = load_spec(config)
    out.mkdir(parents=True, exist_ok=True)
    if twin:
        from harness.twin import run_twin

        with console.status("twin running") as status:
            rows = run_twin(spec, on_step=lambda r: status.update(f"step {r['step']} loss {r['loss']:.4f}"))
        summary = {"execution": "twin", "compute": "real", "seed": spec.seed, "losses": [r["loss"] for r in rows]}
        (out / "summary.json").write_text(json.dumps(summary, indent=1))
        console.print(f"twin: {len(rows)} steps, loss {rows[0]['loss']:.4f} -> {rows[-1]['loss']:.4f} (seed {spec.seed})")
        return
    from harness.launcher import StageFailed, run_pipeline

    def log(stage: int, line: str) -> None:
        if not quiet:
            console.print(f"[dim]\\[stage {stage}][/] {line}", highlight=False)

    try:
        result = run_pipeline(spec, out, backend_name=backend, on_log=log)
    except StageFailed as exc:
        console.print(f"[bold red]failed:[/] {exc}; the network and all stages were torn down")
        raise typer.Exit(1) from None
    tput = result.throughput()
    summary = {
        "execution": "distributed", "backend": backend, "shaper": load_topology_shaper(spec.topology),
        "compute": spec.compute.mode, "device": spec.compute.device if spec.compute.mode == "modeled" else "cpu (real)",
        "mode": spec.train.mode, "schedule": spec.train.schedule, "seed": spec.seed, "stages": result.stages,
        "partition": result.partition, "losses": result.losses(), "tokens_per_s": tput, "wall_s": result.wall_s,
        "links": result.links, "compression": spec.compression.model_dump(),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=1, default=str))
    table = Table(title=f"{spec.train.mode} over {result.stages} stages ({backend}, {summary['shaper']}, compute {spec.compute.mode}, seed {spec.seed})")
    for col in ("link", "direction", "payload bytes", "interface bytes", "overhead"):
        table.add_column(col, justify="right")
    for row in result.links:
        table.add_row(row["link"], row["direction"], f"{row['payload_bytes']:,}", f"{row['interface_bytes']:,}",
                      f"{row['overhead']:.3f}" if row["overhead"] else "-")
    console.print(table)
    losses = [v for v in result.losses() if v is not None]
    if losses:
        console.print(f"loss {losses[0]:.4f} -> {losses[-1]:.4f} over {len(losses)} steps")
    console.print(f"throughput {tput:,.0f} tokens/s (measured after 1 warm-up step; compute {spec.compute.mode}); "
                  f"summary in {out / 'summary.json'}")


def load_topology_shaper(path: str) -> str:
    from testbed.topology import load_topology

    return load_topology(path).shaper
