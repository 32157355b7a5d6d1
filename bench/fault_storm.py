"""A storm of faults across leader deaths: 1,000 fault reports from an agent while the
cluster's leader is SIGKILLed twice; every fault must be stored once and notified at least once.

    .venv/bin/python bench/fault_storm.py [--faults 1000] [--kills 2]

Three controllers on a 3-member etcd cluster and PostgreSQL; the reporter is the real agent
link (nfvha.hatest.storm), given all three controllers; a webhook receiver is subscribed.
Prints as a final JSON line what was reported, stored (distinct, and any twice), notified
(distinct faults delivered, and deliveries in all: the surplus are at-least-once re-sends),
and how long the whole took.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import tempfile
import time
from collections import Counter
from pathlib import Path

import httpx

from nfvha.hatest.harness import Receiver, wait_until
from nfvha.hatest.servers import Controllers, Etcd, Postgres
from nfvha.hatest.storm import storm


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--faults", type=int, default=1000)
    p.add_argument("--kills", type=int, default=2)
    args = p.parse_args()

    state = Path(tempfile.mkdtemp(prefix="nfvha-bench-", dir="/tmp"))
    pg, etcd = Postgres(), Etcd(3)
    ctls = Controllers(state, pg.url, etcd.endpoints)
    receiver = Receiver("bench-secret")
    try:
        lead = ctls.leader()
        httpx.post(f"{ctls.urls[lead]}/v1/subscriptions", json={"url": receiver.url, "secret": "bench-secret"},
                   timeout=10).raise_for_status()

        def kill_leader() -> None:
            ctls.servers[ctls.leader()].proc.kill()

        at = time.monotonic()
        kills = [args.faults * (k + 1) // (args.kills + 1) for k in range(args.kills)]
        ids = asyncio.run(storm(ctls.urls, args.faults, kill_leader, kills))
        stored_at = time.monotonic() - at

        def notified() -> set[str]:
            return {e["data"]["fault_id"] for e in receiver.events("nfvha.instance.fault")}
        wait_until(lambda: notified() >= set(ids), 120, "every fault notified")
        notified_at = time.monotonic() - at
        leader = ctls.urls[ctls.leader()]
        stored = [f["id"] for f in httpx.get(f"{leader}/v1/faults", params={"limit": 100_000}, timeout=30).json()]
        deliveries = Counter(e["data"]["fault_id"] for e in receiver.events("nfvha.instance.fault"))
    finally:
        ctls.close()
        etcd.stop()
        pg.stop()
    shutil.rmtree(state, ignore_errors=True)
    print(json.dumps({"bench": "fault_storm", "reported": len(ids), "leader_kills": args.kills,
                      "stored": len(set(stored)), "stored_twice": len(stored) - len(set(stored)),
                      "lost": len(set(ids) - set(stored)), "notified": len(set(deliveries) & set(ids)),
                      "deliveries": sum(deliveries.values()), "all_stored_s": round(stored_at, 2),
                      "all_notified_s": round(notified_at, 2)}))


if __name__ == "__main__":
    main()
