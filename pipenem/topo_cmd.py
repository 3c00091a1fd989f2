"""`pipenem doctor` and `pipenem topo ...` (typer + rich)."""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from basics.errors import ConfigError
from basics.terminal import make_console
from basics.units import format_rate

if TYPE_CHECKING:
    from testbed.topology import Topology

console = make_console()
topo_app = typer.Typer(help="Validate, inspect, bring up, probe and clean emulated topologies.", no_args_is_help=True)

FileArg = Annotated[Path, typer.Argument(help="topology file (YAML or Mininet .py), or a shipped one by name")]


def load_topology(file: Path | str) -> Topology:
    """A topology by path or by shipped name (`pipenem list`)."""
    from basics.shipped import find
    from testbed.topology_file import load_topology as load

    return load(find("topology", file, "FILE"))


def _dist_text(d: object) -> str:
    if d is None:
        return "-"
    fields = {k: v for k, v in d.model_dump().items() if k not in ("times", "values") and v is not None}
    kind = fields.pop("dist")
    unit = fields.pop("unit", "")
    if kind == "fixed":
        return f"{fields['value']:g} {unit}"
    if kind == "trace":
        return f"trace {fields['file']} ({unit})"
    if kind == "uniform":
        return f"U({fields['low']:g}, {fields['high']:g}) {unit}"
    bounds = f" in [{fields.get('min', float('-inf')):g}, {fields.get('max', float('inf')):g}]"
    return f"N({fields['mean']:g}, {fields['std']:g}){bounds} {unit}"


def doctor_cmd(json_out: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False) -> None:
    """What this machine can emulate (root? netns? tbf? htb? netem? docker?)."""
    from testbed.capabilities import doctor as run_doctor

    checks = run_doctor()
    if json_out:
        print(json.dumps([c.__dict__ for c in checks], indent=1))
        return
    table = Table(title="pipenem doctor")
    for col in ("check", "status", "detail", "what it means"):
        table.add_column(col)
    for c in checks:
        table.add_row(c.name, "[green]yes[/]" if c.ok else "[red]no[/]", c.detail, c.meaning)
    console.print(table)


@topo_app.command("validate")
def validate(file: FileArg) -> None:
    """Check a topology file; prints a one-line summary or the first problem (exit 2)."""
    topo = load_topology(file)
    console.print(
        f"[green]ok[/] {file}: {topo.name}, {topo.stages} stages, {topo.stages - 1} links, "
        f"shaper {topo.shaper}, seed {topo.seed}"
        + (f", {len(topo.bottlenecks)} shared bottleneck(s)" if topo.bottlenecks else "")
        + (f"; needs netem for: {', '.join(topo.needs_netem())}" if topo.needs_netem() else "")
    )


@topo_app.command("show")
def show(
    file: FileArg,
    windows: Annotated[int, typer.Option(help="how many link-plan windows of each link to list")] = 3,
    json_out: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """The resolved links and the first values the seeded link plan will apply."""
    from testbed.linkplan import LinkPlan

    if not 1 <= windows <= 10_000:
        raise ConfigError("--windows", f"must be from 1 to 10000, got {windows}")
    topo = load_topology(file)
    plan = LinkPlan(topo)
    rows = []
    for label, ch in plan.channels:
        re = ch.params.resample_every  # read only as far as the windows shown (a trace: its first 10^4 s)
        horizon = max([windows * re * 2 if re else 1e4, 60.0] + [ev.end + 1 for ev in topo.events])
        mine = plan.channel_events(ch, horizon, limit=windows)
        rows.append(
            {
                "link": label,
                "direction": ch.direction,
                "bandwidth": _dist_text(ch.params.bandwidth),
                "delay": _dist_text(ch.params.delay),
                "loss": _dist_text(ch.params.loss),
                "resample_every_s": ch.params.resample_every,
                "windows": [{"t": e.t, "rate_bps": e.state.rate_bps, "up": e.state.up, "event": e.event} for e in mine],
            }
        )
    if json_out:
        print(json.dumps({"name": topo.name, "seed": topo.seed, "stages": topo.stages, "links": rows}, indent=1))
        return
    table = Table(title=f"{topo.name}: {topo.stages} stages, seed {topo.seed}, shaper {topo.shaper}")
    for col in ("link", "dir", "bandwidth", "delay", "loss", "resample", f"first {windows} windows (t: rate)"):
        table.add_column(col)
    for r in rows:
        table.add_row(
            r["link"],
            r["direction"],
            r["bandwidth"],
            r["delay"],
            r["loss"],
            f"{r['resample_every_s']:g}s" if r["resample_every_s"] else "-",
            ", ".join(
                f"{w['t']:g}s: "
                + (format_rate(w["rate_bps"]) if w["up"] else "DOWN")
                + (f" ({w['event']})" if w["event"] else "")
                for w in r["windows"]
            ),
        )
    console.print(table)


def _backend(topo: Topology, detached: bool = False, backend: str = "netns"):
    from testbed.backends import make_backend

    return make_backend(backend, topo, detached=detached)


def _print_hosts(b) -> None:
    table = Table(title=f"run {b.run_id} ({b.kind}): {b.topology.name}")
    for col in ("link", "stage a", "address a", "stage b", "address b", "shared bottleneck"):
        table.add_column(col)
    for link in b.links:
        table.add_row(link.label, link.a.host, link.a.address, link.b.host, link.b.address, link.bottleneck or "-")
    console.print(table)


@topo_app.command("up")
def up(
    file: FileArg,
    detach: Annotated[
        bool,
        typer.Option(help="leave it up and return (a background process keeps re-sampling); remove with `topo down`"),
    ] = False,
    seconds: Annotated[
        float | None, typer.Option("--for", help="stay up this long, then tear down (default: until Ctrl-C)")
    ] = None,
    backend: Annotated[str, typer.Option(help="netns or docker")] = "netns",
) -> None:
    """Bring a topology up. In the foreground it applies the link plan until Ctrl-C/SIGTERM."""
    if seconds is not None and not (math.isfinite(seconds) and seconds > 0):
        raise ConfigError("--for", f"must be a finite number of seconds > 0, got {seconds}")
    topo = load_topology(file)
    b = _backend(topo, detached=detach, backend=backend)
    b.up()
    if detach:
        _print_hosts(b)
        how = f"its link plan applied by process {b.applier_pid}" if b.applier_pid else "its rates are constant"
        console.print(f"[yellow]detached[/]: run {b.run_id} stays up, {how}; `pipenem topo down {b.run_id}` removes it")
        return
    try:
        _print_hosts(b)
        console.print(
            "up; applying the link plan. Ctrl-C tears it down." if seconds is None else f"up for {seconds:g}s"
        )
        deadline = time.time() + seconds if seconds is not None else float("inf")
        while time.time() < deadline:
            time.sleep(min(0.5, max(deadline - time.time(), 0)))
    except KeyboardInterrupt:
        pass
    finally:
        b.down()
        console.print(f"run {b.run_id} removed")


@topo_app.command("down")
def down(target: Annotated[str, typer.Argument(help="a run id, or a topology file / name: its detached runs")]) -> None:
    """Remove a detached run (or every detached run of a topology)."""
    from testbed.backends import destroy_record
    from testbed.registry import all_records

    name = target
    if Path(target).is_file():
        name = load_topology(target).name
    records = [r for r in all_records() if r.run_id == target or (r.topology == name and r.detached)]
    if not records:
        console.print(f"no detached run matches {target!r} (see `pipenem topo list`)")
        raise typer.Exit(1)
    for rec in records:
        removed = destroy_record(rec)
        console.print(f"run {rec.run_id}: removed {len(removed)} resource(s)")


@topo_app.command("list")
def list_runs() -> None:
    """Runs pipenem has recorded on this machine."""
    from testbed.registry import all_records

    table = Table(title="pipenem runs")
    for col in ("run", "topology", "backend", "owner", "detached", "processes", "resources"):
        table.add_column(col)
    for r in all_records():
        pids = [int(x["name"]) for x in r.resources if x["kind"] == "process"]
        procs = ", ".join(f"{p} ({'running' if Path(f'/proc/{p}').exists() else 'gone'})" for p in pids) or "-"
        table.add_row(
            r.run_id,
            r.topology,
            r.backend,
            f"{r.owner_pid} ({'alive' if r.owner_alive() else 'gone'})",
            str(r.detached),
            procs,
            str(len(r.resources)),
        )
    console.print(table)


@topo_app.command("clean")
def clean(
    file: Annotated[Path | None, typer.Argument(help="only runs of this topology")] = None,
    all_runs: Annotated[bool, typer.Option("--all", help="also detached runs and runs whose owner is alive")] = False,
    dry_run: Annotated[bool, typer.Option(help="list what would be removed")] = False,
) -> None:
    """Remove leftovers of earlier runs (owner killed): exactly what their records name."""
    from testbed.backends import destroy_record
    from testbed.registry import all_records

    name = load_topology(file).name if file else None
    total = 0
    for rec in all_records():
        if name and rec.topology != name:
            continue
        if not all_runs and (rec.detached or rec.owner_alive()):
            continue
        if dry_run:
            console.print(
                f"would remove run {rec.run_id} ({rec.topology}): "
                + ", ".join(f"{r['kind']} {r['name']}" for r in rec.resources)
            )
            continue
        try:
            removed = destroy_record(rec)
        except ConfigError as exc:  # a record that names no run of ours: left alone, said
            console.print(f"skipped: {exc}")
            continue
        total += 1
        console.print(f"run {rec.run_id} ({rec.topology}): removed " + (", ".join(removed) or "nothing (already gone)"))
    if not total and not dry_run:
        console.print("nothing to clean")


@topo_app.command("probe")
def probe_cmd(
    file: FileArg,
    seconds: Annotated[float, typer.Option(help="length of each transfer")] = 2.0,
    interval: Annotated[float, typer.Option(help="timeline resolution")] = 0.5,
    link: Annotated[str | None, typer.Option(help="only this link, e.g. 1-2")] = None,
    direction: Annotated[str | None, typer.Option(help="forward or backward (default both)")] = None,
    timeline: Annotated[bool, typer.Option(help="print achieved vs configured per interval")] = False,
    backend: Annotated[str, typer.Option(help="netns or docker")] = "netns",
    pings: Annotated[int, typer.Option(help="UDP probes per link direction for RTT and loss (0: goodput only)")] = 500,
    json_out: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Bring up; measure every link's RTT and loss (UDP probes) and TCP goodput both ways,
    the goodput judged against the rate and against what TCP can reach there; tear down."""
    from testbed.probe import probe, probe_targets

    for name, value in (("--seconds", seconds), ("--interval", interval)):
        if not (math.isfinite(value) and value > 0):
            raise ConfigError(name, f"must be a finite number of seconds > 0, got {value}")
    if not 0 <= pings <= 100_000:
        raise ConfigError("--pings", f"must be from 0 to 100000, got {pings}")
    topo = load_topology(file)
    targets = probe_targets(topo, link, direction)
    results = []
    with _backend(topo, backend=backend) as b, console.status("probing") as status:
        for i, d in targets:
            status.update(f"probing link {i}-{i + 1} {d} ({seconds:g}s)")
            results.append(probe(b, i, d, seconds=seconds, interval=interval, pings=pings))
    if json_out:
        from testbed.tcpmodel import MATHIS_C, MSS

        doc = {
            "topology": topo.name,
            "seed": topo.seed,
            "backend": backend,
            "shaper": topo.shaper,
            "kernel": os.uname().release,
            "units": "rates bit/s, RTT ms (round trip, both directions' delay), loss percent of this direction",
            "tcp_model": f"min(rate·{MSS}/1514, MSS/RTT·{MATHIS_C:.3f}/√loss [Mathis et al. 1997], "
            "receive window/RTT); MSS {MSS} B; RTT as measured (median), loss as configured",
        }
        print(json.dumps({**doc, "results": [r.row() for r in results]}, indent=1))
        return
    _print_probe(topo, results, backend, seconds, timeline)


def _print_probe(topo: Topology, results: list, backend: str, seconds: float, timeline: bool) -> None:
    pinged = any(r.pings for r in results)
    table = Table(
        title=f"{topo.name}: per link ({backend} backend, {topo.shaper}, kernel {os.uname().release}, "
        f"seed {topo.seed}, {seconds:g}s transfers, first {0.3:g}s excluded"
        + (f", {results[0].pings} UDP probes per direction)" if pinged else ")")
    )
    cols = ["link", "direction"]
    if pinged:
        cols += ["RTT conf.", "RTT min / med / p99", "loss conf.", "loss meas."]
    cols += ["configured", "achieved", "ratio", "TCP bound", "limited by", "vs TCP"]
    for col in cols:
        table.add_column(col, justify="right")
    for r in results:
        colour = "green" if r.ratio >= 0.93 else "red"
        tcp_colour = "green" if r.tcp_ratio >= 0.8 else "red"
        row = [r.link, r.direction]
        if pinged:
            row += [
                f"{r.rtt_ms_configured:.1f} ms",
                f"{r.rtt_ms_min:.1f} / {r.rtt_ms_median:.1f} / {r.rtt_ms_p99:.1f} ms",
                f"{r.loss_configured:.1f}%",
                f"{r.loss_measured:.1f}%",
            ]
        row += [
            format_rate(r.configured_bps),
            format_rate(r.achieved_bps),
            f"[{colour}]{r.ratio:.3f}[/]",
            format_rate(r.tcp_bound_bps),
            r.tcp_limit,
            f"[{tcp_colour}]{r.tcp_ratio:.3f}[/]",
        ]
        table.add_row(*row)
    console.print(table)
    console.print(
        "ratio: achieved / configured rate, ceiling ≈ 0.956 (TCP payload per Ethernet frame, 1448 of 1514 bytes; "
        "the shaper counts frames). TCP bound: min(that ceiling, Mathis et al.'s MSS/RTT·1.22/√loss on a lossy "
        "link, receive window/RTT on a long one), at the measured median RTT and the configured loss; "
        "'vs TCP' = achieved / bound (CUBIC with SACK beats Mathis's Reno model: ≥ 1 is expected on lossy links)."
    )
    if not timeline:
        return
    for r in results:
        t = Table(title=f"link {r.link} {r.direction}: timeline")
        for col in ("t (s)", "configured", "achieved", "ratio"):
            t.add_column(col, justify="right")
        for row in r.timeline:
            t.add_row(
                f"{row['t']:.1f}",
                format_rate(row["configured_bps"]),
                format_rate(row["achieved_bps"]),
                f"{row['achieved_bps'] / row['configured_bps']:.3f}",
            )
        console.print(t)
