"""Where a new instance goes: its server group's policy over the hosts with an agent connected.

Policies (Nova's): `affinity` — all members on one host; `anti-affinity` — no two members on
one host; the `soft-` variants prefer that and fall back when no host satisfies it.
"""

from __future__ import annotations

from collections import Counter
from typing import Literal, get_args

Policy = Literal["affinity", "anti-affinity", "soft-affinity", "soft-anti-affinity"]
POLICIES: tuple[str, ...] = get_args(Policy)


class PlacementError(Exception):
    """No connected host satisfies the request; the message says why."""


def choose_host(connected: list[str], member_hosts: list[str], policy: str | None = None,
                requested: str | None = None) -> str:
    """A host for a new member of a group whose members run on `member_hosts` (one entry per member)."""
    if not connected:
        raise PlacementError("no agent is connected to place the instance on")
    hosts = sorted(connected)
    used = Counter(member_hosts)
    if requested is not None:
        if requested not in connected:
            raise PlacementError(f"host: no agent is connected for host '{requested}'")
        if policy == "affinity" and used and requested not in used:
            raise PlacementError(f"host: the group's policy is affinity and its members run on "
                                 f"{', '.join(sorted(used))}, not '{requested}'")
        if policy == "anti-affinity" and requested in used:
            raise PlacementError(f"host: the group's policy is anti-affinity and a member runs on '{requested}'")
        return requested
    if policy in ("affinity", "soft-affinity") and used:
        home = used.most_common(1)[0][0]
        if home in connected:
            return home
        if policy == "affinity":
            raise PlacementError(f"the group's policy is affinity and its host '{home}' has no agent connected")
    if policy in ("anti-affinity", "soft-anti-affinity"):
        free = [h for h in hosts if h not in used]
        if free:
            return free[0]
        if policy == "anti-affinity":
            raise PlacementError(f"the group's policy is anti-affinity and every connected host "
                                 f"({', '.join(hosts)}) runs a member already")
        return min(hosts, key=lambda h: (used[h], h))  # the fewest members
    return hosts[0]
