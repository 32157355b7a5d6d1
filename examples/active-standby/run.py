"""Run the active/standby example: two instances in an anti-affinity server group on two
hosts, their tenant network cut, then the active one crashed. Exits 0 if exactly one was
active at every check.

    .venv/bin/python examples/active-standby/run.py
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
from pathlib import Path

from nfvha.hatest.harness import Server, cluster, wait_until

APP = Path(__file__).with_name("app.py")


def roles(state: Path, ids: list[str]) -> list[str]:
    return [(state / f"{i}.role").read_text() if (state / f"{i}.role").exists() else "-" for i in ids]


def single_active(state: Path, ids: list[str], seconds: float, what: str) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        seen = roles(state, ids)
        if seen.count("active") != 1:
            raise SystemExit(f"FAIL while {what}: roles {seen}")
        time.sleep(0.1)
    print(f"ok: exactly one active for {seconds:.0f} s while {what} (roles {roles(state, ids)})")


def main() -> int:
    state = Path(tempfile.mkdtemp(prefix="nfvha-example-", dir="/tmp"))
    try:
        with cluster(state, ["h1", "h2"]) as ctl:
            return scenario(ctl, state)
    finally:
        shutil.rmtree(state, ignore_errors=True)


def scenario(ctl: Server, state: Path) -> int:
    group = ctl.api.post("/v1/server-groups", json={"name": "pair", "policy": "anti-affinity"}).json()
    command = [sys.executable, str(APP), "--state-dir", str(state)]
    insts = [ctl.create(name, command, server_group=group["id"]) for name in ("vnf-a", "vnf-b")]
    ids = [i["id"] for i in insts]
    print(f"group 'pair' (anti-affinity): {insts[0]['name']} on {insts[0]['host']}, "
          f"{insts[1]['name']} on {insts[1]['host']}")
    for i in ids:
        ctl.wait_heartbeating(i)
    wait_until(lambda: roles(state, ids).count("active") == 1, 15, "one active")
    single_active(state, ids, 3, "both run")

    (state / "tenant-down").touch()
    print("tenant network cut")
    single_active(state, ids, 3, "the tenant network is cut")

    active = ids[roles(state, ids).index("active")]
    ctl.inject(active, "crash")
    print(f"crashed the active one ({active[:8]})")
    wait_until(lambda: roles(state, ids)[1 - ids.index(active)] == "active", 10, "the standby taking over")
    ctl.wait_fault(active, lambda f: f["recovered_at"] is not None, timeout=20)
    wait_until(lambda: roles(state, ids).count("active") == 1, 10, "one active after recovery")
    single_active(state, ids, 3, "the crashed one is back")
    print("PASS")
    return 0


if __name__ == "__main__":
    sys.exit(main())
