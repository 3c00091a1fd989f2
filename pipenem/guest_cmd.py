"""`pipenem guest -- ARGS…`: pipenem inside a user-mode Linux guest that has netem."""

from __future__ import annotations

from typing import Annotated

import typer

from basics.errors import ConfigError
from basics.terminal import make_console

console = make_console(stderr=True)


def guest_cmd(
    ctx: typer.Context,
    timeout: Annotated[float, typer.Option(help="stop the guest after this many seconds (0: no limit)", min=0)] = 0,
    memory: Annotated[int, typer.Option(help="the guest's memory in MiB", min=256)] = 3072,
) -> None:
    """Run `pipenem ARGS…` in a guest kernel with netem (delay, jitter, loss), e.g.
    `pipenem guest -- topo probe FILE --json`. The guest has one CPU, sees the host's files
    (outputs land on the host), keeps its namespaces in a private /run and is always shut
    down; its timing is the guest's, so keep compute-heavy trials on the host."""
    from testbed import guest

    args = list(ctx.args)
    if not args:
        raise ConfigError("ARGS", "name the pipenem command to run in the guest, e.g. pipenem guest -- doctor")
    if args[0] == "guest":
        raise ConfigError("ARGS", "a guest cannot start another guest")
    try:
        res = guest.run_pipenem(
            args, say=lambda m: console.print(m, highlight=False), timeout_s=timeout or None, memory_mb=memory
        )
    except TimeoutError as exc:
        console.print(f"pipenem guest: {exc}", highlight=False)
        raise typer.Exit(124) from None
    console.print(f"pipenem guest: exit {res.rc} (boot {res.boot_s:.1f} s, {res.wall_s:.1f} s in all)", highlight=False)
    raise typer.Exit(res.rc)
