"""`pipenem containers build`: the stage image, offline (no registry) or from containers/Dockerfile."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Annotated

import typer

from basics.terminal import make_console

containers_app = typer.Typer(help="The stage image of the docker backend.", no_args_is_help=True)
console = make_console()


@containers_app.command("build")
def build(
    dockerfile: Annotated[
        bool, typer.Option("--dockerfile", help="docker build containers/Dockerfile (needs a registry)")
    ] = False,
) -> None:
    """Build the stage image. Default: offline (`docker import` + the host's Python bind-mounted)."""
    from testbed.backends.docker import _client, build_offline_image, code_root, host_mounts

    client = _client()
    if dockerfile:
        root = code_root()
        console.print(f"path taken: docker build -f containers/Dockerfile {root} (pulls python:3.11-slim and torch)")
        rc = subprocess.call(
            [
                "docker",
                "build",
                "-t",
                "pipenem-stage:latest",
                "-f",
                str(Path(root) / "containers" / "Dockerfile"),
                str(root),
            ]
        )
        raise typer.Exit(rc)
    image = build_offline_image(client)
    console.print(
        f"path taken: offline — `docker import` of an empty root as {image}; stage containers bind-mount "
        f"read-only: {', '.join(host_mounts())}"
    )
