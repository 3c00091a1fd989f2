"""netem's parameters for one link direction, sized from its state, and the netem option
pyroute2 0.9 cannot send (Gilbert-Elliott loss).

Lessons from the tools' issue trackers, applied here:

- ``limit`` is netem's queue in *packets* and must hold everything in its delay line:
  the default 1000 drops traffic above 1000 packets/s at 1 s of delay (iproute2#56). It is
  sized from rate × (delay + 4·jitter + the shaper's queue time), counted in minimum-size
  packets, never below 1000.
- jitter reorders packets in netem unless netem has a ``rate`` (then each packet leaves no
  earlier than the one before it, as on a real path, netem.c ``netem_enqueue``). pipenem
  sets netem's rate to the largest it takes (4.29 GB/s: a 64 KiB segment costs 15 µs), so
  jitter delays without reordering; ``reorder: true`` on a link keeps netem's default.
- loss is random (each packet independently) or Gilbert-Elliott (``loss_burst`` > 1: losses
  come in bursts of that mean length, the average rate staying ``loss``): a two-state chain
  that loses every packet in the bad state, ``r = 1/burst``, ``p = r·loss/(1 − loss)``.

netem's own random numbers are not seedable on this 6.1 guest kernel (``TCA_NETEM_PRNG_SEED``
came in 6.3): which packets are lost or delayed varies between runs, the rates and delays
per window are the seeded link plan's.
"""

from __future__ import annotations

import math
from typing import Any

from testbed.linkstate import LinkState

MIN_PACKET = 64  # bytes: the netem limit counts packets of at least this size
MIN_LIMIT = 1000  # netem's own default
MAX_RATE = 2**32 - 1  # bytes/s, netem's u32 rate: only orders packets, never shapes


def limit_packets(rate_Bps: float, state: LinkState, queue_s: float) -> int:
    """netem's queue (packets) for a direction at ``rate_Bps`` bytes/s with ``state``'s delay."""
    hold = state.delay_s + 4 * state.jitter_s + queue_s
    return int(min(max(MIN_LIMIT, math.ceil(rate_Bps * hold / MIN_PACKET)), 2**31 - 1))


def gilbert_elliott(loss_pct: float, burst: float) -> dict[str, int]:
    """netem's gemodel for mean loss ``loss_pct`` in bursts of mean length ``burst`` packets."""
    loss = min(max(loss_pct / 100, 0.0), 0.99)
    r = 1.0 / burst
    p = min(r * loss / (1 - loss), 1.0)
    u32 = lambda x: int(round(x * (2**32 - 1)))  # noqa: E731
    return {"p": u32(p), "r": u32(r), "h": 0, "k1": 0}  # h: no loss in bad state 0; k1: loss in good 0


def args(state: LinkState, rate_Bps: float, queue_s: float) -> dict[str, Any]:
    """Keyword arguments for pyroute2's ``tc(..., "netem", ...)`` (times in µs)."""
    kw: dict[str, Any] = {
        "delay": int(round(state.delay_s * 1e6)),
        "jitter": int(round(state.jitter_s * 1e6)),
        "loss": state.loss_pct if state.loss_burst <= 1 else 0,
        "limit": limit_packets(rate_Bps, state, queue_s),
    }
    if not state.reorder:
        kw["order_rate"] = MAX_RATE
    if state.loss_burst > 1 and state.loss_pct > 0:
        kw["gemodel"] = gilbert_elliott(state.loss_pct, state.loss_burst)
    return kw


def _install_plugin() -> None:
    """Teach pyroute2's netem plugin TCA_NETEM_LOSS (Gilbert-Elliott) and a working rate: a
    subclass of its options with the loss attribute typed, and a get_parameters that adds
    both (pyroute2's own ``rate=`` keyword also lands in the tc message's TCA_RATE and fails
    to encode, so the rate travels as ``order_rate``)."""
    import types

    from pyroute2.netlink import nla
    from pyroute2.netlink.rtnl.tcmsg import plugins, sched_netem

    if getattr(plugins.get("netem"), "PIPENEM", False):
        return

    class options(sched_netem.options):
        nla_map = tuple(
            ("TCA_NETEM_LOSS", "netem_loss") if name == "TCA_NETEM_LOSS" else (name, kind)
            for name, kind in sched_netem.options.nla_map
        )

        class netem_loss(nla):
            nla_map = (("NETEM_LOSS_UNSPEC", "none"), ("NETEM_LOSS_GI", "none"), ("NETEM_LOSS_GE", "netem_ge"))

            class netem_ge(nla):
                fields = (("p", "I"), ("r", "I"), ("h", "I"), ("k1", "I"))

    def get_parameters(kwarg: dict) -> dict:
        ge = kwarg.pop("gemodel", None)
        rate = kwarg.pop("order_rate", None)
        opts = sched_netem.get_parameters(kwarg)
        if rate is not None:
            opts["attrs"].append(
                ["TCA_NETEM_RATE", {"rate": rate, "packet_overhead": 0, "cell_size": 0, "cell_overhead": 0}]
            )
        if ge is not None:
            opts["attrs"].append(["TCA_NETEM_LOSS", {"attrs": [["NETEM_LOSS_GE", ge]]}])
        return opts

    plugins["netem"] = types.SimpleNamespace(
        PIPENEM=True, parent=sched_netem.parent, get_parameters=get_parameters, options=options
    )


_install_plugin()
