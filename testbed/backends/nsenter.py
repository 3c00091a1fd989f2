"""Run a command inside a named network namespace: ``python -m testbed.backends.nsenter NS -- CMD...``.

The product never shells out to ``ip netns exec``; this is the same setns(2)
followed by exec, so the command's sockets live in that host's namespace.
"""

from __future__ import annotations

import os
import sys

from pyroute2 import netns


def enter(name: str) -> None:
    """Move the calling thread (the process, if it has one thread) into network namespace ``name``."""
    netns.setns(name, flags=0)  # flags=0: never create a namespace by accident


def main(argv: list[str]) -> None:
    if len(argv) < 3 or argv[1] != "--":
        sys.stderr.write("usage: python -m testbed.backends.nsenter NETNS -- COMMAND [ARGS...]\n")
        raise SystemExit(2)
    name, cmd = argv[0], argv[2:]
    enter(name)
    os.execvp(cmd[0], cmd)


if __name__ == "__main__":
    main(sys.argv[1:])
