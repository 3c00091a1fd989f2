"""The addresses of an emulated network, from 198.18.0.0/15 (RFC 2544's benchmarking range).

Link ``i`` owns the /29 at 198.18.0.0 + 8i: a plain link uses its first /30 (stage i is .1, stage
i+1 is .2); a link through a shared bottleneck uses both /30s (stage i and its router A in the
first, router B and stage i+1 in the second). That is 16,384 links; trunks between bottleneck
routers are 198.20.k.0/30, and every host has one address on its loopback in 198.21.0.0/16.
"""

from __future__ import annotations

from dataclasses import dataclass
from ipaddress import IPv4Address

LINKS_BASE = IPv4Address("198.18.0.0")
MAX_LINKS = 1 << 14  # /29s in a /15
MAX_BOTTLENECKS = 256  # trunks 198.20.k.0/30
HOSTS_BASE = IPv4Address("198.21.0.0")


@dataclass(frozen=True)
class LinkAddresses:
    a: str  # stage i's end
    b: str  # stage i+1's end
    a_net: str  # stage i's subnet (CIDR)
    b_net: str  # stage i+1's subnet (the same as a_net on a plain link)
    a_router: str | None = None  # a bottleneck link: router A's address on stage i's subnet
    b_router: str | None = None  # ... and router B's on stage i+1's

    prefix: int = 30


def link_addresses(i: int, bottleneck: bool = False) -> LinkAddresses:
    if not 0 <= i < MAX_LINKS:
        raise ValueError(f"link {i}: at most {MAX_LINKS} links are addressed")
    base = LINKS_BASE + 8 * i
    if not bottleneck:
        return LinkAddresses(str(base + 1), str(base + 2), f"{base}/30", f"{base}/30")
    return LinkAddresses(str(base + 1), str(base + 6), f"{base}/30", f"{base + 4}/30", str(base + 2), str(base + 5))


def trunk_addresses(k: int) -> tuple[str, str]:
    if not 0 <= k < MAX_BOTTLENECKS:
        raise ValueError(f"bottleneck {k}: at most {MAX_BOTTLENECKS} are addressed")
    return f"198.20.{k}.1", f"198.20.{k}.2"


def host_address(stage: int) -> str:
    """Stage ``stage``'s host address (apart from the link subnets)."""
    return str(HOSTS_BASE + stage + 1)
