"""`pipenem train CONFIG.yaml`: one pipeline run, distributed over the testbed or as the twin."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table
from rich.text import Text

from basics.terminal import make_console
from pipenem.needs import need

if TYPE_CHECKING:
    from harness.runtime.check import CheckedRun

console = make_console()


def train_cmd(
    config: Annotated[
        Path,
        typer.Argument(help="run config YAML (topology, model, data, train, compression, compute) or a shipped name"),
    ],
    out: Annotated[Path, typer.Option(help="run directory (spec, per-stage metrics, summary.json)")] = Path(
        "results/train"
    ),
    twin: Annotated[bool, typer.Option(help="single process, no network (same losses, no throughput)")] = False,
    backend: Annotated[str, typer.Option(help="netns or docker")] = "netns",
    quiet: Annotated[bool, typer.Option(help="do not stream the stages' logs")] = False,
) -> None:
    """Train (or serve, train.mode: infer) a pipeline over real shaped links, one process per stage.
    CONFIG: a run config file, or a shipped one by name (`pipenem list`)."""
    need("torch", "pipenem train")
    from basics.shipped import find
    from harness.config.schema import load_spec
    from harness.results.outdir import exclusive
    from harness.runtime.check import check_run

    run = check_run(load_spec(find("config", config, "CONFIG")))  # refused before any namespace exists
    with exclusive(out):
        if twin:
            _twin(run, out)
        else:
            _distributed(run, out, backend, quiet)


def _twin(run: CheckedRun, out: Path) -> None:
    from harness.results.schema import provenance
    from harness.runtime.twin import run_twin

    with console.status("twin running") as status:
        rows = run_twin(run, on_step=lambda r: status.update(f"step {r['step']} loss {r['loss']:.4f}"))
    recorded = {**run.settings("twin"), **provenance()}
    summary = {**recorded, "losses": [r["loss"] for r in rows], "grad_norms": [r["grad_norm"] for r in rows]}
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    shown = {k: recorded[k] for k in ("model", "boundary_grad", "grad_clip", "norm_eps", "device", "dtype", "codec")}
    console.print(
        f"twin: {len(rows)} steps, loss {rows[0]['loss']:.4f} -> {rows[-1]['loss']:.4f} (seed {run.spec.seed}; "
        + ", ".join(f"{k} {v}" for k, v in shown.items())
        + ")",
        highlight=False,
    )


def _distributed(run: CheckedRun, out: Path, backend: str, quiet: bool) -> None:
    from harness.results.schema import provenance
    from harness.runtime.launcher import StageFailed, StageStalled, run_pipeline
    from testbed.backends.base import PlanApplierDied
    from testbed.linkwatch import LinkStalled

    def log(stage: int, line: str) -> None:
        if not quiet:
            console.print(Text.assemble((f"[stage {stage}] ", "dim"), line), highlight=False)  # literally, never markup

    import time

    from harness.results.timeline import trial_figures
    from harness.sweep.progress import HEARTBEAT_S

    beat = {"t": time.time(), "t0": time.time()}
    steps = run.spec.train.steps

    def heartbeat(stage: int, msg: dict) -> None:  # a line at most every HEARTBEAT_S: fine in a log too
        now = time.time()
        if msg.get("event") != "step" or stage != result_stage or now - beat["t"] < HEARTBEAT_S:
            return
        beat["t"] = now
        loss = msg.get("loss")
        tps = (msg["step"] + 1) * run.spec.train.batch * run.spec.model.ctx / (now - beat["t0"])
        console.print(
            f"step {msg['step']}/{steps}" + (f" loss {loss:.3f}" if loss is not None else "") + f", {tps:,.0f} tok/s",
            highlight=False,
        )

    result_stage = run.stages - 1
    try:
        result = run_pipeline(run, out, backend_name=backend, on_log=log, on_progress=heartbeat)
    except (StageFailed, StageStalled, LinkStalled, PlanApplierDied) as exc:
        console.print(Text.assemble(("failed: ", "bold red"), str(exc), "; the network and all stages were torn down"))
        if isinstance(exc, StageFailed) and exc.tail:
            console.print(
                Text(f"last output of stage {exc.stage}:\n" + "\n".join(exc.tail), style="dim"), highlight=False
            )
        raise typer.Exit(1) from None
    train = run.spec.train
    summary = {
        **run.settings("distributed"),
        **provenance(),
        "backend": backend,
        "shaper": run.topology.shaper,
        "mode": run.spec.train.mode,
        "stages": result.stages,
        "partition": result.partition,
        "losses": result.losses(),
        "tokens_per_s": result.throughput(),
        "wall_s": result.wall_s,
        "links": result.links,
        "compression": run.spec.compression.model_dump(),
        "link_wire_ratio": {d: result.link_wire_ratio(d) for d in ("forward", "backward")},
        "applied": result.applied,  # every link state the link plan applied (events included), with its time
        **trial_figures(result.spans, result.link_load, result.stages, run.spec.train.micro_batches, train.mode),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=1, default=str))
    _print_distributed(run, summary, backend, out)


def _print_distributed(run: CheckedRun, summary: dict, backend: str, out: Path) -> None:
    table = Table(
        title=f"{run.spec.train.mode} over {summary['stages']} stages ({backend}, {summary['shaper']}, compute "
        f"{run.spec.compute.mode}, seed {run.spec.seed})"
    )
    for col in ("link", "direction", "payload bytes", "interface bytes", "overhead"):
        table.add_column(col, justify="right")
    for row in summary["links"]:
        table.add_row(
            row["link"],
            row["direction"],
            f"{row['payload_bytes']:,}",
            f"{row['interface_bytes']:,}",
            f"{row['overhead']:.3f}" if row["overhead"] else "-",
        )
    console.print(table)
    losses = [v for v in summary["losses"] if v is not None]
    if losses:
        console.print(f"loss {losses[0]:.4f} -> {losses[-1]:.4f} over {len(losses)} steps")
    console.print(
        f"throughput {summary['tokens_per_s']:,.0f} tokens/s (measured after 1 warm-up step; compute "
        f"{run.spec.compute.mode}); summary in {out / 'summary.json'}"
    )
    if summary["bubble_fraction"] is not None:
        util = [summary[f"slow_link_util_{d}"] for d in ("fwd", "bwd")]
        shown = " / ".join("-" if u is None else f"{u:.2f}" for u in util)
        console.print(
            f"bubble {summary['bubble_fraction']:.3f} per stage {summary['bubble_by_stage']} (ideal "
            f"{summary['bubble_ideal']:.3f}); slow link {summary['slow_link']} utilisation fwd / bwd {shown}; "
            f"timeline: pipenem trace {out}",
            highlight=False,
        )
