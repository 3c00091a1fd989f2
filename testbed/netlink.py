"""pyroute2, with the one setting pipenem needs, for every testbed module that uses netlink.

pyroute2 opens a socket inside another network namespace by forking a helper process,
which it ends with SIGTERM. A forked helper inherits its parent's signal handlers: inside a
Ray worker that handler raises SystemExit and runs the worker's exit path in the helper,
which tells the raylet the worker died (a distributed trial under `--executor ray` then
ends in WorkerCrashedError). ``disable_mp_signal`` makes the helpers reset SIGINT and
SIGTERM to their defaults first (despite its name it applies to forked helpers too).
"""

from __future__ import annotations

import pyroute2.config
from pyroute2 import IPRoute, NetlinkError, netns

pyroute2.config.disable_mp_signal = True

__all__ = ["IPRoute", "NetlinkError", "netns"]
