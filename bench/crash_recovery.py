"""Crash: SIGKILL a heartbeating guest; measure detection, recording, webhook delivery and
recovery (restarted and heartbeating again).

    .venv/bin/python bench/crash_recovery.py [--crashes 200] [--interval-ms 100]

Runs `nfvha up` on embedded defaults with real guest daemons, a webhook receiver on
loopback subscribed to faults, and prints as a final JSON line:
- detection: SIGKILL → fault detected by the agent;
- recorded: SIGKILL → fault stored by the controller;
- notification: detected → webhook delivered (the receiver's 2xx seen by the notifier);
- recovery: detected → the restarted guest answers its first challenge.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path

from nfvha.hatest.harness import Receiver, Server, guest_command
from nfvha.hatest.measure import EventWatcher, inject_in_rotation, summary


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--crashes", type=int, default=200)
    p.add_argument("--instances", type=int, default=4, help="heartbeating instances; faults rotate over them")
    p.add_argument("--concurrency", type=int, default=1, help="faults in flight at once")
    p.add_argument("--interval-ms", type=int, default=100)
    args = p.parse_args()

    state = Path(tempfile.mkdtemp(prefix="nfvha-bench-", dir="/tmp"))
    srv = Server(["up", "--api", "127.0.0.1:0", "--state-dir", str(state)], state)
    receiver = Receiver("bench-secret")
    try:
        srv.api.post("/v1/subscriptions", json={"url": receiver.url, "secret": "bench-secret"}).raise_for_status()
        events = EventWatcher(srv.url)
        ids = [srv.create(f"crash-{k}", guest_command(f"crash-{k}", args.interval_ms))["id"]
               for k in range(args.instances)]
        for iid in ids:
            srv.wait_heartbeating(iid)
        fault_ids = inject_in_rotation(srv, events, ids, "crash", args.crashes, args.concurrency)
        faults = {f["id"]: f for f in srv.faults()}
        mine = [faults[i] for i in fault_ids]
        assert all(f["reason"] == "instance_exit" for f in mine), {f["reason"] for f in mine}
        missing = [f["id"] for f in mine if f["notification_ms"] is None]
        assert not missing, f"not notified: {missing}"
        assert all(r["signature_ok"] for r in receiver.received)
        print(json.dumps({
            "bench": "crash_recovery", "interval_ms": args.interval_ms, "instances": args.instances,
            "concurrency": args.concurrency,
            "detection": summary([f["detection_ms"] for f in mine]),
            "recorded": summary([f["detection_ms"] + f["report_ms"] for f in mine]),
            "notification": summary([f["notification_ms"] for f in mine]),
            "recovery": summary([f["recovery_ms"] for f in mine]),
            "webhooks_received": len(receiver.received),
        }))
    finally:
        srv.stop()
        receiver.httpd.shutdown()
        shutil.rmtree(state, ignore_errors=True)


if __name__ == "__main__":
    main()
