"""Where an instance goes: its server group's policy over the hosts that can take it
(agent connected and host up, room left), the least loaded first.

Policies (Nova's): `affinity` — all members on one host; `anti-affinity` — no two members on
one host; the `soft-` variants prefer that and fall back when no host satisfies it.

Evacuations choose among a failover segment's hosts by its recovery method (masakari's):
`auto` — any ordinary host; `reserved_host` — only hosts kept free for it; `auto_priority` —
ordinary hosts, then reserved ones; `rh_priority` — reserved hosts, then ordinary ones.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from typing import Literal, get_args

Policy = Literal["affinity", "anti-affinity", "soft-affinity", "soft-anti-affinity"]
POLICIES: tuple[str, ...] = get_args(Policy)
RecoveryMethod = Literal["auto", "reserved_host", "auto_priority", "rh_priority"]
RECOVERY_METHODS: tuple[str, ...] = get_args(RecoveryMethod)


def recovery_tiers(method: str, ordinary: list[str], reserved: list[str]) -> list[list[str]]:
    """The host lists an evacuation tries, in order, under a segment's recovery method."""
    return {"auto": [ordinary], "reserved_host": [reserved], "auto_priority": [ordinary, reserved],
            "rh_priority": [reserved, ordinary]}[method]


class PlacementError(Exception):
    """No connected host satisfies the request; the message says why."""


def choose_host(connected: list[str], member_hosts: list[str], policy: str | None = None,
                requested: str | None = None, load: Mapping[str, int] | None = None) -> str:
    """A host for a new member of a group whose members run on `member_hosts` (one entry per
    member); `load` counts the instances each host runs."""
    if not connected:
        raise PlacementError("no agent is connected to place the instance on")
    load = load or {}
    hosts = sorted(connected, key=lambda h: (load.get(h, 0), h))
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
        return min(hosts, key=lambda h: used[h])  # the fewest members
    return hosts[0]
